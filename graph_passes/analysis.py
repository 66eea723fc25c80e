"""Find where attention can go in a model, read-only: trace, propagate shapes, select sites.

The model's own forward is traced first. Where it does not trace, or takes no input that can be
guessed (a detector's forward takes a list of images and targets), the analysis descends into its
submodules and takes the largest ones that do (a detector's backbone), recording the parts left as
they are. Site names are always the whole model's qualified names, whatever part they were found in.
With ``example_inputs``, each such part is propagated on the arguments it got in one meta-device run of
the model (a decoder's list of features); without them, on those of one run of the whole model on a guessed
meta input, else on an input guessed for the part. Where the default placement (``where=None``) finds nothing in
a part that has feature maps, that part alone falls back to its conv blocks (and the modules made leaves below).

Tracing recovers: fx records one branch of a forward that branches on sizes, values or types (MONAI's
``UpCat`` tests ``torch.jit.isinstance(x_e, torch.Tensor)``, False for a proxy); where shape propagation
then fails inside such a module, the part is traced again with it as a leaf, and the module is listed
in ``report(model).untraced`` with the reason. Guessing an input is bounded: ``shapes.PROBE_BYTES`` for a
run on real tensors, ``PROBE_S`` seconds in all; past either, a ``ProbeBudget`` error asks for
``example_inputs``.
"""

from __future__ import annotations

import inspect
import os
import re
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.fx as fx
from torch import nn

from dynattn._passes_api import ModelError, leaf_modules

from .shapes import (
    DEFAULT_SIZES_BY_SPATIAL_DIMS,
    PROBE_BYTES,
    NodeFailure,
    NoInputGuess,
    ProbeBudget,
    Stop,
    capture_calls,
    conv_spatial_dims,
    example_for,
    guess_input_sizes,
    has_conv,
    is_conv_module,
    is_feature_map,
    module_stack,
    propagate,
    values_may_mend,
)
from .sites import Site, Where, find_sites, join_path, no_match_error, where_items
from .trace import LeafSpec, Traced, TraceFailure, trace_model, untouched

__all__ = ["Analysis", "Part", "analyse"]


@dataclass
class Part:
    """One traced part of the model (the model itself, path ``""``) and its sites per mode."""

    path: str
    module: nn.Module
    traced: Traced
    sites: dict[str, list[Site]]
    graph_modules: dict[str, fx.GraphModule]
    #: (path within the part, why) of submodules made leaves because shape propagation failed inside them.
    recovered: list[tuple[str, str]] = field(default_factory=list)
    #: The part's output is the model's (a segmentation head under a root that does not trace).
    final: bool = False


@dataclass
class Analysis:
    parts: list[Part]
    #: (qualified name, why) of the largest parts that were not traced and hold no traced part.
    untraced: list[tuple[str, str]] = field(default_factory=list)
    #: Why the model's own forward was not traced (None: it was).
    root_failure: Exception | None = None

    def sites(self) -> list[Site]:
        """Every site, each name once (train and eval graphs), in graph order."""
        seen: dict[str, Site] = {}
        for part in self.parts:
            for mode_sites in part.sites.values():
                for site in mode_sites:
                    seen.setdefault(site.name, site)
        return list(seen.values())

    @property
    def leaves(self) -> tuple[str, ...]:
        out: list[str] = []
        for part in self.parts:
            for leaf in (*part.traced.leaf_names, *part.traced.auto_leaves):
                name = join_path(part.path, leaf)
                if name not in out:
                    out.append(name)
        return tuple(out)


def _propagate_part(module: nn.Module, traced: Traced, inputs: tuple | None, guessed: bool = False
                    ) -> dict[str, fx.GraphModule]:
    """Shapes on every graph of ``traced``: with ``inputs``, else with the first guessed input that runs;
    ``guessed``: ``inputs`` were captured from a run on a guessed input (the probe budget applies)."""
    probes = {}
    for mode, graph in traced.graphs.items():
        was = module.training
        module.train(mode == "train")
        try:
            probe = fx.GraphModule(module, graph)
            _propagate_probe(probe, module, inputs, guessed)
        finally:
            module.train(was)
        probes[mode] = probe
    return probes


