"""Where attention can go: site discovery, stable names, and the ``where=`` selector.

Every candidate site is a node whose output is a feature map: a 4-D NCHW tensor, or an NCL / NCDHW
tensor in a 1-D / 3-D conv net (see :mod:`graph_passes.shapes`). Its **name** is stable
across tracings: a leaf module's call is the module's qualified name (``layer1.0.bn3``;
later calls of the same module get ``:2``, ``:3``), a function or method call is its
enclosing module's name and the op (``layer1.0.add``, numbered within that module). A node
that is the single output of a container module also answers to the container's name
(``layer1``), so ``where="layer*"`` selects stage outputs.

``where`` (first match wins for each string):

1. ``"residual"``, ``"conv"``, ``"stage"``, ``"decoder"``, ``"skip"``: a site rule;
   ``"residual:<glob>"`` etc. keeps the rule's sites whose names match the glob;
2. ``"re:<regex>"``: sites whose name (or a container alias) fully matches the regex;
3. any other string: an fnmatch glob over the same names;
4. a callable ``(node, module) -> bool`` (module is the called submodule or None);
5. a list or tuple of the above: their union, in graph order.

Each item is parsed once into an immutable selector (:func:`parse_selector`; strings are cached),
whose ``pick`` chooses sites from an analysed graph (:class:`SiteGraph`).

Site rules: ``residual`` is the branch output just before each residual add of two feature-map
tensors of one shape (the SE-ResNet placement; only the add's input is rewired);
``conv`` is after each conv, or after its BatchNorm and activation when they follow it
directly; ``stage`` is each tensor every path passes through, where the next such tensor
has another spatial size (stage outputs). For encoder-decoder networks, ``skip`` is the output of
each concatenation along channels that merges an upsampled path with a skip tensor (where
segmentation_models_pytorch puts its decoder ``attention1``), ``decoder`` each decoder block's output
(the largest module around one upsampling op holding no other up- or downsampling op), ``encoder`` each
encoder feature the decoder takes (a skip connection's input that no upsampling made, a leaf decoder block's
input at its output's size). ``where=None`` means ``"residual"`` when the model has residual adds (with
``"skip"`` and ``"decoder"`` where it has skip connections); else ``"encoder"``, ``"skip"`` and ``"decoder"``
when it has the latter (a U-Net of concatenations); else ``"stage"``. No rule but ``conv`` selects the model's
logits (a head's conv output, or a term of the sum that forms it, reaching the output through no weighted module).
"""

from __future__ import annotations

import difflib
import fnmatch
import functools
import itertools
import math
import operator
import re
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn

from dynattn._deprecated import moved_attribute
from dynattn._passes_api import ModelError, SpecError

from .shapes import ACTIVATIONS, DATA, is_conv_module, is_feature_map, shape_of

__all__ = ["Site", "SITE_RULES", "Where", "Selector", "SiteGraph", "find_sites", "no_match_error", "parse_selector",
           "parse_where", "site_names", "join_path"]

#: The site rules ``where=`` accepts by name (see the module docstring).
SITE_RULES = ("residual", "conv", "stage", "decoder", "skip", "encoder")
Where = None | str | Callable[[fx.Node, Any], bool] | Iterable[Any]

_ADD_FUNCTIONS = {operator.add, operator.iadd, torch.add}
_ADD_METHODS = {"add", "add_", "__add__", "__iadd__"}
_BN = (nn.BatchNorm2d, nn.SyncBatchNorm)
_ACT_FUNCTIONS = {F.relu, F.relu6, F.silu, F.gelu, F.hardswish, F.leaky_relu, F.elu, F.mish, torch.relu,
                  torch.sigmoid, torch.tanh, F.hardsigmoid}
_ACT_METHODS = {"relu", "relu_", "sigmoid", "tanh"}


_warned: set[str] = set()


def warn_renamed(cls: str, old: str, new: str) -> None:
    """One ``DeprecationWarning`` per process that ``cls.old`` is now ``cls.new``."""
    if f"{cls}.{old}" not in _warned:
        _warned.add(f"{cls}.{old}")
        warnings.warn(f"{cls}.{old} is now {cls}.{new}; read that ({cls}.{old} will be removed in a later release)",
                      DeprecationWarning, stacklevel=3)


