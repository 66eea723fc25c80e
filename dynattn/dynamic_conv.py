"""``DynamicConv2d``: a conv whose kernel is mixed per sample from K experts by a compiled router.

    conv = DynamicConv2d(64, 64, 3, padding=1, spec=AttnSpec.dyconv())
    conv = DynamicConv2d.from_conv(nn.Conv2d(64, 64, 3, padding=1), AttnSpec.odconv())  # upcycled

It has ``nn.Conv2d``'s constructor and semantics (int or tuple kernel/stride/padding/dilation,
``padding="same"``/``"valid"``, ``padding_mode``, groups incl. depthwise, bias, rectangular
kernels; the arguments are checked by ``nn.Conv2d`` itself) and ``forward(x)`` only: the
routing is computed inside by a router compiled from the spec.
"""

from __future__ import annotations

import contextvars
import math
import warnings
from typing import Literal

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

__all__ = ["DynamicConv2d", "MIXING_STRATEGIES", "choose_strategy"]

Strategy = Literal["auto", "kernel", "output"]
#: How a DynamicConv2d runs: chosen per call (``auto``), kernel mixing or output mixing.
MIXING_STRATEGIES = ("auto", "kernel", "output")

#: Output mixing needs per-sample kernels that are large against the K output maps they
#: replace: (I/g * kh * kw) >= OUTPUT_MIXING_RATIO * K * H_out * W_out.
OUTPUT_MIXING_RATIO = 5.0
#: ... and maps small against the batch: H_out * W_out <= OUTPUT_MIXING_POSITIONS * log2(B).
OUTPUT_MIXING_POSITIONS = 5.0


def choose_strategy(
    in_per_group: int,
    kernel_area: int,
    experts: int,
    out_positions: int,
    batch: int,
    *,
    spatial_head: bool = False,
    tracing: bool = False,
) -> str:
    """The cost rule behind ``strategy="auto"``.

    Kernel mixing writes B per-sample kernels (B * O * I/g * kh * kw weights) and runs one
    conv grouped over the batch; output mixing runs a dense conv with K times the outputs
    (B * K * O * H_out * W_out). Kernel mixing does fewer FLOPs, but the grouped conv reads
    each per-sample kernel once for only H_out * W_out positions, so on small maps at large
    batch it is bound by writing and reading the kernels. Hence:

    - exporting or fx tracing: ``output`` (no group count tied to the batch size);
    - a spatial head (ODConv): ``kernel`` (output mixing needs an im2col copy for it);
    - ``output`` when the per-sample kernel is large against the maps,
      ``I/g * kh * kw >= OUTPUT_MIXING_RATIO * K * H_out * W_out``, and the maps are small
      against the batch, ``H_out * W_out <= OUTPUT_MIXING_POSITIONS * log2(B)`` (3x3 convs of
      hundreds of channels on maps of a few pixels at batch 8 and more);
    - ``kernel`` otherwise, and always at batch 1, where the grouped conv is a plain conv.

    The constants were fitted to CPU measurements of both strategies in inference and training
    (``python -m dynattn.bench.dynconv``; the figures are in the README's measured tables).
    """
    if tracing:
        return "output"
    if spatial_head or batch < 2:
        return "kernel"
    if (in_per_group * kernel_area >= OUTPUT_MIXING_RATIO * experts * out_positions
            and batch >= 2 ** (out_positions / OUTPUT_MIXING_POSITIONS)):  # H'W' <= 5 log2 B
        return "output"
    return "kernel"


_NOT_SCRIPTABLE = (
    "dynattn modules cannot be compiled by torch.jit.script (their graphs call einops and take Python-level "
    "specs): use torch.jit.trace(model, example), torch.export.export, or torch.onnx.export, which all keep a "
    "dynamic batch")

# set by from_conv: the experts are about to be overwritten with the conv's weight
_UPCYCLING = contextvars.ContextVar("dynattn_upcycling", default=False)


