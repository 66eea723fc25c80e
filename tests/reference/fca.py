"""FcaNet (Qin et al. 2021, ICCV) as cfzd/FcaNet's ``MultiSpectralAttentionLayer`` computes it.

Frequencies: the paper's selection (``top16``: the first 16 (u, v) of its ranked 7x7 list), scaled
by dct_h // 7 and dct_w // 7. The DCT filter of channel group i (c / n channels each) at position
(t_x, t_y) is B(t_x, u_i, dct_h) * B(t_y, v_i, dct_w) with B(t, f, L) = cos(pi f (t + 1/2) / L) /
sqrt(L), times sqrt(2) for f > 0, computed in float64 and stored in float32 as the authors do.
Pooled: sum_hw(x * filter) (after adaptive average pooling to dct_h x dct_w when the input differs);
then Linear c -> c // r (no bias), ReLU, Linear back (no bias), sigmoid; out = x * y.

The filter is a non-persistent buffer here (the authors register it persistently), so that the
test's weight copy maps every key; it is a constant of the sizes, not a trained weight.
"""

import math

import torch
from torch import nn

TOP_X = [0, 0, 6, 0, 0, 1, 1, 4, 5, 1, 3, 0, 0, 0, 3, 2, 4, 6, 3, 5, 5, 2, 6, 5, 5, 3, 3, 4, 2, 2, 6, 1]
TOP_Y = [0, 1, 0, 5, 2, 0, 2, 0, 0, 6, 0, 4, 6, 3, 5, 2, 6, 3, 3, 3, 5, 1, 1, 2, 4, 2, 1, 1, 3, 0, 5, 3]
LOW_X = [0, 0, 1, 1, 0, 2, 2, 1, 2, 0, 3, 4, 0, 1, 3, 0, 1, 2, 3, 4, 5, 0, 1, 2, 3, 4, 5, 6, 1, 2, 3, 4]
LOW_Y = [0, 1, 0, 1, 2, 0, 1, 2, 2, 3, 0, 0, 4, 3, 1, 5, 4, 3, 2, 1, 0, 6, 5, 4, 3, 2, 1, 0, 6, 5, 4, 3]
BOT_X = [6, 1, 3, 3, 2, 4, 1, 2, 4, 4, 5, 1, 4, 6, 2, 5, 6, 1, 6, 2, 2, 4, 3, 3, 5, 5, 6, 2, 5, 5, 3, 6]
BOT_Y = [6, 4, 4, 6, 6, 3, 1, 4, 4, 5, 6, 5, 2, 2, 5, 1, 4, 3, 5, 0, 3, 1, 1, 2, 4, 2, 1, 1, 5, 3, 3, 3]
TABLES = {"top": (TOP_X, TOP_Y), "low": (LOW_X, LOW_Y), "bot": (BOT_X, BOT_Y)}


def get_freq_indices(method: str):
    num_freq = int(method[3:])
    xs, ys = TABLES[method[:3]]
    return xs[:num_freq], ys[:num_freq]


def build_filter(pos: int, freq: int, size: int) -> float:
    result = math.cos(math.pi * freq * (pos + 0.5) / size) / math.sqrt(size)
    return result if freq == 0 else result * math.sqrt(2)


def get_dct_filter(size_x: int, size_y: int, mapper_x, mapper_y, channels: int) -> torch.Tensor:
    dct_filter = torch.zeros(channels, size_x, size_y)
    c_part = channels // len(mapper_x)
    for i, (u_x, v_y) in enumerate(zip(mapper_x, mapper_y)):
        for t_x in range(size_x):
            for t_y in range(size_y):
                dct_filter[i * c_part: (i + 1) * c_part, t_x, t_y] = (
                    build_filter(t_x, u_x, size_x) * build_filter(t_y, v_y, size_y))
    return dct_filter


class FcaReference(nn.Module):
    def __init__(self, channels: int, dct_h: int, dct_w: int, reduction: int = 16, freq_sel_method: str = "top16"):
        super().__init__()
        mapper_x, mapper_y = get_freq_indices(freq_sel_method)
        assert channels % len(mapper_x) == 0
        mapper_x = [u * (dct_h // 7) for u in mapper_x]
        mapper_y = [v * (dct_w // 7) for v in mapper_y]
        self.dct_h, self.dct_w = dct_h, dct_w
        self.register_buffer("weight", get_dct_filter(dct_h, dct_w, mapper_x, mapper_y, channels), persistent=False)
        self.fc = nn.Sequential(
            nn.Linear(channels, channels // reduction, bias=False), nn.ReLU(inplace=True),
            nn.Linear(channels // reduction, channels, bias=False), nn.Sigmoid(),
        )

    def forward(self, x):
        n, c, h, w = x.shape
        pooled = x
        if h != self.dct_h or w != self.dct_w:
            pooled = nn.functional.adaptive_avg_pool2d(x, (self.dct_h, self.dct_w))
        y = torch.sum(pooled * self.weight, dim=[2, 3])
        return x * self.fc(y).view(n, c, 1, 1).expand_as(x)
