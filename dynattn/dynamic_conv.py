"""``DynamicConv1d`` / ``DynamicConv2d`` / ``DynamicConv3d``: convs whose kernel is mixed per sample
from K experts by a compiled router.

    conv = DynamicConv2d(64, 64, 3, padding=1, spec=AttnSpec.dyconv())
    conv = DynamicConv2d.from_conv(nn.Conv2d(64, 64, 3, padding=1), AttnSpec.odconv())  # upcycled
    conv = DynamicConv3d.from_conv(nn.Conv3d(64, 64, 3, padding=1), "dyconv")           # video
    conv = DynamicConv1d(32, 32, 5, padding=2, spec="condconv")                           # sequences

Each has the constructor and semantics of ``nn.Conv1d`` / ``nn.Conv2d`` / ``nn.Conv3d`` (int or
tuple kernel/stride/padding/dilation, ``padding="same"``/``"valid"``, ``padding_mode``, groups
incl. depthwise, bias, non-cubic kernels; the arguments are checked by the torch conv itself) and
``forward(x)`` only: the routing is computed inside by a router compiled from the spec. One
implementation (:class:`_DynamicConvNd`) serves the three ranks.
"""

from __future__ import annotations

import contextvars
import math
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, TypeVar

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn

from . import mixing
from .checks import check_input
from .compiler import ConvGeometry, build_router
from .errors import SpecError
from .presets import as_spec
from .registry import register_leaf_module
from .spec import AttnSpec

__all__ = ["DynamicConv1d", "DynamicConv2d", "DynamicConv3d", "MIXING_STRATEGIES", "choose_strategy", "strategy_costs",
           "choose_columns",
           "clear_measured_strategies", "CostModel", "COST_MODELS", "cost_model", "dynamic_conv_class"]

Strategy = Literal["auto", "kernel", "blocked", "output"]
#: How a dynamic conv runs: chosen per call (``auto``), kernel mixing (all B kernels at once, or one
#: block of output channels at a time) or output mixing.
MIXING_STRATEGIES = ("auto", "kernel", "blocked", "output")

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


#: Fitted on this project's CPU (AMD EPYC, 2 cores, fp32; ``python -m dynattn.bench.strategies --threads 1
#: --clock cpu`` and ``--threads 2``) at 1 and 2 threads; more threads use the last.
COST_MODELS: dict[int, CostModel] = {
    # kernel_mix at B > 1 refitted on a fresh 1-thread run of the 126 non-pointwise cells (CPU clock): 100 -> 45,
    # worst regret 59% eval / 63% training -> 0% / 0% (every cell in 30..60 gives 0%; 70 and above send 3x3
    # convs on 4x4-8x8 maps at B=8-32 to blocked or output mixing, which ran 25-60% slower than kernel mixing)
    1: CostModel(macs_per_s=5.3e10, bytes_per_s=2e10, kernel_mix=(20.0, 45.0), blocked_share=0.75, block_conv=2.0,
                 expert_bytes_per_s=2e9, pointwise_mix=(20.0, 20.0), pointwise_block=1.2, im2col=60.0),
    # refitted on a quiet machine (wall clock, --threads 2, 258 cells): worst regret 68% -> 46% eval, 54% -> 24%
    # training, 127/129 cells within 10% in each mode; the rest is one layer (a 1x1 stride-2 shortcut at 8x8)
    2: CostModel(macs_per_s=3.8e11, bytes_per_s=5e9, kernel_mix=(10.0, 90.0), blocked_share=0.9, block_conv=2.1,
                 expert_bytes_per_s=3.5e9, pointwise_mix=(10.0, 20.0), pointwise_block=1.2, im2col=175.0),
}


@torch.compiler.assume_constant_result
def _threads() -> int:
    # read once per compiled graph: torch.compile cannot put the int get_num_threads returns in a graph
    return torch.get_num_threads()


def cost_model(threads: int | None = None) -> CostModel:
    """The constants for ``threads`` (default: ``torch.get_num_threads()``)."""
    threads = _threads() if threads is None else threads
    return COST_MODELS[max(t for t in COST_MODELS if t <= max(1, threads))]


