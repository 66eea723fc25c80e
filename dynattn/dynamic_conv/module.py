"""The dynamic conv modules: :class:`_DynamicConvNd`, one implementation of any rank, and
``DynamicConv1d`` / ``DynamicConv2d`` / ``DynamicConv3d``, which mirror ``nn.Conv1d`` / ``nn.Conv2d`` /
``nn.Conv3d``."""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from typing import Any, ClassVar, Literal, TypeVar

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn

from .. import mixing
from ..checks import check_input
from ..compiler import ConvGeometry, build_router
from ..errors import SpecError
from ..presets import as_spec
from ..registry import register_leaf_module
from ..spec import AttnSpec
from .cost_model import ConvProblem, choose_columns, choose_strategy, cost_model
from .latent import LatentFusion, check_latent_geometry
from .measure import benchmark_key, measure_strategy, measured_strategy
from .upcycle import expand_conv_checkpoint, fill_experts, is_upcycling, upcycle_spec, upcycling
from .warehouse import Warehouse, assemble_kernels, plan_warehouse

__all__ = ["DynamicConv1d", "DynamicConv2d", "DynamicConv3d", "MIXING_STRATEGIES", "DYNAMIC_CONVS",
           "dynamic_conv_class"]

Strategy = Literal["auto", "kernel", "blocked", "output"]
#: How a dynamic conv runs: chosen per call (``auto``), kernel mixing (all B kernels at once, or one
#: block of output channels at a time) or output mixing.
MIXING_STRATEGIES = ("auto", "kernel", "blocked", "output")

#: Shapes a layer keeps its cost-model choice for before forgetting them all (inputs of ever-changing size).
_MEMO_SIZE = 64

_NOT_SCRIPTABLE = (
    "dynattn modules cannot be compiled by torch.jit.script (their graphs call einops and take Python-level "
    "specs): use torch.jit.trace(model, example), torch.export.export, or torch.onnx.export, which all keep a "
    "dynamic batch")

_D = TypeVar("_D", bound="_DynamicConvNd")