def _propagate_probe(probe: fx.GraphModule, module: nn.Module, inputs: tuple | None, guessed: bool = False) -> None:
    """Shapes on ``probe``: with ``inputs``, else with each guessed input in turn until one runs (Inception
    takes 299 x 299, not 224), within the probe budget (``PROBE_S`` seconds in all, ``PROBE_BYTES`` a run
    on real tensors); the last guess's failure is raised."""
    stop = _stop_at_branch(probe, module)
    if inputs is not None:
        propagate(probe, inputs, max_bytes=PROBE_BYTES if guessed else None, stop=stop)
        return
    shapes = guess_input_sizes(probe, module)
    start = time.monotonic()
    for i, shape in enumerate(shapes):
        try:
            propagate(probe, example_for(probe, shape), max_bytes=PROBE_BYTES, stop=stop)
            return
        except ModelError:
            if i == len(shapes) - 1:
                raise
        if time.monotonic() - start > PROBE_S:
            raise ProbeBudget("example_inputs", None, f"guessing an input for {type(module).__name__} took over "
                              f"{PROBE_S:g} s (the probe budget)", hint="pass example_inputs=(tensor,)")


def _stop_at_branch(probe: fx.GraphModule, module: nn.Module) -> Stop:
    """When propagation on ``probe`` may stop short: a failure on fake tensors for shapes alone (real values cannot
    mend it) inside a module whose forward branches (``_try_part`` makes it a leaf: fx recorded the wrong branch),
    before the run on real zeros (seconds each on a full-size guess); at a later guessed size, a failure on meta
    tensors at a node where that happened, before fake tensors too (converting the state costs ~0.1 s a run)."""
    shape_failures: set[str] = set()

    def stop(how: str, failure: NodeFailure) -> bool:
        if how == "meta tensors":
            return failure.node.name in shape_failures
        if values_may_mend(probe, failure) or _leaf_around(module, failure.node, ()) is None:
            return False
        shape_failures.add(failure.node.name)
        return True

    return stop


#: Seconds that guessing one part's input may take (``DYNATTN_PROBE_S``, default 20).
PROBE_S = float(os.environ.get("DYNATTN_PROBE_S", "20"))
#: How many submodules shape propagation may make leaves in one part.
_MAX_RECOVERIES = 32


def _try_part(path: str, module: nn.Module, inputs: tuple | None, leaves: Sequence[LeafSpec], strict: bool = True,
              guessed: bool = False) -> Part | tuple[str, Exception]:
    """Trace and propagate ``module``; where propagation fails inside a submodule whose forward branches
    (fx followed one branch for all inputs), retry with that submodule as a leaf."""
    recovered: list[tuple[str, str]] = []
    for _ in range(_MAX_RECOVERIES):
        try:
            traced = trace_model(module, [*_relative_leaves(leaves, path), *(p for p, _ in recovered)])
            probes = _propagate_part(module, traced, inputs, guessed)
        except (TraceFailure, NoInputGuess) as exc:
            return (path, exc)
        except ModelError as exc:
            leaf = _recovery_leaf(module, exc, [p for p, _ in recovered])
            if leaf is not None:
                recovered.append((leaf, f"its forward branches on sizes, values or types; traced as one call "
                                  f"(shape propagation failed at node {exc.node.name!r})"))
                continue
            if inputs is not None and strict:
                raise
            return (path, exc)
        return Part(path, module, traced, {}, probes, recovered)
    return (path, ModelError("model", type(module).__name__, f"shape propagation still fails after making "
                             f"{len(recovered)} submodules leaves", hint="pass example_inputs= and leaf_modules="))


def _branches(module: nn.Module) -> bool:
    """Whether ``module``'s own forward has control flow (``if``, ``while``, a ternary) or type tests."""
    try:
        source = inspect.getsource(type(module).forward)
    except (OSError, TypeError):
        return True  # no source to read: assume it may
    return re.search(r"\b(if|while|isinstance)\b", source) is not None


def _recovery_leaf(module: nn.Module, exc: ModelError, done: list[str]) -> str | None:
    """The innermost module around the failing node whose forward branches, not yet a leaf; None if none."""
    node = getattr(exc, "node", None)
    return None if node is None else _leaf_around(module, node, done)


def _leaf_around(module: nn.Module, node: fx.Node, done: Sequence[str]) -> str | None:
    """The innermost module (within ``module``) around ``node`` whose forward branches, not in ``done``."""
    stack = module_stack(node)
    if node.op == "call_module":
        stack = stack[:-1]  # the called module is a leaf already
    for path in reversed(stack):
        if path not in done and _branches(module.get_submodule(path)):
            return path
    return None


