"""Hand-written attention modules as their authors' repositories write them, timed by the
benchmark as the code dynattn replaces (timm's modules stand in for SE, ECA, CBAM and the rest of
``timm.layers.create_attn``'s list).

Triplet follows landskape-ai/triplet-attention (permuted, contiguous copies of x per branch);
GAM follows the widely copied implementation of the paper (a Linear over x permuted to
(B, H*W, C)); SimAM, BAM, SRM and FcaNet follow ZjjConan/SimAM, Jongchan/attention-module,
hyunjaelee410/style-based-recalibration-module and cfzd/FcaNet. These are timing baselines; the
numeric references are in ``tests/reference``.
"""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["TripletAttention", "GAMAttention", "CondConvWithRouter", "SimAM", "BAM", "SRM", "FcaNet",
           "timm_attention", "SENd", "CBAM3d", "se_nd"]


class _ZPoolConv(nn.Module):
    def __init__(self, kernel_size: int = 7) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 1, kernel_size, padding=(kernel_size - 1) // 2, bias=False)
        self.bn = nn.BatchNorm2d(1, eps=1e-5, momentum=0.01)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = torch.cat((torch.max(x, 1)[0].unsqueeze(1), torch.mean(x, 1).unsqueeze(1)), dim=1)
        return x * torch.sigmoid(self.bn(self.conv(pooled)))