@dataclass(frozen=True)
class Site:
    """One place attention can go."""

    #: Stable name (see the module docstring).
    name: str
    #: The name of the fx node producing the tensor.
    node_name: str
    #: How it was selected: a site rule (one of ``SITE_RULES``), or "match" (a glob, regex or predicate).
    rule: str
    channels: int
    #: Shape for the example input, (N, C, H, W).
    shape: tuple[int, ...]
    #: The producing module's class name, or the op's name.
    producer: str
    #: For residual sites, the add node: only that use is rewired.
    feeds: str | None = None
    #: Container modules whose output this node is.
    aliases: tuple[str, ...] = ()

    @property
    def node(self) -> str:
        """Deprecated: :attr:`node_name`."""
        warn_renamed("Site", "node", "node_name")
        return self.node_name

    @property
    def strategy(self) -> str:
        """Deprecated: :attr:`rule`."""
        warn_renamed("Site", "strategy", "rule")
        return self.rule


def __getattr__(name: str):
    if name == "SITE_STRATEGIES":
        return moved_attribute(__name__, name, __name__, "SITE_RULES")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _is_nchw(n: fx.Node) -> bool:
    """A feature map: NCHW, or NCL / NCDHW in a 1-D / 3-D network."""
    return is_feature_map(n)


def _op_name(n: fx.Node) -> str:
    if n.op == "call_method":
        return str(n.target)
    return getattr(n.target, "__name__", str(n.target)).strip("_")


def _input_item_name(n: fx.Node) -> str | None:
    """``<input>.<index>`` for an item taken out of an input list by constant indices, where its place in the list
    is known without the list's length (``features[1:][::-1][2]`` is ``features.-3``); None otherwise."""
    chain = []
    while n.op == "call_function" and n.target is operator.getitem and isinstance(n.args[0], fx.Node):
        chain.append(n.args[1])
        n = n.args[0]
    if n.op != "placeholder" or not chain or not isinstance(chain[0], int):
        return None
    start, forward = 0, True  # the list seen so far: input[start:], reversed unless forward
    for index in reversed(chain[1:]):
        if index == slice(None, None, -1):
            forward = not forward
        elif forward and isinstance(index, slice) and index.stop is None and index.step in (None, 1) and (
                (isinstance(index.start, int) and index.start >= 0) or index.start is None):
            start += index.start or 0
        else:
            return None
    k = chain[0]
    position = (start + k if k >= 0 else k) if forward else (-1 - k if k >= 0 else start - 1 - k)
    return f"{n.target}.{position}"


def _stack(n: fx.Node) -> list[str]:
    return [path for path, _ in n.meta.get("nn_module_stack", {}).values()]


def join_path(prefix: str, name: str) -> str:
    """``prefix.name`` as a qualified module name (either may be empty)."""
    return f"{prefix}.{name}" if prefix and name else prefix or name


def site_names(graph: fx.Graph, prefix: str = "") -> dict[fx.Node, tuple[str, tuple[str, ...]]]:
    """Each node's stable name and its container aliases; ``prefix`` is the qualified name of the
    module the graph was traced from (names are then those of the whole model)."""
    names: dict[fx.Node, tuple[str, tuple[str, ...]]] = {}
    calls: dict[str, int] = {}
    nodes = [n for n in graph.nodes if n.op not in ("placeholder", "output", "get_attr")]
    for n in nodes:
        if n.op == "call_module":
            base = join_path(prefix, str(n.target))
        else:
            stack, op = _stack(n), _input_item_name(n) or _op_name(n)
            base = join_path(prefix, f"{stack[-1]}.{op}" if stack else op)
        calls[base] = calls.get(base, 0) + 1
        names[n] = (base if calls[base] == 1 else f"{base}:{calls[base]}", ())
    # container outputs: the one node of a module's scope that something outside it uses
    for path, node in _scope_exits(_scope_members(nodes)).items():
        if node is not None:
            primary, aliases = names[node]
            alias = join_path(prefix, path)
            names[node] = (primary, tuple(sorted((*aliases, alias), key=lambda p: (p.count("."), p))))
    return names


def _scope_members(nodes: Iterable[fx.Node]) -> dict[str, set[fx.Node]]:
    """The nodes run inside each module's forward (a leaf module's own call is not inside it)."""
    members: dict[str, set[fx.Node]] = {}
    for n in nodes:
        for path in _stack(n):
            if path and not (n.op == "call_module" and n.target == path):
                members.setdefault(path, set()).add(n)
    return members