def strategy_costs(
    in_per_group: int,
    out_channels: int,
    kernel_area: int,
    experts: int,
    out_positions: int,
    batch: int,
    *,
    groups: int = 1,
    training: bool = False,
    spatial_head: bool = False,
    itemsize: int = 4,
    in_positions: int | None = None,
    pointwise: bool = False,
    model: CostModel | None = None,
) -> dict[str, float]:
    """Modelled seconds of each strategy for one call (forward, or forward and backward when
    ``training``); ``strategy="auto"`` runs the cheapest (:func:`choose_strategy`).

    With W = out * in/groups * kh * kw weights per expert, C = B * H_out * W_out * W the conv's
    multiply-adds and A the bytes of its input and output maps (for a 1-D or 3-D conv,
    ``kernel_area`` is the product of the kernel's sizes and ``out_positions`` / ``in_positions``
    the products of the maps' spatial sizes):

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
      the input (B * in * kh * kw * H_out * W_out values).

    Training triples the conv arithmetic and doubles the rest. ``model`` defaults to
    :func:`cost_model` for the current thread count.
    """
    return {name: fs / 1e15 for name, fs in _costs_fs(
        in_per_group, out_channels, kernel_area, experts, out_positions, batch, groups=groups, training=training,
        spatial_head=spatial_head, itemsize=itemsize, in_positions=in_positions, pointwise=pointwise,
        model=model).items()}


