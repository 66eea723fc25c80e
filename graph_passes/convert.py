"""The kernel target: replace selected ``nn.Conv2d`` modules by upcycled ``DynamicConv2d``s
(``nn.Conv1d`` / ``nn.Conv3d`` by ``DynamicConv1d`` / ``DynamicConv3d`` in a 1-D or 3-D model).

The model's number of spatial dims (``spatial_dims``) is that of its example input (a (B, C, L),
(B, C, H, W) or (B, C, D, H, W) tensor), else that of its first conv; only plain convs of that
number are converted (a 2-D model's
``nn.Conv1d``s, such as ECA's gate, stay as they are).

No tracing is needed: the convs are found by name. With ``where=None`` the spec's own placement
(``dynattn.conv_placement.conv_placement``: its paper's and official code's models) decides which stay static;
the stem, head and projection shortcuts are found from the module tree, and output strides and
1x1 maps from one forward pass on meta tensors (no real compute). A conv's output is unchanged at
the moment it is replaced (see ``DynamicConv2d.from_conv``), and its state_dict keys (``weight``,
``bias``) keep their names; a checkpoint of the original model loads into the converted one with
``strict=False`` (each expert takes the conv's weight) and only the routers' keys missing.
"""

from __future__ import annotations

import copy
import math
import warnings
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from dynattn import AttnSpec, SpecError, build
from dynattn._deprecated import moved_attribute
from dynattn._passes_api import CONVS, ConvPlacement, ModelError, conv_placement, leaf_modules, upcycle_shared

from .report import InsertionReport, SiteRecord, attach
from .shapes import DEFAULT_SIZES_BY_SPATIAL_DIMS, _swapped_state, conv_spatial_dims
from .sites import _glob, _regex
from .trace import untouched

__all__ = ["convert_convs", "convertible_convs", "plan_conversion", "placement_parts", "model_spatial_dims",
           "SHORTCUT_NAMES"]

#: Module names of projection shortcuts (torchvision's and timm's ResNet, RegNet, ByobNet).
SHORTCUT_NAMES = frozenset({"downsample", "shortcut", "proj", "skip"})


#: Probe sizes (spatial) of a model without example inputs: the first size feature attention's
#: insertion tries (shapes.DEFAULT_SIZES_BY_SPATIAL_DIMS); a 2-D model takes timm's input size first.
PROBE_SIZES: dict[int, tuple[int, ...]] = {
    spatial_dims: sizes[0] for spatial_dims, sizes in DEFAULT_SIZES_BY_SPATIAL_DIMS.items()}


def _inside_dynattn(name: str, owners: list[str]) -> bool:
    return any(name == o or name.startswith(o + ".") for o in owners)


def model_spatial_dims(model: nn.Module, inputs: tuple | None = None) -> int:
    """The number of spatial dims of ``model``'s feature maps: its first example input's (a 3-, 4- or
    5-D tensor), else its first conv's (an ``nn.Conv1d`` / ``Conv2d`` / ``Conv3d``, or a registered conv
    with a ``spatial_dims`` attribute, as dynattn's dynamic convs have, or ``dims``), else 2."""
    for t in inputs or ():
        if isinstance(t, torch.Tensor) and 3 <= t.dim() <= 5:
            return t.dim() - 2
    for m in model.modules():
        spatial_dims = conv_spatial_dims(m)
        if spatial_dims is not None:
            return spatial_dims
    return 2


def __getattr__(name: str):
    if name == "model_dims":
        return moved_attribute(__name__, name, __name__, "model_spatial_dims")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _is_conv(module: object, spatial_dims: int) -> bool:
    """A conv of ``spatial_dims`` (or a subclass), or a module registered with ``role="conv"``."""
    return isinstance(module, (CONVS[spatial_dims], *leaf_modules("conv")))


def convertible_convs(model: nn.Module, spatial_dims: int = 2
                      ) -> tuple[list[tuple[str, nn.Module]], list[tuple[str, str]]]:
    """(plain convs of ``spatial_dims`` by name, [(name, class) of their subclasses whose forward differs])."""
    base = CONVS[spatial_dims]
    owners = [n for n, m in model.named_modules() if isinstance(m, leaf_modules())]
    plain, skipped = [], []
    for name, m in model.named_modules():
        if not isinstance(m, base) or _inside_dynattn(name, owners):
            continue
        if type(m).forward is base.forward:
            plain.append((name, m))
        else:
            skipped.append((name, type(m).__name__))
    return plain, skipped