def _scope_exits(members: dict[str, set[fx.Node]]) -> dict[str, fx.Node | None]:
    """Each scope's output: its one node that something outside it uses (None when there are several)."""
    out: dict[str, fx.Node | None] = {}
    for path, inside in members.items():
        exits = [n for n in inside if any(u not in inside for u in n.users)]
        out[path] = exits[0] if len(exits) == 1 else None
    return out


# ------------------------------------------------------------------ site rules
def _input_dependent(graph: fx.Graph) -> list[fx.Node]:
    """Nodes carrying tensors that depend on the input, in graph order (shape arithmetic such
    as ``x.shape[0]`` is not data flow and is left out)."""
    live: set[fx.Node] = set()
    order = []
    for n in graph.nodes:
        if not n.meta.get(DATA, False) and n.op != "output":
            continue
        if n.op == "placeholder" or any(a in live for a in n.all_input_nodes):
            live.add(n)
            order.append(n)
    return order


def _ancestry(graph: fx.Graph) -> tuple[list[fx.Node], dict[fx.Node, int], dict[fx.Node, int]]:
    """The input-dependent nodes in order, each one's index, and each one's ancestors as a bit mask of indices."""
    order = _input_dependent(graph)
    index = {n: i for i, n in enumerate(order)}
    ancestors: dict[fx.Node, int] = {}
    for n in order:
        mask = 0
        for a in n.all_input_nodes:
            if a in index:
                mask |= ancestors[a] | (1 << index[a])
        ancestors[n] = mask
    return order, index, ancestors


def _is_add(n: fx.Node) -> bool:
    return (n.op == "call_function" and n.target in _ADD_FUNCTIONS) or (n.op == "call_method" and
                                                                         n.target in _ADD_METHODS)


def _residual(graph: fx.Graph) -> list[tuple[fx.Node, fx.Node]]:
    """(branch node, add node) for every residual add of two same-shape NCHW tensors."""
    order, index, ancestors = _ancestry(graph)
    out = []
    for n in order:
        if not _is_add(n) or len(n.args) < 2:
            continue
        a, b = n.args[0], n.args[1]
        if not (isinstance(a, fx.Node) and isinstance(b, fx.Node) and a in index and b in index):
            continue
        if not (_is_nchw(a) and _is_nchw(b) and shape_of(a) == shape_of(b) == shape_of(n)):
            continue
        own_a = (ancestors[a] & ~ancestors[b]).bit_count() + (0 if (ancestors[b] >> index[a]) & 1 else 1)
        own_b = (ancestors[b] & ~ancestors[a]).bit_count() + (0 if (ancestors[a] >> index[b]) & 1 else 1)
        if own_a != own_b:
            out.append((a if own_a > own_b else b, n))
    return out


def _is_conv(n: fx.Node, modules: dict[str, nn.Module]) -> bool:
    if n.op == "call_module":
        return is_conv_module(modules.get(n.target))
    return n.op == "call_function" and n.target in (F.conv2d, torch.conv2d)


def _is_bn(n: fx.Node, modules: dict[str, nn.Module]) -> bool:
    if n.op == "call_module":
        return isinstance(modules.get(n.target), _BN)
    return n.op == "call_function" and n.target in (F.batch_norm, torch.batch_norm)


def _is_act(n: fx.Node, modules: dict[str, nn.Module]) -> bool:
    if n.op == "call_module":
        return isinstance(modules.get(n.target), ACTIVATIONS)
    if n.op == "call_method":
        return n.target in _ACT_METHODS
    return n.op == "call_function" and n.target in _ACT_FUNCTIONS


def _conv(graph: fx.Graph, modules: dict[str, nn.Module]) -> list[fx.Node]:
    out = []
    for n in graph.nodes:
        if not _is_conv(n, modules):
            continue
        end = n
        for step in (_is_bn, _is_act):
            users = list(end.users)
            if len(users) == 1 and step(users[0], modules):
                end = users[0]
        if _is_nchw(end):
            out.append(end)
    return out


