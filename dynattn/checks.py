"""Run-time checks of what a built module is fed: one call at the top of its graph.

The check is Python on sizes only (no tensor op), so ``torch.compile(fullgraph=True)`` and
``torch.export`` evaluate it while tracing and keep no trace of it in the compiled graph, a host
model traced with ``torch.fx`` records it as one call (the node is marked as wrapped), and
``torch.jit.trace`` skips it (sizes are tensors there).
"""

from __future__ import annotations

import torch
import torch.fx

from .errors import InputError

__all__ = ["check_input"]


def check_input(x: torch.Tensor, channels: int, module: str) -> torch.Tensor:
    """``x`` itself, after checking that it is a 4-D (B, ``channels``, H, W) feature map."""
    if torch.jit.is_tracing():
        return x
    if x.dim() != 4:
        raise InputError("input", tuple(x.shape), f"{module} takes a 4-D (B, C, H, W) feature map, got a "
                         f"{x.dim()}-D tensor", hint="attention goes on the feature maps of a 2-D conv net")
    if x.shape[1] != channels:
        raise InputError("input", tuple(x.shape), f"{module} was built for {channels} channels but got "
                         f"{x.shape[1]}", hint=f"build(spec, channels={x.shape[1]}) for this input")
    return x


# its result is unused in the graph: dead-code elimination must keep it (torch.fx >= 2.1 has the hook)
_mark = getattr(torch.fx.node, "has_side_effect", None)
if _mark is not None:
    _mark(check_input)
