"""Feature-map attention: ``(spec, channels)`` -> an :class:`AttentionModule`, a
``torch.fx.GraphModule`` mapping ``(B, C, H, W)`` to the same shape.

Lowering and the graph are cached on ``(spec, channels)``; every build makes fresh parameters.
"""

from __future__ import annotations

import copy
from typing import Any

import torch

from ..errors import SpecError
from ..registry import register_leaf_module
from ..spec import AttnSpec
from .emit import emit_graph
from .instantiate import make_modules
from .lower import check_spatial_dims, lower
from .module import SpecModule

__all__ = ["AttentionModule", "build_feature", "check_channels"]


class AttentionModule(SpecModule):
    """A feature-map attention built from ``spec`` for ``channels`` input channels, on maps with
    ``spatial_dims`` spatial dims."""

    _SIZE_ATTRS = ("channels", "optimized", "spatial_dims")
    channels: int
    optimized: bool
    spatial_dims: int

    @classmethod
    def rebuild(cls, spec: AttnSpec, *sizes: Any) -> AttentionModule:
        channels, optimized, *rest = sizes  # modules pickled before spatial_dims existed are 2-D
        return build_feature(spec, channels, optimize=optimized, spatial_dims=rest[0] if rest else 2)


register_leaf_module(AttentionModule, role="attention")


def check_channels(channels: object) -> int:
    if channels is None:
        raise SpecError("channels", channels, "a feature-map attention needs its input channel count",
                        hint="build(spec, channels=64)")
    if isinstance(channels, bool) or not isinstance(channels, int):
        raise SpecError("channels", channels, "must be an int > 0", hint=f"got {type(channels).__name__}")
    if channels <= 0:
        raise SpecError("channels", channels, "must be > 0")
    return channels


def build_feature(
    spec: AttnSpec,
    channels: int,
    *,
    spatial_dims: int = 2,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
    optimize: bool = True,
) -> AttentionModule:
    """The feature-map attention module of ``spec`` for ``channels`` input channels, on maps with
    ``spatial_dims`` spatial dims (1: (B, C, L), 2: (B, C, H, W), 3: (B, C, D, H, W))."""
    plan = lower(spec, check_channels(channels), check_spatial_dims(spatial_dims))  # checked before the cache sees it
    root = make_modules(plan, device=device, dtype=dtype)
    module = AttentionModule(root, copy.deepcopy(emit_graph(plan, bool(optimize))), class_name=plan.class_name)
    module.spec = spec
    module.channels = channels
    module.spatial_dims = plan.spatial_dims
    module.optimized = bool(optimize)
    module.meta["dynattn_code"] = module.code
    return module
