"""dynattn: attention for convolutional networks from a short declarative spec.

    from dynattn import AttnSpec, build
    cbam = build(AttnSpec.cbam(), channels=64)      # a torch.fx.GraphModule
    print(cbam.code)                                 # reads like the paper
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from . import mixing
from .builder import build, compile_options
from .compiler import AttentionModule
from .dynamic_conv import DynamicConv1d, DynamicConv2d, DynamicConv3d
from .errors import DynattnError, InputError, ModelError, SpecError
from .interop import SpecLayer
from .placement import ConvPlacement, conv_placement
from .presets import as_spec, get_spec, list_presets
from .record import GateMaps, record_gates
from .registry import leaf_modules, register_leaf_module
from .spec import AttnSpec
from .spec_parse import parse_spec
from .temperature import TemperatureSchedule, set_temperature

if TYPE_CHECKING:
    from . import testing

__all__ = [
    "AttnSpec", "SpecError", "DynattnError", "InputError", "ModelError", "build", "DynamicConv2d", "DynamicConv1d",
    "DynamicConv3d", "get_spec",
    "list_presets", "as_spec", "is_attention", "set_temperature", "TemperatureSchedule", "record_gates", "GateMaps",
    "parse_spec", "testing", "SpecLayer", "compile_options", "register_leaf_module", "leaf_modules",
    "ConvPlacement", "conv_placement", "mixing",
]
__version__ = "0.1.0"


def is_attention(module: object) -> bool:
    """True for a module that :func:`build` made for a feature-map spec."""
    return isinstance(module, AttentionModule)


def __getattr__(name: str):
    if name == "testing":  # imports hypothesis: only on demand
        import importlib

        return importlib.import_module(".testing", __name__)
    raise AttributeError(f"module 'dynattn' has no attribute {name!r}")