def _select(convs: list[tuple[str, nn.Module]], where: Any, spatial_dims: int = 2) -> list[tuple[str, nn.Module]]:
    items = list(where) if isinstance(where, (list, tuple)) else [where]
    chosen: dict[str, nn.Module] = {}
    for item in items:
        if item is None:
            found = convs
        elif isinstance(item, str):
            head, sep, tail = item.partition(":")
            if head in ("residual", "stage") and (not sep or tail):
                raise SpecError("where", item, "a kernel-target spec replaces convs; the residual and stage "
                                "strategies place feature attention",
                                ("'conv'", "'conv:<glob>'", "a glob", "'re:<regex>'", "a callable"))
            if item == "conv":
                found = convs
            else:
                test = _regex(tail, item) if head == "re" and sep else _glob(tail if head == "conv" and sep else item)
                found = [(n, m) for n, m in convs if test(n)]
        elif callable(item):
            found = [(n, m) for n, m in convs if item(None, m)]
        else:
            raise SpecError("where", item, "is not a selector", ("'conv'", "a glob", "'re:<regex>'",
                            "a callable (node, module) -> bool", "a list of these"))
        if not found:
            raise SpecError("where", item, f"matches no plain nn.{CONVS[spatial_dims].__name__}",
                            hint="graph_passes.list_sites(model, spec) lists the convs that can be replaced")
        for n, m in found:
            chosen.setdefault(n, m)
    order = {n: i for i, (n, _) in enumerate(convs)}
    return sorted(chosen.items(), key=lambda item: order[item[0]])


def _convs_under(path: str, names: Sequence[str]) -> list[str]:
    return [n for n in names if not path or n == path or n.startswith(path + ".")]


#: A stem holds at most this many convs (timm's deep stem: three); a first part holding more is descended into.
STEM_MAX_CONVS = 3


def _stem_and_head(model: nn.Module, spatial_dims: int = 2) -> tuple[list[str], list[str]]:
    """(the stem's convs, the head's conv). The stem is the first part of the model holding convs
    (of ``spatial_dims``), descending into a part that holds them all or more than a stem's few
    (a detector's backbone); the head is the last part holding convs at the stem's level, when that
    is one 1x1 conv."""
    names = [n for n, m in model.named_modules() if _is_conv(m, spatial_dims)]
    path, module = "", model
    while True:
        holding = []
        for child_name, child in module.named_children():
            child_path = f"{path}.{child_name}" if path else child_name
            under = _convs_under(child_path, names)
            if under:
                holding.append((child_path, child, under))
        if not holding:  # the part is a conv itself: the model's only conv(s) are the stem
            return _convs_under(path, names), []
        first, last = holding[0], holding[-1]
        if len(holding) == 1 or len(first[2]) > STEM_MAX_CONVS:
            path, module = first[0], first[1]
            continue
        head = last[2] if len(last[2]) == 1 and last is not first else []
        kernel = tuple(getattr(model.get_submodule(head[0]), "kernel_size", ())) if head else ()
        if head and (not kernel or any(k != 1 for k in kernel)):
            head = []  # a head is a 1x1 conv (VGG's last 3x3 conv is the body's)
        return first[2], head


def _is_shortcut(name: str, conv: nn.Module) -> bool:
    return all(k == 1 for k in conv.kernel_size) and any(part in SHORTCUT_NAMES for part in name.split(".")[:-1])


def _probe_input(model: nn.Module, inputs: tuple | None, spatial_dims: int = 2) -> tuple:
    if inputs is not None:
        return tuple(t.to("meta") if isinstance(t, torch.Tensor) else t for t in inputs)
    first = next(m for m in model.modules() if _is_conv(m, spatial_dims))
    cfg = getattr(model, "pretrained_cfg", None)
    size = cfg.get("input_size") if isinstance(cfg, dict) else None
    hw = tuple(size[1:]) if isinstance(size, (tuple, list)) and len(size) == 3 else PROBE_SIZES[2]
    param = next(model.parameters(), None)
    dtype = param.dtype if param is not None else torch.float32
    spatial = hw if spatial_dims == 2 else PROBE_SIZES[spatial_dims]
    return (torch.empty(2, first.in_channels, *spatial, device="meta", dtype=dtype),)


