"""Gather-Excite's parameter-free GE-theta-minus (Hu et al. 2018, NeurIPS): gather by average pooling over the
extent (global for extent 0; else windows of 2e - 1 with stride e, zero padding e - 1 not counted), excite
by resizing the gathered map back to h x w (nearest neighbour) and a sigmoid; out = x * gate.
"""

import torch
import torch.nn.functional as F
from torch import nn


class GEThetaMinusReference(nn.Module):
    def __init__(self, extent: int = 0):
        super().__init__()
        self.extent = extent

    def forward(self, x):
        if self.extent == 0:
            gathered = F.adaptive_avg_pool2d(x, 1)
        else:
            k = 2 * self.extent - 1
            gathered = F.avg_pool2d(x, kernel_size=k, stride=self.extent, padding=k // 2, count_include_pad=False)
        return x * torch.sigmoid(F.interpolate(gathered, size=x.shape[-2:], mode="nearest"))
