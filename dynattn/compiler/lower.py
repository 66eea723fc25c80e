"""Lowering: ``(AttnSpec, channels)`` -> a :class:`Plan` of typed stages, sizes resolved.

Everything that depends on the channel count (hidden widths, ECA's adaptive kernel) is
decided here, once, and checked: a width that rounds to zero raises ``SpecError`` before
any module is made. Plans are immutable and cached on ``(spec, channels)``.
"""

from __future__ import annotations

import functools
import math
import re
from dataclasses import dataclass

from ..errors import SpecError
from ..spec import AttnSpec
from ..validate import has_hidden
from ..vocab import AXES, AXES_BY_SPATIAL_DIMS, SPATIAL_DIMS

__all__ = ["BranchPlan", "StagePlan", "GroupPlan", "Plan", "lower", "frames", "check_spatial_dims", "hidden_width",
           "eca_kernel_size"]


@dataclass(frozen=True)
class BranchPlan:
    """One leaf spec in one axis frame (a stage has one branch, or one per rotation: Triplet)."""

    #: Attribute prefix of the branch's modules and nodes ("" for a module of one branch).
    name: str
    spec: AttnSpec
    #: The branch's axis frame, e.g. ("b", "h", "c", "w") for Triplet's first branch (three or five
    #: axes on a 1-D or 3-D map: a permutation of ``AXES_BY_SPATIAL_DIMS[spatial_dims]``).
    frame: tuple[str, ...]
    #: Size of the frame's channel axis when the branch's weights depend on it, else None.
    channels: int | None
    #: Input channels of the excitation (after merging descriptors).
    excite_in: int
    hidden: int | None
    kernel_size: int | None
    #: Output width of an ``mlp`` / ``linear`` excitation (the channels it gates, or a router's logits).
    excite_out: int | None = None

    @property
    def rotated(self) -> bool:
        return self.frame != AXES_BY_SPATIAL_DIMS[len(self.frame) - 2]

    @property
    def spatial_dims(self) -> int:
        """The number of spatial dims of the feature map."""
        return len(self.frame) - 2


@dataclass(frozen=True)
class StagePlan:
    """One stage of the spec (a leaf spec): the gates of its branches are averaged, then scale the input."""

    name: str
    branches: tuple[BranchPlan, ...]


@dataclass(frozen=True)
class GroupPlan:
    """A parallel composite: its stages' gate maps, each from the same input, combined by
    ``spec.merge``, then ``spec.gate`` and ``spec.fuse`` (BAM)."""

    name: str
    stages: tuple[StagePlan, ...]
    spec: AttnSpec


@dataclass(frozen=True)
class Plan:
    class_name: str
    channels: int
    stages: tuple[StagePlan | GroupPlan, ...]
    spec: AttnSpec
    #: The number of spatial dims of the feature maps the module takes (1, 2 or 3).
    spatial_dims: int = 2


