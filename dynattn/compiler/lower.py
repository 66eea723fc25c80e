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
from ..vocab import AXES

__all__ = ["BranchPlan", "StagePlan", "GroupPlan", "Plan", "lower", "hidden_width", "eca_kernel_size"]


@dataclass(frozen=True)
class BranchPlan:
    """One leaf spec in one axis frame (a stage has one branch, or one per rotation: Triplet)."""

    #: Attribute prefix of the branch's modules and nodes ("" for a module of one branch).
    name: str
    spec: AttnSpec
    #: The branch's axis frame, e.g. ("b", "h", "c", "w") for Triplet's first branch.
    frame: tuple[str, str, str, str]
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
        return self.frame != AXES


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
    return frame[2] + frame[3]


def _branch(name: str, spec: AttnSpec, frame: tuple[str, str, str, str], channels: int) -> BranchPlan:
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


def _stage(name: str, leaf: AttnSpec, channels: int) -> StagePlan:
    if leaf.branches:
        frames = [tuple(r.split("->")[1].split()) for r in leaf.branches]
        bnames = _unique([_branch_name(f) for f in frames])
        branches = tuple(
            _branch(f"{name}_{b}" if name else b, leaf, f, channels) for b, f in zip(bnames, frames)
        )
    else:
        branches = (_branch(name, leaf, AXES, channels),)
    return StagePlan(name, branches)


def _class_name(spec: AttnSpec) -> str:
    if spec.name:
        return spec.name
    if spec.stages:
        return "Attention"
    return f"{spec.target.capitalize()}Attention"


@functools.lru_cache(maxsize=512)
def lower(spec: AttnSpec, channels: int) -> Plan:
    """The plan for ``spec`` at ``channels`` input channels (cached)."""
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
            group = tuple(_stage(n, s, channels) for n, s in zip(inner, leaf.stages))
            stages.append(GroupPlan(name, group, leaf))
        else:
            stages.append(_stage(name, leaf, channels))
    return Plan(_class_name(spec), channels, tuple(stages), spec)
