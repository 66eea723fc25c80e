"""Upcycling a torch conv into a dynamic conv: every expert starts as the conv's weight and bias, from the conv
itself (``from_conv``) or from its checkpoint (``load_state_dict`` of a converted model)."""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator

import torch
from torch import nn

from ..errors import SpecError
from ..presets import as_spec
from ..spec import AttnSpec

__all__ = ["upcycling", "is_upcycling", "upcycle_spec", "fill_experts", "expand_conv_checkpoint"]

# set while from_conv builds a layer: the experts are about to be overwritten with the conv's weight
_UPCYCLING = contextvars.ContextVar("dynattn_upcycling", default=False)


@contextlib.contextmanager
def upcycling() -> Iterator[None]:
    """Layers built inside skip initialising their experts (the conv's weight overwrites them)."""
    token = _UPCYCLING.set(True)
    try:
        yield
    finally:
        _UPCYCLING.reset(token)


def is_upcycling() -> bool:
    return _UPCYCLING.get()


def upcycle_spec(cls: type, conv: nn.Module, spec: AttnSpec | str, other: type | None) -> AttnSpec:
    """``spec`` with identity initialisation, after checking that ``cls`` can reproduce ``conv`` exactly: a plain
    conv of its own rank (``other``: the dynamic conv of ``conv``'s rank, for the hint) and a kernel-target spec."""
    base = cls.conv_class
    if not isinstance(conv, base) or type(conv).forward is not base.forward:
        raise SpecError("conv", type(conv).__name__,
                        f"only a plain nn.{base.__name__} (or a subclass with its forward) can be upcycled "
                        f"exactly by {cls.__name__}",
                        hint=f"use {other.__name__}.from_conv, or dynattn.build(spec, conv=...)" if other else
                        "its forward differs (weight standardisation, dynamic padding, ...)")
    spec = as_spec(spec)
    if spec.kind != "kernel":
        raise SpecError("spec", spec, "upcycling needs a kernel-target spec", hint="e.g. AttnSpec.dyconv()")
    return spec.with_init("identity")


def fill_experts(layer: nn.Module, conv: nn.Module) -> None:
    """Every expert of ``layer`` takes ``conv``'s weight and bias."""
    with torch.no_grad():
        layer.weight.copy_(conv.weight.detach().repeat(layer.experts, *(1,) * (layer.spatial_dims + 1)))
        if conv.bias is not None:
            layer.bias.copy_(conv.bias.detach().unsqueeze(0).expand_as(layer.bias))


def expand_conv_checkpoint(layer: nn.Module, state_dict: dict, prefix: str) -> None:
    """In ``state_dict``, a ``weight`` of the torch conv's shape (and its ``bias``) becomes every expert's, as
    ``from_conv`` does, so that a converted model loads the original model's checkpoint."""
    conv_shape = (layer.out_channels, layer.in_channels // layer.groups, *layer.kernel_size)
    weight = state_dict.get(prefix + "weight")
    if layer.experts > 1 and isinstance(weight, torch.Tensor) and tuple(weight.shape) == conv_shape:
        state_dict[prefix + "weight"] = weight.repeat(layer.experts, *(1,) * (layer.spatial_dims + 1))
    bias = state_dict.get(prefix + "bias")
    if layer.bias is not None and isinstance(bias, torch.Tensor) and tuple(bias.shape) == (layer.out_channels,):
        state_dict[prefix + "bias"] = bias.unsqueeze(0).expand_as(layer.bias)
