"""einops' ``reduce`` and ``rearrange`` as the generated graphs call them: einops' own functions,
which a host model traced by ``torch.fx.symbolic_trace`` records as one call each
(:func:`~dynattn.leaf_calls.leaf_call`: einops cannot take an fx Proxy).
"""

from __future__ import annotations

import einops
import torch

from .leaf_calls import leaf_call

__all__ = ["reduce", "rearrange"]


@leaf_call
def reduce(tensor: torch.Tensor, pattern: str, reduction: str, **axes_lengths: int) -> torch.Tensor:
    """``einops.reduce``."""
    return einops.reduce(tensor, pattern, reduction, **axes_lengths)


@leaf_call
def rearrange(tensor: torch.Tensor, pattern: str, **axes_lengths: int) -> torch.Tensor:
    """``einops.rearrange``."""
    return einops.rearrange(tensor, pattern, **axes_lengths)
