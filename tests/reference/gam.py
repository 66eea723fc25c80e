"""GAM (Liu et al. 2021, arXiv:2112.05561), the formula of the paper.

Channel submodule: M_c = sigmoid(MLP(x permuted to (B, H*W, C))) permuted back, the MLP
Linear C -> int(C / rate) -> C with bias and ReLU; x1 = x * M_c.
Spatial submodule: M_s = sigmoid(BN(conv7(ReLU(BN(conv7(x1)))))) with convs
C -> int(C / rate) -> C (bias); out = x1 * M_s.

Seed bug fixed here: the seed's channel submodule omits the sigmoid the paper specifies.
"""

import torch
from torch import nn


class GAMReference(nn.Module):
    def __init__(self, channels: int, rate: int = 4, kernel_size: int = 7):
        super().__init__()
        hidden = int(channels / rate)
        pad = (kernel_size - 1) // 2
        self.channel_attention = nn.Sequential(
            nn.Linear(channels, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, channels)
        )
        self.spatial_attention = nn.Sequential(
            nn.Conv2d(channels, hidden, kernel_size, padding=pad), nn.BatchNorm2d(hidden),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, channels, kernel_size, padding=pad), nn.BatchNorm2d(channels),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        perm = x.permute(0, 2, 3, 1).reshape(b, -1, c)
        att = self.channel_attention(perm).view(b, h, w, c).permute(0, 3, 1, 2)
        x = x * torch.sigmoid(att)
        return x * torch.sigmoid(self.spatial_attention(x))
