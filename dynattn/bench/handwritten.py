"""Hand-written attention modules as their authors' repositories write them, timed by the
benchmark as the code dynattn replaces (timm's modules stand in for SE, ECA and CBAM).

Triplet follows landskape-ai/triplet-attention (permuted, contiguous copies of x per branch);
GAM follows the widely copied implementation of the paper (a Linear over x permuted to
(B, H*W, C)). These are timing baselines; the numeric references are in ``tests/reference``.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["TripletAttention", "GAMAttention", "CondConvWithRouter"]


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
