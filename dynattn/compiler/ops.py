"""The einops patterns and torch ops that the emitter writes into the graph.

Pooling, broadcasting the gate back to NCHW and undoing a rotation are all einops
patterns computed from the stage's axis frame, so ``print(module.code)`` shows them as
the paper would write them: ``reduce(x, 'b c h w -> b c', 'mean')``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..layers import HALF_DTYPES, hard_sigmoid_x2
from ..leaf_calls import leaf_call
from ..vocab import AXES, AXES_BY_SPATIAL_DIMS

__all__ = [
    "ORIGINAL", "axes_of", "original", "pool_axes", "descriptor_layout", "canonical_layout", "broadcast_pattern",
    "GATE_FNS", "EINOPS_REDUCTION", "sample_std", "sample_std_eps", "grid_mean", "resize_like", "window_mean3d",
    "blend",
]

ORIGINAL = " ".join(AXES)


def axes_of(frame: tuple[str, ...]) -> tuple[str, ...]:
    """The original axes of the feature map a frame (a permutation of them) belongs to:
    ``b c l``, ``b c h w`` or ``b c d h w``."""
    return AXES_BY_SPATIAL_DIMS[len(frame) - 2]


def original(frame: tuple[str, ...]) -> str:
    """The einops layout of the input feature map of a stage in ``frame``."""
    return " ".join(axes_of(frame))

#: einops reductions for the pooling ops einops names itself.
EINOPS_REDUCTION = {"avg": "mean", "max": "max"}


def sample_std(x: torch.Tensor, dim: tuple[int, ...], keepdim: bool = False) -> torch.Tensor:
    """The sample standard deviation (divided by n - 1, SRM's ``x.std()``) over ``dim``; over a single
    position, where it does not exist, the population one (0) instead of NaN."""
    n = 1
    for d in dim:
        n = n * x.shape[d]
    # (n > 1) + 0 is 1 or 0 without a Python branch on the shape, so a host model traces through this
    return torch.std(x, dim=dim, correction=(n > 1) + 0, keepdim=keepdim)


@leaf_call
def sample_std_eps(x: torch.Tensor, dim: tuple[int, ...], keepdim: bool = False) -> torch.Tensor:
    """``sqrt(var + 1e-5)`` with the sample variance (divided by n - 1) over ``dim``: SRM's style standard
    deviation as its official code computes it since f6221c7 ("FIX : style pooling"); over a single position,
    the population variance (0) instead of NaN. A host model traced with torch.fx records it as one call."""
    n = 1
    for d in dim:
        n = n * x.shape[d]
    # the variance of a float16 map passes its largest value, 65,504, at |x| ~ 300: computed in float32 there
    # (one Python dtype test: a float32 input runs the same ops)
    low = x.dtype in HALF_DTYPES
    std = torch.sqrt(torch.var(x.float() if low else x, dim=dim, correction=(n > 1) + 0, keepdim=keepdim) + 1e-5)
    return std.to(x.dtype) if low else std


def _cell_means(n: int, grid: int, like: torch.Tensor) -> torch.Tensor:
    """(grid, n): row i averages the positions of adaptive average pooling's cell i, [floor(i n / g),
    ceil((i + 1) n / g)) (cells overlap where g does not divide n)."""
    i = torch.arange(grid, device=like.device)
    start, end = (i * n) // grid, ((i + 1) * n + grid - 1) // grid
    pos = torch.arange(n, device=like.device)
    cells = ((pos >= start[:, None]) & (pos < end[:, None])).to(like.dtype)
    return cells / cells.sum(1, keepdim=True)


#: The einsum of :func:`grid_mean` by the number of spatial dims.
_GRID_EINSUM = {1: "bcl,il->bci", 2: "bchw,ih,jw->bcij", 3: "bcdhw,id,jh,kw->bcijk"}


#: Adaptive average pooling by the number of spatial dims.
_ADAPTIVE_AVG = {1: F.adaptive_avg_pool1d, 2: F.adaptive_avg_pool2d, 3: F.adaptive_avg_pool3d}


def grid_mean(x: torch.Tensor, grid: int) -> torch.Tensor:
    """``F.adaptive_avg_pool{1,2,3}d(x, grid)``; under the TorchScript-based ONNX exporter, which refuses adaptive
    pooling to a grid that does not divide the map, the same means as one einsum with a cell-averaging matrix per
    axis (equal to float rounding; the pooling op is the faster one elsewhere)."""
    if not torch.onnx.is_in_onnx_export():
        return _ADAPTIVE_AVG[x.dim() - 2](x, grid)
    cells = [_cell_means(n, grid, x) for n in x.shape[2:]]
    return torch.einsum(_GRID_EINSUM[x.dim() - 2], x, *cells)


def resize_like(gate: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """A gate computed on a coarser grid, resized to x's spatial size by nearest neighbours (gather-excite)."""
    return F.interpolate(gate, size=x.shape[2:], mode="nearest")


