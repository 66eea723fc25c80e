"""The cost model behind ``strategy="auto"``: modelled seconds of each mixing strategy for one call of a dynamic
conv (a :class:`ConvProblem`), under constants fitted per machine and thread count (a :class:`CostModel`).

    problem = layer.conv_problem(x)                 # what the model decides from
    choose_strategy(problem)                        # "kernel", "blocked" or "output"
    with use_cost_model(dataclasses.replace(cost_model(), im2col=0.0)):
        layer(x)                                    # this thread / context runs under other constants
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator
from dataclasses import dataclass

import torch

from .. import mixing

__all__ = ["ConvProblem", "CostModel", "COST_MODELS", "cost_model", "use_cost_model", "strategy_costs",
           "choose_strategy", "choose_columns"]


@dataclass(frozen=True)
class ConvProblem:
    """One call of a dynamic conv as the cost model sees it (``_DynamicConvNd.conv_problem`` builds it from a
    layer and its input). For a 1-D or 3-D conv, ``kernel_area`` is the product of the kernel's sizes and
    ``out_positions`` / ``in_positions`` the products of the maps' spatial sizes."""

    in_per_group: int  #: input channels per conv group
    out_channels: int
    kernel_area: int  #: kh * kw (k; kd * kh * kw)
    experts: int  #: K, or 1 where the spec has no mixing head (the kernel varies only through its scalings)
    out_positions: int  #: H_out * W_out
    batch: int
    groups: int = 1
    training: bool = False  #: a backward follows the forward
    spatial_head: bool = False  #: ODConv's kernel-position scaling
    itemsize: int = 4  #: bytes per value
    in_positions: int | None = None  #: H * W; None: ``out_positions``
    pointwise: bool = False  #: a 1 x 1 conv of one group without padding (kernel mixing runs it as a batched matmul)

    @property
    def weights(self) -> int:
        """W, the weights of one expert: out * in/groups * kernel area."""
        return self.out_channels * self.in_per_group * self.kernel_area


@dataclass(frozen=True)
class CostModel:
    """Constants of the cost model behind ``strategy="auto"`` (:func:`strategy_costs`) for one machine
    and thread count, fitted to measurements of all three strategies over real layer shapes
    (``python -m dynattn.bench.strategies``)."""

    macs_per_s: float  #: a dense conv's multiply-adds per second
    bytes_per_s: float  #: reading and writing feature maps, bytes per second
    kernel_mix: tuple[float, float]  #: kernel mixing's extra cost per mixed weight, in multiply-adds (B = 1, B > 1)
    blocked_share: float  #: blocked mixing: the share of that extra cost left when a block stays in cache
    block_conv: float  #: blocked mixing: the convs of narrow blocks, relative to one conv of all channels
    expert_bytes_per_s: float  #: output mixing: reading (and reordering) the K expert kernels, bytes per second
    #: kernel mixing's extra cost per mixed weight of a pointwise conv (a batched matmul, no conv of B groups)
    pointwise_mix: tuple[float, float]
    #: blocked mixing of a pointwise conv: the matmuls of narrow blocks, relative to one of all channels
    pointwise_block: float
    #: kernel mixing of a conv of one group as a matmul with the input's im2col columns (``columns`` in
    #: :func:`mixing.kernel_mixing`): writing and reading the columns, in multiply-adds per column value
    im2col: float = 60.0
    call_s: float = 1.5e-5  #: a fixed cost per op call, seconds
    cache_bytes: int = 4 * 2**20  #: a block's mixed kernels stay in cache between being written and read
    #: blocked mixing's block size: the bytes of one block's B mixed kernels (:func:`mixing.block_channels`) ...
    block_bytes: int = mixing.BLOCK_BYTES
    #: ... but at least this many output channels per block
    min_block_channels: int = mixing.MIN_BLOCK_CHANNELS


#: Fitted on this project's machine (a 2-core AMD EPYC CPU, fp32, torch 2.14) by
#: ``python -m dynattn.bench.strategies`` at 1 and 2 threads; more threads use the last.
COST_MODELS: dict[int, CostModel] = {
    1: CostModel(macs_per_s=5.3e10, bytes_per_s=2e10, kernel_mix=(20.0, 45.0), blocked_share=0.75, block_conv=2.0,
                 expert_bytes_per_s=2e9, pointwise_mix=(20.0, 20.0), pointwise_block=1.2, im2col=60.0),
    2: CostModel(macs_per_s=3.8e11, bytes_per_s=5e9, kernel_mix=(10.0, 90.0), blocked_share=0.9, block_conv=2.1,
                 expert_bytes_per_s=3.5e9, pointwise_mix=(10.0, 20.0), pointwise_block=1.2, im2col=175.0),
}

