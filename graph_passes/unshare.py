"""Give each call of a reused parameter-free module its own instance.

torchvision's ``BasicBlock`` and ``Bottleneck`` call one ``self.relu`` two or three times; models
register one activation object under several names. Tools that work per module call stumble on
this: PT2E quantization (torchao's ``X86InductorQuantizer``) groups the nodes of one module into
one "source partition", and a ReLU partition with two outputs stops ``prepare_pt2e`` with
"Input partition has more than one output node", on a plain ResNet-18. Forward hooks and
per-module profiles likewise see one module where the network has several.

:func:`unshare_modules` copies such modules so that every call has its own: a module called more
than once in one forward gets a copy per extra call (the block's forward is rewritten to call
them, keeping its class: see :mod:`graph_passes.rewrite`), and a module object registered under
several names gets a copy per extra name. Only modules without parameters or buffers are copied:
a module whose weights are shared on purpose stays shared. Outputs and state_dict keys are
unchanged (the copies hold no state).
"""

from __future__ import annotations

import copy
import warnings

import torch.fx as fx
from torch import nn

from dynattn._passes_api import leaf_modules

from .rewrite import rewrite_forward
from .trace import TraceFailure, trace_model

__all__ = ["unshare_modules"]


def _stateless(module: nn.Module) -> bool:
    return next(module.parameters(), None) is None and next(module.buffers(), None) is None


def _join(*parts: str) -> str:
    return ".".join(p for p in parts if p)


def _split_registrations(model: nn.Module) -> None:
    """A stateless module object registered under several names: each name past the first gets a copy."""
    seen: dict[int, str] = {}
    for name, module in list(model.named_modules(remove_duplicate=False)):
        if not name:
            continue
        first = seen.setdefault(id(module), name)
        if first != name and _stateless(module):
            parent, _, attr = name.rpartition(".")
            setattr(model.get_submodule(parent), attr, copy.deepcopy(module))


def _blocks(model: nn.Module, prefix: str = "") -> list[tuple[str, nn.Module]]:
    """Modules whose own forward may call a child more than once: those with a stateless descendant,
    not containers (each of their children runs once) and not inside dynattn's own modules."""
    out = []
    for name, child in model.named_children():
        path = _join(prefix, name)
        if isinstance(child, leaf_modules()):
            continue
        out.extend(_blocks(child, path))
    plain_container = type(model) in (nn.Sequential, nn.ModuleList, nn.ModuleDict)
    if not plain_container and any(_stateless(m) for m in model.modules() if m is not model):
        out.append((prefix, model))
    return out


def _unique(block: nn.Module, base: str) -> str:
    stem = base.replace(".", "_")
    i = 2
    while hasattr(block, f"{stem}_{i}"):
        i += 1
    return f"{stem}_{i}"


def _copy_repeated_calls(block: nn.Module, graphs: dict[str, fx.Graph]) -> bool:
    """In each graph of ``block``, the second and later calls of one stateless submodule call copies of it
    (the same copy for the same call in either mode's graph). True when any call was redirected."""
    made: dict[tuple[str, int], str] = {}
    for graph in graphs.values():
        count: dict[str, int] = {}
        for node in graph.nodes:
            if node.op != "call_module":
                continue
            n = count[node.target] = count.get(node.target, 0) + 1
            if n == 1 or not _stateless(block.get_submodule(node.target)):
                continue
            key = (node.target, n)
            if key not in made:
                made[key] = _unique(block, node.target)
                block.add_module(made[key], copy.deepcopy(block.get_submodule(node.target)))
            node.target = made[key]
    return bool(made)


def unshare_modules(model: nn.Module, inplace: bool = False) -> nn.Module:
    """``model`` (a deep copy unless ``inplace``) with every call of a parameter-free module made a call
    of its own instance. A copy is named after the module it copies (``relu_2`` for the second call of
    ``relu``). Blocks whose forward does not trace are left as they are, with a warning naming them.

    Typical use, before PT2E quantization of a torchvision ResNet::

        model = unshare_modules(model)
        exported = torch.export.export(model, (x,)).module()
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if not isinstance(inplace, bool):
        raise TypeError(f"inplace must be True or False, got {inplace!r}")
    work = model if inplace else copy.deepcopy(model)
    _split_registrations(work)
    untraced = []  # blocks whose forward could not be traced to look for repeated calls
    for path, block in _blocks(work):
        try:
            graphs = trace_model(block, own_forward_only=True).graphs
        except TraceFailure:
            untraced.append(path or type(work).__name__)
            continue
        if _copy_repeated_calls(block, graphs):
            rewrite_forward(block, graphs)
    if untraced:
        shown = ", ".join(untraced[:5]) + (" ..." if len(untraced) > 5 else "")
        warnings.warn(f"unshare_modules: {len(untraced)} block(s) do not trace with torch.fx and keep any "
                      f"repeated calls: {shown}", stacklevel=2)
    return work