def _stage(graph: fx.Graph) -> list[fx.Node]:
    """Cut nodes (every path from the input passes through them) before a change of resolution."""
    order = _input_dependent(graph)
    index = {n: i for i, n in enumerate(order)}
    cuts, reach = [], -1
    for i, n in enumerate(order):
        if reach <= i and n.op not in ("placeholder", "output"):
            cuts.append(n)
        for u in n.users:
            if u in index:
                reach = max(reach, index[u])
    out = []
    for here, after in itertools.pairwise(cuts):
        shape, nxt = shape_of(here), shape_of(after)
        if not _is_nchw(here) or math.prod(shape[2:]) <= 1:
            continue
        if not _is_nchw(after) or nxt[2:] != shape[2:]:
            out.append(here)
    return out


# ------------------------------------------------------------------ encoder-decoder rules
_UPSAMPLE_FUNCTIONS = {F.interpolate, F.upsample, F.upsample_bilinear, F.upsample_nearest, F.pixel_shuffle,
                       torch.pixel_shuffle, F.conv_transpose1d, F.conv_transpose2d, F.conv_transpose3d}
_CAT_FUNCTIONS = {torch.cat, torch.concat, torch.concatenate}
_MERGES = _CAT_FUNCTIONS | _ADD_FUNCTIONS


def _spatial(n: Any) -> int | None:
    """The number of positions of a feature map (None for anything else)."""
    return math.prod(shape_of(n)[2:]) if isinstance(n, fx.Node) and _is_nchw(n) else None


def _rescales(n: fx.Node, up: bool) -> bool:
    """``n`` is an upsampling op (``up``): its feature map is larger than its first feature-map input's in every
    spatial dim, from a 1x1 map too (a leaf module, or interpolate, a transposed conv, pixel shuffle); or a
    downsampling one (not ``up``): fewer positions, global pooling aside (a strided conv or pooling)."""
    first = next((a for a in n.all_input_nodes if _spatial(a) is not None), None)
    if _spatial(n) is None or first is None:
        return False
    here, there = shape_of(n)[2:], shape_of(first)[2:]
    if not up:
        return _spatial(n) < _spatial(first) and not _global_pool(n)
    larger = len(here) == len(there) and all(a > b for a, b in zip(here, there, strict=True))
    return larger and (n.op == "call_module" or (n.op == "call_function" and n.target in _UPSAMPLE_FUNCTIONS))


_GLOBAL_POOLS = (nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d, nn.AdaptiveMaxPool1d,
                 nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d)
_GLOBAL_POOL_FUNCTIONS = {F.adaptive_avg_pool1d, F.adaptive_avg_pool2d, F.adaptive_avg_pool3d, F.adaptive_max_pool1d,
                          F.adaptive_max_pool2d, F.adaptive_max_pool3d, torch.mean, torch.amax, torch.sum}
_GLOBAL_POOL_METHODS = {"mean", "amax", "max", "sum"}


def _global_pool(n: fx.Node) -> bool:
    """``n`` pools a feature map to one position (adaptive pooling, a mean or max over the spatial dims): its
    output is 1x1 whatever the input's size, a descriptor rather than a coarser map."""
    if _spatial(n) != 1:
        return False
    if n.op == "call_module":
        return isinstance(n.graph.owning_module.get_submodule(str(n.target)), _GLOBAL_POOLS) \
            if n.graph.owning_module is not None else False
    return (n.op == "call_function" and n.target in _GLOBAL_POOL_FUNCTIONS) or (
        n.op == "call_method" and n.target in _GLOBAL_POOL_METHODS)


def _broadcast(n: fx.Node, steps: int = 16) -> bool:
    """``n`` upsamples a globally pooled 1x1 descriptor back to a map (ASPP's image pooling branch): a broadcast
    of context, which the decoder rule counts as upsampling and the skip rule does not (ASPP's concatenation of
    its branches is no skip connection)."""
    for _ in range(steps):
        n = next((a for a in n.all_input_nodes if _spatial(a) is not None), None)
        if n is None or _spatial(n) != 1:
            return False
        if _global_pool(n):
            return True
    return False


def _upsamples(n: fx.Node) -> bool:
    """An upsampling op that is no broadcast of a global descriptor (see :func:`_broadcast`)."""
    return _rescales(n, up=True) and not _broadcast(n)


