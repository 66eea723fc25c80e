"""Effective SE (Lee & Park 2020, CenterMask) as youngwanLEE/CenterMask's ``eSEModule`` computes it: global
average pooling, a 1x1 conv c -> c with bias, hard sigmoid relu6(z + 3) / 6; out = x * gate."""

import torch.nn.functional as F
from torch import nn


class ESEReference(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.fc = nn.Conv2d(channels, channels, kernel_size=1, padding=0)

    def forward(self, x):
        y = self.fc(F.adaptive_avg_pool2d(x, 1))
        return x * (F.relu6(y + 3.0) / 6.0)