class DynamicConv2d(nn.Module):
    """A 2-D convolution whose kernel is ``W_b = sum_k a_bk W_k`` for each sample b.

    Args mirror ``nn.Conv2d``; ``spec`` is a kernel-target :class:`~dynattn.AttnSpec` (or a
    preset name such as ``"dyconv"``) that the router is compiled from; ``strategy`` is
    ``"auto"``, ``"kernel"`` or ``"output"`` (see :func:`choose_strategy`).

    Attributes: ``weight`` (K * out, in/groups, kh, kw): the experts stacked along the output
    axis (4-D, so ``model.to(memory_format=torch.channels_last)`` works; ``expert_weights`` is
    its (K, out, in/groups, kh, kw) view), ``bias`` (K, out) or None,
    ``router`` (a ``torch.fx.GraphModule``), ``temperature`` (the router's buffer).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, int],
        stride: int | tuple[int, int] = 1,
        padding: str | int | tuple[int, int] = 0,
        dilation: int | tuple[int, int] = 1,
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
        spec = as_spec(spec)
        if spec.kind != "kernel":
            raise SpecError("spec", spec, "DynamicConv2d needs a kernel-target spec",
                            hint="e.g. AttnSpec.dyconv(), AttnSpec.condconv(), AttnSpec.odconv()")
        if strategy not in MIXING_STRATEGIES:
            raise SpecError("strategy", strategy, "unknown execution strategy", MIXING_STRATEGIES)
        # nn.Conv2d checks every argument and derives padding exactly as it would itself
        try:
            template = nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding, dilation, groups,
                                 bias, padding_mode, device="meta")
        except (ValueError, TypeError, RuntimeError) as exc:
            raise SpecError("DynamicConv2d", (in_channels, out_channels, kernel_size), str(exc),
                            hint="the arguments follow nn.Conv2d") from exc
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size = template.kernel_size
        self.stride, self.padding, self.dilation = template.stride, template.padding, template.dilation
        self.groups, self.padding_mode = groups, padding_mode
        self._reversed_padding_repeated_twice = tuple(template._reversed_padding_repeated_twice)
        self.spec = spec
        self.strategy = strategy
        self.experts = spec.experts
        dd = {"device": device, "dtype": dtype}
        kh, kw = self.kernel_size
        self.weight = nn.Parameter(torch.empty(spec.experts * out_channels, in_channels // groups, kh, kw, **dd))
        self.bias = nn.Parameter(torch.empty(spec.experts, out_channels, **dd)) if bias else None
        self.router = build_router(
            spec, ConvGeometry(in_channels, out_channels, self.kernel_size, groups), device=device, dtype=dtype
        )
        if not _UPCYCLING.get():
            self.reset_parameters()

    # ------------------------------------------------------------------ construction
    def reset_parameters(self) -> None:
        """Each expert initialised as ``nn.Conv2d`` initialises its weight and bias."""
        for expert in self.weight.detach().split(self.out_channels):
            nn.init.kaiming_uniform_(expert, a=math.sqrt(5))
        if self.bias is not None:
            fan_in = self.weight[0].numel()
            bound = 1 / math.sqrt(fan_in) if fan_in > 0 else 0
            nn.init.uniform_(self.bias, -bound, bound)

    @classmethod
    def from_conv(cls, conv: nn.Conv2d, spec: AttnSpec | str = "dyconv", *,
                  strategy: Strategy = "auto") -> DynamicConv2d:
        """Upcycle ``conv``: every expert starts as its weight and bias, so the output equals
        the conv's (to float rounding) until training moves the experts apart.

        Softmax mixing weights sum to one, so any routing reproduces the conv. Heads that do
        not (CondConv's sigmoid, ODConv's sigmoid scalings) start at their neutral value
        through ``init="identity"``: ``neutral + mix * (gate - neutral)`` with ``mix`` a
        learnable scalar at 0 (1/K for the mixing weights, 1 for the scalings).
        """
        if not isinstance(conv, nn.Conv2d) or type(conv).forward is not nn.Conv2d.forward:
            raise SpecError("conv", type(conv).__name__,
                            "only a plain nn.Conv2d (or a subclass with its forward) can be upcycled exactly",
                            hint="its forward differs (weight standardisation, dynamic padding, ...)")
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
            new.weight.copy_(conv.weight.detach().repeat(new.experts, 1, 1, 1))
            if conv.bias is not None:
                new.bias.copy_(conv.bias.detach().unsqueeze(0).expand_as(new.bias))
        new.train(conv.training)
        return new

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs):
        """A conv's checkpoint loads too: a ``weight`` of nn.Conv2d's shape (and its ``bias``)
        fills every expert, as ``from_conv`` does, so a model whose convs were converted still
        loads the original model's checkpoint (``strict=False``: only the routers are missing)."""
        conv_shape = (self.out_channels, self.in_channels // self.groups, *self.kernel_size)
        weight = state_dict.get(prefix + "weight")
        if self.experts > 1 and isinstance(weight, torch.Tensor) and tuple(weight.shape) == conv_shape:
            state_dict[prefix + "weight"] = weight.repeat(self.experts, 1, 1, 1)
        bias = state_dict.get(prefix + "bias")
        if self.bias is not None and isinstance(bias, torch.Tensor) and tuple(bias.shape) == (self.out_channels,):
            state_dict[prefix + "bias"] = bias.unsqueeze(0).expand_as(self.bias)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                      error_msgs)

    @property
    def expert_weights(self) -> torch.Tensor:
        """The experts as (K, out, in/groups, kh, kw) (a view of ``weight`` when it is contiguous)."""
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
    def _resolve_strategy(self, x: torch.Tensor) -> str:
        if self.strategy == "kernel" and (torch.onnx.is_in_onnx_export() or torch.jit.is_tracing()):
            warnings.warn("DynamicConv2d(strategy='kernel') folds the batch into the conv's group count, which "
                          "an ONNX Conv or a TorchScript trace cannot keep dynamic: tracing output mixing instead "
                          "(equal values)", stacklevel=2)
            return "output"
        if self.strategy != "auto":
            return self.strategy
        if isinstance(x, fx.Proxy) or mixing.is_exporting():
            return "output"
        h, w = x.shape[2], x.shape[3]
        (ph, pw), (kh, kw), (dh, dw), (sh, sw) = self._padding_pair(), self.kernel_size, self.dilation, self.stride
        oh = (h + ph - dh * (kh - 1) - 1) // sh + 1
        ow = (w + pw - dw * (kw - 1) - 1) // sw + 1
        experts = self.experts if "kernel" in self.router.heads else 1
        return choose_strategy(self.in_channels // self.groups, kh * kw, experts, oh * ow, x.shape[0],
                               spatial_head="spatial" in self.router.heads)

    def _padding_pair(self) -> tuple[int, int]:
        r = self._reversed_padding_repeated_twice  # (left, right, top, bottom)
        return (r[2] + r[3], r[0] + r[1])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not isinstance(x, fx.Proxy):
            check_input(x, self.in_channels, "DynamicConv2d")
        gates = dict(zip(self.router.heads, self.router(x)))
        if "in" in gates:
            x = x * gates["in"][:, :, None, None]
        padding: str | tuple[int, int] = self.padding
        pad_amounts = self._reversed_padding_repeated_twice
        if self.padding_mode != "zeros":
            x = F.pad(x, pad_amounts, mode=self.padding_mode)
            padding, pad_amounts = (0, 0), (0, 0, 0, 0)
        shape = (self.experts, self.out_channels, self.in_channels // self.groups, *self.kernel_size)
        conv = mixing.ConvArgs(self.stride, padding, self.dilation, self.groups)
        args = (shape, self.expert_weights, self.bias, gates.get("kernel"), gates.get("spatial"), gates.get("out"),
                conv)
        if self._resolve_strategy(x) == "kernel":
            return mixing.kernel_mixing(x, *args)
        return mixing.output_mixing(x, *args, pad_amounts)

    def __prepare_scriptable__(self) -> DynamicConv2d:
        raise TypeError(_NOT_SCRIPTABLE)

    def extra_repr(self) -> str:
        s = f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}"
        if self.padding != (0, 0):
            s += f", padding={self.padding!r}"
        if self.dilation != (1, 1):
            s += f", dilation={self.dilation}"
        if self.groups != 1:
            s += f", groups={self.groups}"
        if self.bias is None:
            s += ", bias=False"
        if self.padding_mode != "zeros":
            s += f", padding_mode={self.padding_mode!r}"
        return s + f", experts={self.experts}, spec={self.spec.name or 'custom'}, strategy={self.strategy!r}"


register_leaf_module(DynamicConv2d, role="conv")  # tracers keep it whole; its output is an NCHW map
