"""The excitation layers a compiled attention module calls.

Each is a small ``nn.Module`` whose forward has no Python branch on tensor values or
shapes, so a host model that contains one still traces with ``torch.fx``. Parameter names
follow timm's (``fc1``/``fc2``, ``conv``/``bn``) so checkpoints map across by renaming.
"""

from __future__ import annotations

import torch
import torch.fx
from torch import nn
from torch.nn import functional as F

from .errors import InputError
from .mixing import is_exporting
from .vocab import ACTS

__all__ = ["MLP", "ChannelConv1d", "SpatialConv", "ConvMLP", "PixelMLP", "bn_guard"]


def bn_guard(x: torch.Tensor, training: bool) -> torch.Tensor:
    """``x`` itself; in training mode, first a clear error where BatchNorm would have a single
    value per channel (a batch of 1 through an MLP, a 1x1 map with a batch of 1)."""
    if training and x.numel() // max(x.shape[1], 1) <= 1:
        raise InputError(
            "input", tuple(x.shape),
            "reaches a BatchNorm (spec norm='bn') with one value per channel in training mode, where batch "
            "statistics do not exist", hint="train with a batch > 1 (and maps larger than 1x1), call .eval(), "
            "or use norm=None",
        )
    return x


# a host model traced with torch.fx records the guard as one call instead of tracing its shape check
torch.fx.wrap("bn_guard")


def _act(name: str) -> nn.Module:
    return ACTS[name]()


class MLP(nn.Module):
    """Two linear layers over the last axis: ``(..., in) -> (..., hidden) -> (..., out)``.

    SE / CBAM's channel MLP and a dynamic-conv router. Leading axes pass through, so
    several pooled descriptors can share one call when stacked.
    """

    def __init__(
        self,
        in_features: int,
        hidden: int,
        out_features: int,
        *,
        bias: bool = True,
        act: str = "relu",
        norm: str | None = None,
        bn_momentum: float = 0.1,
        bn_eps: float = 1e-5,
        device: torch.device | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        dd = {"device": device, "dtype": dtype}
        self.fc1 = nn.Linear(in_features, hidden, bias=bias, **dd)
        self.bn = nn.BatchNorm1d(hidden, eps=bn_eps, momentum=bn_momentum, **dd) if norm == "bn" else None
        self.act = _act(act)
        self.fc2 = nn.Linear(hidden, out_features, bias=bias, **dd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.fc1(x)
        if self.bn is not None:
            x = self.bn(bn_guard(x, self.training))
        return self.fc2(self.act(x))


class ChannelConv1d(nn.Module):
    """ECA's excitation: a 1-D conv across the channel sequence, ``(B, C) -> (B, C)``.

    With ``in_descriptors > 1`` the input is ``(B, n, C)``: n pooled descriptors as the
    conv's input channels.
    """

    def __init__(
        self,
        kernel_size: int,
        *,
        in_descriptors: int = 1,
        bias: bool = False,
        device: torch.device | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self.stacked = in_descriptors > 1
        self.conv = nn.Conv1d(
            in_descriptors, 1, kernel_size, padding=(kernel_size - 1) // 2, bias=bias,
            device=device, dtype=dtype,
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # The conv written as a weighted sum over sliding windows of the channel sequence:
        # the same arithmetic as ``self.conv(x)``, but pointwise code that inductor fuses with
        # the pooling and the gate, where a (B, 1, C) conv is an extern call that costs more
        # than the pooling itself (see the ECA rows of ``python -m dynattn.bench``).
        if not self.stacked:
            x = x.unsqueeze(1)
        if is_exporting():  # TorchScript's ONNX exporter has no Unfold of unknown size: the conv itself
            return self.conv(x).squeeze(1)
        pad = self.conv.padding[0]
        windows = F.pad(x, (pad, pad)).unfold(-1, self.conv.kernel_size[0], 1)  # (B, n, C, k)
        y = (windows * self.conv.weight[0].unsqueeze(1)).sum((1, 3))
        return y if self.conv.bias is None else y + self.conv.bias


class SpatialConv(nn.Module):
    """CBAM / Triplet's spatial excitation: ``(B, n, H, W) -> (B, 1, H, W)``, k x k conv [+ BN]."""

    def __init__(
        self,
        in_channels: int,
        kernel_size: int,
        *,
        bias: bool = False,
        norm: str | None = None,
        bn_momentum: float = 0.1,
        bn_eps: float = 1e-5,
        device: torch.device | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        dd = {"device": device, "dtype": dtype}
        self.conv = nn.Conv2d(in_channels, 1, kernel_size, padding=(kernel_size - 1) // 2, bias=bias, **dd)
        self.bn = nn.BatchNorm2d(1, eps=bn_eps, momentum=bn_momentum, **dd) if norm == "bn" else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        if self.bn is not None:
            x = self.bn(bn_guard(x, self.training))
        return x


class ConvMLP(nn.Module):
    """GAM's spatial excitation: k x k conv C -> hidden [+ BN] -> act -> k x k conv hidden -> C [+ BN]."""

    def __init__(
        self,
        channels: int,
        hidden: int,
        kernel_size: int,
        *,
        bias: bool = True,
        act: str = "relu",
        norm: str | None = None,
        bn_momentum: float = 0.1,
        bn_eps: float = 1e-5,
        device: torch.device | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        dd = {"device": device, "dtype": dtype}
        pad = (kernel_size - 1) // 2
        bn = norm == "bn"
        self.conv1 = nn.Conv2d(channels, hidden, kernel_size, padding=pad, bias=bias, **dd)
        self.bn1 = nn.BatchNorm2d(hidden, eps=bn_eps, momentum=bn_momentum, **dd) if bn else None
        self.act = _act(act)
        self.conv2 = nn.Conv2d(hidden, channels, kernel_size, padding=pad, bias=bias, **dd)
        self.bn2 = nn.BatchNorm2d(channels, eps=bn_eps, momentum=bn_momentum, **dd) if bn else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(x)
        if self.bn1 is not None:
            x = self.bn1(bn_guard(x, self.training))
        x = self.conv2(self.act(x))
        if self.bn2 is not None:
            x = self.bn2(bn_guard(x, self.training))
        return x


class PixelMLP(nn.Module):
    """GAM's channel excitation: the same MLP C -> hidden -> C at every pixel.

    Written as 1x1 convs, which compute exactly a per-pixel ``Linear`` without the
    permute copies to (B, HW, C) and back.
    """

    def __init__(
        self,
        channels: int,
        hidden: int,
        *,
        bias: bool = True,
        act: str = "relu",
        device: torch.device | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        dd = {"device": device, "dtype": dtype}
        self.fc1 = nn.Conv2d(channels, hidden, 1, bias=bias, **dd)
        self.act = _act(act)
        self.fc2 = nn.Conv2d(hidden, channels, 1, bias=bias, **dd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))