def _relative_leaves(leaves: Sequence[LeafSpec], path: str) -> list[LeafSpec]:
    if not path:
        return list(leaves)
    out: list[LeafSpec] = []
    for leaf in leaves:
        if not isinstance(leaf, str):
            out.append(leaf)
        elif leaf.startswith(path + "."):
            out.append(leaf[len(path) + 1:])
        elif "*" in leaf or "?" in leaf or "[" in leaf:
            out.append(leaf)  # a glob may match inside the part as well
    return out


def _descend(path: str, module: nn.Module, leaves: Sequence[LeafSpec], found: list[Part],
             untraced: list[tuple[str, str]], calls: dict[str, tuple], guessed: bool) -> None:
    """Try each child of ``module`` (on its arguments in ``calls``, captured from a run of the model on the
    caller's inputs or, ``guessed``, on a guessed one; else on an input guessed for the child itself);
    recurse into a child that does not trace."""
    for name, child in module.named_children():
        child_path = join_path(path, name)
        if isinstance(child, leaf_modules()) or not has_conv(child) or next(child.children(), None) is None:
            continue  # a site needs a block with an inside: a lone conv holds none
        result = _try_part(child_path, child, calls.get(child_path), leaves, strict=False, guessed=guessed)
        if not isinstance(result, Part) and guessed and child_path in calls:  # the guess did not suit it
            result = _try_part(child_path, child, None, leaves, strict=False)
        if isinstance(result, Part):
            found.append(result)
            continue
        before = len(found)
        nested: list[tuple[str, str]] = []
        _descend(child_path, child, leaves, found, nested, calls, guessed)
        if len(found) == before:  # nothing inside it traced either: it is left as it is, as a whole
            untraced.append((child_path, _reason(result[1])))
        else:
            untraced.extend(nested)


def _reason(exc: Exception) -> str:
    text = str(exc).split(" (", 1)[0] if isinstance(exc, ModelError) else f"{type(exc).__name__}: {exc}"
    return text if len(text) <= 160 else text[:157] + "..."


def analyse(model: nn.Module, where: Where, inputs: tuple | None, leaves: Iterable[LeafSpec]) -> Analysis:
    """Trace ``model`` (or its largest parts that trace) and select the sites; changes nothing."""
    leaves = list(leaves)
    calls: dict[str, tuple] | None = None  # the children's calls, where the root does not trace
    with untouched(model):
        result = _try_part("", model, inputs, leaves)
        if isinstance(result, Part):
            analysis = Analysis([result])
        else:
            if (inputs is not None and not isinstance(result[1], TraceFailure)) or not has_conv(model):
                _raise_root(model, result[1], inputs)
            analysis = Analysis([], [("", _reason(result[1]))], root_failure=result[1])
            calls, finals = capture_calls(model, inputs) if inputs is not None else _guessed_calls(model)
            _descend("", model, leaves, analysis.parts, analysis.untraced, calls, inputs is None)
            for part in analysis.parts:
                part.final = part.path in finals
            if not analysis.parts:
                raise result[1]
        analysis.untraced.extend((join_path(p.path, leaf), why) for p in analysis.parts for leaf, why in p.recovered)
        unmatched = [u for part in analysis.parts for u in _select(model, part, where)]
        if where is None:
            _fall_back(model, analysis, calls)
            graphs = sum(len(part.traced.graphs) for part in analysis.parts)
            unmatched = [] if analysis.sites() else [None] * graphs
    _check_matched(model, where, analysis, unmatched)
    return analysis


def _fall_back(model: nn.Module, analysis: Analysis, calls: dict[str, tuple] | None) -> None:
    """Each part where the default placement finds nothing falls back on its own (:func:`_fallback_where`); the
    others keep their sites. Not a head after other parts (its output is the model's: the logits), nor, in a
    root that does not trace, a part called more than once per forward (a detector's RPN head, shared by the
    pyramid's levels); where the run that captures the children's calls failed, a part falls back only when no
    part has sites."""
    with_sites = any(any(part.sites.values()) for part in analysis.parts)
    several = len(analysis.parts) > 1
    for part in analysis.parts:
        if any(part.sites.values()) or not _has_feature_map(part) or (part.final and several):
            continue
        if several and calls is not None and (part.path not in calls if calls else with_sites):
            continue
        _select(model, part, _fallback_where(part))


