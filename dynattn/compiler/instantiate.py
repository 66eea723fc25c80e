"""The modules and parameters a plan calls: one excitation layer per branch (the layers of
:mod:`dynattn.layers`), a temperature buffer where the gate divides by one, and the ``mix``
scalar of an identity-initialised gate. Fresh for every build; the graph is shared.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .. import layers
from ..vocab import MODULE_POOLS
from .lower import BranchPlan, GroupPlan, Plan

__all__ = ["excite_module", "make_modules"]


def excite_module(branch: BranchPlan, dd: dict) -> nn.Module | None:
    """The excitation layer of ``branch`` (None for ``excite="none"``)."""
    spec = branch.spec
    spatial_dims = branch.spatial_dims
    bn = dict(norm=spec.norm, bn_momentum=spec.bn_momentum, bn_eps=spec.bn_eps or 1e-5)
    hidden = dict(bias=spec.bias, act=spec.act, **bn, **dd)
    if spec.excite == "none":
        return None
    if spec.target == "strip":
        axes = branch.frame[2:]
        if spec.excite == "mlp":
            return layers.StripMLP(branch.channels, branch.hidden, axes=axes, **hidden)
        return layers.StripConv(branch.channels, branch.kernel_size, axes=axes, **hidden)
    if spec.extent:  # each window's channels: the per-pixel forms, as 1x1 convs on the pooled grid
        if spec.excite == "mlp":
            return layers.PixelMLP(branch.excite_in, branch.hidden, spatial_dims=spatial_dims,
                                   out_channels=branch.excite_out, **hidden)
        return layers.CONVS[spatial_dims](branch.excite_in, branch.excite_out, 1, bias=spec.bias, **dd)
    if spec.excite == "mlp":
        return layers.MLP(branch.excite_in, branch.hidden, branch.excite_out, **hidden)
    if spec.excite == "linear" and spec.target == "spatial":  # a 1x1 layer to one map (scSE's sSE)
        return layers.SpatialConv(branch.excite_in, 1, spatial_dims=spatial_dims, bias=spec.bias, **dd)
    if spec.excite == "linear":
        return nn.Linear(branch.excite_in, branch.excite_out, bias=spec.bias, **dd)
    if spec.excite == "conv1d":
        return layers.ChannelConv1d(branch.kernel_size, in_descriptors=branch.excite_in, bias=spec.bias,
                                    padding_mode=spec.padding_mode, **dd)
    if spec.excite == "conv1d_mlp":
        return layers.ChannelConv1dMLP(branch.kernel_size, branch.hidden, in_descriptors=branch.excite_in,
                                       bias=spec.bias, act=spec.act, **dd)
    if spec.excite == "channelwise":
        return layers.Channelwise(branch.channels, branch.excite_in, bias=spec.bias, **bn, **dd)
    if spec.excite == "energy":
        return layers.Energy(spec.energy_lambda, spatial_dims=spatial_dims)
    if spec.excite == "pixel_mlp":
        return layers.PixelMLP(branch.channels, branch.hidden, spatial_dims=spatial_dims, bias=spec.bias, act=spec.act,
                               **dd)
    if spec.excite == "conv" and spec.target == "spatial" and spec.pool == ("none",):
        return layers.SpatialBottleneck(branch.channels, branch.hidden, branch.kernel_size, spatial_dims=spatial_dims,
                                        dilation=spec.dilation, **hidden)
    if spec.excite == "conv" and spec.target == "spatial":
        return layers.SpatialConv(branch.excite_in, branch.kernel_size, spatial_dims=spatial_dims,
                                  dilation=spec.dilation, bias=spec.bias, **bn, **dd)
    if spec.excite == "conv":
        return layers.ConvMLP(branch.channels, branch.hidden, branch.kernel_size, spatial_dims=spatial_dims,
                              dilation=spec.dilation, **hidden)
    raise AssertionError(f"unhandled excite {spec.excite!r}")  # the spec validated it


def _pool_module(op: str, branch: BranchPlan, dd: dict) -> nn.Module:
    if op == "attn":
        return layers.AttentionPool(branch.channels, spatial_dims=branch.spatial_dims, **dd)
    return layers.DCTPool(branch.channels, branch.spec.frequencies, spatial_dims=branch.spatial_dims,
                          device=dd["device"])


def _gate_state(spec: Any, dd: dict) -> dict[str, nn.Module | torch.Tensor]:
    """The temperature buffer and the identity-init ``mix`` of a gate."""
    out: dict[str, Any] = {}
    if spec.temperature != 1.0:
        out["temperature"] = torch.tensor(spec.temperature, device=dd["device"], dtype=dd["dtype"])
    if spec.init == "identity":
        out["mix"] = nn.Parameter(torch.zeros((), device=dd["device"], dtype=dd["dtype"]))
    return out


def _branch_modules(branch: BranchPlan, dd: dict) -> dict[str, nn.Module | torch.Tensor]:
    spec = branch.spec
    out: dict[str, Any] = {}
    for op in spec.pool:
        if op in MODULE_POOLS:
            out[f"pool_{op}"] = _pool_module(op, branch, dd)
    excite = excite_module(branch, dd)
    if excite is not None:
        out["excite"] = excite
    out.update(_gate_state(spec, dd))
    return out


def _register(root: nn.Module, path: str, items: dict[str, Any]) -> None:
    owner = root
    if path:
        if not hasattr(root, path):
            root.add_module(path, nn.Module())
        owner = getattr(root, path)
    for key, value in items.items():
        if isinstance(value, nn.Parameter):
            owner.register_parameter(key, value)
        elif isinstance(value, torch.Tensor):
            owner.register_buffer(key, value)
        else:
            owner.add_module(key, value)


def make_modules(plan: Plan, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> nn.Module:
    """A fresh root module holding every branch's submodules, buffers and parameters."""
    dd = {"device": device, "dtype": dtype if dtype is not None else torch.get_default_dtype()}
    root = nn.Module()
    for stage in plan.stages:
        stages = stage.stages if isinstance(stage, GroupPlan) else (stage,)
        for inner in stages:
            for branch in inner.branches:
                _register(root, branch.name, _branch_modules(branch, dd))
        if isinstance(stage, GroupPlan):
            _register(root, stage.name, _gate_state(stage.spec, dd))
    return root