class _DynamicConvNd(nn.Module):
    """A convolution with ``spatial_dims`` spatial dims whose kernel is ``W_b = sum_k a_bk W_k`` for each
    sample b: the implementation of :class:`DynamicConv1d`, :class:`DynamicConv2d` and
    :class:`DynamicConv3d`, which set ``spatial_dims`` and ``conv_class`` (the torch conv they mirror).

    Args mirror the torch conv's; ``spec`` is a kernel-target :class:`~dynattn.AttnSpec` (or a
    preset name such as ``"dyconv"``) that the router is compiled from; ``strategy`` is
    ``"auto"``, ``"kernel"``, ``"blocked"`` or ``"output"`` (see :mod:`dynattn.mixing`).

    ``strategy="auto"`` follows the cost model of :func:`choose_strategy` (in eager mode each layer
    evaluates it once per input shape, mode and cost model in force and keeps the answer); with
    ``DynamicConv2d.benchmark = True`` (like ``torch.backends.cudnn.benchmark``) it instead times
    the strategies the model does not rule out, once per input shape, mode and layer geometry, and
    keeps the fastest (shared by every layer of that geometry). The switch is a class attribute:
    ``DynamicConv3d.benchmark = True`` sets it for the 3-D convs only. Under torch.distributed every
    rank takes rank 0's choice (a broadcast on the first call of each new shape, so every rank must
    run it, as DDP's ranks do). Exporting, fx tracing and torch.compile keep the model's rule.

    Attributes: ``weight`` (K * out, in/groups, *kernel_size): the experts stacked along the output
    axis (of the torch conv's rank, so ``model.to(memory_format=torch.channels_last)`` works in 2-D;
    ``expert_weights`` is its (K, out, in/groups, *kernel_size) view), ``bias`` (K, out) or None,
    ``router`` (a ``torch.fx.GraphModule``), ``temperature`` (the router's buffer), ``latent`` (DCD's latent
    path, :class:`~dynattn.dynamic_conv.latent.LatentFusion`, added to the conv's output where the spec has the
    ``latent`` head; else None).

    KernelWarehouse (a spec with the ``cells`` head, ``AttnSpec.kw()``): no experts (``weight`` is None, ``bias``
    (1, out)); the kernel is assembled per sample from the cells of ``warehouse``
    (:class:`~dynattn.dynamic_conv.warehouse.Warehouse`), the layer's own unless ``warehouse=(warehouse, index)``
    gives it its place in a shared one (``insert_attention`` shares one per stage); ``temperature`` is then the
    official blend toward each kernel cell's own cell, in [0, 1].
    """

    #: Time the strategies once per shape instead of following the cost model (off by default).
    benchmark: ClassVar[bool] = False
    #: The number of spatial dims (set by each subclass).
    spatial_dims: ClassVar[int]
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
        warehouse: tuple[Warehouse, int] | None = None,
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
        geometry = self._kernel_store(spec, warehouse, **dd)
        self.bias = nn.Parameter(torch.empty(spec.experts, out_channels, **dd)) if bias else None
        self.router = build_router(spec, geometry, device=device, dtype=dtype)
        if "cells" in spec.heads:  # each mixture's own cell; init="identity" (from_conv) starts where it is all
            self.router.cell_one_hot.copy_(self.warehouse.plan.one_hot(self.warehouse_index))
            if spec.init == "identity":
                self.router.temperature.fill_(1.0)
        self.latent = self._latent_path(spec, **dd)
        if not is_upcycling():
            self.reset_parameters()

    def _latent_path(self, spec: AttnSpec, **dd: Any) -> LatentFusion | None:
        """DCD's latent path where the router has a ``latent`` head (its last 1x1 conv at zero under
        ``init="identity"``, so the layer starts as its static conv), else None."""
        if self.router.latent_dim is None:
            return None
        check_latent_geometry(type(self).__name__, self.kernel_size, self.dilation,
                              self._reversed_padding_repeated_twice)
        latent = LatentFusion(self.in_channels, self.out_channels, self.router.latent_dim, self.stride, **dd)
        if spec.init == "identity":
            nn.init.zeros_(latent.p.weight)
        return latent

    def _kernel_store(self, spec: AttnSpec, warehouse: tuple[Warehouse, int] | None, **dd: Any) -> ConvGeometry:
        """The experts (``weight``), or KernelWarehouse's ``warehouse`` and this conv's place in it (``weight`` None);
        returns the router's geometry."""
        if "cells" in spec.heads:
            self.warehouse, self.warehouse_index = self._warehouse_slot(spec, warehouse, **dd)
            plan = self.warehouse.plan
            self.register_parameter("weight", None)
            return ConvGeometry(self.in_channels, self.out_channels, self.kernel_size, self.groups,
                                warehouse=(plan.mixtures(self.warehouse_index), plan.cells))
        if warehouse is not None:
            raise SpecError("warehouse", warehouse, "a warehouse serves a spec with the 'cells' head",
                            hint="AttnSpec.kw()")
        self.weight = nn.Parameter(torch.empty(spec.experts * self.out_channels, self.in_channels // self.groups,
                                               *self.kernel_size, **dd))
        return ConvGeometry(self.in_channels, self.out_channels, self.kernel_size, self.groups)

    def _warehouse_slot(self, spec: AttnSpec, slot: tuple[Warehouse, int] | None, **dd: Any) -> tuple[Warehouse, int]:
        """(the warehouse, this conv's index in its plan): ``slot`` after checking that it was planned for this
        conv's kernel shape, or a warehouse of this conv alone."""
        shape = (self.out_channels, self.in_channels // self.groups, *self.kernel_size)
        if slot is None:
            return Warehouse(plan_warehouse(spec, [shape]), **dd), 0
        warehouse, index = slot
        shapes = warehouse.plan.shapes if isinstance(warehouse, Warehouse) else ()
        if not isinstance(index, int) or not 0 <= index < len(shapes) or shapes[index] != shape:
            raise SpecError("warehouse", slot, f"has no place for a kernel of shape {shape}",
                            hint="plan_warehouse(spec, shapes) with this conv's shape at the index given")
        return warehouse, index

    # ------------------------------------------------------------------ construction
    def reset_parameters(self) -> None:
        """Each expert initialised as the torch conv initialises its weight and bias (KernelWarehouse: the official
        initialisation: this conv's cells kaiming-normal, the router's linear layers kaiming-normal
        (``fan_out``), zero biases)."""
        if self._modules.get("warehouse") is not None:
            self.warehouse.reset_cells(self.warehouse_index)
            self._reset_warehouse_router()
            return
        for expert in self.weight.detach().split(self.out_channels):
            nn.init.kaiming_uniform_(expert, a=math.sqrt(5))
        if self.bias is not None:
            fan_in = self.weight[0].numel()
            bound = 1 / math.sqrt(fan_in) if fan_in > 0 else 0
            nn.init.uniform_(self.bias, -bound, bound)

    @torch.no_grad()
    def _reset_warehouse_router(self) -> None:
        """KernelWarehouse's official ``Attention`` initialisation: linear layers kaiming-normal (``fan_out``), zero
        biases (the conv's too)."""
        for m in self.router.modules():
            if isinstance(m, nn.Linear):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        if self.bias is not None:
            nn.init.zeros_(self.bias)

    @classmethod
    def from_conv(cls: type[_D], conv: nn.Module, spec: AttnSpec | str = "dyconv", *,
                  strategy: Strategy = "auto", warehouse: tuple[Warehouse, int] | None = None) -> _D:
        """Upcycle ``conv`` (an ``nn.Conv1d`` / ``nn.Conv2d`` / ``nn.Conv3d``, the class's own rank):
        every expert starts as its weight and bias, so the output equals the conv's (to float
        rounding) until training moves the experts apart.

        Softmax mixing weights sum to one, so any routing reproduces the conv. Heads that do
        not (CondConv's sigmoid, ODConv's sigmoid scalings) start at their neutral value
        through ``init="identity"``: ``neutral + mix * (gate - neutral)`` with ``mix`` a
        learnable scalar at 0 (1/K for the mixing weights, 1 for the scalings).

        KernelWarehouse: the conv's own cells take its kernel's pieces, so at temperature 1 (the official
        schedule's start) the output is the conv's exactly when the budget is >= 1; below 1 the pieces that
        the temperature initialisation gives the zero cell start at zero (see
        :mod:`dynattn.dynamic_conv.warehouse`).
        """
        other = dynamic_conv_class(conv) if isinstance(conv, tuple(DYNAMIC_CONVS)) else None
        spec = upcycle_spec(cls, conv, spec, other)
        with upcycling():
            new = cls(
                conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding, conv.dilation,
                conv.groups, conv.bias is not None, conv.padding_mode, spec=spec, strategy=strategy,
                warehouse=warehouse, device=conv.weight.device, dtype=conv.weight.dtype,
            )
        if new._modules.get("warehouse") is not None:
            new._reset_warehouse_router()  # the warehouse initialised its cells; this conv's own take its kernel
            new.warehouse.fill_from_conv(new.warehouse_index, conv.weight.detach())
            if conv.bias is not None:
                with torch.no_grad():
                    new.bias.copy_(conv.bias.detach().unsqueeze(0))
        else:
            fill_experts(new, conv)
        new.train(conv.training)
        return new

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs):
        """A conv's checkpoint loads too: a ``weight`` of the torch conv's shape (and its ``bias``)
        fills every expert, as ``from_conv`` does, so a model whose convs were converted still
        loads the original model's checkpoint (``strict=False``: only the routers are missing)."""
        expand_conv_checkpoint(self, state_dict, prefix)
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
        if self._modules.get("warehouse") is not None:  # KernelWarehouse's blend, 1 -> 0 in the official schedule
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
                raise SpecError("temperature", value, "is KernelWarehouse's blend toward each kernel cell's own "
                                "cell: a number in [0, 1]")
        elif isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
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
            key = benchmark_key(self, x)
            return measured_strategy(key), key
        return self.chosen_strategy(x), None

    def chosen_strategy(self, x: torch.Tensor) -> str:
        """The strategy ``strategy="auto"`` runs for the input ``x`` (see :func:`choose_strategy`); output mixing
        where there is nothing to mix (no ``kernel`` or ``spatial`` head: DCD, ODConv with K = 1), which is the
        static conv with channel scalings around it, faster than B per-sample kernels in a grouped conv."""
        if isinstance(x, fx.Proxy) or mixing.is_exporting() or not {"kernel", "spatial"} & set(self.router.heads):
            return "output"
        model = cost_model(device=x.device, dtype=x.dtype)
        if torch.compiler.is_compiling():
            return choose_strategy(self.conv_problem(x), model, compiling=True)
        # eager: the choice for this input shape, mode and cost model is kept (the model is Python that a batch
        # of 1 would notice on every call); the key holds everything the choice reads that can change between calls
        key = ("strategy", x.shape, x.dtype, self.training and torch.is_grad_enabled(), model,
               self.stride, self.padding, self.dilation, self.padding_mode)
        return self._memo(x, key, lambda: choose_strategy(self.conv_problem(x), model))

    def _memo(self, x: torch.Tensor, key: tuple, compute: Callable[[], Any]) -> Any:
        """``compute()``, which derives from the input's shape alone: kept per ``key`` in eager calls (a per-layer
        memo, not state: not in the state_dict; a few shapes per layer in practice, cleared past ``_MEMO_SIZE``),
        evaluated each time where the sizes are symbolic (fx tracing, torch.compile, export)."""
        if (isinstance(x, fx.Proxy) or torch.compiler.is_compiling()
                or not all(type(n) is int for n in x.shape)):  # symbolic sizes (non-strict export, say)
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

    def conv_problem(self, x: torch.Tensor) -> ConvProblem:
        """What the cost model (:func:`~dynattn.dynamic_conv.choose_strategy`) decides from, for the input ``x``."""
        experts = self.experts if "kernel" in self.router.heads else 1
        return ConvProblem(in_per_group=self.in_channels // self.groups, out_channels=self.out_channels,
                           kernel_area=math.prod(self.kernel_size), experts=experts,
                           out_positions=self._out_positions(x), batch=x.shape[0], groups=self.groups,
                           training=self.training and torch.is_grad_enabled(),
                           spatial_head="spatial" in self.router.heads, itemsize=x.element_size(),
                           in_positions=self._in_positions(x),
                           pointwise=mixing.is_pointwise(self.kernel_size, self._conv_args()))

    def _conv_args(self) -> mixing.ConvArgs:
        """How the conv slides, with the padding it is given: none after a non-zeros padding_mode's pre-pad."""
        padding = self.padding if self.padding_mode == "zeros" else (0,) * self.spatial_dims
        return mixing.ConvArgs(self.stride, padding, self.dilation, self.groups)

    # plain loops, not generators: torch.compile(fullgraph=True) traces these on symbolic sizes
    def _in_positions(self, x: torch.Tensor) -> int:
        """The input's positions: H * W (L; D * H * W) for the input ``x``."""
        n = 1
        for i in range(self.spatial_dims):
            n = n * x.shape[2 + i]
        return n

    def _out_positions(self, x: torch.Tensor) -> int:
        """The output's positions: H_out * W_out (L_out; D_out * H_out * W_out) for the input ``x``."""
        r = self._reversed_padding_repeated_twice  # last dim first: (left, right, top, bottom, front, back)
        n = 1
        for i in range(self.spatial_dims):
            j = 2 * (self.spatial_dims - 1 - i)  # dim i's padding in r
            k, d, s = self.kernel_size[i], self.dilation[i], self.stride[i]
            n = n * ((x.shape[2 + i] + r[j] + r[j + 1] - d * (k - 1) - 1) // s + 1)
        return n

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not isinstance(x, fx.Proxy):
            check_input(x, self.in_channels, type(self).__name__, dims=self.spatial_dims)
        gates = dict(zip(self.router.heads, self.router(x)))
        if "cells" in gates:
            return self._warehouse_conv(x, gates["cells"])
        y = self._mixed_conv(x, gates)
        latent = self._modules.get("latent")  # DCD's latent path (absent from layers pickled before it)
        return y if latent is None else y + latent(x, gates["latent"])

    def _warehouse_conv(self, x: torch.Tensor, attention: torch.Tensor) -> torch.Tensor:
        """KernelWarehouse: the conv of each sample with its kernel assembled from the warehouse's cells by
        ``attention`` (B * n, M); im2col columns where exporting (no group count tied to the batch size)."""
        grid = self.warehouse.plan.grid(self.warehouse_index)
        pad_amounts = self._reversed_padding_repeated_twice
        if self.padding_mode != "zeros":
            x = F.pad(x, pad_amounts, mode=self.padding_mode)
            pad_amounts = (0,) * (2 * self.spatial_dims)
        bias = None if self.bias is None else self.bias[0]
        shape = (self.out_channels, self.in_channels // self.groups, *self.kernel_size)
        if (grid[2] == 1 and grid[0] > 1 and self.groups == 1 and not isinstance(x, fx.Proxy)
                and self._out_positions(x) < self.in_channels):  # small maps: no kernel reordered
            kernels = torch.mm(attention, self.warehouse.cells.flatten(1)).view(-1, grid[0], *shape[:2])
            return mixing.position_kernels_conv(x, kernels, shape, bias, self._conv_args(), pad_amounts)
        kernels = assemble_kernels(attention, self.warehouse.cells, grid, self.kernel_size)
        return mixing.sample_kernels_conv(x, kernels, shape, bias, self._conv_args(), pad_amounts,
                                          columns=mixing.is_exporting())

    def _mixed_conv(self, x: torch.Tensor, gates: dict[str, torch.Tensor]) -> torch.Tensor:
        """The conv of ``x`` with its experts mixed and scaled by the router's ``gates``, by the strategy in force."""
        strategy, key = self._resolve_strategy(x)
        columns = self._columns(x)  # a matmul with the im2col columns or a conv (benchmark mode: both)
        # ODConv's channel scalings: into the B kernels where they hold fewer values than the maps
        fold = strategy == "kernel" and not columns and ("in" in gates or "out" in gates) and self._memo(
            x, ("fold", x.shape, self.stride, self.padding, self.dilation), lambda: self._kernels_smaller(x))
        if "in" in gates and not fold:
            x = x * gates["in"][(slice(None), slice(None)) + (None,) * self.spatial_dims]
        pad_amounts = self._reversed_padding_repeated_twice
        if self.padding_mode != "zeros":
            x = F.pad(x, pad_amounts, mode=self.padding_mode)
            pad_amounts = (0,) * (2 * self.spatial_dims)
        conv = self._conv_args()
        mixed = (self.expert_weights, self.bias, gates.get("kernel"), gates.get("spatial"), gates.get("out"))
        if fold:
            shape = (self.experts, self.out_channels, self.in_channels // self.groups, *self.kernel_size)
            return mixing.kernel_mixing(x, shape, *mixed, conv, in_scale=gates.get("in"), fold_out=True)
        if strategy is None:  # benchmark mode, a shape not timed yet
            strategy = measure_strategy(self, key, x, mixed, conv, pad_amounts, columns)
        return self._run_strategy(strategy, x, mixed, conv, pad_amounts, columns)

    def _columns(self, x: torch.Tensor) -> bool:
        """Whether kernel and blocked mixing run as a matmul with the input's im2col columns (see
        :func:`choose_columns`); a conv of B groups where the sizes are an fx tracer's proxies."""
        if isinstance(x, fx.Proxy) or self.groups != 1 or math.prod(self.kernel_size) == 1:
            return False  # a 1 x 1 kernel of one group runs as a matmul of its own (mixing._pointwise)
        model = cost_model(device=x.device, dtype=x.dtype)
        key = ("columns", x.shape, x.dtype, model, self.stride, self.padding, self.dilation, self.padding_mode)
        return self._memo(x, key, lambda: choose_columns(self.conv_problem(x), model))

    def _kernels_smaller(self, x: torch.Tensor) -> bool:
        """Whether one sample's kernel holds fewer values than its input and output maps."""
        kernel = self.out_channels * (self.in_channels // self.groups) * math.prod(self.kernel_size)
        return kernel < self.in_channels * self._in_positions(x) + self.out_channels * self._out_positions(x)

    def _run_strategy(self, strategy: str, x: torch.Tensor, mixed: tuple, conv: mixing.ConvArgs,
                      pad_amounts: tuple[int, ...], columns: bool = False) -> torch.Tensor:
        """The conv of ``x`` by ``strategy`` (``mixed``: the experts, biases and gates; ``columns``: kernel and
        blocked mixing's form), blocked mixing in the block size of the cost model in force."""
        shape = (self.experts, self.out_channels, self.in_channels // self.groups, *self.kernel_size)
        if strategy == "kernel":
            return mixing.kernel_mixing(x, shape, *mixed, conv, columns=columns, pad_amounts=pad_amounts)
        if strategy == "blocked":
            m = cost_model(device=x.device, dtype=x.dtype)  # its block size
            return mixing.blocked_kernel_mixing(x, shape, *mixed, conv, columns=columns, pad_amounts=pad_amounts,
                                                block_bytes=m.block_bytes, min_block_channels=m.min_block_channels)
        return mixing.output_mixing(x, shape, *mixed, conv, pad_amounts, columns)

    def __prepare_scriptable__(self) -> nn.Module:
        raise TypeError(_NOT_SCRIPTABLE)

    def extra_repr(self) -> str:
        s = f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}"
        if self.padding != (0,) * self.spatial_dims:
            s += f", padding={self.padding!r}"
        if self.dilation != (1,) * self.spatial_dims:
            s += f", dilation={self.dilation}"
        if self.groups != 1:
            s += f", groups={self.groups}"
        if self.bias is None:
            s += ", bias=False"
        if self.padding_mode != "zeros":
            s += f", padding_mode={self.padding_mode!r}"
        if self._modules.get("latent") is not None:
            s += f", latent_dim={self.router.latent_dim}"
        if self._modules.get("warehouse") is not None:
            return s + f", warehouse_index={self.warehouse_index}, spec={self.spec.name or 'custom'}"
        return s + f", experts={self.experts}, spec={self.spec.name or 'custom'}, strategy={self.strategy!r}"


class DynamicConv1d(_DynamicConvNd):
    """A 1-D convolution (``nn.Conv1d``'s arguments, (B, C, L) maps) whose kernel is
    ``W_b = sum_k a_bk W_k`` for each sample b; the arguments, strategies and attributes are
    :class:`_DynamicConvNd`'s (``weight`` is (K * out, in/groups, k))."""

    spatial_dims = 1
    conv_class = nn.Conv1d


class DynamicConv2d(_DynamicConvNd):
    """A 2-D convolution (``nn.Conv2d``'s arguments, (B, C, H, W) maps) whose kernel is ``W_b = sum_k a_bk W_k``
    for each sample b; the arguments, strategies and attributes are :class:`_DynamicConvNd`'s."""

    spatial_dims = 2
    conv_class = nn.Conv2d


class DynamicConv3d(_DynamicConvNd):
    """A 3-D convolution (``nn.Conv3d``'s arguments, (B, C, D, H, W) maps, e.g. video) whose kernel
    is ``W_b = sum_k a_bk W_k`` for each sample b; the arguments, strategies and attributes are
    :class:`_DynamicConvNd`'s (``weight`` is (K * out, in/groups, kd, kh, kw); ODConv's spatial head
    scales the kd * kh * kw kernel positions)."""

    spatial_dims = 3
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
