"""SRM (Lee et al. 2019, ICCV) as hyunjaelee410/style-based-recalibration-module's ``SRMLayer`` computes it
at the repository's HEAD (f6221c7, "FIX : style pooling").

Style pooling: per channel, the mean and the standard deviation over positions, sqrt(var + 1e-5) with the
variance divided by n - 1 (the first commit's ``x.std()`` had no epsilon).
Style integration: z_c = cfc[c, 0] * mean_c + cfc[c, 1] * std_c (a (C, 2)
parameter, no bias), BatchNorm2d over channels, sigmoid; out = x * g.
"""

import torch
from torch import nn
from torch.nn.parameter import Parameter


class SRMReference(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.cfc = Parameter(torch.zeros(channels, 2))
        self.bn = nn.BatchNorm2d(channels)

    def forward(self, x):
        n, c, _, _ = x.size()
        mean = x.view(n, c, -1).mean(dim=2).view(n, c, -1)
        std = (x.view(n, c, -1).var(dim=2) + 1e-5).sqrt().view(n, c, -1)
        t = torch.cat((mean, std), dim=2)
        z = torch.sum(t * self.cfc[None, :, :], dim=2)[:, :, None, None]
        return x * torch.sigmoid(self.bn(z))