def _channel_cat(n: fx.Node) -> list[fx.Node] | None:
    """The inputs of a concatenation along channels of same-size feature maps (None when ``n`` is none)."""
    if n.op != "call_function" or n.target not in _CAT_FUNCTIONS or not _is_nchw(n) or not n.args:
        return None
    parts, dim = n.args[0], n.args[1] if len(n.args) > 1 else n.kwargs.get("dim", 0)
    if not isinstance(parts, (list, tuple)) or len(parts) < 2 or not isinstance(dim, int):
        return None
    if dim % len(shape_of(n)) != 1 or not all(isinstance(p, fx.Node) and _is_nchw(p) for p in parts):
        return None
    return list(parts) if len({shape_of(p)[2:] for p in parts}) == 1 else None


def _feeds_upsample(n: fx.Node, steps: int = 8) -> bool:
    """``n`` goes on, one user at a time and through no other merge, into an upsampling op."""
    for _ in range(steps):
        if len(n.users) != 1:
            return False
        n = next(iter(n.users))
        if _upsamples(n):
            return True
        if n.op == "call_function" and n.target in _MERGES:
            return False
    return False


def _skip(graph: fx.Graph) -> list[fx.Node]:
    """Concatenations along channels that merge an upsampled path with a skip: one input's own ancestry
    (what the others do not share) holds an upsampling op and another's does not; or one input is computed
    from another (``cat([x, f(x)])``) and the result is upsampled next (MONAI's innermost SkipConnection)."""
    order, index, ancestors = _ancestry(graph)
    ups = sum(1 << index[n] for n in order if _upsamples(n))
    out = []
    for n in order:
        parts = _channel_cat(n)
        if parts is None or not all(p in index for p in parts):
            continue
        closure = [ancestors[p] | (1 << index[p]) for p in parts]
        own = [c & ~functools.reduce(operator.or_, (d for j, d in enumerate(closure) if j != i), 0)
               for i, c in enumerate(closure)]
        upsampled = [bool(o & ups) for o in own]
        nested = any(closure[j] >> index[p] & 1 for i, p in enumerate(parts) for j in range(len(parts)) if j != i)
        if (any(upsampled) and not all(upsampled)) or (nested and _feeds_upsample(n)):
            out.append(n)
    return out


def _is_logits(n: fx.Node, modules: dict[str, nn.Module], final: bool = True, steps: int = 8) -> bool:
    """``n`` is the model's output, or reaches it through no module with weights (only resized: the logits).
    ``final``: the graph's output is the model's (not where the graph is one part of a model that does not
    trace as a whole: smp's decoder, whose output the segmentation head takes)."""
    for _ in range(steps if final else 0):
        if any(user.op == "output" for user in n.users):
            return True
        if len(n.users) != 1:
            return False
        n = next(iter(n.users))
        if _is_conv(n, modules) or _weighted(n, modules):
            return False
    return False


def _weighted(n: fx.Node, modules: dict[str, nn.Module]) -> bool:
    return n.op == "call_module" and next(modules[n.target].parameters(), None) is not None


def _is_head(n: fx.Node, modules: dict[str, nn.Module], final: bool = True) -> bool:
    """``n`` is the model's head output (the logits, or a term of the sum that forms them): made by convs with no
    weighted module after them (no norm), and reaching the model's output through no weighted module (resized,
    activated, or summed with another such map: LRASPP adds two class maps). A residual network's last block
    (BN, add, ReLU) is no head: its branch ends in a BatchNorm. ``final``: see :func:`_is_logits`."""
    return _is_logits(n, modules, final) and _made_by_convs(n, modules)


def _made_by_convs(n: fx.Node, modules: dict[str, nn.Module], steps: int = 8) -> bool:
    """``n`` is a conv's output through ops with no weights of one map each, or a sum of such maps."""
    if _is_conv(n, modules):
        return True
    maps = [a for a in n.all_input_nodes if _is_nchw(a)]
    if steps == 0 or not maps or _weighted(n, modules) or (len(maps) > 1 and not _is_add(n)):
        return False
    return all(_made_by_convs(a, modules, steps - 1) for a in maps)


