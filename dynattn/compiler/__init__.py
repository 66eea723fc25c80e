"""The compiler: spec -> plan (``lower``) -> fx graph (``emit``, ``optimize``) -> ``GraphModule``.

- :func:`build_feature`: a feature-map attention (:class:`AttentionModule`);
- :func:`build_router`: a dynamic convolution's router (:class:`RouterModule`).

``dynattn.build`` dispatches between the feature target and ``DynamicConv2d``.
"""

from __future__ import annotations

from .emit import emit_graph
from .feature import AttentionModule, build_feature, check_channels
from .graph_writer import ROLE
from .lower import Plan, lower
from .module import SpecModule
from .router import ConvGeometry, RouterModule, build_router

__all__ = [
    "AttentionModule", "RouterModule", "SpecModule", "ConvGeometry", "Plan", "ROLE", "build_feature", "build_router",
    "check_channels", "emit_graph", "lower",
]
