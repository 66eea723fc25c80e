"""DCD's dynamic channel fusion: the second term of W(x) = Lambda(x) W0 + P Phi(x) Q^T.

Li et al., "Revisiting Dynamic Convolution via Matrix Decomposition", ICLR 2021 (arXiv:2103.08756).
Q^T projects the input into a latent space of L channels (L much smaller than C), Phi(x) (L x L, from the
router's ``latent`` head) mixes the latent channels per sample, and P projects back to the conv's outputs.
As the official ``conv_dy`` computes it, Q^T and P are 1x1 convs (Q^T strided like the conv), with a
BatchNorm after Q^T and one after Phi, and an identity path around Phi:

    z = bn1(q(x));  latent = p(bn2(Phi z) + z)

Q^T, P and both norms are per layer, not per sample, so a DCD layer holds C_in L + L C_out weights on top
of the static kernel where K experts hold (K - 1) times the kernel more.
"""

from __future__ import annotations

import torch
from torch import nn

from ..errors import SpecError
from ..layers import BATCH_NORMS, CONVS, bn_guard

__all__ = ["LatentFusion", "check_latent_geometry"]


class LatentFusion(nn.Module):
    """``p(bn2(Phi z) + z)`` with ``z = bn1(q(x))``: DCD's latent path, for a map of ``spatial_dims`` spatial
    dims (the official code is 2-D; the 1x1 convs and norms are the same at any rank). ``q`` strides like the
    conv it sits beside, so its output has the conv's size (see :func:`check_latent_geometry`)."""

    def __init__(self, in_channels: int, out_channels: int, latent: int, stride: tuple[int, ...], *,
                 device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> None:
        super().__init__()
        dd = {"device": device, "dtype": dtype}
        conv = CONVS[len(stride)]
        self.latent = latent
        self.q = conv(in_channels, latent, 1, stride=stride, bias=False, **dd)
        self.bn1 = BATCH_NORMS[len(stride)](latent, **dd)
        self.bn2 = nn.BatchNorm1d(latent, **dd)  # over (B, L, positions), as the official code
        self.p = conv(latent, out_channels, 1, bias=False, **dd)

    def forward(self, x: torch.Tensor, phi: torch.Tensor) -> torch.Tensor:
        """``phi``: the router's (B, L * L) latent head."""
        z = self.bn1(bn_guard(self.q(x), self.training))  # a clear error at one value per channel
        flat = z.flatten(2)  # (B, L, positions)
        fused = self.bn2(torch.matmul(phi.unflatten(1, (self.latent, self.latent)), flat)) + flat
        return self.p(fused.view_as(z))


def check_latent_geometry(name: str, kernel_size: tuple[int, ...], dilation: tuple[int, ...],
                          reversed_padding: tuple[int, ...]) -> None:
    """The latent path's strided 1x1 conv gives the conv's output size only where the conv's padding covers its
    kernel's reach, ``padding_left + padding_right == dilation * (kernel - 1)`` on every axis (a 3x3 conv with
    padding 1, a 1x1 with none, ``padding="same"``): say so before anything is built."""
    dims = len(kernel_size)
    for i in range(dims):
        j = 2 * (dims - 1 - i)  # axis i's padding in the reversed, repeated-twice form
        padded = reversed_padding[j] + reversed_padding[j + 1]
        if padded != dilation[i] * (kernel_size[i] - 1):
            raise SpecError(
                f"{name}.padding", padded // 2 if padded % 2 == 0 else padded / 2,
                f"DCD's latent path (a strided 1x1 conv) keeps the output size only with 'same'-like padding "
                f"(dilation * (kernel - 1) / 2 = {dilation[i] * (kernel_size[i] - 1) / 2:g} on axis {i})",
                hint="pad the conv as a 'same' conv would, or use a preset without the 'latent' head")
