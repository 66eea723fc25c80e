"""Coordinate attention (Hou et al. 2021, CVPR) as houqb/CoordAttention's ``CoordAtt`` computes it.

x averaged along W (an H strip, (n, c, h, 1)) and along H (a W strip, transposed to (n, c, w, 1));
the two concatenated along the position axis through one 1x1 conv c -> mip (with bias), BN and
h-swish (x * relu6(x + 3) / 6), split back, one 1x1 conv mip -> c (with bias) per direction, a
sigmoid each; out = x * a_w * a_h. mip = max(8, c // reduction), reduction 32.
"""

import torch
import torch.nn.functional as F
from torch import nn


class HSwish(nn.Module):
    def forward(self, x):
        return x * (F.relu6(x + 3) / 6)


class CoordAttReference(nn.Module):
    def __init__(self, channels: int, reduction: int = 32):
        super().__init__()
        mip = max(8, channels // reduction)
        self.conv1 = nn.Conv2d(channels, mip, kernel_size=1, stride=1, padding=0)
        self.bn1 = nn.BatchNorm2d(mip)
        self.act = HSwish()
        self.conv_h = nn.Conv2d(mip, channels, kernel_size=1, stride=1, padding=0)
        self.conv_w = nn.Conv2d(mip, channels, kernel_size=1, stride=1, padding=0)

    def forward(self, x):
        h, w = x.shape[-2:]
        x_h = F.adaptive_avg_pool2d(x, (h, 1))
        x_w = F.adaptive_avg_pool2d(x, (1, w)).permute(0, 1, 3, 2)
        y = torch.cat([x_h, x_w], dim=2)
        y = self.act(self.bn1(self.conv1(y)))
        x_h, x_w = torch.split(y, [h, w], dim=2)
        x_w = x_w.permute(0, 1, 3, 2)
        a_h = self.conv_h(x_h).sigmoid()
        a_w = self.conv_w(x_w).sigmoid()
        return x * a_w * a_h
