"""Find where attention can go in a model, read-only: trace, propagate shapes, select sites.

The model's own forward is traced first. Where it does not trace, or takes no input that can be
guessed (a detector's forward takes a list of images and targets), the analysis descends into its
submodules and takes the largest ones that do (a detector's backbone), recording the parts left as
they are. Site names are always the whole model's qualified names, whatever part they were found in.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch.fx as fx
from torch import nn

from dynattn._passes_api import ModelError, leaf_modules

from .shapes import NoInputGuess, example_for, guess_input_sizes, has_conv, propagate
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


def _propagate_part(module: nn.Module, traced: Traced, inputs: tuple | None) -> dict[str, fx.GraphModule]:
    """Shapes on every graph of ``traced``: with ``inputs``, else with the first guessed input that runs."""
    probes = {}
    for mode, graph in traced.graphs.items():
        was = module.training
        module.train(mode == "train")
        try:
            probe = fx.GraphModule(module, graph)
            _propagate_probe(probe, module, inputs)
        finally:
            module.train(was)
        probes[mode] = probe
    return probes


def _propagate_probe(probe: fx.GraphModule, module: nn.Module, inputs: tuple | None) -> None:
    """Shapes on ``probe``: with ``inputs``, else with each guessed input in turn until one runs (Inception
    takes 299 x 299, not 224); the last guess's failure is raised."""
    if inputs is not None:
        propagate(probe, inputs)
        return
    shapes = guess_input_sizes(probe, module)
    for i, shape in enumerate(shapes):
        try:
            propagate(probe, example_for(probe, shape))
            return
        except ModelError:
            if i == len(shapes) - 1:
                raise


def _try_part(path: str, module: nn.Module, inputs: tuple | None, leaves: Sequence[LeafSpec]
              ) -> Part | tuple[str, Exception]:
    try:
        traced = trace_model(module, _relative_leaves(leaves, path))
        probes = _propagate_part(module, traced, inputs)
    except (TraceFailure, NoInputGuess) as exc:
        return (path, exc)
    except ModelError as exc:
        if inputs is not None:
            raise
        return (path, exc)
    return Part(path, module, traced, {}, probes)


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
             untraced: list[tuple[str, str]]) -> None:
    """Try each child of ``module``; recurse into a child that does not trace."""
    for name, child in module.named_children():
        child_path = join_path(path, name)
        if isinstance(child, leaf_modules()) or not has_conv(child) or next(child.children(), None) is None:
            continue  # a site needs a block with an inside: a lone conv holds none
        result = _try_part(child_path, child, None, leaves)
        if isinstance(result, Part):
            found.append(result)
            continue
        before = len(found)
        nested: list[tuple[str, str]] = []
        _descend(child_path, child, leaves, found, nested)
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
    with untouched(model):
        result = _try_part("", model, inputs, leaves)
        if isinstance(result, Part):
            analysis = Analysis([result])
        else:
            if inputs is not None or not has_conv(model):
                _raise_root(model, result[1], inputs)
            analysis = Analysis([], [("", _reason(result[1]))], root_failure=result[1])
            _descend("", model, leaves, analysis.parts, analysis.untraced)
            if not analysis.parts:
                raise result[1]
        unmatched: list[Any] = []
        for part in analysis.parts:
            modules = dict(part.module.named_modules())
            for mode, graph in part.traced.graphs.items():
                part.sites[mode] = find_sites(graph, modules, where, model_name=type(model).__name__,
                                              prefix=part.path, unmatched=unmatched)
    _check_matched(model, where, analysis, unmatched)
    return analysis


def _raise_root(model: nn.Module, exc: Exception, inputs: tuple | None) -> None:
    """The model's own forward failed where descending cannot help: say why in one error."""
    if not has_conv(model):
        raise ModelError("model", type(model).__name__, "has no 4-D feature maps (no nn.Conv1d/2d/3d or registered "
                         "conv module), so there is nowhere to put attention",
                         hint="attention here scales the (B, C, L), (B, C, H, W) or (B, C, D, H, W) feature maps "
                         "of convolutional networks") from exc
    raise exc


def _check_matched(model: nn.Module, where: Where, analysis: Analysis, unmatched: list[Any]) -> None:
    """A ``where`` item that matched nothing in every traced part is an error; so is no 4-D map at all."""
    items = where_items(where)
    counts = {id(item): sum(1 for u in unmatched if u is item) for item in items}
    graphs = sum(len(part.traced.graphs) for part in analysis.parts)
    if analysis.root_failure is not None and all(counts[id(item)] >= graphs for item in items):
        raise analysis.root_failure  # nothing found in the parts that trace: the model's own failure explains it
    for item in items:
        if counts[id(item)] >= graphs:
            if item is None:
                raise ModelError("model", type(model).__name__, "has no 4-D (N, C, H, W) feature map (nor a 1-D or "
                                 "3-D one of a Conv1d / Conv3d net) where attention can go" + _parts_note(analysis),
                                 hint="attention here scales the feature maps of convolutional networks")
            raise no_match_error(item, type(model).__name__, _parts_note(analysis))


def _parts_note(analysis: Analysis) -> str:
    if analysis.parts and analysis.parts[0].path == "":
        return ""
    return " (traced: " + ", ".join(p.path for p in analysis.parts) + ")"
