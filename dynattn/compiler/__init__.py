"""The compiler: spec -> plan (``lower``) -> fx graph (``emit``) -> ``GraphModule``.

``build`` is the entry point. Lowering and emission are cached on ``(spec, channels)``;
every build makes fresh parameters.
"""

from __future__ import annotations

import torch
from torch import nn

from ..errors import SpecError
from ..spec import AttnSpec
from .emit import ROLE, copy_graph, emit_graph, make_modules
from .lower import Plan, lower
from .module import AttentionModule

__all__ = [
    "AttentionModule", "apply_compile", "check_compile", "build", "build_feature", "lower", "emit_graph", "Plan",
    "ROLE", "as_spec", "is_attention",
]


def as_spec(spec: AttnSpec | str) -> AttnSpec:
    """``spec`` itself, or the preset of that name."""
    if isinstance(spec, AttnSpec):
        return spec
    if isinstance(spec, str):
        from ..presets import get_spec

        return get_spec(spec)
    raise SpecError("spec", spec, "must be an AttnSpec or a preset name",
                    hint="e.g. AttnSpec.se() or 'cbam'")


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
    module = AttentionModule(root, copy_graph(emit_graph(plan, bool(optimize))), class_name=plan.class_name)
    module.spec = spec
    module.channels = channels
    module.optimized = bool(optimize)
    module.meta["dynattn_code"] = module.code
    return module


def check_compile(compile: object) -> dict | None:
    """``compile=`` as torch.compile keyword arguments (None: do not compile)."""
    if compile is False or compile is None:
        return None
    if compile is True:
        return {}
    if isinstance(compile, dict):
        return dict(compile)
    raise SpecError("compile", compile, "must be a bool or a dict of torch.compile arguments",
                    hint="e.g. compile=True or compile={'mode': 'max-autotune'}")


def apply_compile(module: nn.Module, options: dict | None, *, fullgraph: bool = True) -> nn.Module:
    """Compile ``module`` in place (``nn.Module.compile``: same object, same state_dict keys)."""
    if options is None:
        return module
    options = {"fullgraph": fullgraph, **options}
    module.compile(**options)
    meta = getattr(module, "meta", None)
    if isinstance(meta, dict):  # pickles and copies compile again with the same arguments
        meta["dynattn_compile"] = options
    return module


def build(
    spec: AttnSpec | str,
    channels: int | None = None,
    *,
    conv: nn.Conv2d | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
    optimize: bool = True,
    compile: bool | dict = False,
) -> nn.Module:
    """Build ``spec``.

    - feature targets (channel, spatial, element, composites): ``build(spec, channels=C)``
      returns a ``torch.fx.GraphModule`` mapping ``(B, C, H, W)`` to the same shape;
    - kernel target: ``build(spec, conv=nn.Conv2d(...))`` returns an upcycled
      :class:`~dynattn.DynamicConv2d`.

    ``spec`` may be a preset name (``"cbam"``). Every call makes fresh parameters; the
    lowering and the graph are cached on ``(spec, channels)``. ``optimize=False`` skips the
    graph passes (:mod:`dynattn.compiler.passes`); ``compile=True`` (or a dict of
    ``torch.compile`` arguments) compiles the module in place with ``fullgraph=True``.
    """
    spec = as_spec(spec)
    options = check_compile(compile)
    if spec.kind == "kernel":
        if conv is None:
            raise SpecError("conv", conv, "a kernel-target spec builds a DynamicConv2d from the conv it replaces",
                            hint="build(spec, conv=nn.Conv2d(...)), or DynamicConv2d(..., spec=spec)")
        from ..dynamic_conv import DynamicConv2d

        module = DynamicConv2d.from_conv(conv, spec)
        if device or dtype:
            module = module.to(device=device, dtype=dtype)
        return apply_compile(module, options)
    if conv is not None:
        raise SpecError("conv", type(conv).__name__, f"only a kernel-target spec takes conv=; "
                        f"this spec's target is {spec.target or 'a composite of feature targets'!r}",
                        hint="pass channels= instead")
    return apply_compile(build_feature(spec, channels, device=device, dtype=dtype, optimize=optimize), options)


def is_attention(module: object) -> bool:
    """True for a module that :func:`build` made for a feature-map spec."""
    return isinstance(module, AttentionModule)
