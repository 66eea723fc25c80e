"""ODConv (Li et al. 2022, arXiv:2209.07947), the formula of the paper, applied to the kernel.

    h       = ReLU(BN?(fc(avgpool(x))))
    a_w     = softmax(kernel_fc(h) / T)       (K)      mixing weights over the experts
    a_c     = sigmoid(channel_fc(h) / T)      (C_in)   input-channel attention
    a_f     = sigmoid(filter_fc(h) / T)       (C_out)  output-channel attention
    a_s     = sigmoid(spatial_fc(h) / T)      (k x k)  kernel-position attention
    W_b     = sum_k a_w[k] * (a_s * a_f * a_c * W_k),  y_b = conv(x_b, W_b) (+ sum_k a_w[k] b_k)

Every attention multiplies the kernel here (one sample at a time), unlike the official code,
which scales the feature maps by a_c and a_f; agreeing with it checks that equivalence.
The router layers are 1x1 convs, as in the official code. With grouped convs, a_c scales
the input channel each kernel slice actually reads.
"""

import torch
import torch.nn.functional as F
from torch import nn


class ODConvReference(nn.Module):
    def __init__(self, cin, cout, k, *, experts=4, hidden=16, temperature=1.0, stride=1, padding=0, dilation=1,
                 groups=1, bias=False, norm=False, fc_bias=False):
        super().__init__()
        kh, kw = k
        self.fc = nn.Conv2d(cin, hidden, 1, bias=fc_bias)
        self.bn = nn.BatchNorm2d(hidden) if norm else nn.Identity()
        self.kernel_fc = nn.Conv2d(hidden, experts, 1)
        self.channel_fc = nn.Conv2d(hidden, cin, 1)
        self.filter_fc = nn.Conv2d(hidden, cout, 1)
        self.spatial_fc = nn.Conv2d(hidden, kh * kw, 1)
        self.weight = nn.Parameter(torch.randn(experts, cout, cin // groups, kh, kw) * 0.1)
        self.bias = nn.Parameter(torch.randn(experts, cout) * 0.1) if bias else None
        self.temperature = temperature
        self.groups = groups
        self.conv_args = dict(stride=stride, padding=padding, dilation=dilation, groups=groups)

    def attentions(self, x):
        h = torch.relu(self.bn(self.fc(x.mean(dim=(2, 3), keepdim=True))))
        t = self.temperature
        a_w = torch.softmax(self.kernel_fc(h).flatten(1) / t, dim=1)
        a_c = torch.sigmoid(self.channel_fc(h).flatten(1) / t)
        a_f = torch.sigmoid(self.filter_fc(h).flatten(1) / t)
        a_s = torch.sigmoid(self.spatial_fc(h).flatten(1) / t)
        return a_w, a_c, a_f, a_s

    def forward(self, x):
        a_w, a_c, a_f, a_s = self.attentions(x)
        k, cout, cin_g, kh, kw = self.weight.shape
        out_per_group = cout // self.groups
        outs = []
        for b in range(x.shape[0]):
            # a_c for kernel element (o, i): the input channel group(o) * cin_g + i
            group = torch.arange(cout) // out_per_group
            idx = group[:, None] * cin_g + torch.arange(cin_g)[None, :]
            c_scale = a_c[b][idx][:, :, None, None]                      # (cout, cin_g, 1, 1)
            f_scale = a_f[b][:, None, None, None]
            s_scale = a_s[b].view(1, 1, kh, kw)
            w = sum(a_w[b, j] * (s_scale * f_scale * c_scale * self.weight[j]) for j in range(k))
            bias = None if self.bias is None else sum(a_w[b, j] * self.bias[j] for j in range(k))
            outs.append(F.conv2d(x[b:b + 1], w, bias, **self.conv_args))
        return torch.cat(outs)
