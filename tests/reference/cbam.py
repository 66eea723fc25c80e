"""CBAM (Woo et al. 2018) as the authors' Jongchan/attention-module computes it.

Channel gate: for each pool type, pooled = pool over the whole H x W window, then a
shared MLP (Linear C -> C // r with bias, ReLU, Linear back); the raw outputs are summed,
then sigmoid. Pool types: avg, max, lp (F.lp_pool2d with p = 2 over the window, i.e. the
L2 norm) and lse (log-sum-exp over positions).
Spatial gate: Z-pool cat([max over C, mean over C]) -> conv k x k (2 -> 1, no bias,
padding (k - 1) // 2) -> BN(eps=1e-5, momentum=0.01) -> sigmoid.

Seed bugs fixed here: torch.max returns (values, indices) so take [0]; the two maps are
concatenated, not added; padding follows kernel_size.
"""

import torch
import torch.nn.functional as F
from torch import nn


class BasicConv(nn.Module):
    def __init__(self, cin: int, cout: int, k: int, bn_momentum: float = 0.01):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, k, padding=(k - 1) // 2, bias=False)
        self.bn = nn.BatchNorm2d(cout, eps=1e-5, momentum=bn_momentum, affine=True)

    def forward(self, x):
        return self.bn(self.conv(x))


def _lse(x: torch.Tensor) -> torch.Tensor:
    flat = x.view(x.size(0), x.size(1), -1)
    s, _ = torch.max(flat, dim=2, keepdim=True)
    return s + (flat - s).exp().sum(dim=2, keepdim=True).log()


class ChannelGate(nn.Module):
    def __init__(self, channels: int, reduction: int = 16, pool_types=("avg", "max")):
        super().__init__()
        self.mlp = nn.Sequential(
            nn.Flatten(), nn.Linear(channels, channels // reduction), nn.ReLU(),
            nn.Linear(channels // reduction, channels),
        )
        self.pool_types = pool_types

    def forward(self, x):
        window = (x.size(2), x.size(3))
        total = None
        for p in self.pool_types:
            if p == "avg":
                pooled = F.avg_pool2d(x, window, stride=window)
            elif p == "max":
                pooled = F.max_pool2d(x, window, stride=window)
            elif p == "lp":
                pooled = F.lp_pool2d(x, 2, window, stride=window)
            elif p == "lse":
                pooled = _lse(x)
            else:
                raise ValueError(p)
            raw = self.mlp(pooled)
            total = raw if total is None else total + raw
        return x * torch.sigmoid(total).unsqueeze(2).unsqueeze(3).expand_as(x)


class ZPool(nn.Module):
    def forward(self, x):
        return torch.cat((torch.max(x, 1)[0].unsqueeze(1), torch.mean(x, 1).unsqueeze(1)), dim=1)


class SpatialGate(nn.Module):
    def __init__(self, kernel_size: int = 7, bn_momentum: float = 0.01):
        super().__init__()
        self.compress = ZPool()
        self.spatial = BasicConv(2, 1, kernel_size, bn_momentum)

    def forward(self, x):
        return x * torch.sigmoid(self.spatial(self.compress(x)))


class CBAMReference(nn.Module):
    def __init__(self, channels: int, reduction: int = 16, kernel_size: int = 7, pool_types=("avg", "max")):
        super().__init__()
        self.ChannelGate = ChannelGate(channels, reduction, pool_types)
        self.SpatialGate = SpatialGate(kernel_size)

    def forward(self, x):
        return self.SpatialGate(self.ChannelGate(x))
