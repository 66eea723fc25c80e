"""``insert_attention`` and ``list_sites``: put dynattn modules into an existing model.

Feature targets: the model (or, where its own forward does not trace, its largest parts that do)
is traced, shapes are propagated on meta tensors and sites are selected (``analysis.py``). Then
only the blocks that hold sites are rewritten (``owners.py``, ``rewrite.py``): each such block
gets one built module per site, registered on it under a readable name (``layer1.0.bn3_cbam``),
and a forward generated from its own graph with those modules called. The model, and every block,
keeps its class, methods and attributes; every original state_dict key stays as it was. Several
specs chain at each site in the order given.

Kernel targets: the selected plain ``nn.Conv2d``s are replaced by upcycled ``DynamicConv2d``s
(``convert.py``).

Nothing is changed, and the caller's model is never touched unless ``inplace=True``, until
every argument has been checked and every site found.
"""

from __future__ import annotations

import copy
import re
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.fx as fx
from torch import nn

from dynattn import AttnSpec, SpecError, build
from dynattn._passes_api import as_spec, compile_options

from .analysis import Analysis, analyse
from .convert import convert_convs, plan_conversion
from .owners import Anchor, anchors, insert_chains, local_name, owner_graphs
from .report import InsertionReport, SiteRecord, SkippedSite, attach
from .rewrite import rewrite_forward
from .sites import Site, Where, join_path
from .trace import LeafSpec

__all__ = ["insert_attention", "list_sites"]


def _as_specs(spec: Any) -> list[AttnSpec]:
    specs = [as_spec(s) for s in (spec if isinstance(spec, (list, tuple)) else [spec])]
    if not specs:
        raise SpecError("spec", spec, "needs at least one spec", hint="e.g. AttnSpec.cbam()")
    kinds = {s.kind for s in specs}
    if len(kinds) > 1:
        raise SpecError("spec", [s.name or s.target for s in specs],
                        "mixes kernel and feature targets in one pass",
                        hint="convert the convs first (a kernel spec), then insert feature attention")
    if specs[0].kind == "kernel" and len(specs) > 1:
        raise SpecError("spec", [s.name or s.target for s in specs], "one conv takes one kernel-target spec")
    return specs


def _check_model(model: Any) -> None:
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}; "
                        "pass the model object, e.g. torchvision.models.resnet18()")


def _check_inputs(example_inputs: Any) -> tuple[Any, ...] | None:
    if example_inputs is None:
        return None
    if isinstance(example_inputs, torch.Tensor):
        return (example_inputs,)
    if isinstance(example_inputs, (list, tuple)):
        return tuple(example_inputs)
    raise SpecError("example_inputs", type(example_inputs).__name__, "must be a tensor or a tuple of tensors",
                    hint="e.g. example_inputs=(torch.randn(2, 3, 224, 224),)")


def _check_bool(name: str, value: Any) -> None:
    if not isinstance(value, bool):
        raise SpecError(name, value, "must be a bool", (True, False))


def _param_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _tag(spec: AttnSpec) -> str:
    return re.sub(r"(?<=[a-z0-9])([A-Z])", r"_\1", spec.name).lower() if spec.name else "attn"


def _device_dtype(model: nn.Module) -> tuple[torch.device | None, torch.dtype | None]:
    for p in model.parameters():
        return p.device, p.dtype
    return None, None


def _build_all(specs: list[AttnSpec], placed: list[Anchor], strict: bool, device, dtype
               ) -> tuple[dict[str, list[nn.Module]], list[SkippedSite]]:
    """The modules of every site, built before anything is changed. A site the spec cannot be built
    for (too few channels for its reduction) raises with ``strict=True``, else is skipped with a warning."""
    built: dict[str, list[nn.Module]] = {}
    skipped: list[SkippedSite] = []
    for anchor in placed:
        site = anchor.site
        try:
            spatial_dims = len(site.shape) - 2  # each site's own: 1-D, 2-D or 3-D maps
            built[site.name] = [build(sp, site.channels, spatial_dims=spatial_dims, device=device, dtype=dtype)
                                for sp in specs]
        except SpecError as exc:
            reason = str(exc)
            if strict:
                raise SpecError(
                    "site", site.name, f"has {site.channels} channels, which the spec cannot be built for ({reason})",
                    hint=f"exclude it (where=[...] without {site.name!r}, e.g. a 're:' regex) or give the spec an "
                    "explicit width= or a smaller reduction",
                ) from exc
            skipped.append(SkippedSite(site.name, site.channels, reason))
    if skipped:
        names = ", ".join(f"{s.site} ({s.channels} channels)" for s in skipped[:6])
        warnings.warn(f"skipped {len(skipped)} site(s) the spec cannot be built for: {names}"
                      f"{' ...' if len(skipped) > 6 else ''}; see report(model).skipped, or pass strict=True to "
                      "raise instead", stacklevel=3)
    return built, skipped


