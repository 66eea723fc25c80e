"""Run-time checks of what a built module is fed: one call at the top of its graph.

The check is Python on sizes only (no tensor op), so ``torch.compile(fullgraph=True)`` and
``torch.export`` evaluate it while tracing and keep no trace of it in the compiled graph, a host
model traced with ``torch.fx`` records it as one call (:func:`~dynattn.leaf_calls.leaf_call`), and
``torch.jit.trace`` skips it (sizes are tensors there).
"""

from __future__ import annotations

import torch
import torch.fx

from .errors import InputError
from .leaf_calls import leaf_call
from .vocab import LAYOUTS

__all__ = ["check_input", "LAYOUTS"]


@leaf_call
def check_input(x: torch.Tensor, channels: int, module: str, dims: int = 2) -> torch.Tensor:
    """``x`` itself, after checking that it is a feature map with ``dims`` spatial dims and ``channels``
    channels: (B, C, L) for ``dims=1``, (B, C, H, W) for 2 (the default), (B, C, D, H, W) for 3.
    ``dims`` is the number of spatial dims (``spatial_dims`` elsewhere): generated code calls this function
    with that keyword, so the name stays as saved graphs and code snapshots spell it."""
    if torch.jit.is_tracing():
        return x
    if x.dim() != dims + 2:
        given = x.dim() - 2
        if not 1 <= given <= 3:
            hint = "these modules take the feature maps of a conv net: (B, C, L), (B, C, H, W) or (B, C, D, H, W)"
        elif module.startswith("DynamicConv"):
            hint = f"a {given}-D map takes DynamicConv{given}d"
        else:
            hint = f"build it with spatial_dims={given} for this input"
        raise InputError("input", tuple(x.shape), f"{module} takes a {dims + 2}-D {LAYOUTS[dims]} feature map, "
                         f"got a {x.dim()}-D tensor", hint=hint)
    if x.shape[1] != channels:
        raise InputError("input", tuple(x.shape), f"{module} was built for {channels} channels but got "
                         f"{x.shape[1]}", hint=f"build(spec, channels={x.shape[1]}) for this input")
    return x


# its result is unused in the graph: dead-code elimination must keep it (torch.fx >= 2.1 has the hook)
_mark = getattr(torch.fx.node, "has_side_effect", None)
if _mark is not None:
    _mark(check_input)
