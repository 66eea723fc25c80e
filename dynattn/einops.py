"""einops' ``reduce`` and ``rearrange`` as the generated graphs call them.

Each is einops' own function on tensors. Given a ``torch.fx.Proxy`` (a host model that contains a
dynattn module, traced by ``torch.fx.symbolic_trace``), it records itself as one call instead:
einops cannot take a Proxy. This replaces ``torch.fx.wrap``, which fx writes into every generated
module's code and which registers each module's globals for good (a registry that grows with
every module built and slows every later trace).
"""

from __future__ import annotations

import einops
import torch
import torch.fx as fx

__all__ = ["reduce", "rearrange"]


def reduce(tensor: torch.Tensor, pattern: str, reduction: str, **axes_lengths: int) -> torch.Tensor:
    """``einops.reduce``; recorded as one node when ``tensor`` is an fx Proxy."""
    if isinstance(tensor, fx.Proxy):
        return tensor.tracer.create_proxy("call_function", reduce, (tensor, pattern, reduction), axes_lengths)
    return einops.reduce(tensor, pattern, reduction, **axes_lengths)


def rearrange(tensor: torch.Tensor, pattern: str, **axes_lengths: int) -> torch.Tensor:
    """``einops.rearrange``; recorded as one node when ``tensor`` is an fx Proxy."""
    if isinstance(tensor, fx.Proxy):
        return tensor.tracer.create_proxy("call_function", rearrange, (tensor, pattern), axes_lengths)
    return einops.rearrange(tensor, pattern, **axes_lengths)