def insert_attention(
    model: nn.Module,
    spec: AttnSpec | str | Sequence[AttnSpec | str],
    where: Where = None,
    example_inputs: Any = None,
    inplace: bool = False,
    *,
    leaf_modules: Iterable[LeafSpec] = (),
    strict: bool = False,
    compile: bool | dict = False,
) -> nn.Module:
    """Insert attention built from ``spec`` into ``model`` at the sites ``where`` selects.

    - ``spec``: an AttnSpec or preset name, or a list of them to chain at each site.
      A kernel-target spec replaces the selected ``nn.Conv2d``s with upcycled
      ``DynamicConv2d``s instead (``nn.Conv1d`` / ``nn.Conv3d`` with ``DynamicConv1d`` /
      ``DynamicConv3d`` in a 1-D / 3-D model; default ``where``: the spec's own placement,
      ``dynattn.conv_placement.conv_placement(spec)``; ``"conv"``: every plain conv).
    - ``where``: see :mod:`graph_passes.sites`; ``None`` is ``"residual"`` when the model
      has residual adds, else ``"stage"``.
    - ``example_inputs``: inputs for shape propagation (only their shapes, dtypes and
      devices matter); by default batch 2 at timm's ``pretrained_cfg`` input size, else
      224 x 224 (then 299, 384, 512), with the first conv's input channels, probed on meta
      tensors; a probe that needs real tensors is bounded (``graph_passes.shapes.PROBE_BYTES``,
      ``DYNATTN_PROBE_BYTES``), past which a ``ModelError`` asks for ``example_inputs``.
    - ``inplace``: reuse (and modify) the caller's modules instead of a deep copy.
    - ``leaf_modules``: qualified names (globs allowed) or classes not to trace into.
    - ``strict``: a site the spec cannot be built for (say 10 channels for a reduction of 16)
      raises ``SpecError`` naming it; by default it is skipped with a warning and listed in
      ``report(model).skipped``.
    - ``compile``: ``True`` or a dict of ``torch.compile`` arguments: compile the returned
      model in place (``nn.Module.compile``; graph breaks allowed, as the model's own code
      decides), so its state_dict keys stay as they are.

    Returns the model, of its own class (a deep copy unless ``inplace=True``), with only the
    blocks that hold sites rewritten; ``graph_passes.report(result)`` describes what was done.
    """
    specs, inputs, options = _check_arguments(model, spec, example_inputs, inplace, strict, compile)
    params_before = _param_count(model)
    if specs[0].kind == "kernel":
        chosen = plan_conversion(model, specs[0], where, inputs)  # check the selection on the caller's model first
        names = [name for name, _ in chosen]
        return _compile(convert_convs(model, specs[0], names, inplace, params_before, inputs), options)
    # analyse the caller's model read-only, and build every module: every error comes before any change
    analysis = analyse(model, where, inputs, leaf_modules)
    placed = anchors(analysis)
    built, skipped = _build_all(specs, placed, strict, *_device_dtype(model))
    work = model if inplace else copy.deepcopy(model)
    edits = _plan_edits(work, analysis, placed, built, specs)
    for edit in edits:  # only the owners' traced graphs change: a site not found again raises before any edit
        _insert_calls(edit)
    for edit in edits:
        _apply(edit)
    records = [record for edit in edits for record in _records(edit)]
    attach(work, _report(model, analysis, records, skipped, params_before, tuple(edit.owner for edit in edits)))
    return _compile(work, options)


def _check_arguments(model: Any, spec: Any, example_inputs: Any, inplace: Any, strict: Any, compile: Any
                     ) -> tuple[list[AttnSpec], tuple[Any, ...] | None, dict | None]:
    """(specs, example inputs, compile options), every argument checked in the order of the signature."""
    _check_model(model)
    specs = _as_specs(spec)
    inputs = _check_inputs(example_inputs)
    options = compile_options(compile)
    _check_bool("inplace", inplace)
    _check_bool("strict", strict)
    return specs, inputs, options


