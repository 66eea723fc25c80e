"""DCD (Li et al. 2021, ICLR, arXiv:2103.08756) as liyunsheng13/dcd's ``models/imagenet/resnet_dcd.py`` computes it.

``DCDReference(..., grid=1)`` is the official ``conv_dy``, ``grid=2`` its ``conv_basic_dy`` (the ResNet basic
block's 3x3 convs: the router reads x averaged over a 2 x 2 grid). Attribute names follow the official code, so
this module's state_dict has the official keys. The forward, as the official code runs it:

    r     = conv(x)                                      static W0, no bias
    y     = fc(pool(x))                                  Linear(C g^2 -> squeeze), then SEModule_small:
                                                         y * hsigmoid(Linear(y)), no biases
    phi   = fc_phi(y).view(B, L, L)                      L = int(sqrt(C g^2))
    scale = hsigmoid(fc_scale(y))                        Lambda, hsigmoid(z) = relu6(z + 3) / 3
    z     = bn1(q(x))                                    q: 1x1 conv C -> L, strided like conv
    out   = p((bn2(phi @ z) + z)) + scale * r            p: 1x1 conv L -> C_out; bn2 over (B, L, positions)

squeeze = max(C g^2, L^2) // 16 (at least 4 for ``conv_basic_dy``).

Fixed here: ``conv_dy``'s squeeze is 0 for C < 16 (a Linear with no outputs: the layer cannot learn its
routing); this reference keeps at least 1, as the preset does. Nothing else differs from the official code
(its in-place ``relu6`` acts on the temporary ``x + 3`` and changes nothing).
"""

import math

import torch
import torch.nn.functional as F
from torch import nn


def hsigmoid(z):
    return F.relu6(z + 3.0) / 3.0


class SEModuleSmall(nn.Module):
    def __init__(self, channel):
        super().__init__()
        self.fc = nn.Sequential(nn.Linear(channel, channel, bias=False))

    def forward(self, x):
        return x * hsigmoid(self.fc(x))


class DCDReference(nn.Module):
    def __init__(self, inplanes, planes, kernel_size, stride, padding, grid=1):
        super().__init__()
        self.grid = grid
        self.conv = nn.Conv2d(inplanes, planes, kernel_size, stride, padding, bias=False)
        width = inplanes * grid * grid
        self.dim = int(math.sqrt(width))
        squeeze = max(width, self.dim ** 2) // 16
        squeeze = max(squeeze, 4 if grid > 1 else 1)  # conv_basic_dy's floor; conv_dy's 0 fixed to 1
        self.q = nn.Conv2d(inplanes, self.dim, 1, stride, 0, bias=False)
        self.p = nn.Conv2d(self.dim, planes, 1, 1, 0, bias=False)
        self.bn1 = nn.BatchNorm2d(self.dim)
        self.bn2 = nn.BatchNorm1d(self.dim)
        self.fc = nn.Sequential(nn.Linear(width, squeeze, bias=False), SEModuleSmall(squeeze))
        self.fc_phi = nn.Linear(squeeze, self.dim ** 2, bias=False)
        self.fc_scale = nn.Linear(squeeze, planes, bias=False)

    def forward(self, x):
        r = self.conv(x)
        b = x.shape[0]
        y = F.adaptive_avg_pool2d(x, self.grid).reshape(b, -1)
        y = self.fc(y)
        phi = self.fc_phi(y).view(b, self.dim, self.dim)
        scale = hsigmoid(self.fc_scale(y)).view(b, -1, 1, 1)
        r = scale.expand_as(r) * r
        out = self.bn1(self.q(x))
        _, _, h, w = out.size()
        out = out.view(b, self.dim, -1)
        out = self.bn2(torch.matmul(phi, out)) + out
        out = out.view(b, -1, h, w)
        return self.p(out) + r
