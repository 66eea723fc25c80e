"""ECA (Wang et al. 2020): global average pool, 1-D conv across channels (no bias), sigmoid.

Kernel size k = t if t is odd else t + 1, t = int(|log2(C) + b| / gamma) (the authors'
code), or a fixed k.
"""

import math

import torch
from torch import nn


def eca_kernel(channels: int, gamma: float = 2, b: float = 1) -> int:
    t = int(abs((math.log(channels, 2) + b) / gamma))
    return t if t % 2 else t + 1


class ECAReference(nn.Module):
    def __init__(self, channels: int, k_size: int | None = None):
        super().__init__()
        k = eca_kernel(channels) if k_size is None else k_size
        self.conv = nn.Conv1d(1, 1, k, padding=(k - 1) // 2, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = nn.functional.adaptive_avg_pool2d(x, 1)          # b c 1 1
        y = self.conv(y.squeeze(-1).transpose(-1, -2))         # b 1 c
        y = torch.sigmoid(y.transpose(-1, -2).unsqueeze(-1))   # b c 1 1
        return x * y.expand_as(x)
