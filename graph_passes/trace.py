"""Tracing real models with torch.fx.

- dynattn modules, and any class registered with ``dynattn.registry.register_leaf_module``, are leaves
  (their graphs are their own business);
- ``leaf_modules`` (qualified names, fnmatch globs, or module types) are leaves too;
- a submodule whose forward does not trace (data-dependent control flow, timm's
  ``Conv2dSame``) is found from the exception and retried as a leaf, innermost first;
- the model is traced in train and in eval mode; when the two graphs differ (auxiliary
  heads, stochastic depth), both are kept, so the rewritten model behaves as the original
  in either mode.
"""

from __future__ import annotations

import contextlib
import fnmatch
import inspect
import operator
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.fx as fx
from torch import nn

from dynattn._passes_api import ModelError, SpecError, leaf_modules

__all__ = ["TraceFailure", "Traced", "trace_model", "LeafSpec", "LeafTracer", "untouched"]

LeafSpec = str | type[nn.Module]
_MAX_RETRIES = 64


class TraceFailure(ModelError):
    """The model could not be traced, even with its untraceable submodules as leaves."""


class _Tracer(fx.Tracer):
    # a buffer read in forward becomes a get_attr node, so in-place updates of it (timm's
    # BatchNormAct2d counting num_batches_tracked) are recorded, not executed on the model
    proxy_buffer_attributes = True

    def __init__(self, names: Sequence[str] = (), types: tuple[type, ...] = (), *, own_forward_only: bool = False,
                 inline: Sequence[str] = ()) -> None:
        super().__init__()
        self.leaf_names = tuple(names)
        self.leaf_types = types
        self.own_forward_only = own_forward_only
        self.inline = frozenset(inline)
        self.failed_at: str | None = None
        #: For each submodule traced through: how each of its calls bound its parameters.
        self.calls: dict[str, list[dict[str, Any] | None]] = {}

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        if self.own_forward_only:  # each submodule call is one node, but for those on a path to a site
            return qualname not in self.inline or isinstance(m, leaf_modules())
        if isinstance(m, leaf_modules()) or (self.leaf_types and isinstance(m, self.leaf_types)):
            return True
        if any(qualname == pat or fnmatch.fnmatchcase(qualname, pat) for pat in self.leaf_names):
            return True
        return super().is_leaf_module(m, qualname)

    def call_module(self, m, forward, args, kwargs):
        path = self.path_of_module(m)
        if not self.is_leaf_module(m, path):
            self.calls.setdefault(path, []).append(_concrete_call(m, args, kwargs))
        try:
            return super().call_module(m, forward, args, kwargs)
        except Exception:
            if self.failed_at is None:  # the innermost module whose forward raised
                self.failed_at = self.path_of_module(m)
            raise


def _constant(value: Any) -> bool:
    if value is None or isinstance(value, (bool, int, float, str)):
        return True
    return isinstance(value, tuple) and all(_constant(v) for v in value)


def _concrete_call(m: nn.Module, args: tuple, kwargs: dict) -> dict[str, Any] | None:
    """The arguments of ``m.forward`` that a call fixed to constants (defaults included), when every
    other argument is a traced value; None when the call passes anything else (a list of tensors)."""
    try:
        bound = inspect.signature(m.forward).bind(*args, **kwargs)
    except (TypeError, ValueError):
        return None
    concrete: dict[str, Any] = {}
    for name, param in inspect.signature(m.forward).parameters.items():
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            if bound.arguments.get(name):
                return None
            continue
        if name not in bound.arguments:
            concrete[name] = param.default
        elif isinstance(bound.arguments[name], fx.Proxy):
            continue
        elif _constant(bound.arguments[name]):
            concrete[name] = bound.arguments[name]
        else:
            return None
    return concrete


class LeafTracer(_Tracer):
    """``torch.fx`` tracer that treats dynattn modules and the given modules as leaves; retrace a
    rewritten model with ``LeafTracer(report(model).leaves).trace(model)`` when it needed leaves."""