@dataclass
class _OwnerEdit:
    """The edit of one owner block: its traced forward, and for each of its anchors the chain of
    (attribute name, built module, spec) to call there."""

    owner: str
    block: nn.Module
    graphs: dict[str, fx.Graph]
    chains: list[tuple[Anchor, list[tuple[str, nn.Module, AttnSpec]]]]


def _plan_edits(work: nn.Module, analysis: Analysis, placed: list[Anchor], built: dict[str, list[nn.Module]],
                specs: list[AttnSpec]) -> list[_OwnerEdit]:
    """One edit per owner of a built site, each owner traced (in ``work``) before any is changed."""
    by_owner: dict[str, list[Anchor]] = {}
    for anchor in placed:
        if anchor.site.name in built:
            by_owner.setdefault(anchor.owner, []).append(anchor)
    edits = []
    for owner, group in by_owner.items():
        inline = sorted({p for a in group for p in a.inline})
        keep = [o for o in by_owner if o != owner] + list(analysis.leaves)
        block = work.get_submodule(owner)
        graphs = owner_graphs(work, owner, inline, dict(group[0].concrete), keep)
        edits.append(_OwnerEdit(owner, block, graphs, _name_chains(block, group, specs, built)))
    return edits


def _name_chains(block: nn.Module, group: list[Anchor], specs: list[AttnSpec], built: dict[str, list[nn.Module]]
                 ) -> list[tuple[Anchor, list[tuple[str, nn.Module, AttnSpec]]]]:
    """Each anchor's modules with the attribute names they get on ``block`` (``bn3_cbam``), unique there."""
    taken = {name for name, _ in block.named_children()} | set(vars(block))
    return [(anchor, [(local_name(anchor, _tag(sp), taken), module, sp)
                      for sp, module in zip(specs, built[anchor.site.name])]) for anchor in group]


def _records(edit: _OwnerEdit) -> list[SiteRecord]:
    return [SiteRecord(anchor.site.name, join_path(edit.owner, name), sp.name or "attention", anchor.site.channels,
                       sum(p.numel() for p in module.parameters()), anchor.site.rule)
            for anchor, chain in edit.chains for name, module, sp in chain]


def _insert_calls(edit: _OwnerEdit) -> None:
    """Call each chain's modules in the owner's traced graphs (the model itself is not changed)."""
    insert_chains(edit.graphs, edit.owner, [(anchor, [name for name, _, _ in chain]) for anchor, chain in edit.chains])


def _apply(edit: _OwnerEdit) -> None:
    """Register the owner's new modules and give it the forward of its edited graphs."""
    for _, chain in edit.chains:
        for name, module, _ in chain:
            edit.block.add_module(name, module)
    rewrite_forward(edit.block, edit.graphs)


def _report(model: nn.Module, analysis: Analysis, records: list[SiteRecord], skipped: list[SkippedSite],
            params_before: int, rewritten: tuple[str, ...]) -> InsertionReport:
    traced = tuple(p.path for p in analysis.parts if any(p.sites.values()))
    return InsertionReport(type(model).__name__, tuple(records), params_before, analysis.leaves, traced=traced,
                           untraced=tuple(analysis.untraced), skipped=tuple(skipped), rewritten=rewritten)


def _compile(model: nn.Module, options: dict | None) -> nn.Module:
    """Compile the whole model in place (graph breaks allowed, as the model's own code decides)."""
    if options is not None:
        model.compile(**{"fullgraph": False, **options})
    return model


def list_sites(
    model: nn.Module,
    spec: AttnSpec | str | Sequence[AttnSpec | str],
    where: Where = None,
    example_inputs: Any = None,
    *,
    leaf_modules: Iterable[LeafSpec] = (),
) -> list[Site]:
    """The sites ``insert_attention`` would use, in graph order; the model is not changed.

    For a kernel-target spec, the convs it would replace (``rule="conv"``). Where the model's
    own forward does not trace, the sites of its largest parts that do (as ``insert_attention``)."""
    _check_model(model)
    specs = _as_specs(spec)
    inputs = _check_inputs(example_inputs)
    if specs[0].kind == "kernel":
        return [Site(name, name, "conv", conv.out_channels, (conv.in_channels, conv.out_channels),
                     type(conv).__name__) for name, conv in plan_conversion(model, specs[0], where, inputs)]
    return analyse(model, where, inputs, leaf_modules).sites()
