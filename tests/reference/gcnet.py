"""GCNet's global context block (Cao et al. 2019) as xvjiarui/GCNet's ``ContextBlock`` computes it with its
defaults (``pooling_type='att'``, ``fusion_types=('channel_add',)``).

Context modelling: conv_mask (1x1, c -> 1, bias) gives one logit per position, softmax over the
h * w positions, context = x weighted by it, summed (a matmul). Transform: 1x1 conv c -> planes
(bias), LayerNorm([planes, 1, 1]) (eps 1e-5), ReLU, 1x1 conv planes -> c (bias), with planes =
int(c * ratio). Fusion: out = x + transform(context).
"""

import torch
from torch import nn


class ContextBlockReference(nn.Module):
    def __init__(self, inplanes: int, ratio: float = 1 / 16):
        super().__init__()
        self.planes = int(inplanes * ratio)
        self.conv_mask = nn.Conv2d(inplanes, 1, kernel_size=1)
        self.softmax = nn.Softmax(dim=2)
        self.channel_add_conv = nn.Sequential(
            nn.Conv2d(inplanes, self.planes, kernel_size=1),
            nn.LayerNorm([self.planes, 1, 1]),
            nn.ReLU(inplace=True),
            nn.Conv2d(self.planes, inplanes, kernel_size=1),
        )

    def spatial_pool(self, x):
        batch, channel, height, width = x.size()
        input_x = x.view(batch, channel, height * width).unsqueeze(1)
        context_mask = self.conv_mask(x).view(batch, 1, height * width)
        context_mask = self.softmax(context_mask).unsqueeze(-1)
        context = torch.matmul(input_x, context_mask)
        return context.view(batch, channel, 1, 1)

    def forward(self, x):
        return x + self.channel_add_conv(self.spatial_pool(x))