# the model use_cost_model put in force for this thread / context (None: the fitted table)
_ACTIVE: contextvars.ContextVar[CostModel | None] = contextvars.ContextVar("dynattn_cost_model", default=None)


@torch.compiler.assume_constant_result
def _threads() -> int:
    # read once per compiled graph: torch.compile cannot put the int get_num_threads returns in a graph
    return torch.get_num_threads()


def cost_model(threads: int | None = None) -> CostModel:
    """The constants in force: with ``threads`` given, the fitted ones for that many threads; else those of an
    enclosing :func:`use_cost_model`, or the fitted ones for ``torch.get_num_threads()``."""
    if threads is None:
        active = _ACTIVE.get()
        if active is not None:
            return active
        threads = _threads()
    return COST_MODELS[max(t for t in COST_MODELS if t <= max(1, threads))]


@contextlib.contextmanager
def use_cost_model(model: CostModel) -> Iterator[CostModel]:
    """Run the dynamic convs of this thread (this context: other threads keep theirs) under ``model``: the choice
    of strategy and form and blocked mixing's block size. A layer keeps its choices per model, so a choice made
    under one model is never reused under another."""
    if not isinstance(model, CostModel):
        raise TypeError(f"use_cost_model takes a CostModel, not {type(model).__name__}")
    token = _ACTIVE.set(model)
    try:
        yield model
    finally:
        _ACTIVE.reset(token)


def strategy_costs(problem: ConvProblem, model: CostModel | None = None) -> dict[str, float]:
    """Modelled seconds of each strategy for one call (forward, or forward and backward when
    ``problem.training``); ``strategy="auto"`` runs the cheapest (:func:`choose_strategy`).

    With W = out * in/groups * kernel area weights per expert, C = B * out positions * W the conv's
    multiply-adds and A the bytes of its input and output maps:

    - ``kernel``: C and A, plus ``kernel_mix`` multiply-adds per mixed weight (B * W of them):
      writing the B kernels and the grouped conv reading them back (a conv of B groups runs slower
      than a dense one) dominate on small maps, where each weight serves only H_out * W_out positions;
      a ``pointwise`` conv (1 x 1, one group, no padding) runs as a batched matmul instead, whose
      extra cost per mixed weight is ``pointwise_mix`` (and blocked mixing's narrow blocks cost
      ``pointwise_block``, not ``block_conv``);
    - ``blocked``: ``block_conv`` x C (narrow convs) and A, plus ``blocked_share`` of kernel mixing's
      extra cost when a block's B kernels stay in cache (all of it when not), plus three calls per
      block; with one block it is kernel mixing and not listed;
    - ``output``: K * C and A, plus writing and re-reading the K outputs and reading the K expert
      banks (K * W weights); with a spatial head (ODConv) plus writing and reading an im2col copy of
      the input (B * in * kernel area * out positions values).

    Training triples the conv arithmetic and doubles the rest. ``model`` defaults to :func:`cost_model`.
    """
    return {name: fs / 1e15 for name, fs in _costs_fs(problem, cost_model() if model is None else model).items()}


