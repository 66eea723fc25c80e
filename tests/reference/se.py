"""SE (Hu et al. 2018): global average pool, FC C -> C // r -> C with bias, ReLU, sigmoid."""

import torch
from torch import nn


class SEReference(nn.Module):
    def __init__(self, channels: int, reduction: int = 16):
        super().__init__()
        hidden = channels // reduction
        self.fc1 = nn.Linear(channels, hidden)
        self.fc2 = nn.Linear(hidden, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c = x.shape[:2]
        s = nn.functional.adaptive_avg_pool2d(x, 1).view(b, c)
        s = torch.sigmoid(self.fc2(torch.relu(self.fc1(s))))
        return x * s.view(b, c, 1, 1)