def _decoder(graph: fx.Graph, modules: dict[str, nn.Module], final: bool = True) -> list[fx.Node]:
    """Each decoder block's output. A block is the largest module around an upsampling op (a broadcast of a
    global descriptor included: ASPP) that holds no other upsampling op and no downsampling one (a leaf module
    that upsamples is a block itself); its output is a site unless it is the model's output or reaches it
    through no weighted module (the logits, only resized). ``final``: see :func:`_is_logits`."""
    nodes = [n for n in graph.nodes if n.op not in ("placeholder", "output", "get_attr")]
    members = _scope_members(nodes)
    exits = _scope_exits(members)
    ups = [n for n in nodes if n.meta.get(DATA, False) and _rescales(n, up=True)]
    downs = {path for path, inside in members.items() if any(_rescales(m, up=False) for m in inside)}
    counts = {path: sum(1 for u in ups if u in inside) for path, inside in members.items()}
    found: list[fx.Node] = []
    for u in ups:
        if u.op == "call_module" and next(modules[u.target].children(), None) is not None:
            found.append(u)
            continue
        scopes = [p for p in _stack(u) if p in members and u in members[p]]
        block = None
        for path in reversed(scopes):
            if block is not None and (counts[path] != 1 or path in downs):
                break
            block = path
        end = exits.get(block) if block is not None else None
        if end is not None and _is_nchw(end):
            found.append(end)
    order = {n: i for i, n in enumerate(graph.nodes)}
    return sorted((n for n in dict.fromkeys(found) if not _is_logits(n, modules, final)), key=order.__getitem__)


def _encoder(graph: fx.Graph, modules: dict[str, nn.Module], skips: list[fx.Node],
             decoders: list[fx.Node]) -> list[fx.Node]:
    """The encoder's features that the decoder takes: the inputs of each skip connection (``skips``, from
    :func:`_skip`) whose own path holds no upsampling op, and the feature-map inputs of a leaf decoder block
    (``decoders``, from :func:`_decoder`: MONAI's ``UpCat``) at its output's size."""
    order, index, ancestors = _ancestry(graph)
    ups = sum(1 << index[n] for n in order if _upsamples(n))
    found: list[fx.Node] = []
    for n in skips:
        found += [p for p in _channel_cat(n) if p in index and not (ancestors[p] | (1 << index[p])) & ups]
    for n in decoders:
        if n.op == "call_module" and next(modules[n.target].children(), None) is not None:
            found += [a for a in n.all_input_nodes if _spatial(a) == _spatial(n) and a.op != "placeholder"]
    position = {n: i for i, n in enumerate(graph.nodes)}
    return sorted(dict.fromkeys(found), key=position.__getitem__)