def hidden_width(spec: AttnSpec, channels: int) -> int:
    """The hidden width of an excitation with a hidden layer, rounded as the spec says."""
    if spec.width is not None:
        return spec.width
    v = channels / spec.reduction
    d = spec.divisor
    if spec.rounding in ("nearest", "nearest_90"):  # timm's make_divisible(v, d, round_limit=0 or 0.9)
        width = max(d, int(v + d / 2) // d * d)
        if spec.rounding == "nearest_90" and width < 0.9 * v:
            width += d
    else:
        width = int(v) // d * d
    if spec.min_width is not None:
        width = max(width, spec.min_width)
    if width < 1:
        how = f"int({channels} / {spec.reduction:g})" + (f" // {d} * {d}" if d > 1 else "")
        raise SpecError(
            "AttnSpec.reduction", spec.reduction,
            f"leaves {width} hidden units at channels={channels} ({how} = {width})",
            hint="use a smaller reduction, rounding='nearest', or an explicit width=",
        )
    return width


def eca_kernel_size(spec: AttnSpec, channels: int) -> int:
    """ECA's adaptive kernel: t if odd else t + 1, t = int(|log2(C) + beta| / gamma), >= kernel_min."""
    t = int(abs(math.log(channels, 2) + spec.beta) / spec.gamma)
    k = t if t % 2 else t + 1
    return max(k, spec.kernel_min)


def _snake(name: str) -> str:
    s = re.sub(r"(?<=[a-z0-9])([A-Z])", r"_\1", name)
    return s.lower()


def _named_leaves(spec: AttnSpec, prefix: str = "") -> list[tuple[str, AttnSpec]]:
    """(name, leaf or parallel composite) in execution order."""
    if not spec.stages or spec.merge is not None:
        fallback = "parallel" if spec.stages else spec.target or "stage"
        return [(prefix + _snake(spec.name or fallback), spec)]
    out: list[tuple[str, AttnSpec]] = []
    for i, stage in enumerate(spec.stages):
        if stage.stages and stage.merge is None:
            sub = prefix + _snake(stage.name or f"stage{i}") + "_"
            out.extend(_named_leaves(stage, sub))
        else:
            out.extend(_named_leaves(stage, prefix))
    return out


def _unique(names: list[str]) -> list[str]:
    seen: dict[str, int] = {}
    out = []
    for n in names:
        if n in seen:
            seen[n] += 1
            out.append(f"{n}_{seen[n]}")
        else:
            seen[n] = 1
            out.append(n)
    return out


def _branch_name(frame: tuple[str, ...]) -> str:
    return "".join(frame[2:])


def _swapped(rotation: str) -> str | None:
    """The spatial axis a 2-D rotation swaps with the channels ("" for the identity), or None for any
    other permutation."""
    frame = tuple(rotation.split("->")[1].split())
    if frame == AXES:
        return ""
    moved = [a for a, b in zip(AXES, frame) if a != b]
    if len(moved) == 2 and moved[0] == "c" and frame[1] == moved[1]:
        return moved[1]
    return None


def frames(rotations: tuple[str, ...], spatial_dims: int) -> list[tuple[str, ...]]:
    """The axis frames of a spec's ``branches`` (written on the four NCHW axes) on a map of ``spatial_dims``
    spatial dims.

    In 2-D they are the rotations as written. On a 1-D or 3-D map, rotations that swap the channels with
    one spatial axis (Triplet's) generalise by what they do: the set {identity, swap(c, h), swap(c, w)}
    (cross-dimension interaction between the channels and every spatial axis) becomes the identity and one
    swap of the channels with each spatial axis of that map (``b c l -> b l c``; ``b c d h w -> b d c h w``,
    ``b h d c w``, ``b w d h c``). Other rotations are 2-D only."""
    if spatial_dims == 2:
        return [tuple(r.split("->")[1].split()) for r in rotations]
    swaps = [_swapped(r) for r in rotations]
    axes = AXES_BY_SPATIAL_DIMS[spatial_dims]
    spatial_swaps = sorted(s for s in swaps if s)
    if None in swaps or spatial_swaps not in ([], ["h", "w"]):
        raise SpecError(
            "AttnSpec.branches", rotations,
            f"are rotations of a 2-D (B, C, H, W) map with no meaning on a map with {spatial_dims} spatial dim(s)",
            hint="on 1-D and 3-D maps, branches must be the identity and/or the swaps of the channels with every "
                 "spatial axis ('b c h w -> b h c w' and 'b c h w -> b w h c', as Triplet's)",
        )
    out: list[tuple[str, ...]] = []
    if spatial_swaps:
        for s in axes[2:]:
            frame = list(axes)
            i = frame.index(s)
            frame[1], frame[i] = s, "c"
            out.append(tuple(frame))
    if "" in swaps:
        out.append(axes)
    return out


def _branch(name: str, spec: AttnSpec, frame: tuple[str, ...], channels: int) -> BranchPlan:
    own_channels = channels if frame[1] == "c" else None
    n = len(spec.pool)
    merged = n if spec.merge == "concat" else 1
    hidden = None
    kernel = spec.kernel_size if isinstance(spec.kernel_size, int) else None
    if spec.kernel_size == "adaptive":
        kernel = eca_kernel_size(spec, channels)
    if spec.excite in ("conv1d", "conv1d_mlp", "channelwise"):
        excite_in = merged  # descriptors stacked as the input channels of a conv along the channels
    elif spec.target == "spatial" and spec.pool != ("none",):
        excite_in = merged  # the descriptors are the conv's input channels
    else:
        excite_in = merged * (own_channels or 0)
    if has_hidden(spec):
        hidden = hidden_width(spec, channels)
    return BranchPlan(name, spec, frame, own_channels, excite_in, hidden, kernel, own_channels)


def _stage(name: str, leaf: AttnSpec, channels: int, spatial_dims: int) -> StagePlan:
    if leaf.branches:
        branch_frames = frames(leaf.branches, spatial_dims)
        bnames = _unique([_branch_name(f) for f in branch_frames])
        branches = tuple(
            _branch(f"{name}_{b}" if name else b, leaf, f, channels) for b, f in zip(bnames, branch_frames)
        )
    else:
        branches = (_branch(name, leaf, AXES_BY_SPATIAL_DIMS[spatial_dims], channels),)
    return StagePlan(name, branches)


def check_spatial_dims(spatial_dims: object) -> int:
    """``spatial_dims`` itself where it is a number of spatial dims a plan can have (1, 2 or 3)."""
    if isinstance(spatial_dims, bool) or not isinstance(spatial_dims, int) or spatial_dims not in SPATIAL_DIMS:
        raise SpecError("spatial_dims", spatial_dims, "is the number of spatial dims of the feature maps",
                        SPATIAL_DIMS,
                        hint="1 for (B, C, L), 2 for (B, C, H, W), 3 for (B, C, D, H, W)")
    return int(spatial_dims)


def _class_name(spec: AttnSpec) -> str:
    if spec.name:
        return spec.name
    if spec.stages:
        return "Attention"
    return f"{spec.target.capitalize()}Attention"


@functools.lru_cache(maxsize=512)
def lower(spec: AttnSpec, channels: int, spatial_dims: int = 2) -> Plan:
    """The plan for ``spec`` at ``channels`` input channels on maps of ``spatial_dims`` spatial dims (cached)."""
    spatial_dims = check_spatial_dims(spatial_dims)
    if spec.kind != "feature":
        raise SpecError("AttnSpec.target", spec.target, "lowers to a DynamicConv2d, not a feature plan",
                        hint="use build(spec, conv=nn.Conv2d(...))")
    leaves = _named_leaves(spec)
    if len(leaves) == 1:
        names = [""]
    else:
        names = _unique([n for n, _ in leaves])
    stages: list[StagePlan | GroupPlan] = []
    for name, (_, leaf) in zip(names, leaves):
        if leaf.stages:  # a parallel composite: its stages named within it
            inner = _unique([n for n, _ in _named_leaves(AttnSpec.chain(*leaf.stages))])
            inner = [f"{name}_{n}" if name else n for n in inner]
            group = tuple(_stage(n, s, channels, spatial_dims) for n, s in zip(inner, leaf.stages))
            stages.append(GroupPlan(name, group, leaf))
        else:
            stages.append(_stage(name, leaf, channels, spatial_dims))
    return Plan(_class_name(spec), channels, tuple(stages), spec, spatial_dims)
