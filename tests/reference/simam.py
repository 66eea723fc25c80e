"""SimAM (Yang et al. 2021, ICML) as ZjjConan/SimAM's ``simam_module`` computes it: no parameters.

n = h * w - 1; d = (x - mean_hw(x))^2; e_inv = d / (4 * (sum_hw(d) / n + lambda)) + 0.5;
out = x * sigmoid(e_inv), lambda = 1e-4.
"""

import torch
from torch import nn


class SimAMReference(nn.Module):
    def __init__(self, e_lambda: float = 1e-4):
        super().__init__()
        self.e_lambda = e_lambda

    def forward(self, x):
        h, w = x.shape[-2:]
        n = w * h - 1
        x_minus_mu_square = (x - x.mean(dim=[2, 3], keepdim=True)).pow(2)
        y = x_minus_mu_square / (4 * (x_minus_mu_square.sum(dim=[2, 3], keepdim=True) / n + self.e_lambda)) + 0.5
        return x * torch.sigmoid(y)
