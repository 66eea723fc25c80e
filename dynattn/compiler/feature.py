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
from .lower import lower
from .module import SpecModule

__all__ = ["AttentionModule", "build_feature", "check_channels"]


class AttentionModule(SpecModule):
    """A feature-map attention built from ``spec`` for ``channels`` input channels."""

    _SIZE_ATTRS = ("channels", "optimized")
    channels: int
    optimized: bool

    @classmethod
    def rebuild(cls, spec: AttnSpec, *sizes: Any) -> AttentionModule:
        channels, optimized = sizes
        return build_feature(spec, channels, optimize=optimized)


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
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
    optimize: bool = True,
) -> AttentionModule:
    """The feature-map attention module of ``spec`` for ``channels`` input channels."""
    plan = lower(spec, check_channels(channels))
    root = make_modules(plan, device=device, dtype=dtype)
    module = AttentionModule(root, copy.deepcopy(emit_graph(plan, bool(optimize))), class_name=plan.class_name)
    module.spec = spec
    module.channels = channels
    module.optimized = bool(optimize)
    module.meta["dynattn_code"] = module.code
    return module