@contextlib.contextmanager
def untouched(model: nn.Module) -> Iterator[None]:
    """Guarantee that analysing ``model`` leaves its buffers as they were: Python code run while
    tracing may update a buffer in place; any that changed is restored."""
    buffers = [(b, b._version, b.clone()) for b in model.buffers()]
    try:
        yield
    finally:
        with torch.no_grad():
            for buf, version, saved in buffers:
                if buf._version != version:
                    buf.copy_(saved)


@dataclass
class Traced:
    """A model and the graph(s) of its forward."""

    root: nn.Module
    #: ``{"eval": g}`` when train and eval trace alike, else ``{"train": g1, "eval": g2}``.
    graphs: dict[str, fx.Graph]
    #: Submodules that were made leaves because they did not trace.
    auto_leaves: tuple[str, ...]
    leaf_names: tuple[str, ...]
    leaf_types: tuple[type, ...]
    #: Submodules traced through that were called once with constant or traced arguments: the
    #: constants of that call (defaults included), by path. Such a module can be traced on its own.
    single_calls: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def dual(self) -> bool:
        return len(self.graphs) == 2


def _split_leaves(leaf_modules: Iterable[LeafSpec]) -> tuple[list[str], tuple[type, ...]]:
    names, types = [], []
    for leaf in leaf_modules:
        if isinstance(leaf, str):
            names.append(leaf)
        elif isinstance(leaf, type) and issubclass(leaf, nn.Module):
            types.append(leaf)
        else:
            raise SpecError("leaf_modules", leaf, "each entry is a qualified module name (globs allowed) or "
                            "an nn.Module subclass", hint="e.g. leaf_modules=['backbone.stem', MyBlock]")
    return names, tuple(types)


def _trace_once(root: nn.Module, names: list[str], types: tuple[type, ...], own_forward_only: bool = False,
                inline: Sequence[str] = (), concrete_args: dict[str, Any] | None = None,
                calls: dict[str, list] | None = None) -> tuple[fx.Graph, list[str]]:
    auto: list[str] = []
    last_error: Exception | None = None
    failed_at: str | None = None
    for _ in range(_MAX_RETRIES):
        tracer = _Tracer([*names, *auto], types, own_forward_only=own_forward_only, inline=inline)
        try:
            graph = tracer.trace(root, concrete_args=concrete_args or None)
            _merge_input_items(graph)
            if calls is not None:
                calls.update(tracer.calls)
            return graph, auto
        except Exception as exc:
            last_error, failed_at = exc, tracer.failed_at
            if not failed_at or failed_at in auto:
                break
            auto.append(failed_at)
    raise _trace_failure(root, last_error, failed_at, auto) from last_error


def _merge_input_items(graph: fx.Graph) -> None:
    """One node per item taken out of an input by constant indices: a forward that indexes its input list again
    for each use (smp's UnetPlusPlus decoder takes ``features[i]`` up to three times) gets one value, so that a
    site there is one site, and what is inserted there reaches every use."""
    first: dict[tuple[fx.Node, str], fx.Node] = {}
    for n in list(graph.nodes):
        if not _input_item(n):
            continue
        key = (n.args[0], repr(n.args[1]))
        if key in first:
            n.replace_all_uses_with(first[key])
            graph.erase_node(n)
        else:
            first[key] = n


def _input_item(n: fx.Node, steps: int = 8) -> bool:
    """``n`` takes an item out of an input (a placeholder) through indexing with constants only."""
    for _ in range(steps):
        if n.op != "call_function" or n.target is not operator.getitem or not isinstance(n.args[0], fx.Node):
            return False
        if not _constant(n.args[1]) and not isinstance(n.args[1], slice):
            return False
        n = n.args[0]
        if n.op == "placeholder":
            return True
    return False


