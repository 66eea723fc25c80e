"""``insert_attention`` and ``list_sites``: put dynattn modules into an existing model.

Feature targets: the model is traced (see ``trace.py``), shapes are propagated on meta
tensors (``shapes.py``), sites are selected (``sites.py``), and one built module per site
is inserted after it, under a readable name next to the site's module
(``layer1.0.bn3_cbam``); its users are rewired, the graph linted and recompiled. Several
specs chain at each site in the order given. The result is a ``torch.fx.GraphModule`` (a
``DualGraphModule`` when the model's own forward differs between train and eval) that
keeps every state_dict key of the original.

Kernel targets: the selected plain ``nn.Conv2d``s are replaced by upcycled
``DynamicConv2d``s (``convert.py``); the model keeps its class.

Nothing is changed, and the caller's model is never touched unless ``inplace=True``, until
every argument has been checked and every site found.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterable, Sequence
from typing import Any

import torch
import torch.fx as fx
from torch import nn

from dynattn.compiler import apply_compile, as_spec, build_feature, check_compile
from dynattn.compiler.emit import copy_graph
from dynattn.errors import SpecError
from dynattn.spec import AttnSpec

from .convert import convert_convs, plan_conversion
from .dual import DualGraphModule, copy_path
from .report import InsertionReport, SiteRecord, attach
from .shapes import DEFAULT_SIZES, LAYOUT, SHAPE, default_example_inputs, propagate
from .sites import Site, Where, find_sites
from .trace import LeafSpec, trace_model, untouched

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


def _param_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _analyse(model: nn.Module, where: Where, example_inputs: tuple | None, leaf_modules: Iterable[LeafSpec]):
    """Trace ``model`` and find the sites in each of its graphs; changes nothing."""
    with untouched(model):
        return _analyse_unguarded(model, where, example_inputs, leaf_modules)


def _analyse_unguarded(model, where, example_inputs, leaf_modules):
    traced = trace_model(model, leaf_modules)
    sites: dict[str, list[Site]] = {}
    modules = dict(model.named_modules())
    for mode, graph in traced.graphs.items():
        was = model.training
        model.train(mode == "train")
        try:
            probe = fx.GraphModule(model, graph)
            if example_inputs is not None:
                propagate(probe, example_inputs)
            else:  # the default size, or the next plausible one the model accepts (Inception: 299)
                for i, size in enumerate(DEFAULT_SIZES):
                    try:
                        propagate(probe, default_example_inputs(probe, size))
                        break
                    except SpecError:
                        if i == len(DEFAULT_SIZES) - 1:
                            raise
        finally:
            model.train(was)
        sites[mode] = find_sites(graph, modules, where, model_name=type(model).__name__)
    return traced, sites


def _unique_sites(sites: dict[str, list[Site]]) -> list[Site]:
    """The sites of every graph (train and eval), each name once, in graph order."""
    seen: dict[str, Site] = {}
    for mode_sites in sites.values():
        for site in mode_sites:
            seen.setdefault(site.name, site)
    return list(seen.values())


def _module_path(site: Site, tag: str, taken: set[str]) -> str:
    name = min(site.aliases, key=len) if site.aliases else site.name
    parent, _, leaf = name.rpartition(".")
    leaf = re.sub(r"\W", "_", leaf.replace(":", "_"))
    base = f"{parent}.{leaf}_{tag}" if parent else f"{leaf}_{tag}"
    path, i = base, 1
    while path in taken:
        i += 1
        path = f"{base}_{i}"
    taken.add(path)
    return path


def _tag(spec: AttnSpec) -> str:
    return re.sub(r"(?<=[a-z0-9])([A-Z])", r"_\1", spec.name).lower() if spec.name else "attn"


def _device_dtype(model: nn.Module) -> tuple[torch.device | None, torch.dtype | None]:
    for p in model.parameters():
        return p.device, p.dtype
    return None, None


def _insert_into(graph: fx.Graph, sites: Sequence[Site], chains: dict[str, list[str]]) -> None:
    nodes = {n.name: n for n in graph.nodes}
    for site in sites:
        prev = nodes[site.node]
        for path in chains[site.name]:
            with graph.inserting_after(prev):
                new = graph.call_module(path, (prev,))
            new.meta[SHAPE], new.meta[LAYOUT] = prev.meta.get(SHAPE), prev.meta.get(LAYOUT)
            if site.feeds is not None and prev is nodes[site.node]:
                nodes[site.feeds].replace_input_with(prev, new)  # only the residual add
            else:
                prev.replace_all_uses_with(new, delete_user_cb=lambda user, new=new: user is not new)
            prev = new
    graph.lint()


def _restore_unused(gm: nn.Module, original: nn.Module) -> None:
    """Keep every original state_dict entry: re-attach what the traced graph did not use."""
    have = set(gm.state_dict(keep_vars=True))
    for key in original.state_dict(keep_vars=True):
        if key in have:
            continue
        path = key
        # the shallowest module on this key's path that the GraphModule lacks, else the tensor itself
        parts = key.split(".")
        for i in range(1, len(parts)):
            prefix = ".".join(parts[:i])
            try:
                gm.get_submodule(prefix)
            except AttributeError:
                path = prefix
                break
        copy_path(original, gm, path)
        have = set(gm.state_dict(keep_vars=True))


def insert_attention(
    model: nn.Module,
    spec: AttnSpec | str | Sequence[AttnSpec | str],
    where: Where = None,
    example_inputs: Any = None,
    inplace: bool = False,
    *,
    leaf_modules: Iterable[LeafSpec] = (),
    compile: bool | dict = False,
) -> nn.Module:
    """Insert attention built from ``spec`` into ``model`` at the sites ``where`` selects.

    - ``spec``: an AttnSpec or preset name, or a list of them to chain at each site.
      A kernel-target spec replaces the selected ``nn.Conv2d``s with upcycled
      ``DynamicConv2d``s instead (default ``where``: every plain conv).
    - ``where``: see :mod:`graph_passes.sites`; ``None`` is ``"residual"`` when the model
      has residual adds, else ``"stage"``.
    - ``example_inputs``: inputs for shape propagation (only their shapes, dtypes and
      devices matter); by default batch 2 at 224 x 224 with the first conv's channels.
    - ``inplace``: reuse (and modify) the caller's modules instead of a deep copy.
    - ``leaf_modules``: qualified names (globs allowed) or classes not to trace into.
    - ``compile``: ``True`` or a dict of ``torch.compile`` arguments: compile the returned
      model in place (``nn.Module.compile``; graph breaks allowed, as the model's own code
      decides), so its state_dict keys stay as they are.

    Returns the rewritten model; ``graph_passes.report(result)`` describes what was done.
    """
    _check_model(model)
    specs = _as_specs(spec)
    inputs = _check_inputs(example_inputs)
    options = check_compile(compile)
    if not isinstance(inplace, bool):
        raise SpecError("inplace", inplace, "must be a bool", (True, False))
    params_before = _param_count(model)
    if specs[0].kind == "kernel":
        plan_conversion(model, specs[0], where)  # check the selection on the caller's model first
        return apply_compile(convert_convs(model, specs[0], where, inplace, params_before), options,
                             fullgraph=False)

    # analyse the caller's model read-only: every error is raised before anything is copied
    traced, sites = _analyse(model, where, inputs, leaf_modules)
    work = model if inplace else copy.deepcopy(model)
    device, dtype = _device_dtype(work)
    taken = {n for n, _ in work.named_modules()}
    built: dict[str, nn.Module] = {}
    chains: dict[str, list[str]] = {}
    records = []
    for site in _unique_sites(sites):
        chains[site.name] = []
        for sp in specs:
            module = build_feature(sp, site.channels, device=device, dtype=dtype)
            path = _module_path(site, _tag(sp), taken)
            built[path] = module
            chains[site.name].append(path)
            records.append(SiteRecord(site.name, path, sp.name or "attention", site.channels,
                                      sum(p.numel() for p in module.parameters()), site.kind))

    class_name = type(model).__name__
    if traced.dual:
        gm: fx.GraphModule = DualGraphModule(work, traced.graphs["train"], traced.graphs["eval"], class_name)
    else:
        gm = fx.GraphModule(work, traced.graphs["eval"], class_name)
    for path, module in built.items():  # under the GraphModule's own containers, not the model's
        gm.add_submodule(path, module)
    graphs = {mode: copy_graph(g) for mode, g in traced.graphs.items()}
    for mode, graph in graphs.items():
        _insert_into(graph, sites[mode], chains)
    if isinstance(gm, DualGraphModule):
        gm.set_graphs(graphs["train"], graphs["eval"])
    else:
        gm.graph = graphs["eval"]
    _restore_unused(gm, work)
    gm.train(model.training)
    _keep_class_name(gm, class_name)
    leaves = (*traced.leaf_names, *traced.auto_leaves)
    attach(gm, InsertionReport(class_name, tuple(records), params_before, leaves))
    return apply_compile(gm, options, fullgraph=False)


def _keep_class_name(gm: fx.GraphModule, name: str) -> None:
    """fx forgets a GraphModule's class name on deepcopy and pickle unless told."""
    gm.__dict__["_graphmodule_cls_name"] = name  # read back when fx unpickles
    gm.meta["dynattn_class_name"] = name
    if hasattr(gm, "_register_deepcopy_hook") and not isinstance(gm, DualGraphModule):
        gm._register_deepcopy_hook(_restore_class_name)


def _restore_class_name(gm: fx.GraphModule) -> None:
    name = gm.meta.get("dynattn_class_name")
    if name:
        type(gm).__name__ = name


def list_sites(
    model: nn.Module,
    spec: AttnSpec | str | Sequence[AttnSpec | str],
    where: Where = None,
    example_inputs: Any = None,
    *,
    leaf_modules: Iterable[LeafSpec] = (),
) -> list[Site]:
    """The sites ``insert_attention`` would use, in graph order; the model is not changed.

    For a kernel-target spec, the convs it would replace (``kind="conv"``)."""
    _check_model(model)
    specs = _as_specs(spec)
    inputs = _check_inputs(example_inputs)
    if specs[0].kind == "kernel":
        return [Site(name, name, "conv", conv.out_channels, (conv.in_channels, conv.out_channels),
                     type(conv).__name__) for name, conv in plan_conversion(model, specs[0], where)]
    _, sites = _analyse(model, where, inputs, leaf_modules)
    return _unique_sites(sites)
