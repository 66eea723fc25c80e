"""What graph_passes uses of dynattn beyond its public names: the one declared internal interface.

graph_passes imports ``dynattn`` (the public API) and this module, nothing else of dynattn
(``tests/test_layering.py`` enforces it). Names here may change with graph_passes, not for users.
"""

from __future__ import annotations

from .builder import compile_options
from .conv_placement import ConvPlacement, conv_placement
from .dynamic_conv.shared import upcycle_shared
from .errors import ModelError, SpecError
from .layers import CONVS
from .presets import as_spec
from .registry import leaf_modules

__all__ = ["CONVS", "ConvPlacement", "ModelError", "SpecError", "as_spec", "compile_options", "conv_placement",
           "leaf_modules", "upcycle_shared"]