def _conv_sizes(model: nn.Module, convs: list[tuple[str, nn.Module]], inputs: tuple | None, spatial_dims: int = 2
                ) -> tuple[dict[str, tuple[tuple[int, ...], tuple[int, ...]]], tuple, str | None]:
    """({conv: (input's spatial sizes, output's)}, the probe input, None) from one forward pass on meta tensors,
    or ({}, probe, why) when the model's forward does not run on them."""
    seen: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = {}

    def record(name):
        def hook(module, args, output):
            if name not in seen and args and isinstance(args[0], torch.Tensor) and isinstance(output, torch.Tensor):
                seen[name] = (tuple(args[0].shape[2:]), tuple(output.shape[2:]))
        return hook

    probe = _probe_input(model, inputs, spatial_dims)
    handles = [m.register_forward_hook(record(n)) for n, m in convs]
    try:
        with untouched(model), _swapped_state(model, lambda t: t.to("meta")), torch.no_grad(), \
                warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model(*probe)
    except Exception as exc:  # any failure of the user's forward on meta tensors: placement without shapes
        return {}, probe, f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"[:200]
    finally:
        for h in handles:
            h.remove()
    return seen, probe, None


def _conv_shapes(model: nn.Module, convs: list[tuple[str, nn.Module]], inputs: tuple | None, spatial_dims: int = 2
                 ) -> tuple[dict[str, tuple[int, bool]], str | None]:
    """({conv: (output stride, runs on a 1x1 map)}, None) from one forward pass on meta tensors,
    or ({}, why) when the model's forward does not run on them. The output stride is measured on
    the height (the length of a 1-D map)."""
    seen, probe, failure = _conv_sizes(model, convs, inputs, spatial_dims)
    if failure is not None:
        return {}, failure
    axis = -2 if spatial_dims > 1 else -1  # H of (H, W) and (D, H, W); L
    image = next((t for t in probe if isinstance(t, torch.Tensor) and t.dim() == spatial_dims + 2), None)
    height = image.shape[axis] if image is not None else None
    out = {}
    for name, (in_hw, out_hw) in seen.items():
        stride = max(1, round(height / out_hw[axis])) if height and out_hw and out_hw[axis] else 1
        out[name] = (stride, len(in_hw) == spatial_dims and math.prod(in_hw) == 1)
    return out, None


def placement_parts(model: nn.Module, spec: AttnSpec, convs: list[tuple[str, nn.Module]],
                    inputs: tuple | None = None, spatial_dims: int = 2) -> dict[str, str]:
    """{conv name: why it stays static} under the spec's default placement (convs not named convert)."""
    placement: ConvPlacement = conv_placement(spec)
    stem, head = _stem_and_head(model, spatial_dims)
    static: dict[str, str] = {}
    for name, conv in convs:
        if not placement.stem and name in stem:
            static[name] = "stem"
        elif not placement.head and name in head:
            static[name] = "head"
        elif not placement.shortcuts and _is_shortcut(name, conv):
            static[name] = "projection shortcut"
    shapes, failure = _conv_shapes(model, convs, inputs, spatial_dims)
    if failure is not None:
        if placement.min_stride > 1:
            raise ModelError("model", type(model).__name__,
                             f"the default placement of {spec.name} ({placement.describe()}) needs each conv's "
                             f"output stride, from a forward pass on meta tensors, which failed ({failure})",
                             hint="pass example_inputs=..., or choose the convs with where= (e.g. where='layer4.*', "
                                  "or where='conv' for every conv)")
        warnings.warn(f"{type(model).__name__}'s forward did not run on meta tensors ({failure}), so convs on 1x1 "
                      "maps (SE blocks) could not be told apart and are converted too; pass example_inputs=... or "
                      "where=...", stacklevel=4)
    for name, _ in convs:
        if name in static or name not in shapes:
            continue
        stride, pooled = shapes[name]
        if pooled:
            static[name] = "runs on 1x1 maps"
        elif stride < placement.min_stride:
            static[name] = f"output stride {stride} < {placement.min_stride}"
    return static