def _trace_failure(root: nn.Module, error: Exception | None, failed_at: str | None, auto: list[str]) -> TraceFailure:
    """A first line under 200 characters (where, the cause cut to fit, what to try); all of it in ``details``."""
    where = f"in {failed_at!r}" if failed_at else f"in {type(root).__name__}.forward itself"
    made = f"made leaves: {auto}" if auto and len(repr(auto)) < 40 else (f"{len(auto)} made leaves" if auto else
                                                                        "made leaves: none")
    hint = "pass leaf_modules=[...] naming what does not trace"
    base = f"model={type(root).__name__!r}: does not trace with torch.fx {where} ({type(error).__name__}: ); {made} ()"
    room = max(12, 198 - len(base) - len(hint))
    cause = " ".join(str(error).split())
    cause = cause if len(cause) <= room else cause[:room - 3] + "..."
    err = TraceFailure("model", type(root).__name__, f"does not trace with torch.fx {where} ({type(error).__name__}: "
                       f"{cause}); {made}", hint=hint)
    err.details = f"{type(error).__name__}: {error}; made leaves: {auto}"
    return err


def _direct_ops(graph: fx.Graph) -> dict[str, list[tuple[str, str, str]]]:
    """The ops each module's own forward contributes (not its children's), by module path,
    with their constant arguments (a ``training=`` flag baked into a call counts)."""
    out: dict[str, list[tuple[str, str, str]]] = {}
    for n in graph.nodes:
        if n.op in ("placeholder", "output"):
            continue
        stack = [path for path, _ in n.meta.get("nn_module_stack", {}).values()]
        if n.op == "call_module" and stack and stack[-1] == n.target:
            stack = stack[:-1]
        target = n.target if isinstance(n.target, str) else getattr(n.target, "__name__", repr(n.target))
        consts = repr([a for a in (*n.args, *n.kwargs.values()) if not isinstance(a, fx.Node)])
        out.setdefault(stack[-1] if stack else "", []).append((n.op, target, consts))
    return out


def _mode_dependent(train: fx.Graph, eval_: fx.Graph) -> list[str]:
    """The outermost submodules whose own ops differ between the modes while their parent's
    do not (a module that returns its input in eval mode contributes no ops at all there)."""
    a, b = _direct_ops(train), _direct_ops(eval_)
    differing = {path for path in set(a) | set(b) if a.get(path, []) != b.get(path, [])}

    def parent(path: str) -> str:
        return path.rsplit(".", 1)[0] if "." in path else ""

    return sorted(p for p in differing if p and parent(p) not in differing)


def trace_model(model: nn.Module, leaf_modules: Iterable[LeafSpec] = (), *, own_forward_only: bool = False,
                inline: Sequence[str] = (), concrete_args: dict[str, Any] | None = None) -> Traced:
    """Trace ``model`` in train and eval mode (restoring its mode).

    A submodule whose own forward traces differently in the two modes (stochastic depth,
    functional dropout) becomes a leaf, so that it decides at run time; if the root's forward
    itself differs (auxiliary heads used in training), both graphs are kept. ``own_forward_only``
    keeps every submodule call as one node (the graph of the root's own forward) but for the paths
    in ``inline``; ``concrete_args`` fixes arguments of the root's forward (see ``Traced.single_calls``)."""
    names, types = _split_leaves(leaf_modules)
    was_training = model.training
    auto_all: list[str] = []
    calls: dict[str, list] = {}
    try:
        for _ in range(8):
            graphs: dict[str, fx.Graph] = {}
            for mode in ("train", "eval"):
                model.train(mode == "train")
                calls.clear()
                graph, auto = _trace_once(model, [*names, *auto_all], types, own_forward_only, inline, concrete_args,
                                          calls)
                auto_all.extend(a for a in auto if a not in auto_all)
                graphs[mode] = graph
            if graphs["train"].python_code("self").src == graphs["eval"].python_code("self").src:
                graphs = {"eval": graphs["eval"]}
                break
            differing = [p for p in _mode_dependent(graphs["train"], graphs["eval"]) if p not in auto_all]
            if not differing:
                break
            auto_all.extend(differing)
    finally:
        model.train(was_training)
    single = {path: c[0] for path, c in calls.items() if len(c) == 1 and c[0] is not None}
    return Traced(model, graphs, tuple(auto_all), tuple(names), types, single)
