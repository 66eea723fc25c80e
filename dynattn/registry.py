"""Which module classes a model tracer should not trace into, and what each does to a feature map.

dynattn's own modules register themselves here; graph_passes (or any other tool that traces
models) asks this registry instead of knowing dynattn's classes, in the spirit of timm's
``register_notrace_module``. A user's own attention or conv module can be registered too:

    dynattn.registry.register_leaf_module(MyGate, role="attention")   # keeps the (B, C, H, W) shape
    dynattn.registry.register_leaf_module(MyConv, role="conv")        # a conv: NCHW out, a "conv" site

Roles:

- ``"attention"``: maps a feature map to one of the same shape and layout (no site inside it);
- ``"conv"``: a 2-D convolution: its output is an NCHW feature map, and the ``conv`` site
  strategy treats it like ``nn.Conv2d`` (a class whose ``spatial_dims`` attribute is 1 or 3, as
  ``DynamicConv1d`` / ``DynamicConv3d``'s, is a conv of that many spatial dims instead; graph_passes
  still reads a ``dims`` attribute where a class has no ``spatial_dims``);
- ``"opaque"``: a leaf that is only never traced into.
"""

from __future__ import annotations

from torch import nn

from .errors import SpecError

__all__ = ["LEAF_ROLES", "register_leaf_module", "leaf_modules"]

LEAF_ROLES = ("attention", "conv", "opaque")

_LEAVES: dict[type[nn.Module], str] = {}


def register_leaf_module(cls: type[nn.Module], role: str = "opaque") -> type[nn.Module]:
    """Register ``cls`` as a module tracers keep whole; returns ``cls`` (usable as a decorator)."""
    if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
        raise SpecError("cls", cls, "must be an nn.Module subclass", hint="register the class, not an instance")
    if role not in LEAF_ROLES:
        raise SpecError("role", role, "unknown leaf role", LEAF_ROLES)
    _LEAVES[cls] = role
    return cls


def leaf_modules(role: str | None = None) -> tuple[type[nn.Module], ...]:
    """The registered classes (of one ``role``, or all), in registration order."""
    if role is not None and role not in LEAF_ROLES:
        raise SpecError("role", role, "unknown leaf role", LEAF_ROLES)
    return tuple(cls for cls, r in _LEAVES.items() if role is None or r == role)
