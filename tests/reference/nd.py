"""The papers' formulas on 1-D (B, C, L) and 3-D (B, C, D, H, W) maps, written from the formulas (no
dynattn code), for the presets whose computation depends on the arrangement of positions.

- CBAM (Woo et al. 2018): channel gate sigmoid(MLP(avg) + MLP(max)) over all positions; spatial gate
  sigmoid(BN(conv_k([max_c, mean_c]))) with a k-wide / k x k x k conv (no bias) and BN momentum 0.01,
  as the authors' code (Jongchan/attention-module) sets it.
- Triplet (Misra et al. 2021): the spatial gate applied to x with the channel axis swapped with each
  spatial axis in turn (the swap permuted back), and to x itself; the results averaged. On a 2-D map
  these are the paper's three branches; on (B, C, L) two, on (B, C, D, H, W) four.
- GAM (Liu et al. 2021): a per-position MLP over the channels, sigmoid; then conv_k -> BN -> ReLU ->
  conv_k -> BN, sigmoid.
- Coordinate attention (Hou et al. 2021): one strip per spatial axis (x averaged over the other spatial
  axes), the strips concatenated along the position axis through a 1x1 conv c -> mip (bias), BN and
  h-swish, split, a 1x1 conv mip -> c (bias) per axis, sigmoid; x times every axis' gate. On (B, C, L)
  the one strip is x itself.
- FcaNet (Qin et al. 2021): channel c's descriptor is the orthonormal DCT-II component of its map at its
  group's frequency; the frequencies (u, v) index H and W (scaled by H // 7, W // 7); a depth axis takes
  frequency 0 and a 1-D map's L takes u. Then Linear -> ReLU -> Linear -> sigmoid (no bias).
"""

import math

import torch
import torch.nn.functional as F
from torch import nn

CONV = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}
BN = {1: nn.BatchNorm1d, 2: nn.BatchNorm2d, 3: nn.BatchNorm3d}


def spatial_dims(x: torch.Tensor) -> tuple[int, ...]:
    return tuple(range(2, x.dim()))