# ------------------------------------------------------------------ selection
class SiteGraph:
    """An analysed graph (shapes propagated) as the selectors see it: the stable name of each node,
    the modules its calls run, and the sites of each rule and every candidate, each computed once."""

    def __init__(self, graph: fx.Graph, modules: dict[str, nn.Module], prefix: str = "",
                 final: bool | None = None) -> None:
        self.graph, self.modules = graph, modules
        # the graph's output is the model's (by default the model's own graph; a part's only where it is the head)
        self.final = not prefix if final is None else final
        self.names = site_names(graph, prefix)
        self._rules: dict[str, list[Site]] = {}
        self._candidates: list[Site] | None = None

    def site(self, n: fx.Node, rule: str, feeds: fx.Node | None = None) -> Site:
        primary, aliases = self.names[n]
        producer = type(self.modules[n.target]).__name__ if n.op == "call_module" else _op_name(n)
        shape = tuple(shape_of(n))
        return Site(primary, n.name, rule, shape[1], shape, producer, feeds.name if feeds is not None else None,
                    aliases)

    def default_rule(self) -> tuple[str, ...]:
        """``where=None``: ``"residual"`` when the graph has residual adds, with ``"skip"`` and ``"decoder"``
        where it has skip connections too (a segmentation network on a residual encoder); else, in an
        encoder-decoder network built of concatenations, ``"encoder"``, ``"skip"`` and ``"decoder"``; else
        ``"stage"``."""
        decoder = tuple(r for r in ("skip", "decoder") if self.rule_sites(r))
        if self.rule_sites("residual"):
            # a residual encoder; with skip connections, the decoder of a segmentation network too (upsampling
            # alone is no decoder: HRNet's fusion branches upsample)
            return ("residual", *decoder) if "skip" in decoder else ("residual",)
        if decoder:
            return ("encoder", *decoder)
        return ("stage",)

    def rule_sites(self, rule: str) -> list[Site]:
        """The sites of a site rule (one of ``SITE_RULES``), in graph order; none on the model's logits (a head's
        output: :func:`_is_head`) but for ``"conv"``, every conv by name."""
        if rule not in self._rules:
            if rule == "residual":
                found = [self.site(b, "residual", add) for b, add in _residual(self.graph)]
            elif rule == "conv":
                found = [self.site(n, "conv") for n in _conv(self.graph, self.modules)]
            elif rule == "decoder":
                found = [self.site(n, "decoder") for n in _decoder(self.graph, self.modules, self.final)]
            elif rule == "skip":
                found = [self.site(n, "skip") for n in _skip(self.graph)]
            elif rule == "encoder":  # from the skip and decoder sites, found once
                node = {n.name: n for n in self.graph.nodes}
                skips, decoders = ([node[s.node_name] for s in self.rule_sites(r)] for r in ("skip", "decoder"))
                found = [self.site(n, "encoder") for n in _encoder(self.graph, self.modules, skips, decoders)]
            else:
                found = [self.site(n, "stage") for n in _stage(self.graph)]
            if rule != "conv" and self.final:
                node = {n.name: n for n in self.graph.nodes}
                found = [s for s in found if not _is_head(node[s.node_name], self.modules)]
            self._rules[rule] = found
        return self._rules[rule]

    def candidates(self) -> list[Site]:
        """Every feature map of the graph as a site selected by a match (glob, regex or predicate)."""
        if self._candidates is None:
            self._candidates = [self.site(n, "match") for n in self.graph.nodes if n in self.names and _is_nchw(n)]
        return self._candidates

    def module_of(self, n: fx.Node) -> nn.Module | None:
        return self.modules.get(n.target) if n.op == "call_module" else None

    def in_graph_order(self, sites: Iterable[Site]) -> list[Site]:
        order = {n.name: i for i, n in enumerate(self.graph.nodes)}
        return sorted(sites, key=lambda s: order[s.node_name])


def _matches(site: Site, test: Callable[[str], bool]) -> bool:
    return any(test(name) for name in (site.name, *site.aliases))


def _glob(pattern: str) -> Callable[[str], bool]:
    return lambda name: fnmatch.fnmatchcase(name, pattern)


def _compile(pattern: str, where: Any) -> re.Pattern:
    try:
        return re.compile(pattern)
    except re.error as exc:
        raise SpecError("where", where, f"is not a valid regular expression ({exc})") from exc


def _regex(pattern: str, where: Any) -> Callable[[str], bool]:
    compiled = _compile(pattern, where)
    return lambda name: compiled.fullmatch(name) is not None


@dataclass(frozen=True)
class RuleSelector:
    """A site rule's sites (``rule=None``: the graph's default rule), those whose names match ``glob`` if given."""

    rule: str | None
    glob: str | None = None

    def pick(self, graph: SiteGraph) -> list[Site]:
        rules = (self.rule,) if self.rule else graph.default_rule()
        sites = graph.in_graph_order({s.node_name: s for r in rules for s in graph.rule_sites(r)}.values())
        return sites if self.glob is None else [s for s in sites if _matches(s, _glob(self.glob))]


@dataclass(frozen=True)
class NameSelector:
    """Every candidate whose name (or a container alias) matches: the compiled ``regex`` when given
    (``"re:<regex>"``), else the fnmatch glob ``pattern``."""

    pattern: str
    regex: re.Pattern | None = None

    def test(self, name: str) -> bool:
        if self.regex is not None:
            return self.regex.fullmatch(name) is not None
        return fnmatch.fnmatchcase(name, self.pattern)

    def pick(self, graph: SiteGraph) -> list[Site]:
        return [s for s in graph.candidates() if _matches(s, self.test)]


@dataclass(frozen=True)
class PredicateSelector:
    """Every candidate for whose node ``predicate(node, module)`` is true (module: the called submodule or None)."""

    predicate: Callable[[fx.Node, Any], bool]

    def pick(self, graph: SiteGraph) -> list[Site]:
        by_node = {s.node_name: s for s in graph.candidates()}
        return [by_node[n.name] for n in graph.graph.nodes
                if n.name in by_node and self.predicate(n, graph.module_of(n))]


