"""dynattn: attention for convolutional networks from a short declarative spec.

    from dynattn import AttnSpec, build
    cbam = build(AttnSpec.cbam(), channels=64)      # a torch.fx.GraphModule
    print(cbam.code)                                 # reads like the paper

The top level holds what a user calls; the rest lives in named modules (``dynattn.errors``,
``dynattn.registry``, ``dynattn.testing``, ...). Names that used to be here and moved are still
reachable for now, with a ``DeprecationWarning`` that says where they went (``_deprecated.py``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._deprecated import moved_attribute
from ._version import __version__ as __version__
from .builder import build
from .dynamic_conv import DynamicConv1d, DynamicConv2d, DynamicConv3d
from .errors import DynattnError, SpecError
from .interop import load_timm_weights
from .presets import get_spec, list_presets
from .record import GateMaps, record_gates
from .spec import AttnSpec
from .spec_parse import parse_spec
from .temperature import TemperatureSchedule, set_temperature

if TYPE_CHECKING:
    from . import testing  # noqa: F401  (dynattn.testing: loaded on first use)

__all__ = [
    "AttnSpec", "build", "get_spec", "list_presets", "parse_spec", "SpecError", "DynattnError",
    "DynamicConv1d", "DynamicConv2d", "DynamicConv3d", "record_gates", "GateMaps", "set_temperature",
    "TemperatureSchedule", "load_timm_weights",
]

#: Former top-level names: (module they live in now, name there).
_MOVED = {
    "InputError": ("dynattn.errors", "InputError"),
    "ModelError": ("dynattn.errors", "ModelError"),
    "register_leaf_module": ("dynattn.registry", "register_leaf_module"),
    "leaf_modules": ("dynattn.registry", "leaf_modules"),
    "is_attention": ("dynattn.builder", "is_attention"),
    "as_spec": ("dynattn.presets", "as_spec"),
    "compile_options": ("dynattn.builder", "compile_options"),
    "SpecLayer": ("dynattn.interop", "SpecLayer"),
    "ConvPlacement": ("dynattn.conv_placement", "ConvPlacement"),
    "conv_placement": ("dynattn.conv_placement", "conv_placement"),
    "mixing": ("dynattn.mixing", None),
}


def __getattr__(name: str):
    if name == "testing":  # imports hypothesis: only on demand
        import importlib

        return importlib.import_module(".testing", __name__)
    if name in _MOVED:
        return moved_attribute(__name__, name, *_MOVED[name])
    raise AttributeError(f"module 'dynattn' has no attribute {name!r}")