def channel_view(gate: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """A (B, C) gate viewed to broadcast over x's positions."""
    return gate.view(*gate.shape, *([1] * (x.dim() - 2)))


class SpatialGateNd(nn.Module):
    def __init__(self, dims: int, kernel_size: int = 7):
        super().__init__()
        self.conv = CONV[dims](2, 1, kernel_size, padding=(kernel_size - 1) // 2, bias=False)
        self.bn = BN[dims](1, eps=1e-5, momentum=0.01)

    def forward(self, x):
        z = torch.cat([x.max(dim=1, keepdim=True)[0], x.mean(dim=1, keepdim=True)], dim=1)
        return x * torch.sigmoid(self.bn(self.conv(z)))


class CBAMNd(nn.Module):
    def __init__(self, dims: int, channels: int, reduction: int = 16, kernel_size: int = 7):
        super().__init__()
        hidden = channels // reduction
        self.mlp = nn.Sequential(nn.Linear(channels, hidden), nn.ReLU(), nn.Linear(hidden, channels))
        self.spatial = SpatialGateNd(dims, kernel_size)

    def forward(self, x):
        avg, mx = x.mean(dim=spatial_dims(x)), x.amax(dim=spatial_dims(x))
        x = x * channel_view(torch.sigmoid(self.mlp(avg) + self.mlp(mx)), x)
        return self.spatial(x)


class TripletNd(nn.Module):
    def __init__(self, dims: int, kernel_size: int = 7):
        super().__init__()
        self.dims = dims
        # one gate per swap of the channels with a spatial axis, then the plain one
        self.gates = nn.ModuleList(SpatialGateNd(dims, kernel_size) for _ in range(dims + 1))

    def forward(self, x):
        outs = []
        for i, gate in enumerate(self.gates[:-1]):
            perm = list(range(x.dim()))
            perm[1], perm[2 + i] = perm[2 + i], perm[1]
            outs.append(gate(x.permute(perm).contiguous()).permute(perm))
        outs.append(self.gates[-1](x))
        return sum(outs) / len(outs)


class GAMNd(nn.Module):
    def __init__(self, dims: int, channels: int, rate: int = 4, kernel_size: int = 7):
        super().__init__()
        hidden = int(channels / rate)
        pad = (kernel_size - 1) // 2
        self.channel_attention = nn.Sequential(nn.Linear(channels, hidden), nn.ReLU(), nn.Linear(hidden, channels))
        self.spatial_attention = nn.Sequential(
            CONV[dims](channels, hidden, kernel_size, padding=pad), BN[dims](hidden), nn.ReLU(),
            CONV[dims](hidden, channels, kernel_size, padding=pad), BN[dims](channels),
        )

    def forward(self, x):
        last = x.movedim(1, -1)  # channels last: the MLP runs at every position
        x = x * torch.sigmoid(self.channel_attention(last).movedim(-1, 1))
        return x * torch.sigmoid(self.spatial_attention(x))


class CoordAttNd(nn.Module):
    def __init__(self, dims: int, channels: int, reduction: int = 32):
        super().__init__()
        mip = max(8, channels // reduction)
        self.dims = dims
        self.conv1 = nn.Conv1d(channels, mip, 1)
        self.bn1 = nn.BatchNorm1d(mip)
        self.convs = nn.ModuleList(nn.Conv1d(mip, channels, 1) for _ in range(dims))

    def forward(self, x):
        axes = spatial_dims(x)
        strips = [x.mean(dim=tuple(a for a in axes if a != axis)) if len(axes) > 1 else x for axis in axes]
        y = self.bn1(self.conv1(torch.cat(strips, dim=2)))
        y = y * F.relu6(y + 3) / 6
        out = x
        for axis, part, conv in zip(axes, torch.split(y, [s.shape[2] for s in strips], dim=2), self.convs):
            shape = [x.shape[0], x.shape[1]] + [x.shape[a] if a == axis else 1 for a in axes]
            out = out * torch.sigmoid(conv(part)).view(shape)
        return out


# FcaNet's top16 selection (u, v) in a 7 x 7 frequency space (cfzd/FcaNet, get_freq_indices('top16'))
TOP16_U = [0, 0, 6, 0, 0, 1, 1, 4, 5, 1, 3, 0, 0, 0, 3, 2]
TOP16_V = [0, 1, 0, 5, 2, 0, 2, 0, 0, 6, 0, 4, 6, 3, 5, 2]


def dct(freq: int, pos: int, size: int) -> float:
    value = math.cos(math.pi * freq * (pos + 0.5) / size) / math.sqrt(size)
    return value if freq == 0 else value * math.sqrt(2)


class FcaNd(nn.Module):
    def __init__(self, dims: int, channels: int, reduction: int = 16):
        super().__init__()
        assert channels % 16 == 0
        self.dims = dims
        self.channels = channels
        self.fc = nn.Sequential(nn.Linear(channels, channels // reduction, bias=False), nn.ReLU(),
                                nn.Linear(channels // reduction, channels, bias=False), nn.Sigmoid())

    def filter(self, sizes):
        group = self.channels // 16
        filt = torch.zeros(self.channels, *sizes, dtype=torch.float64)
        for c in range(self.channels):
            u, v = TOP16_U[c // group], TOP16_V[c // group]
            if self.dims == 1:
                (n,) = sizes
                for t in range(n):
                    filt[c, t] = dct(u * (n // 7), t, n)
            else:
                d, h, w = sizes
                for i in range(d):
                    for j in range(h):
                        for k in range(w):
                            filt[c, i, j, k] = dct(0, i, d) * dct(u * (h // 7), j, h) * dct(v * (w // 7), k, w)
        return filt

    def forward(self, x):
        filt = self.filter(tuple(x.shape[2:])).to(x.dtype)
        y = (x * filt).sum(dim=spatial_dims(x))
        return x * channel_view(self.fc(y), x)