def plan_conversion(model: nn.Module, spec: AttnSpec, where: Any, inputs: tuple | None = None
                    ) -> list[tuple[str, nn.Module]]:
    spatial_dims = model_spatial_dims(model, inputs)
    convs, skipped = convertible_convs(model, spatial_dims)
    conv = CONVS[spatial_dims].__name__  # Conv2d
    if skipped:
        names = ", ".join(f"{n} ({cls})" for n, cls in skipped[:8]) + (" ..." if len(skipped) > 8 else "")
        warnings.warn(f"skipping {len(skipped)} {conv} subclass(es) whose forward differs from nn.{conv}'s, "
                      f"which an upcycled Dynamic{conv} would not reproduce: {names}", stacklevel=3)
    if not convs:
        raise ModelError("model", type(model).__name__,
                        f"has no plain nn.{conv} to replace with a Dynamic{conv}"
                        + (f" ({len(skipped)} {conv} subclasses were skipped)" if skipped else ""),
                        hint="a kernel-target spec converts convs; use a feature target to insert attention")
    if where is not None:
        return _select(convs, where, spatial_dims)
    placement = conv_placement(spec)
    if placement == conv_placement(AttnSpec(target="kernel")):  # every conv: nothing to find out
        return convs
    static = placement_parts(model, spec, convs, inputs, spatial_dims)
    chosen = [(n, m) for n, m in convs if n not in static]
    if not chosen:
        raise ModelError("model", type(model).__name__,
                         f"has no conv that the default placement of {spec.name} ({placement.describe()}) converts "
                         f"({len(static)} convs stay static: " + ", ".join(sorted(set(static.values()))) + ")",
                         hint="pass where='conv' to convert every conv, or select convs with where=")
    return chosen


def _upcycled(model: nn.Module, spec: AttnSpec, chosen: list[tuple[str, nn.Module]], inputs: tuple | None
              ) -> dict[str, nn.Module]:
    """{name: its dynamic conv}: one ``build`` each, or (KernelWarehouse with ``sharing="stage"``) one warehouse
    per stage, shared by the chosen convs that read maps of one size (with ResNet's basic blocks, the official
    ``Warehouse_Manager``'s stages: a stage's first strided conv and projection shortcut take the cells of the
    stage before, whose maps they read), grouped convs apart from the others (the official MobileNetV2's
    depthwise and pointwise warehouses: cells of one input channel would split a pointwise kernel per channel)."""
    if "cells" not in spec.heads or spec.sharing == "layer":
        return {name: build(spec, conv=conv) for name, conv in chosen}
    sizes, _, failure = _conv_sizes(model, chosen, inputs, model_spatial_dims(model, inputs))
    if failure is not None:
        raise ModelError("model", type(model).__name__, "KernelWarehouse's sharing='stage' groups the convs by the "
                         f"size of the maps they read, from a forward pass on meta tensors, which failed ({failure})",
                         hint="pass example_inputs=..., or AttnSpec.kw(sharing='layer')")
    stages: dict[tuple, list[tuple[str, nn.Module]]] = {}
    for name, conv in chosen:
        stages.setdefault((sizes[name][0] if name in sizes else None, conv.groups == 1), []).append((name, conv))
    new: dict[str, nn.Module] = {}
    for members in stages.values():
        new.update(zip([n for n, _ in members], upcycle_shared(spec, [c for _, c in members])))
    return new


def convert_convs(model: nn.Module, spec: AttnSpec, names: Sequence[str], inplace: bool,
                  params_before: int, inputs: tuple | None = None) -> nn.Module:
    """Replace the convs ``names`` (from :func:`plan_conversion` on ``model``) in ``model`` or a copy."""
    work = model if inplace else copy.deepcopy(model)
    chosen = [(name, work.get_submodule(name)) for name in names]
    new = _upcycled(work, spec, chosen, inputs)  # may raise: nothing changed yet
    replaced = {id(conv): new[name] for name, conv in chosen}
    for parent in work.modules():  # every reference to a replaced conv (a module may be shared)
        for key, child in list(parent._modules.items()):
            if child is not None and id(child) in replaced:
                parent._modules[key] = replaced[id(child)]
    records, counted = [], set()  # a warehouse shared by several convs counts once, with the first
    for name, conv in chosen:
        params = [p for p in new[name].parameters() if id(p) not in counted]
        counted.update(id(p) for p in params)
        added = sum(p.numel() for p in params) - sum(p.numel() for p in conv.parameters())
        records.append(SiteRecord(name, name, spec.name or "kernel", conv.out_channels, added, "conv"))
    attach(work, InsertionReport(type(model).__name__, tuple(records), params_before))
    return work