def _guessed_calls(model: nn.Module) -> tuple[dict[str, tuple], set[str]]:
    """The arguments of each submodule called once, captured from one run of the whole model on a guessed meta
    input (batch 2, its first conv's channels, each of ``DEFAULT_SIZES_BY_SPATIAL_DIMS`` in turn until one runs):
    a decoder that takes a list of features gets the list, which no guess for the decoder alone could give.
    Meta tensors cost nothing; empty when no size runs within ``PROBE_S`` seconds. See ``capture_calls``."""
    conv = next((m for m in model.modules() if is_conv_module(m)), None)
    spatial_dims = conv_spatial_dims(conv)
    if conv is None or spatial_dims is None or not isinstance(getattr(conv, "in_channels", None), int):
        return {}, set()
    param = next(iter(model.parameters()), None)
    dtype = param.dtype if param is not None and param.is_floating_point() else torch.get_default_dtype()
    start = time.monotonic()
    for size in DEFAULT_SIZES_BY_SPATIAL_DIMS[spatial_dims]:
        calls = capture_calls(model, (torch.empty((2, conv.in_channels, *size), dtype=dtype, device="meta"),))
        if calls[0] or time.monotonic() - start > PROBE_S:
            return calls
    return {}, set()


def _select(model: nn.Module, part: Part, where: Where) -> list[Any]:
    """Find the sites of ``part`` (in place); the ``where`` items that matched nothing, once per graph."""
    unmatched: list[Any] = []
    modules = dict(part.module.named_modules())
    for mode, graph in part.traced.graphs.items():
        part.sites[mode] = find_sites(graph, modules, where, model_name=type(model).__name__, prefix=part.path,
                                      unmatched=unmatched, final=True if part.final else None)
    return unmatched


def _has_feature_map(part: Part) -> bool:
    return any(is_feature_map(n) for g in part.traced.graphs.values() for n in g.nodes)


def _fallback_where(part: Part) -> list[str]:
    """Where the default placement finds nothing in a part with feature maps (a U-Net of concatenations has no
    residual adds, and its skips cross every resolution change; one child of a root that does not trace): each
    conv block, and the output of each submodule made a leaf because its forward branches (a U-Net's decoder
    block). Only that part falls back: the others keep the default's sites."""
    return ["conv", *(join_path(part.path, leaf) for leaf, _ in part.recovered)]


def _raise_root(model: nn.Module, exc: Exception, inputs: tuple | None) -> None:
    """The model's own forward failed where descending cannot help: say why in one error."""
    if not has_conv(model):
        raise ModelError("model", type(model).__name__, "has no 4-D feature maps (no nn.Conv1d/2d/3d or registered "
                         "conv module), so there is nowhere to put attention",
                         hint="it scales the feature maps of conv nets") from exc
    raise exc


def _check_matched(model: nn.Module, where: Where, analysis: Analysis, unmatched: list[Any]) -> None:
    """A ``where`` item that matched nothing in every traced part is an error; so is no 4-D map at all."""
    items = where_items(where)
    counts = {id(item): sum(1 for u in unmatched if u is item) for item in items}
    graphs = sum(len(part.traced.graphs) for part in analysis.parts)
    if analysis.root_failure is not None and all(counts[id(item)] >= graphs for item in items) and not any(
            _has_feature_map(part) for part in analysis.parts):
        raise analysis.root_failure  # no feature map in the parts that trace: the model's own failure explains it
    for item in items:
        if counts[id(item)] >= graphs:
            if item is None:
                raise ModelError("model", type(model).__name__, "has no 4-D (N, C, H, W) feature map (nor a 1-D or "
                                 "3-D one of a Conv1d / Conv3d net)" + _parts_note(analysis),
                                 hint="attention scales the feature maps of conv nets")
            raise no_match_error(item, type(model).__name__, _parts_note(analysis))


def _parts_note(analysis: Analysis) -> str:
    if analysis.parts and analysis.parts[0].path == "":
        return ""
    note = ", ".join(p.path for p in analysis.parts)
    return f" (traced: {note if len(note) < 60 else note[:57] + '...'})"
