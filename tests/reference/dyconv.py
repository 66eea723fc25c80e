"""Dynamic convolution (Chen et al. 2020, arXiv:1912.03458), the formula of the paper.

    pi(x) = softmax(fc2(ReLU(fc1(avgpool(x)))) / T)          (router without bias)
    y_b   = conv(x_b, sum_k pi_bk W_k) + sum_k pi_bk b_k       (for each sample b)

Computed one sample at a time with a Python loop: no batch folding, no grouped-conv trick.
"""

import torch
import torch.nn.functional as F
from torch import nn


class DyConvReference(nn.Module):
    def __init__(self, cin, cout, k, *, experts=4, hidden=16, temperature=30.0, stride=1, padding=0,
                 dilation=1, groups=1, bias=True):
        super().__init__()
        self.fc1 = nn.Linear(cin, hidden, bias=False)
        self.fc2 = nn.Linear(hidden, experts, bias=False)
        self.weight = nn.Parameter(torch.randn(experts, cout, cin // groups, *k) * 0.1)
        self.bias = nn.Parameter(torch.randn(experts, cout) * 0.1) if bias else None
        self.temperature = temperature
        self.conv_args = dict(stride=stride, padding=padding, dilation=dilation, groups=groups)

    def routing(self, x):
        return torch.softmax(self.fc2(torch.relu(self.fc1(x.mean(dim=(2, 3))))) / self.temperature, dim=1)

    def forward(self, x):
        pi = self.routing(x)
        outs = []
        for b in range(x.shape[0]):
            w = sum(pi[b, k] * self.weight[k] for k in range(self.weight.shape[0]))
            bias = None if self.bias is None else sum(pi[b, k] * self.bias[k] for k in range(self.weight.shape[0]))
            outs.append(F.conv2d(x[b:b + 1], w, bias, **self.conv_args))
        return torch.cat(outs)