class TripletAttention(nn.Module):
    def __init__(self, kernel_size: int = 7) -> None:
        super().__init__()
        self.gate_h, self.gate_w, self.gate_s = _ZPoolConv(kernel_size), _ZPoolConv(kernel_size), _ZPoolConv(
            kernel_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out_h = self.gate_h(x.permute(0, 2, 1, 3).contiguous()).permute(0, 2, 1, 3).contiguous()
        out_w = self.gate_w(x.permute(0, 3, 2, 1).contiguous()).permute(0, 3, 2, 1).contiguous()
        return (1 / 3) * (self.gate_s(x) + out_h + out_w)


class GAMAttention(nn.Module):
    def __init__(self, channels: int, rate: int = 4) -> None:
        super().__init__()
        hidden = int(channels / rate)
        self.channel_attention = nn.Sequential(nn.Linear(channels, hidden), nn.ReLU(inplace=True),
                                               nn.Linear(hidden, channels))
        self.spatial_attention = nn.Sequential(
            nn.Conv2d(channels, hidden, 7, padding=3), nn.BatchNorm2d(hidden), nn.ReLU(inplace=True),
            nn.Conv2d(hidden, channels, 7, padding=3), nn.BatchNorm2d(channels),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        att = self.channel_attention(x.permute(0, 2, 3, 1).reshape(b, -1, c)).view(b, h, w, c).permute(0, 3, 1, 2)
        x = x * att.sigmoid()
        return x * self.spatial_attention(x).sigmoid()


class CondConvWithRouter(nn.Module):
    """timm's CondConv2d with the routing timm's CondConvResidual computes for it."""

    def __init__(self, cin: int, cout: int, experts: int = 4) -> None:
        super().__init__()
        from timm.layers.cond_conv2d import CondConv2d

        self.routing_fn = nn.Linear(cin, experts)
        self.conv = CondConv2d(cin, cout, 3, padding=1, bias=True, num_experts=experts)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x, torch.sigmoid(self.routing_fn(x.mean((2, 3)))))


class SimAM(nn.Module):
    def __init__(self, e_lambda: float = 1e-4) -> None:
        super().__init__()
        self.e_lambda = e_lambda

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = x.shape[2] * x.shape[3] - 1
        d = (x - x.mean(dim=[2, 3], keepdim=True)).pow(2)
        return x * torch.sigmoid(d / (4 * (d.sum(dim=[2, 3], keepdim=True) / n + self.e_lambda)) + 0.5)


class BAM(nn.Module):
    def __init__(self, channels: int, reduction: int = 16, dilation: int = 4) -> None:
        super().__init__()
        hidden = channels // reduction
        self.gate_c = nn.Sequential(nn.Flatten(), nn.Linear(channels, hidden), nn.BatchNorm1d(hidden), nn.ReLU(),
                                    nn.Linear(hidden, channels))
        layers: list[nn.Module] = [nn.Conv2d(channels, hidden, 1), nn.BatchNorm2d(hidden), nn.ReLU()]
        for _ in range(2):
            layers += [nn.Conv2d(hidden, hidden, 3, padding=dilation, dilation=dilation), nn.BatchNorm2d(hidden),
                       nn.ReLU()]
        self.gate_s = nn.Sequential(*layers, nn.Conv2d(hidden, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = nn.functional.avg_pool2d(x, x.size(2), stride=x.size(2))
        channel = self.gate_c(pooled).unsqueeze(2).unsqueeze(3).expand_as(x)
        spatial = self.gate_s(x).expand_as(x)
        return (1 + torch.sigmoid(channel * spatial)) * x


class SRM(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.cfc = nn.Parameter(torch.zeros(channels, 2))
        self.bn = nn.BatchNorm2d(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, _, _ = x.size()
        mean = x.view(n, c, -1).mean(dim=2).view(n, c, -1)
        std = x.view(n, c, -1).std(dim=2).view(n, c, -1)
        z = torch.sum(torch.cat((mean, std), dim=2) * self.cfc[None, :, :], dim=2)[:, :, None, None]
        return x * torch.sigmoid(self.bn(z))


class FcaNet(nn.Module):
    """FcaNet's layer with its DCT built for ``size`` x ``size`` maps, top16 frequencies."""

    TOP = ((0, 0, 6, 0, 0, 1, 1, 4, 5, 1, 3, 0, 0, 0, 3, 2), (0, 1, 0, 5, 2, 0, 2, 0, 0, 6, 0, 4, 6, 3, 5, 2))

    def __init__(self, channels: int, size: int, reduction: int = 16) -> None:
        super().__init__()
        scale = size // 7
        weight = torch.zeros(channels, size, size)
        part = channels // 16

        def basis(t: int, f: int) -> float:
            v = math.cos(math.pi * f * (t + 0.5) / size) / math.sqrt(size)
            return v if f == 0 else v * math.sqrt(2)

        for i, (u, v) in enumerate(zip(*self.TOP)):
            for tx in range(size):
                for ty in range(size):
                    weight[i * part:(i + 1) * part, tx, ty] = basis(tx, u * scale) * basis(ty, v * scale)
        self.register_buffer("weight", weight)
        self.fc = nn.Sequential(nn.Linear(channels, channels // reduction, bias=False), nn.ReLU(inplace=True),
                                nn.Linear(channels // reduction, channels, bias=False), nn.Sigmoid())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c = x.shape[:2]
        y = torch.sum(x * self.weight, dim=[2, 3])
        return x * self.fc(y).view(n, c, 1, 1).expand_as(x)


def timm_attention(name: str, channels: int) -> nn.Module:
    """``timm.layers.create_attn(name, channels)``. timm 1.0.31 cannot build its GatherExcite with the MLP
    (its ``__init__`` passes the device/dtype dict unpacked as positional arguments to ``ConvMlp``); that
    one is built without and given the ``ConvMlp`` the line means to build."""
    from timm.layers import ConvMlp, GatherExcite, create_attn, make_divisible

    try:
        return create_attn(name, channels)
    except TypeError:
        if name != "ge":
            raise
        module = GatherExcite(channels, use_mlp=False)
        module.mlp = ConvMlp(channels, make_divisible(channels / 16, 1, round_limit=0.0), act_layer=nn.ReLU)
        return module


class SENd(nn.Module):
    """Squeeze-and-excitation on (B, C, L) or (B, C, D, H, W) maps as MONAI's ``ChannelSELayer`` computes it
    (adaptive average pooling, Linear -> ReLU -> Linear -> sigmoid, view, multiply): the stand-in where MONAI
    is not installed."""

    def __init__(self, spatial_dims: int, channels: int, reduction: int = 16) -> None:
        super().__init__()
        self.pool = (nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d)[spatial_dims - 1](1)
        hidden = channels // reduction
        self.fc = nn.Sequential(nn.Linear(channels, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, channels),
                                nn.Sigmoid())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c = x.shape[:2]
        return x * self.fc(self.pool(x).view(b, c)).view([b, c] + [1] * (x.dim() - 2))


def se_nd(spatial_dims: int, channels: int, reduction: int = 16) -> nn.Module:
    """MONAI's ``ChannelSELayer`` (``r=reduction``), or :class:`SENd` where MONAI is not installed."""
    try:
        from monai.networks.blocks import ChannelSELayer
    except ImportError:
        return SENd(spatial_dims, channels, reduction)
    return ChannelSELayer(spatial_dims, channels, r=reduction)


class CBAM3d(nn.Module):
    """CBAM on (B, C, D, H, W) clips or volumes as it is copied into 3-D code: the authors' channel gate with
    3-D pooling, and their spatial gate with a 7 x 7 x 7 Conv3d."""

    def __init__(self, channels: int, reduction: int = 16, kernel_size: int = 7) -> None:
        super().__init__()
        self.mlp = nn.Sequential(nn.Flatten(), nn.Linear(channels, channels // reduction), nn.ReLU(),
                                 nn.Linear(channels // reduction, channels))
        self.conv = nn.Conv3d(2, 1, kernel_size, padding=(kernel_size - 1) // 2, bias=False)
        self.bn = nn.BatchNorm3d(1, eps=1e-5, momentum=0.01)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        window = x.shape[2:]
        avg = nn.functional.avg_pool3d(x, window, stride=window)
        mx = nn.functional.max_pool3d(x, window, stride=window)
        x = x * torch.sigmoid(self.mlp(avg) + self.mlp(mx)).view(*x.shape[:2], 1, 1, 1)
        pooled = torch.cat((torch.max(x, 1)[0].unsqueeze(1), torch.mean(x, 1).unsqueeze(1)), dim=1)
        return x * torch.sigmoid(self.bn(self.conv(pooled)))
