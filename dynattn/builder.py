"""``build``: the one dispatcher from a spec to a module, and the ``compile=`` option it shares
with graph_passes.

- feature targets (channel, spatial, element, composites) -> :func:`dynattn.compiler.build_feature`;
- the kernel target -> ``from_conv`` of :class:`dynattn.DynamicConv1d`, ``DynamicConv2d`` or
  ``DynamicConv3d``, by the number of spatial dims of the conv given (an upcycled conv).
"""

from __future__ import annotations

import torch
from torch import nn

from .compiler import AttentionModule, build_feature
from .dynamic_conv import dynamic_conv_class
from .errors import SpecError
from .presets import as_spec
from .spec import AttnSpec

__all__ = ["build", "compile_options", "apply_compile", "is_attention"]


def is_attention(module: object) -> bool:
    """True for a module that :func:`build` made for a feature-map spec."""
    return isinstance(module, AttentionModule)


def compile_options(compile: object) -> dict | None:
    """A ``compile=`` argument as ``torch.compile`` keyword arguments (None: do not compile).

    ``False``/``None`` -> None, ``True`` -> ``{}``, a dict -> a copy of it; anything else raises
    ``SpecError``. Tools that take the same argument as :func:`build` call this to check it.
    """
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
    if isinstance(meta, dict):  # a dynattn GraphModule: pickles and copies compile again with the same arguments
        meta["dynattn_compile"] = options
    return module


def build(
    spec: AttnSpec | str,
    channels: int | None = None,
    *,
    conv: nn.Conv1d | nn.Conv2d | nn.Conv3d | None = None,
    spatial_dims: int = 2,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
    optimize: bool = True,
    compile: bool | dict = False,
) -> nn.Module:
    """Build ``spec``.

    - feature targets (channel, spatial, element, composites): ``build(spec, channels=C)``
      returns a ``torch.fx.GraphModule`` mapping ``(B, C, H, W)`` to the same shape;
      ``spatial_dims=1`` or ``3`` builds the same spec for ``(B, C, L)`` or ``(B, C, D, H, W)`` maps
      (``graph_passes.insert_attention`` takes it from each site's feature map);
    - kernel target: ``build(spec, conv=nn.Conv2d(...))`` returns an upcycled
      :class:`~dynattn.DynamicConv2d` (an ``nn.Conv1d`` / ``nn.Conv3d`` gives a
      :class:`~dynattn.DynamicConv1d` / :class:`~dynattn.DynamicConv3d`).

    ``spec`` may be a preset name (``"cbam"``). Every call makes fresh parameters; the
    lowering and the graph are cached on ``(spec, channels, spatial_dims)``. ``optimize=False`` skips the
    graph passes (:mod:`dynattn.compiler.optimize`); ``compile=True`` (or a dict of
    ``torch.compile`` arguments) compiles the module in place with ``fullgraph=True``.
    """
    spec = as_spec(spec)
    options = compile_options(compile)
    if spec.kind == "kernel":
        if conv is None:
            raise SpecError("conv", conv, "a kernel-target spec builds a DynamicConv2d from the conv it replaces "
                            "(a DynamicConv1d / DynamicConv3d from an nn.Conv1d / nn.Conv3d)",
                            hint="build(spec, conv=nn.Conv2d(...)), or DynamicConv2d(..., spec=spec)")
        module = dynamic_conv_class(conv).from_conv(conv, spec)
        if device or dtype:
            module = module.to(device=device, dtype=dtype)
        return apply_compile(module, options)
    if conv is not None:
        raise SpecError("conv", type(conv).__name__, f"only a kernel-target spec takes conv=; "
                        f"this spec's target is {spec.target or 'a composite of feature targets'!r}",
                        hint="pass channels= instead")
    module = build_feature(spec, channels, spatial_dims=spatial_dims, device=device, dtype=dtype, optimize=optimize)
    return apply_compile(module, options)