Selector = RuleSelector | NameSelector | PredicateSelector


@functools.lru_cache(maxsize=256)
def _parse_text(item: str | None) -> Selector:
    if item is None:
        return RuleSelector(None)
    head, _, tail = item.partition(":")
    if item in SITE_RULES:
        return RuleSelector(item)
    if head in SITE_RULES and tail:
        return RuleSelector(head, tail)
    if item.startswith("re:"):
        return NameSelector(item, _compile(item[3:], item))
    return NameSelector(item)


def parse_selector(item: Any) -> Selector:
    """One ``where`` item as a selector (strings and None parsed once, then cached); raises ``SpecError``
    for an invalid regex or something that is no selector."""
    if item is None or isinstance(item, str):
        return _parse_text(item)
    if callable(item):
        return PredicateSelector(item)
    raise SpecError("where", item, "is not a selector", (*(repr(rule) for rule in SITE_RULES), "'re:<regex>'",
                    "a glob", "a callable (node, module) -> bool", "a list of these"))


def where_items(where: Where) -> list[Any]:
    """The items of ``where``: its elements for a list or tuple, else ``where`` itself."""
    return list(where) if isinstance(where, (list, tuple)) else [where]


def parse_where(where: Where) -> tuple[Selector, ...]:
    """Every item of ``where`` as a selector, in order."""
    return tuple(parse_selector(item) for item in where_items(where))


_RULE_FINDS = {
    "residual": "no residual add of two same-shape feature maps",
    "conv": "no conv",
    "stage": "no stage output",
    "decoder": "no decoder block (a module around an upsampling op, none inside a leaf)",
    "skip": "no skip connection (a channel concatenation of an upsampled path and a skip, none inside a leaf)",
    "encoder": "no encoder feature that a skip connection or a decoder block takes",
}


def no_match_error(item: Any, model_name: str, note: str = "") -> SpecError | ModelError:
    """The error for a ``where`` item that selects nothing in ``model_name``: a ``SpecError`` with a did-you-mean
    for a likely misspelt rule name (``"decodr"``), else a ``ModelError`` pointing to ``list_sites``."""
    hint = "graph_passes.list_sites(model, spec, where='re:.*') lists every candidate with its name"
    selector = parse_selector(item)
    if isinstance(selector, RuleSelector) and selector.rule is not None:
        found = f"no site named {selector.glob!r}" if selector.glob else _RULE_FINDS[selector.rule]
        return ModelError("where", item, f"site rule {selector.rule!r} finds {found} in {model_name}{note}",
                          hint=hint)
    head = item.partition(":")[0] if isinstance(item, str) else ""
    close = difflib.get_close_matches(head, SITE_RULES, n=1, cutoff=0.6) if head.isidentifier() else []
    if close:
        return SpecError("where", item, f"is no site rule and matches no site name in {model_name}{note}", SITE_RULES,
                         hint=f"did you mean {close[0]!r}?")
    return ModelError("where", item, f"matches no site in {model_name}{note}", hint=hint)


def find_sites(
    graph: fx.Graph,
    modules: dict[str, nn.Module],
    where: Where,
    *,
    model_name: str = "model",
    prefix: str = "",
    unmatched: list[Any] | None = None,
    final: bool | None = None,
) -> list[Site]:
    """The sites ``where`` selects in ``graph`` (shapes already propagated), in graph order.

    ``prefix``: the qualified name of the traced module within the model (site names are the
    model's). A ``where`` item that matches nothing raises ``ModelError``, or is appended to
    ``unmatched`` when a list is given (the caller looks at several graphs). ``final``: the graph's output is
    the model's (default: when ``prefix`` is empty; a part's that is the model's head), so that no site rule
    selects the logits."""
    items = where_items(where)
    if not items:
        raise SpecError("where", where, "selects nothing", hint="use None for the default placement")
    analysed = SiteGraph(graph, modules, prefix, final)
    chosen: dict[str, Site] = {}
    for item in items:  # each item parsed as it is reached: the first bad one raises
        found = parse_selector(item).pick(analysed)
        if not found and unmatched is None:
            raise no_match_error(item, model_name)
        if not found:
            unmatched.append(item)
        for s in found:
            chosen.setdefault(s.node_name, s)
    return analysed.in_graph_order(chosen.values())
