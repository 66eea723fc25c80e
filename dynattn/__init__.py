"""dynattn: attention for convolutional networks from a short declarative spec.

    from dynattn import AttnSpec, build
    cbam = build(AttnSpec.cbam(), channels=64)      # a torch.fx.GraphModule
    print(cbam.code)                                 # reads like the paper

The top level holds what a user calls; the rest lives in named modules (``dynattn.errors``,
``dynattn.registry``, ``dynattn.testing``, ...). Names that used to be here and moved are still
reachable for now, with a ``DeprecationWarning`` that says where they went (``_deprecated.py``).

``import dynattn`` itself imports neither torch nor the rest (PEP 562), so that ``dynattn --version`` and
``--help`` answer at once. The first use of an exported name (``from dynattn import AttnSpec``,
``dynattn.build``) imports every module that defines one, in one go, as ``import dynattn`` did before:
the presets on ``AttnSpec``, the custom op and the leaf-module registrations are in place whichever name
came first. The spec and its presets import no torch and load with the package, so ``from dynattn.spec import
AttnSpec`` has ``AttnSpec.cbam``; any other submodule (``dynattn.registry``, ``dynattn.testing``) brings only
what it imports itself (``leaf_modules()`` lists the built-in leaves once a ``dynattn`` name is used).
"""

from __future__ import annotations

import importlib
import importlib.util
import threading
from typing import TYPE_CHECKING, Any

from . import presets as _presets  # noqa: F401  (no torch: the presets on AttnSpec, whatever is imported first)
from ._deprecated import moved_attribute
from ._version import __version__ as __version__

if TYPE_CHECKING:  # what type checkers and IDEs read; _EXPORTS says the same for the runtime
    from . import testing  # noqa: F401  (dynattn.testing: loaded on first use)
    from .builder import build
    from .dynamic_conv import DynamicConv1d, DynamicConv2d, DynamicConv3d
    from .errors import DynattnError, SpecError
    from .interop import load_timm_weights
    from .presets import get_spec, list_presets
    from .record import GateMaps, record_gates
    from .spec import AttnSpec
    from .spec_parse import parse_spec
    from .temperature import TemperatureSchedule, set_temperature

__all__ = [
    "AttnSpec", "build", "get_spec", "list_presets", "parse_spec", "SpecError", "DynattnError",
    "DynamicConv1d", "DynamicConv2d", "DynamicConv3d", "record_gates", "GateMaps", "set_temperature",
    "TemperatureSchedule", "load_timm_weights",
]

#: The module defining each exported name, in the order ``import dynattn`` imported them when it was eager.
_EXPORTS = {
    "dynattn.builder": ("build",),
    "dynattn.dynamic_conv": ("DynamicConv1d", "DynamicConv2d", "DynamicConv3d"),
    "dynattn.errors": ("DynattnError", "SpecError"),
    "dynattn.interop": ("load_timm_weights",),
    "dynattn.presets": ("get_spec", "list_presets"),
    "dynattn.record": ("GateMaps", "record_gates"),
    "dynattn.spec": ("AttnSpec",),
    "dynattn.spec_parse": ("parse_spec",),
    "dynattn.temperature": ("TemperatureSchedule", "set_temperature"),
}

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


#: held while the exports load: another thread waits for them, and an access from inside the loading (a
#: module's ``from . import vocab`` asks the package for ``vocab`` first) does not start it again
_LOCK = threading.RLock()
_loading = _loaded = False


def _load_exports() -> None:
    """Import every module of ``_EXPORTS`` and bind its names here: later lookups no longer reach ``__getattr__``."""
    global _loading, _loaded
    with _LOCK:
        if _loading or _loaded:
            return
        _loading = True
        try:
            for module, names in _EXPORTS.items():
                loaded = importlib.import_module(module)
                globals().update((name, getattr(loaded, name)) for name in names)
            _loaded = True
        finally:
            _loading = False


def __getattr__(name: str) -> Any:
    if name in __all__:
        _load_exports()
        if name in globals():  # not while the exports load (a module asking for a name here: a layering error)
            return globals()[name]
    if not name.startswith("__") and importlib.util.find_spec(f"{__name__}.{name}") is not None:
        return importlib.import_module(f"{__name__}.{name}")  # a submodule: dynattn.testing, dynattn.registry
    if name in _MOVED:
        return moved_attribute(__name__, name, *_MOVED[name])
    raise AttributeError(f"module 'dynattn' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