#: Pooling ops written as torch reductions over dims, with their keyword arguments.
TORCH_REDUCTION = {
    "lse": (torch.logsumexp, {}),
    "lp": (torch.linalg.vector_norm, {"ord": 2}),
    "std": (torch.std, {"correction": 0}),
    "std_unbiased": (sample_std, {}),
    "std_unbiased_eps": (sample_std_eps, {}),
}

#: Element-wise gates (softmax needs an axis and is emitted separately).
GATE_FNS = {
    "sigmoid": torch.sigmoid,
    "hard_sigmoid": F.hardsigmoid,
    "hard_sigmoid_x2": hard_sigmoid_x2,
    "tanh": torch.tanh,
}


def pool_axes(target: str, frame: tuple[str, ...]) -> tuple[str, ...]:
    """The axes a stage pools over, named in the original frame (a strip stage pools one axis per
    strip and is emitted on its own)."""
    if target in ("channel", "kernel"):
        return frame[2:]
    if target == "spatial":
        return (frame[1],)
    return ()


def descriptor_layout(target: str, frame: tuple[str, ...]) -> str:
    """The einops layout of one pooled descriptor in the stage's frame."""
    if target in ("channel", "kernel"):
        return f"{frame[0]} {frame[1]}"
    if target == "spatial":
        return " ".join((frame[0], "1", *frame[2:]))
    return " ".join(frame)


def canonical_layout(target: str, frame: tuple[str, ...]) -> str:
    """The descriptor layout with its axes in the original order: the form a reduction is
    emitted in, so equal reductions look equal (and CSE can merge them) whatever the rotation."""
    layout = descriptor_layout(target, frame).split()
    named = [a for a in axes_of(frame) if a in layout]
    out = iter(named)
    return " ".join(a if a == "1" else next(out) for a in layout)


def keepdim_layout(pooled: tuple[str, ...], axes: tuple[str, ...] = AXES) -> str:
    """The layout a torch reduction with ``keepdim=True`` over ``pooled`` leaves on a map of ``axes``."""
    return " ".join("1" if a in pooled else a for a in axes)


def broadcast_pattern(target: str, frame: tuple[str, ...]) -> str | None:
    """The rearrange that takes a stage's gate to a tensor broadcastable against x (NCHW, or
    NCL / NCDHW), or None when it already is. A gate has its stage's descriptor layout."""
    src = descriptor_layout(target, frame)
    present = set(src.split()) - {"1"}
    dst = " ".join(a if a in present else "1" for a in axes_of(frame))
    return None if src == dst else f"{src} -> {dst}"


def window_mean3d(x: torch.Tensor, kernel_size: int, stride: int, padding: int) -> torch.Tensor:
    """``F.avg_pool3d(x, kernel_size, stride, padding, count_include_pad=False)``, also on maps smaller than
    the window: ATen's avg_pool3d refuses an input smaller than its kernel even where the padding covers it
    (avg_pool1d and avg_pool2d take it). The zeros are padded here and each window's sum is divided by the
    number of its positions inside the map."""
    pad = (padding,) * 6
    total = F.avg_pool3d(F.pad(x, pad), kernel_size, stride)
    inside = F.avg_pool3d(F.pad(torch.ones_like(x[:, :1]), pad), kernel_size, stride)
    return total / inside


@leaf_call
def blend(gate: torch.Tensor, mix: torch.Tensor, neutral: torch.Tensor) -> torch.Tensor:
    """``neutral + mix * (gate - neutral)``: an identity-initialised head's gate, its neutral value while the
    learnt ``mix`` (a 0-dim parameter) is 0. One ``torch.lerp`` (a router runs one per head per layer, which is
    what a batch of 1 pays for: one kernel where the formula written out takes three), in the gate's dtype as the
    arithmetic would give it (under autocast the gate may be lower precision than the parameter)."""
    if mix.dtype != gate.dtype:
        mix, neutral = mix.to(gate.dtype), neutral.to(gate.dtype)
    return torch.lerp(neutral, gate, mix)


@leaf_call
def cell_attention(logits: torch.Tensor, temperature: torch.Tensor, one_hot: torch.Tensor, cells: int) -> torch.Tensor:
    """KernelWarehouse's attention over a warehouse of ``cells`` cells, (B, n * (cells + 1)) logits -> (B * n, cells):
    each mixture's logits (its cells and a zero cell) over the sum of their absolute values (+ 1e-3), blended toward
    ``one_hot`` (n * (cells + 1), each mixture's own cell) by ``temperature`` t, ``(1 - t) a + t one_hot``; the zero
    cell's weight is dropped (it scales nothing). As the official ``Attention.forward``."""
    a = logits.reshape(-1, cells + 1)
    a = a / (a.abs().sum(dim=1, keepdim=True) + 1e-3)
    a = (1.0 - temperature) * a.reshape(logits.shape[0], -1) + temperature * one_hot
    return a.reshape(-1, cells + 1)[:, :-1]