def _costs_fs(p: ConvProblem, m: CostModel, blocked: bool = True) -> dict[str, int]:
    """:func:`strategy_costs` in whole femtoseconds. Integer arithmetic on purpose: under
    ``torch.compile(dynamic=True)`` the sizes are symbolic, and comparing symbolic ints installs a guard
    that holds for every batch size with the same choice, where symbolic floats are specialised (one
    recompilation per batch size)."""
    mac, byte = round(1e15 / m.macs_per_s), round(1e15 / m.bytes_per_s)  # femtoseconds per unit
    call = round(1e15 * m.call_s)
    w, batch, itemsize = p.weights, p.batch, p.itemsize
    in_positions = p.out_positions if p.in_positions is None else p.in_positions
    conv = batch * p.out_positions * w * mac
    maps = batch * (p.in_per_group * p.groups * in_positions + p.out_channels * p.out_positions) * itemsize * byte
    compute, extra = (3, 2) if p.training else (1, 1)
    kernel_extra, _ = _kernel_form(p, m)
    costs = {"kernel": compute * conv + extra * (maps + kernel_extra + 3 * call)}
    shape = (p.experts, p.out_channels, p.in_per_group, p.kernel_area, 1)
    step = mixing.block_channels(batch, shape, p.groups, itemsize, block_bytes=m.block_bytes,
                                 min_channels=m.min_block_channels) if blocked else p.out_channels
    blocks = -(-p.out_channels // step)
    if blocks > 1:
        block_bytes = batch * step * p.in_per_group * p.kernel_area * itemsize
        share = round(100 * m.blocked_share) if block_bytes <= m.cache_bytes else 100  # percent
        narrow = m.pointwise_block if p.pointwise else m.block_conv
        costs["blocked"] = (compute * conv * round(100 * narrow) // 100
                            + extra * (maps + share * kernel_extra // 100 + 3 * blocks * call))
    outputs = 2 * p.experts * batch * p.out_channels * p.out_positions * itemsize * byte
    if p.spatial_head:  # the kernel-position scaling goes to an unfolded copy of the input
        outputs += 2 * batch * p.in_per_group * p.groups * p.kernel_area * p.out_positions * itemsize * byte
    experts_read = p.experts * w * itemsize * round(1e15 / m.expert_bytes_per_s)
    costs["output"] = compute * p.experts * conv + extra * (maps + outputs + experts_read + 3 * call)
    return costs


def _kernel_form(p: ConvProblem, m: CostModel) -> tuple[int, bool]:
    """Kernel mixing's extra cost in femtoseconds beyond the conv and the maps (mixing the B kernels, the conv or
    matmul reading them; with a spatial head, scaling them), and whether the columns form is the cheaper."""
    mac, byte = round(1e15 / m.macs_per_s), round(1e15 / m.bytes_per_s)
    w, batch = p.weights, p.batch
    per_weight = m.pointwise_mix if p.pointwise else m.kernel_mix
    extra = round(per_weight[0] if batch == 1 else per_weight[1]) * batch * w * mac
    if p.spatial_head and not p.pointwise:  # the kernel-position scaling: one more pass over the B kernels
        extra += 2 * batch * w * p.itemsize * byte
    if p.pointwise or p.groups != 1:
        return extra, False
    as_matmul = round(m.pointwise_mix[0] if batch == 1 else m.pointwise_mix[1]) * batch * w * mac
    columns = as_matmul + round(m.im2col) * batch * p.in_per_group * p.kernel_area * p.out_positions * mac
    if columns < extra:
        return columns, True
    return extra, False


def choose_columns(problem: ConvProblem, model: CostModel | None = None) -> bool:
    """Whether kernel and blocked mixing run a conv of one group as a batched matmul with the input's im2col
    columns (``columns=True`` in :func:`mixing.kernel_mixing`) rather than as a conv of B groups: when the columns
    (B * in * kernel area * out positions values, ``im2col`` each) cost less than the conv of B groups reading and
    reordering the B kernels (``kernel_mix`` against ``pointwise_mix`` per mixed weight), that is on small maps;
    with a spatial head the columns also take the kernel-position scaling. A pointwise or grouped conv: False."""
    return _kernel_form(problem, cost_model() if model is None else model)[1]


def choose_strategy(problem: ConvProblem, model: CostModel | None = None, *, tracing: bool = False,
                    compiling: bool = False) -> str:
    """The rule behind ``strategy="auto"``: ``output`` when exporting or fx ``tracing`` (no group count
    tied to the batch size), else the cheapest strategy under :func:`strategy_costs` (ties go to
    ``kernel``, then ``blocked``). ``compiling`` (under torch.compile) leaves out ``blocked``, whose
    block count depends on the batch size: with dynamic shapes the graph then holds for every batch
    size with the same choice.

    Where the model misjudges a machine, ``DynamicConv2d.benchmark = True`` times the candidates
    once per shape instead (see :class:`~dynattn.dynamic_conv.module._DynamicConvNd`).
    """
    if tracing:
        return "output"
    costs = _costs_fs(problem, cost_model() if model is None else model, blocked=not compiling)
    best = "kernel"
    for name, cost in costs.items():  # not min(key=...): torch.compile guards on each comparison of symbolic sizes
        if cost < costs[best]:
            best = name
    return best