def _costs_fs(in_per_group, out_channels, kernel_area, experts, out_positions, batch, *, groups, training,
              spatial_head, itemsize, in_positions, model, pointwise=False, blocked=True) -> dict[str, int]:
    """:func:`strategy_costs` in whole femtoseconds. Integer arithmetic on purpose: under
    ``torch.compile(dynamic=True)`` the sizes are symbolic, and comparing symbolic ints installs a guard
    that holds for every batch size with the same choice, where symbolic floats are specialised (one
    recompilation per batch size)."""
    m = cost_model() if model is None else model
    mac, byte = round(1e15 / m.macs_per_s), round(1e15 / m.bytes_per_s)  # femtoseconds per unit
    call = round(1e15 * m.call_s)
    w = out_channels * in_per_group * kernel_area
    in_positions = out_positions if in_positions is None else in_positions
    conv = batch * out_positions * w * mac
    maps = batch * (in_per_group * groups * in_positions + out_channels * out_positions) * itemsize * byte
    compute, extra = (3, 2) if training else (1, 1)
    kernel_extra, _ = _kernel_form(m, w, in_per_group, kernel_area, out_positions, batch, groups=groups,
                                   spatial_head=spatial_head, itemsize=itemsize, pointwise=pointwise)
    costs = {"kernel": compute * conv + extra * (maps + kernel_extra + 3 * call)}
    shape = (experts, out_channels, in_per_group, kernel_area, 1)
    step = mixing.block_channels(batch, shape, groups, itemsize) if blocked else out_channels
    blocks = -(-out_channels // step)
    if blocks > 1:
        block_bytes = batch * step * in_per_group * kernel_area * itemsize
        share = round(100 * m.blocked_share) if block_bytes <= m.cache_bytes else 100  # percent
        narrow = m.pointwise_block if pointwise else m.block_conv
        costs["blocked"] = (compute * conv * round(100 * narrow) // 100
                            + extra * (maps + share * kernel_extra // 100 + 3 * blocks * call))
    outputs = 2 * experts * batch * out_channels * out_positions * itemsize * byte
    if spatial_head:  # the kernel-position scaling goes to an unfolded copy of the input
        outputs += 2 * batch * in_per_group * groups * kernel_area * out_positions * itemsize * byte
    experts_read = experts * w * itemsize * round(1e15 / m.expert_bytes_per_s)
    costs["output"] = compute * experts * conv + extra * (maps + outputs + experts_read + 3 * call)
    return costs


def _kernel_form(m: CostModel, w, in_per_group, kernel_area, out_positions, batch, *, groups, spatial_head, itemsize,
                 pointwise) -> tuple[int, bool]:
    """Kernel mixing's extra cost in femtoseconds beyond the conv and the maps (mixing the B kernels, the conv or
    matmul reading them; with a spatial head, scaling them), and whether the columns form is the cheaper."""
    mac, byte = round(1e15 / m.macs_per_s), round(1e15 / m.bytes_per_s)
    per_weight = m.pointwise_mix if pointwise else m.kernel_mix
    extra = round(per_weight[0] if batch == 1 else per_weight[1]) * batch * w * mac
    if spatial_head and not pointwise:  # the kernel-position scaling: one more pass over the B kernels
        extra += 2 * batch * w * itemsize * byte
    if pointwise or groups != 1:
        return extra, False
    as_matmul = round(m.pointwise_mix[0] if batch == 1 else m.pointwise_mix[1]) * batch * w * mac
    columns = as_matmul + round(m.im2col) * batch * in_per_group * kernel_area * out_positions * mac
    if columns < extra:
        return columns, True
    return extra, False


def choose_columns(
    in_per_group: int,
    kernel_area: int,
    experts: int,
    out_positions: int,
    batch: int,
    *,
    out_channels: int | None = None,
    groups: int = 1,
    training: bool = False,
    spatial_head: bool = False,
    itemsize: int = 4,
    in_positions: int | None = None,
    pointwise: bool = False,
    model: CostModel | None = None,
) -> bool:
    """Whether kernel and blocked mixing run a conv of one group as a batched matmul with the input's im2col
    columns (``columns=True`` in :func:`mixing.kernel_mixing`) rather than as a conv of B groups: when the columns
    (B * in * kh * kw * H_out * W_out values, ``im2col`` each) cost less than the conv of B groups reading and
    reordering the B kernels (``kernel_mix`` against ``pointwise_mix`` per mixed weight), that is on small maps;
    with a spatial head the columns also take the kernel-position scaling. Same arguments as
    :func:`choose_strategy`; a pointwise or grouped conv: False."""
    m = cost_model() if model is None else model
    out_channels = in_per_group * groups if out_channels is None else out_channels
    w = out_channels * in_per_group * kernel_area
    return _kernel_form(m, w, in_per_group, kernel_area, out_positions, batch, groups=groups,
                        spatial_head=spatial_head, itemsize=itemsize, pointwise=pointwise)[1]


def choose_strategy(
    in_per_group: int,
    kernel_area: int,
    experts: int,
    out_positions: int,
    batch: int,
    *,
    out_channels: int | None = None,
    groups: int = 1,
    training: bool = False,
    spatial_head: bool = False,
    tracing: bool = False,
    compiling: bool = False,
    itemsize: int = 4,
    in_positions: int | None = None,
    pointwise: bool = False,
    model: CostModel | None = None,
) -> str:
    """The rule behind ``strategy="auto"``: ``output`` when exporting or fx tracing (no group count
    tied to the batch size), else the cheapest strategy under :func:`strategy_costs` (ties go to
    ``kernel``, then ``blocked``). ``out_channels`` defaults to ``in_per_group * groups``.
    ``compiling`` (under torch.compile) leaves out ``blocked``, whose block count depends on the
    batch size: with dynamic shapes the graph then holds for every batch size with the same choice.

    Where the model misjudges a machine, ``DynamicConv2d.benchmark = True`` times the candidates
    once per shape instead (see :class:`DynamicConv2d`).
    """
    if tracing:
        return "output"
    out_channels = in_per_group * groups if out_channels is None else out_channels
    costs = _costs_fs(in_per_group, out_channels, kernel_area, experts, out_positions, batch, groups=groups,
                      training=training, spatial_head=spatial_head, itemsize=itemsize,
                      in_positions=in_positions, pointwise=pointwise, model=model,
                      blocked=not compiling)  # blocked mixing's block count depends on B: a graph per batch size
    best = "kernel"
    for name, cost in costs.items():  # not min(key=...): torch.compile guards on each comparison of symbolic sizes
        if cost < costs[best]:
            best = name
    return best


#: Benchmark mode times the strategies whose modelled cost is within this factor of the cheapest.
BENCHMARK_PRUNE = 3.0
#: Benchmark mode: calls timed per strategy (after one warm-up); the fastest call counts.
BENCHMARK_CALLS = 3
#: Shapes a layer keeps its cost-model choice for before forgetting them all (inputs of ever-changing size).
_MEMO_SIZE = 64
# benchmark mode's choices, by layer geometry, input shape and mode (see DynamicConv2d.benchmark)
_MEASURED: dict[tuple, str] = {}


def clear_measured_strategies() -> None:
    """Forget benchmark mode's choices (they are timed again on the next call of each shape)."""
    _MEASURED.clear()


def _time_strategy(call) -> float:
    call()
    best = math.inf
    for _ in range(BENCHMARK_CALLS):
        t0 = time.perf_counter()
        call()
        best = min(best, time.perf_counter() - t0)
    return best


def _same_on_every_rank(choice: str) -> str:
    """Rank 0's choice on every rank of an initialised torch.distributed group (timings differ by rank)."""
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        box = [choice]
        dist.broadcast_object_list(box, src=0)
        return box[0]
    return choice


_NOT_SCRIPTABLE = (
    "dynattn modules cannot be compiled by torch.jit.script (their graphs call einops and take Python-level "
    "specs): use torch.jit.trace(model, example), torch.export.export, or torch.onnx.export, which all keep a "
    "dynamic batch")

_D = TypeVar("_D", bound="_DynamicConvNd")

# set by from_conv: the experts are about to be overwritten with the conv's weight
_UPCYCLING = contextvars.ContextVar("dynattn_upcycling", default=False)


class _DynamicConvNd(nn.Module):
    """A convolution with ``dims`` spatial dims whose kernel is ``W_b = sum_k a_bk W_k`` for each
    sample b: the implementation of :class:`DynamicConv1d`, :class:`DynamicConv2d` and
    :class:`DynamicConv3d`, which set ``dims`` and ``conv_class`` (the torch conv they mirror).

    Args mirror the torch conv's; ``spec`` is a kernel-target :class:`~dynattn.AttnSpec` (or a
    preset name such as ``"dyconv"``) that the router is compiled from; ``strategy`` is
    ``"auto"``, ``"kernel"``, ``"blocked"`` or ``"output"`` (see :mod:`dynattn.mixing`).

    ``strategy="auto"`` follows the cost model of :func:`choose_strategy` (in eager mode each layer
    evaluates it once per input shape and mode and keeps the answer); with
    ``DynamicConv2d.benchmark = True`` (like ``torch.backends.cudnn.benchmark``) it instead times
    the strategies the model does not rule out, once per input shape, mode and layer geometry, and
    keeps the fastest (shared by every layer of that geometry). The switch is a class attribute:
    ``DynamicConv3d.benchmark = True`` sets it for the 3-D convs only. Under torch.distributed every
    rank takes rank 0's choice (a broadcast on the first call of each new shape, so every rank must
    run it, as DDP's ranks do). Exporting, fx tracing and torch.compile keep the model's rule.

    Attributes: ``weight`` (K * out, in/groups, *kernel_size): the experts stacked along the output
    axis (of the torch conv's rank, so ``model.to(memory_format=torch.channels_last)`` works in 2-D;
    ``expert_weights`` is its (K, out, in/groups, *kernel_size) view), ``bias`` (K, out) or None,
    ``router`` (a ``torch.fx.GraphModule``), ``temperature`` (the router's buffer).
    """

    #: Time the strategies once per shape instead of following the cost model (off by default).
    benchmark: ClassVar[bool] = False
    #: The number of spatial dims (set by each subclass).
    dims: ClassVar[int]
    #: The torch conv this class mirrors, upcycles and takes the checkpoints of.
    conv_class: ClassVar[type[nn.Module]]

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, ...],
        stride: int | tuple[int, ...] = 1,
        padding: str | int | tuple[int, ...] = 0,
        dilation: int | tuple[int, ...] = 1,
        groups: int = 1,
        bias: bool = True,
        padding_mode: str = "zeros",
        *,
        spec: AttnSpec | str = "dyconv",
        strategy: Strategy = "auto",
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        name, conv_name = type(self).__name__, f"nn.{self.conv_class.__name__}"
        spec = as_spec(spec)
        if spec.kind != "kernel":
            raise SpecError("spec", spec, f"{name} needs a kernel-target spec",
                            hint="e.g. AttnSpec.dyconv(), AttnSpec.condconv(), AttnSpec.odconv()")
        if strategy not in MIXING_STRATEGIES:
            raise SpecError("strategy", strategy, "unknown execution strategy", MIXING_STRATEGIES)
        # the torch conv checks every argument and derives padding exactly as it would itself
        try:
            template = self.conv_class(in_channels, out_channels, kernel_size, stride, padding, dilation, groups,
                                       bias, padding_mode, device="meta")
        except (ValueError, TypeError, RuntimeError) as exc:
            raise SpecError(name, (in_channels, out_channels, kernel_size), str(exc),
                            hint=f"the arguments follow {conv_name}") from exc
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size = template.kernel_size
        self.stride, self.padding, self.dilation = template.stride, template.padding, template.dilation
        self.groups, self.padding_mode = groups, padding_mode
        self._reversed_padding_repeated_twice = tuple(template._reversed_padding_repeated_twice)
        self.spec = spec
        self.strategy = strategy
        self.experts = spec.experts
        dd = {"device": device, "dtype": dtype}
        self.weight = nn.Parameter(torch.empty(spec.experts * out_channels, in_channels // groups, *self.kernel_size,
                                               **dd))
        self.bias = nn.Parameter(torch.empty(spec.experts, out_channels, **dd)) if bias else None
        self.router = build_router(
            spec, ConvGeometry(in_channels, out_channels, self.kernel_size, groups), device=device, dtype=dtype
        )
        if not _UPCYCLING.get():
            self.reset_parameters()

    # ------------------------------------------------------------------ construction
    def reset_parameters(self) -> None:
        """Each expert initialised as the torch conv initialises its weight and bias."""
        for expert in self.weight.detach().split(self.out_channels):
            nn.init.kaiming_uniform_(expert, a=math.sqrt(5))
        if self.bias is not None:
            fan_in = self.weight[0].numel()
            bound = 1 / math.sqrt(fan_in) if fan_in > 0 else 0
            nn.init.uniform_(self.bias, -bound, bound)

    @classmethod
    def from_conv(cls: type[_D], conv: nn.Module, spec: AttnSpec | str = "dyconv", *,
                  strategy: Strategy = "auto") -> _D:
        """Upcycle ``conv`` (an ``nn.Conv1d`` / ``nn.Conv2d`` / ``nn.Conv3d``, the class's own rank):
        every expert starts as its weight and bias, so the output equals the conv's (to float
        rounding) until training moves the experts apart.

        Softmax mixing weights sum to one, so any routing reproduces the conv. Heads that do
        not (CondConv's sigmoid, ODConv's sigmoid scalings) start at their neutral value
        through ``init="identity"``: ``neutral + mix * (gate - neutral)`` with ``mix`` a
        learnable scalar at 0 (1/K for the mixing weights, 1 for the scalings).
        """
        base = cls.conv_class
        if not isinstance(conv, base) or type(conv).forward is not base.forward:
            other = dynamic_conv_class(conv) if isinstance(conv, tuple(DYNAMIC_CONVS)) else None
            raise SpecError("conv", type(conv).__name__,
                            f"only a plain nn.{base.__name__} (or a subclass with its forward) can be upcycled "
                            f"exactly by {cls.__name__}",
                            hint=f"use {other.__name__}.from_conv, or dynattn.build(spec, conv=...)" if other else
                            "its forward differs (weight standardisation, dynamic padding, ...)")
        spec = as_spec(spec)
        if spec.kind != "kernel":
            raise SpecError("spec", spec, "upcycling needs a kernel-target spec",
                            hint="e.g. AttnSpec.dyconv()")
        token = _UPCYCLING.set(True)
        try:
            new = cls(
                conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding, conv.dilation,
                conv.groups, conv.bias is not None, conv.padding_mode, spec=spec.with_init("identity"),
                strategy=strategy, device=conv.weight.device, dtype=conv.weight.dtype,
            )
        finally:
            _UPCYCLING.reset(token)
        with torch.no_grad():
            new.weight.copy_(conv.weight.detach().repeat(new.experts, *(1,) * (cls.dims + 1)))
            if conv.bias is not None:
                new.bias.copy_(conv.bias.detach().unsqueeze(0).expand_as(new.bias))
        new.train(conv.training)
        return new

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs):
        """A conv's checkpoint loads too: a ``weight`` of the torch conv's shape (and its ``bias``)
        fills every expert, as ``from_conv`` does, so a model whose convs were converted still
        loads the original model's checkpoint (``strict=False``: only the routers are missing)."""
        conv_shape = (self.out_channels, self.in_channels // self.groups, *self.kernel_size)
        weight = state_dict.get(prefix + "weight")
        if self.experts > 1 and isinstance(weight, torch.Tensor) and tuple(weight.shape) == conv_shape:
            state_dict[prefix + "weight"] = weight.repeat(self.experts, *(1,) * (self.dims + 1))
        bias = state_dict.get(prefix + "bias")
        if self.bias is not None and isinstance(bias, torch.Tensor) and tuple(bias.shape) == (self.out_channels,):
            state_dict[prefix + "bias"] = bias.unsqueeze(0).expand_as(self.bias)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                      error_msgs)

    @property
    def expert_weights(self) -> torch.Tensor:
        """The experts as (K, out, in/groups, *kernel_size) (a view of ``weight`` when it is contiguous)."""
        return self.weight.reshape(self.experts, self.out_channels, self.in_channels // self.groups,
                                   *self.kernel_size)

    # ------------------------------------------------------------------ temperature
    @property
    def temperature(self) -> float:
        return float(self.router.temperature)

    @temperature.setter
    def temperature(self, value: float) -> None:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
            raise SpecError("temperature", value, "must be a finite number > 0")
        self.router.temperature.fill_(float(value))

    # ------------------------------------------------------------------ forward
    def _resolve_strategy(self, x: torch.Tensor) -> tuple[str | None, tuple | None]:
        """(the strategy for ``x``, None); (None, key) where benchmark mode has yet to time this shape."""
        if self.strategy in ("kernel", "blocked") and (torch.onnx.is_in_onnx_export() or torch.jit.is_tracing()):
            warnings.warn(f"{type(self).__name__}(strategy={self.strategy!r}) folds the batch into the conv's group "
                          "count, which an ONNX Conv or a TorchScript trace cannot keep dynamic: tracing output mixing "
                          "instead (equal values)", stacklevel=2)
            return "output", None
        if self.strategy != "auto":
            return self.strategy, None
        if (type(self).benchmark and type(x) is torch.Tensor and x.device.type != "meta"
                and not mixing.is_exporting() and not torch.compiler.is_compiling()):
            key = self._benchmark_key(x)
            return _MEASURED.get(key), key
        return self.chosen_strategy(x), None

    def chosen_strategy(self, x: torch.Tensor) -> str:
        """The strategy ``strategy="auto"`` runs for the input ``x`` (see :func:`choose_strategy`)."""
        if isinstance(x, fx.Proxy) or mixing.is_exporting():
            return "output"
        if torch.compiler.is_compiling():
            return choose_strategy(**self.strategy_inputs(x), compiling=True)
        # eager: the choice for this input shape and mode is kept (about 50 us of Python per call, which a
        # batch of 1 notices); the key holds everything the choice reads that can change between calls
        key = ("strategy", x.shape, x.dtype, self.training and torch.is_grad_enabled(), cost_model(),
               self.stride, self.padding, self.dilation, self.padding_mode)
        return self._memo(x, key, lambda: choose_strategy(**self.strategy_inputs(x)))

    def _memo(self, x: torch.Tensor, key: tuple, compute: Callable[[], Any]) -> Any:
        """``compute()``, which derives from the input's shape alone: kept per ``key`` in eager calls (a per-layer
        memo, not state: not in the state_dict; a few shapes per layer in practice, cleared past ``_MEMO_SIZE``),
        evaluated each time where the sizes are symbolic (fx tracing, torch.compile, export)."""
        if isinstance(x, fx.Proxy) or torch.compiler.is_compiling():
            return compute()
        memo = self.__dict__.get("_shape_memo")
        if memo is None:  # also a layer unpickled from before the memo
            memo = self.__dict__["_shape_memo"] = {}
        value = memo.get(key)
        if value is None:
            if len(memo) >= _MEMO_SIZE:
                memo.clear()
            value = memo[key] = compute()
        return value

    def strategy_inputs(self, x: torch.Tensor) -> dict:
        """What :func:`choose_strategy` decides from, for the input ``x``."""
        experts = self.experts if "kernel" in self.router.heads else 1
        return dict(in_per_group=self.in_channels // self.groups, kernel_area=math.prod(self.kernel_size),
                    experts=experts, out_positions=self._out_positions(x), batch=x.shape[0],
                    out_channels=self.out_channels, groups=self.groups,
                    training=self.training and torch.is_grad_enabled(), in_positions=self._in_positions(x),
                    spatial_head="spatial" in self.router.heads, itemsize=x.element_size(),
                    pointwise=mixing.is_pointwise(self.kernel_size, self._conv_args()))

    def _conv_args(self) -> mixing.ConvArgs:
        """How the conv slides, with the padding it is given: none after a non-zeros padding_mode's pre-pad."""
        padding = self.padding if self.padding_mode == "zeros" else (0,) * self.dims
        return mixing.ConvArgs(self.stride, padding, self.dilation, self.groups)

    # plain loops, not generators: torch.compile(fullgraph=True) traces these on symbolic sizes
    def _in_positions(self, x: torch.Tensor) -> int:
        """The input's positions: H * W (L; D * H * W) for the input ``x``."""
        n = 1
        for i in range(self.dims):
            n = n * x.shape[2 + i]
        return n

    def _out_positions(self, x: torch.Tensor) -> int:
        """The output's positions: H_out * W_out (L_out; D_out * H_out * W_out) for the input ``x``."""
        r = self._reversed_padding_repeated_twice  # last dim first: (left, right, top, bottom, front, back)
        n = 1
        for i in range(self.dims):
            j = 2 * (self.dims - 1 - i)  # dim i's padding in r
            k, d, s = self.kernel_size[i], self.dilation[i], self.stride[i]
            n = n * ((x.shape[2 + i] + r[j] + r[j + 1] - d * (k - 1) - 1) // s + 1)
        return n

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not isinstance(x, fx.Proxy):
            check_input(x, self.in_channels, type(self).__name__, dims=self.dims)
        strategy, key = self._resolve_strategy(x)
        gates = dict(zip(self.router.heads, self.router(x)))
        columns = strategy != "output" and self._columns(x)  # kernel and blocked mixing's form (benchmark mode: both)
        # ODConv's channel scalings: into the B kernels where they hold fewer values than the maps
        fold = strategy == "kernel" and not columns and ("in" in gates or "out" in gates) and self._memo(
            x, ("fold", x.shape, self.stride, self.padding, self.dilation), lambda: self._kernels_smaller(x))
        if "in" in gates and not fold:
            x = x * gates["in"][(slice(None), slice(None)) + (None,) * self.dims]
        pad_amounts = self._reversed_padding_repeated_twice
        if self.padding_mode != "zeros":
            x = F.pad(x, pad_amounts, mode=self.padding_mode)
            pad_amounts = (0,) * (2 * self.dims)
        conv = self._conv_args()
        mixed = (self.expert_weights, self.bias, gates.get("kernel"), gates.get("spatial"), gates.get("out"))
        if fold:
            shape = (self.experts, self.out_channels, self.in_channels // self.groups, *self.kernel_size)
            return mixing.kernel_mixing(x, shape, *mixed, conv, in_scale=gates.get("in"), fold_out=True)
        if strategy is None:  # benchmark mode, a shape not timed yet
            strategy = self._measure(key, x, mixed, conv, pad_amounts, columns)
        return self._mix(strategy, x, mixed, conv, pad_amounts, columns)

    def _columns(self, x: torch.Tensor) -> bool:
        """Whether kernel and blocked mixing run as a matmul with the input's im2col columns (see
        :func:`choose_columns`); a conv of B groups where the sizes are an fx tracer's proxies."""
        if isinstance(x, fx.Proxy) or self.groups != 1 or math.prod(self.kernel_size) == 1:
            return False  # a 1 x 1 kernel of one group runs as a matmul of its own (mixing._pointwise)
        key = ("columns", x.shape, x.dtype, cost_model(), self.stride, self.padding, self.dilation, self.padding_mode)
        return self._memo(x, key, lambda: choose_columns(**self.strategy_inputs(x)))

    def _kernels_smaller(self, x: torch.Tensor) -> bool:
        """Whether one sample's kernel holds fewer values than its input and output maps."""
        kernel = self.out_channels * (self.in_channels // self.groups) * math.prod(self.kernel_size)
        return kernel < self.in_channels * self._in_positions(x) + self.out_channels * self._out_positions(x)

    def _mix(self, strategy: str, x: torch.Tensor, mixed: tuple, conv: mixing.ConvArgs,
             pad_amounts: tuple[int, ...], columns: bool = False) -> torch.Tensor:
        shape = (self.experts, self.out_channels, self.in_channels // self.groups, *self.kernel_size)
        if strategy == "kernel":
            return mixing.kernel_mixing(x, shape, *mixed, conv, columns=columns, pad_amounts=pad_amounts)
        if strategy == "blocked":
            return mixing.blocked_kernel_mixing(x, shape, *mixed, conv, columns=columns, pad_amounts=pad_amounts)
        return mixing.output_mixing(x, shape, *mixed, conv, pad_amounts)

    # ------------------------------------------------------------------ benchmark mode
    def _benchmark_key(self, x: torch.Tensor) -> tuple:
        return (self.in_channels, self.out_channels, self.kernel_size, self.stride, self.padding, self.dilation,
                self.groups, self.padding_mode, self.experts, self.router.heads, tuple(x.shape), x.stride(),
                x.dtype, x.device, self.training and torch.is_grad_enabled(), torch.get_num_threads())

    def _measure(self, key: tuple, x: torch.Tensor, mixed: tuple, conv: mixing.ConvArgs,
                 pad_amounts: tuple[int, ...], columns: bool = False) -> str:
        """Time the strategies the cost model does not rule out, keep the fastest for this shape."""
        inputs = self.strategy_inputs(x)
        costs = strategy_costs(**inputs)
        best = min(costs.values())
        candidates = [s for s, c in costs.items() if c <= BENCHMARK_PRUNE * best]
        train = inputs["training"]
        timings = {}
        for strategy in candidates:
            timings[strategy] = _time_strategy(lambda s=strategy: self._timed_call(s, x, mixed, conv, pad_amounts,
                                                                                   train, columns))
        choice = min(timings, key=timings.__getitem__)
        choice = _same_on_every_rank(choice)
        _MEASURED[key] = choice
        return choice

    def _timed_call(self, strategy: str, x: torch.Tensor, mixed: tuple, conv: mixing.ConvArgs,
                    pad_amounts: tuple[int, ...], train: bool, columns: bool = False) -> None:
        if not train:
            with torch.no_grad():
                self._mix(strategy, x, mixed, conv, pad_amounts, columns)
            return
        leaves = [t.detach().requires_grad_(t.requires_grad) if isinstance(t, torch.Tensor) else t
                  for t in (x, *mixed)]
        with torch.enable_grad():
            y = self._mix(strategy, leaves[0], tuple(leaves[1:]), conv, pad_amounts, columns)
            wrt = [t for t in leaves if isinstance(t, torch.Tensor) and t.requires_grad]
            if wrt:
                torch.autograd.grad(y, wrt, torch.ones_like(y))

    def __prepare_scriptable__(self) -> nn.Module:
        raise TypeError(_NOT_SCRIPTABLE)

    def extra_repr(self) -> str:
        s = f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}"
        if self.padding != (0,) * self.dims:
            s += f", padding={self.padding!r}"
        if self.dilation != (1,) * self.dims:
            s += f", dilation={self.dilation}"
        if self.groups != 1:
            s += f", groups={self.groups}"
        if self.bias is None:
            s += ", bias=False"
        if self.padding_mode != "zeros":
            s += f", padding_mode={self.padding_mode!r}"
        return s + f", experts={self.experts}, spec={self.spec.name or 'custom'}, strategy={self.strategy!r}"


class DynamicConv1d(_DynamicConvNd):
    """A 1-D convolution (``nn.Conv1d``'s arguments, (B, C, L) maps) whose kernel is
    ``W_b = sum_k a_bk W_k`` for each sample b; see :class:`DynamicConv2d` for the arguments,
    strategies and attributes (``weight`` is (K * out, in/groups, k))."""

    dims = 1
    conv_class = nn.Conv1d


class DynamicConv2d(_DynamicConvNd):
    """A 2-D convolution whose kernel is ``W_b = sum_k a_bk W_k`` for each sample b.

    Args mirror ``nn.Conv2d``; ``spec`` is a kernel-target :class:`~dynattn.AttnSpec` (or a
    preset name such as ``"dyconv"``) that the router is compiled from; ``strategy`` is
    ``"auto"``, ``"kernel"``, ``"blocked"`` or ``"output"`` (see :mod:`dynattn.mixing`).

    ``strategy="auto"`` follows the cost model of :func:`choose_strategy` (in eager mode each layer
    evaluates it once per input shape and mode and keeps the answer); with
    ``DynamicConv2d.benchmark = True`` (like ``torch.backends.cudnn.benchmark``) it instead times
    the strategies the model does not rule out, once per input shape, mode and layer geometry, and
    keeps the fastest (shared by every layer of that geometry). Under torch.distributed every rank
    takes rank 0's choice (a broadcast on the first call of each new shape, so every rank must run
    it, as DDP's ranks do). Exporting, fx tracing and torch.compile keep the model's rule.

    Attributes: ``weight`` (K * out, in/groups, kh, kw): the experts stacked along the output
    axis (4-D, so ``model.to(memory_format=torch.channels_last)`` works; ``expert_weights`` is
    its (K, out, in/groups, kh, kw) view), ``bias`` (K, out) or None,
    ``router`` (a ``torch.fx.GraphModule``), ``temperature`` (the router's buffer).
    """

    dims = 2
    conv_class = nn.Conv2d


class DynamicConv3d(_DynamicConvNd):
    """A 3-D convolution (``nn.Conv3d``'s arguments, (B, C, D, H, W) maps, e.g. video) whose kernel
    is ``W_b = sum_k a_bk W_k`` for each sample b; see :class:`DynamicConv2d` for the arguments,
    strategies and attributes (``weight`` is (K * out, in/groups, kd, kh, kw); ODConv's spatial head
    scales the kd * kh * kw kernel positions)."""

    dims = 3
    conv_class = nn.Conv3d


#: The dynamic conv of each torch conv class.
DYNAMIC_CONVS: dict[type[nn.Module], type[_DynamicConvNd]] = {
    nn.Conv1d: DynamicConv1d, nn.Conv2d: DynamicConv2d, nn.Conv3d: DynamicConv3d}


def dynamic_conv_class(conv: nn.Module) -> type[_DynamicConvNd]:
    """The dynamic conv that upcycles ``conv``: DynamicConv1d / 2d / 3d for an nn.Conv1d / 2d / 3d (or a
    subclass); DynamicConv2d for anything else (whose ``from_conv`` says what it takes)."""
    for base, dyn in DYNAMIC_CONVS.items():
        if isinstance(conv, base):
            return dyn
    return DynamicConv2d


register_leaf_module(DynamicConv1d, role="conv")  # tracers keep it whole; its output is an NCL map
register_leaf_module(DynamicConv2d, role="conv")  # tracers keep it whole; its output is an NCHW map
register_leaf_module(DynamicConv3d, role="conv")  # tracers keep it whole; its output is an NCDHW map
