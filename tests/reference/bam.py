"""BAM (Park et al. 2018, BMVC) as the authors' Jongchan/attention-module (MODELS/bam.py) computes it.

Channel gate: global average pool, Linear c -> c // r (bias), BatchNorm1d, ReLU, Linear back (bias).
Spatial gate on x itself: 1x1 conv c -> c // r, BN, ReLU; two 3x3 convs c // r -> c // r with
dilation 4 and padding 4, each with BN and ReLU; 1x1 conv to one map. Every conv has a bias.
Combined: att = 1 + sigmoid(channel * spatial) in the authors' code (``combine="prod"``), or
1 + sigmoid(channel + spatial) in the paper's equation (``combine="sum"``); out = att * x.

The authors' channel gate pools with ``F.avg_pool2d(x, x.size(2), stride=x.size(2))``: a square
window of side H, which is global average pooling on the square maps their models use, but on a
map wider than it is high averages only its first H columns (and fails on a taller one). The
reference pools globally, the paper's formula, so H != W can be tested.
"""

import torch
from torch import nn


class ChannelGate(nn.Module):
    def __init__(self, channels: int, reduction: int = 16):
        super().__init__()
        hidden = channels // reduction
        self.gate_c = nn.Sequential()
        self.gate_c.add_module("gate_c_fc_0", nn.Linear(channels, hidden))
        self.gate_c.add_module("gate_c_bn_1", nn.BatchNorm1d(hidden))
        self.gate_c.add_module("gate_c_relu_1", nn.ReLU())
        self.gate_c.add_module("gate_c_fc_final", nn.Linear(hidden, channels))

    def forward(self, x):
        pooled = x.mean(dim=(2, 3))
        return self.gate_c(pooled).unsqueeze(2).unsqueeze(3).expand_as(x)


class SpatialGate(nn.Module):
    def __init__(self, channels: int, reduction: int = 16, dilation_conv_num: int = 2, dilation_val: int = 4):
        super().__init__()
        hidden = channels // reduction
        self.gate_s = nn.Sequential()
        self.gate_s.add_module("gate_s_conv_reduce0", nn.Conv2d(channels, hidden, kernel_size=1))
        self.gate_s.add_module("gate_s_bn_reduce0", nn.BatchNorm2d(hidden))
        self.gate_s.add_module("gate_s_relu_reduce0", nn.ReLU())
        for i in range(dilation_conv_num):
            self.gate_s.add_module(f"gate_s_conv_di_{i}", nn.Conv2d(hidden, hidden, kernel_size=3,
                                                                    padding=dilation_val, dilation=dilation_val))
            self.gate_s.add_module(f"gate_s_bn_di_{i}", nn.BatchNorm2d(hidden))
            self.gate_s.add_module(f"gate_s_relu_di_{i}", nn.ReLU())
        self.gate_s.add_module("gate_s_conv_final", nn.Conv2d(hidden, 1, kernel_size=1))

    def forward(self, x):
        return self.gate_s(x).expand_as(x)


class BAMReference(nn.Module):
    def __init__(self, channels: int, reduction: int = 16, combine: str = "prod"):
        super().__init__()
        self.channel_att = ChannelGate(channels, reduction)
        self.spatial_att = SpatialGate(channels, reduction)
        self.combine = combine

    def forward(self, x):
        c, s = self.channel_att(x), self.spatial_att(x)
        att = 1 + torch.sigmoid(c * s if self.combine == "prod" else c + s)
        return att * x
