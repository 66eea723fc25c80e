"""dynattn: attention for convolutional networks from a short declarative spec.

    from dynattn import AttnSpec, build
    cbam = build(AttnSpec.cbam(), channels=64)      # a torch.fx.GraphModule
    print(cbam.code)                                 # reads like the paper
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .compiler import build, is_attention
from .dynamic_conv import DynamicConv2d
from .errors import SpecError
from .presets import get_spec, list_presets
from .record import GateMaps, record_gates
from .spec import AttnSpec
from .spec_parse import parse_spec
from .temperature import TemperatureSchedule, set_temperature

if TYPE_CHECKING:
    from . import testing

__all__ = [
    "AttnSpec", "SpecError", "build", "DynamicConv2d", "get_spec", "list_presets", "is_attention",
    "set_temperature", "TemperatureSchedule", "record_gates", "GateMaps", "parse_spec", "testing",
]
__version__ = "0.1.0"


def __getattr__(name: str):
    if name == "testing":  # imports hypothesis: only on demand
        import importlib

        return importlib.import_module(".testing", __name__)
    raise AttributeError(f"module 'dynattn' has no attribute {name!r}")
