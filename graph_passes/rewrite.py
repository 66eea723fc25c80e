"""Give one module instance a new ``forward`` written from an fx graph, keeping its class.

A pass that inserts attention rewrites only the blocks that hold sites. Each such block keeps
its identity for the user: its class becomes a subclass of the class it had, named the same, whose
``forward`` is the code generated from the rewritten graph (``isinstance`` holds, every other
method, attribute and property is the block's own). Its submodules, parameters and buffers are
the ones it had, plus the inserted modules, so its state_dict keys are unchanged but for those.

Where the block's forward differs between training and evaluation (an ``if self.training``), it
keeps one graph per mode and runs the one of its current mode.

Instances copy (``copy.deepcopy``) and pickle (``torch.save(model)``) by their original class and
their graphs: an unpickled model gets the same generated forward back without dynattn having to
be importable under the block's module path.
"""

from __future__ import annotations

import hashlib
import linecache
from collections.abc import Callable
from typing import Any

import torch.fx as fx
from torch import nn

__all__ = ["rewrite_forward", "is_rewritten", "original_class", "rewritten_code"]

_CLASSES: dict[tuple[type, tuple[tuple[str, str], ...]], type] = {}


def _compile(graph: fx.Graph) -> tuple[str, Callable[..., Any]]:
    """The source fx generates for ``graph`` as a method, and that function."""
    code = graph.python_code(root_module="self")
    digest = hashlib.sha1(code.src.encode()).hexdigest()[:12]
    filename = f"<dynattn rewritten forward {digest}>"
    namespace = dict(code.globals)
    exec(compile(code.src, filename, "exec"), namespace)
    linecache.cache[filename] = (len(code.src), None, code.src.splitlines(keepends=True), filename)
    return code.src, namespace["forward"]


def _portable(graph: fx.Graph) -> fx.Graph:
    """A copy of ``graph`` without node metadata (stack traces, module types, tensors): what is pickled."""
    import copy

    new = copy.deepcopy(graph)
    for node in new.nodes:
        node.meta = {}
    return new


class _Rewritten:
    """Mixin of every rewritten class: picks the graph of the current mode; copies and pickles."""

    _dynattn_base: type[nn.Module]
    _dynattn_graphs: dict[str, fx.Graph]
    _dynattn_forwards: dict[str, Callable[..., Any]]
    _dynattn_code: dict[str, str]

    def __reduce_ex__(self, protocol: int) -> tuple[Any, ...]:
        cls = type(self)
        return (_rebuild, (cls._dynattn_base, cls._dynattn_graphs), self.__dict__)


def _dispatch(self: nn.Module, *args: Any, **kwargs: Any) -> Any:
    forwards = type(self)._dynattn_forwards
    return forwards["train" if self.training else "eval"](self, *args, **kwargs)


def _rewritten_class(base: type[nn.Module], graphs: dict[str, fx.Graph]) -> type:
    compiled = {mode: _compile(g) for mode, g in graphs.items()}
    key = (base, tuple(sorted((mode, src) for mode, (src, _) in compiled.items())))
    cls = _CLASSES.get(key)
    if cls is not None:
        return cls
    forwards = {mode: fn for mode, (_, fn) in compiled.items()}
    if len(forwards) == 1:
        (forward,) = forwards.values()
        forwards = {"train": forward, "eval": forward}
    else:
        forward = _dispatch
    attrs = {
        "forward": forward,
        "__module__": base.__module__,
        "__qualname__": base.__qualname__,
        "__doc__": base.__doc__,
        "_dynattn_base": base,
        "_dynattn_graphs": {mode: _portable(g) for mode, g in graphs.items()},
        "_dynattn_forwards": forwards,
        "_dynattn_code": {mode: src for mode, (src, _) in compiled.items()},
    }
    cls = type(base.__name__, (_Rewritten, base), attrs)
    _CLASSES[key] = cls
    return cls


def _rebuild(base: type[nn.Module], graphs: dict[str, fx.Graph]) -> nn.Module:
    cls = _rewritten_class(base, graphs)
    return cls.__new__(cls)


def original_class(module: nn.Module) -> type[nn.Module]:
    """The class ``module`` had before any rewrite."""
    return getattr(type(module), "_dynattn_base", type(module))


def is_rewritten(module: nn.Module) -> bool:
    """True for a module whose forward a pass rewrote."""
    return isinstance(module, _Rewritten)


def rewritten_code(module: nn.Module) -> str:
    """The generated forward of a rewritten module (both modes' when they differ), for reading."""
    if not is_rewritten(module):
        raise TypeError(f"{type(module).__name__} was not rewritten by graph_passes")
    code = type(module)._dynattn_code
    if len(code) == 1:
        return next(iter(code.values()))
    return "\n".join(f"# --- {mode} mode ---{src}" for mode, src in code.items())


def rewrite_forward(module: nn.Module, graphs: dict[str, fx.Graph]) -> None:
    """Make ``graphs`` (``{"eval": g}``, or ``{"train": g1, "eval": g2}``) the forward of ``module``,
    in place. Every ``call_module`` / ``get_attr`` target must already exist on ``module``."""
    for graph in graphs.values():
        graph.lint()
        for node in graph.nodes:
            if node.op in ("call_module", "get_attr"):
                module.get_submodule(node.target) if node.op == "call_module" else _get_attr(module, node.target)
    module.__class__ = _rewritten_class(original_class(module), graphs)


def _get_attr(module: nn.Module, target: str) -> Any:
    *path, name = target.split(".")
    owner = module.get_submodule(".".join(path)) if path else module
    return getattr(owner, name)
