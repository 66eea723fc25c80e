"""The modules and parameters a plan calls: one excitation layer per branch (the layers of
:mod:`dynattn.layers`), a temperature buffer where the gate divides by one, and the ``mix``
scalar of an identity-initialised gate. Fresh for every build; the graph is shared.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .. import layers
from .lower import BranchPlan, Plan

__all__ = ["excite_module", "make_modules"]


def excite_module(branch: BranchPlan, dd: dict) -> nn.Module | None:
    """The excitation layer of ``branch`` (None for ``excite="none"``)."""
    spec = branch.spec
    bn = dict(norm=spec.norm, bn_momentum=spec.bn_momentum, bn_eps=spec.bn_eps)
    if spec.excite == "none":
        return None
    if spec.excite == "mlp":
        return layers.MLP(branch.excite_in, branch.hidden, branch.excite_out, bias=spec.bias, act=spec.act, **bn, **dd)
    if spec.excite == "linear":
        return nn.Linear(branch.excite_in, branch.excite_out, bias=spec.bias, **dd)
    if spec.excite == "conv1d":
        return layers.ChannelConv1d(branch.kernel_size, in_descriptors=branch.excite_in, bias=spec.bias, **dd)
    if spec.excite == "pixel_mlp":
        return layers.PixelMLP(branch.channels, branch.hidden, bias=spec.bias, act=spec.act, **dd)
    if spec.excite == "conv" and spec.target == "spatial":
        return layers.SpatialConv(branch.excite_in, branch.kernel_size, bias=spec.bias, **bn, **dd)
    if spec.excite == "conv":
        return layers.ConvMLP(branch.channels, branch.hidden, branch.kernel_size, bias=spec.bias, act=spec.act,
                              **bn, **dd)
    raise AssertionError(f"unhandled excite {spec.excite!r}")  # the spec validated it


def _branch_modules(branch: BranchPlan, dd: dict) -> dict[str, nn.Module | torch.Tensor]:
    spec = branch.spec
    out: dict[str, Any] = {}
    excite = excite_module(branch, dd)
    if excite is not None:
        out["excite"] = excite
    if spec.temperature != 1.0:
        out["temperature"] = torch.tensor(spec.temperature, device=dd["device"], dtype=dd["dtype"])
    if spec.init == "identity":
        out["mix"] = nn.Parameter(torch.zeros((), device=dd["device"], dtype=dd["dtype"]))
    return out


def make_modules(plan: Plan, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> nn.Module:
    """A fresh root module holding every branch's submodules, buffers and parameters."""
    dd = {"device": device, "dtype": dtype if dtype is not None else torch.get_default_dtype()}
    root = nn.Module()
    for stage in plan.stages:
        for branch in stage.branches:
            owner = root
            if branch.name:
                owner = nn.Module()
                root.add_module(branch.name, owner)
            for key, value in _branch_modules(branch, dd).items():
                if isinstance(value, nn.Parameter):
                    owner.register_parameter(key, value)
                elif isinstance(value, torch.Tensor):
                    owner.register_buffer(key, value)
                else:
                    owner.add_module(key, value)
    return root
