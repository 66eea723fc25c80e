"""Triplet attention (Misra et al. 2021) as landskape-ai/triplet-attention computes it.

Each branch is a spatial gate (Z-pool cat([max, mean]) over dim 1, conv k x k without
bias, BN(eps=1e-5, momentum=0.01), sigmoid) applied to a permuted copy of x; the result
is permuted back. Branch H sees x.permute(0, 2, 1, 3), branch W x.permute(0, 3, 2, 1),
the plain branch x; the outputs are averaged (1/3, or 1/2 with no_spatial).

Seed bug fixed here: Z-pool concatenates along dim=1 (not dim=11).
"""

import torch
from torch import nn

from .cbam import SpatialGate


class TripletReference(nn.Module):
    def __init__(self, kernel_size: int = 7, no_spatial: bool = False):
        super().__init__()
        self.ChannelGateH = SpatialGate(kernel_size)
        self.ChannelGateW = SpatialGate(kernel_size)
        self.no_spatial = no_spatial
        if not no_spatial:
            self.SpatialGate = SpatialGate(kernel_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out_h = self.ChannelGateH(x.permute(0, 2, 1, 3).contiguous()).permute(0, 2, 1, 3).contiguous()
        out_w = self.ChannelGateW(x.permute(0, 3, 2, 1).contiguous()).permute(0, 3, 2, 1).contiguous()
        if self.no_spatial:
            return 0.5 * (out_h + out_w)
        return (1 / 3) * (self.SpatialGate(x) + out_h + out_w)
