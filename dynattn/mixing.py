"""The three ways to run a dynamic convolution, equal in value.

With per-sample mixing weights ``a`` (B, K) over expert kernels ``W`` (K, O, I/g, kh, kw)
and an optional per-sample kernel-position scaling ``s`` (B, kh*kw, ODConv's spatial head),
the conv of sample b uses ``W_b = s_b * sum_k a_bk W_k`` and bias ``sum_k a_bk bias_k``.
A 1-D or 3-D conv is the same with a kernel of (k,) or (kd, kh, kw) and maps of (L,) or
(D, H, W): the rank is read from ``shape`` (``F.conv1d`` / ``conv2d`` / ``conv3d``).

- :func:`kernel_mixing` builds the B kernels and runs one grouped conv over the batch folded
  into channels (``groups = B * g``). Its cost is one conv plus B kernels; its group count
  depends on the batch size. A pointwise conv (1 x 1 kernel, one group, no padding) is instead one
  batched matmul of the B kernels with the (strided) input columns; with ``columns=True`` any conv of
  one group is too, with the im2col columns of the input (B, I*kh*kw, H_out*W_out): cheaper on small
  maps, where the columns are small and a conv of B groups reorders the B kernels it reads, and the
  spatial head then scales the columns instead of the B kernels.
- :func:`blocked_kernel_mixing` does the same one block of output channels at a time: the B
  mixed kernels of a block (about ``BLOCK_BYTES``) are still in cache when the conv reads them,
  so the expert bank is read once from memory and no B x (O*I*kh*kw) tensor is written. On small
  maps, where a conv reads each weight for only H_out * W_out positions, that traffic is the cost.
- :func:`output_mixing` runs one dense conv with K * O outputs and sums the K results with
  the weights ``a``: K times the conv's arithmetic, but no tensor shape or group count tied
  to the batch size (ONNX export with a dynamic batch). With a spatial head the position
  scaling is applied to the unfolded input (im2col: ``F.unfold`` in 2-D, strided slices of the
  padded input in 1-D and 3-D), exact but memory-hungry.

Where the B kernels are made elsewhere (KernelWarehouse assembles them from its cells),
:func:`sample_kernels_conv` runs them (the batch folded into the groups, or the columns' matmul) and
:func:`position_kernels_conv` runs them given by kernel position (a matmul per position, no kernel reordered).

Both take an input already padded for non-zero ``padding_mode``; ``out_scale`` (B, O) is
ODConv's output-channel attention, applied before the bias as it scales the kernel.
``shape`` is the weight's (K, O, I/g, *kernel) (kernel: (k,), (kh, kw) or (kd, kh, kw)), passed
as ints so that the functions also trace with ``torch.fx`` (where the weight is a Proxy).
"""

from __future__ import annotations

import itertools
import math
from typing import NamedTuple

import torch
import torch.nn.functional as F

from . import workspace

__all__ = ["ConvArgs", "is_pointwise", "kernel_mixing", "blocked_kernel_mixing", "output_mixing", "batched_conv",
           "is_exporting", "BLOCK_BYTES", "MIN_BLOCK_CHANNELS", "block_channels", "sample_kernels_conv",
           "position_kernels_conv"]

Padding = str | tuple[int, ...]

#: The conv of each number of spatial dims.
CONV_FNS = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}


class ConvArgs(NamedTuple):
    """How the conv slides: nn.ConvNd's stride, padding (after any padding_mode pre-pad), dilation, groups
    (stride, padding and dilation with one int per spatial dim)."""

    stride: tuple[int, ...]
    padding: Padding
    dilation: tuple[int, ...]
    groups: int


def _spatial(t: torch.Tensor, spatial_dims: int) -> list:
    """The ``spatial_dims`` trailing sizes of ``t`` (indexed one by one: an fx Proxy's shape cannot be unpacked)."""
    return [t.shape[2 + i] for i in range(spatial_dims)]


def _per_channel(t: torch.Tensor, spatial_dims: int) -> torch.Tensor:
    """A (B, C) tensor broadcastable against (B, C, *spatial) maps."""
    return t[(slice(None), slice(None)) + (None,) * spatial_dims]


# ----------------------------------------------------------------------------- the batch-folded conv
# Under torch.compile, inductor's layout optimisation turns the grouped conv of kernel mixing
# into channels-last copies of x, of the B per-sample kernels and of the output, slower than the
# eager call (the DyConv rows of ``python -m dynattn.bench`` measure it). As a custom op the conv
# stays one opaque call in the layouts eager uses. Exporting keeps the plain conv. One op for every
# rank: the conv is F.conv1d, conv2d or conv3d by the weight's dims.
@torch.library.custom_op("dynattn::batched_conv2d", mutates_args=())
def batched_conv(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, stride: list[int], padding: list[int],
    dilation: list[int], groups: int,
) -> torch.Tensor:
    return CONV_FNS[weight.dim() - 2](x, weight, bias, stride, padding, dilation, groups)


@batched_conv.register_fake
def _(x, weight, bias, stride, padding, dilation, groups):
    return CONV_FNS[weight.dim() - 2](x, weight, bias, stride, padding, dilation, groups)


def _setup(ctx, inputs, output):
    x, weight, bias, stride, padding, dilation, groups = inputs
    ctx.save_for_backward(x, weight)
    ctx.has_bias, ctx.args = bias is not None, (stride, padding, dilation, groups)


def _backward(ctx, grad):
    x, weight = ctx.saved_tensors
    stride, padding, dilation, groups = ctx.args
    gx, gw, gb = torch.ops.aten.convolution_backward(
        grad, x, weight, [weight.shape[0]] if ctx.has_bias else None, stride, padding, dilation, False,
        [0] * len(stride),
        groups, [ctx.needs_input_grad[0], ctx.needs_input_grad[1], ctx.has_bias and ctx.needs_input_grad[2]],
    )
    return gx, gw, gb, None, None, None, None


batched_conv.register_autograd(_backward, setup_context=_setup)


def is_exporting() -> bool:
    """Whether the code runs under torch.export, ONNX export or TorchScript tracing (checks that
    a torch without them reads as False)."""
    compiler = getattr(torch, "compiler", None)
    if compiler is not None and getattr(compiler, "is_exporting", None) and compiler.is_exporting():
        return True
    onnx = getattr(torch, "onnx", None)
    if onnx is not None and getattr(onnx, "is_in_onnx_export", None) and onnx.is_in_onnx_export():
        return True
    return torch.jit.is_tracing()


def _conv(spatial_dims, x, w, b, stride, padding, dilation, groups):
    compiler = getattr(torch, "compiler", None)
    if compiler is not None and compiler.is_compiling() and not is_exporting() and not isinstance(padding, str):
        return batched_conv(x, w, b, list(stride), list(padding), list(dilation), groups)
    return CONV_FNS[spatial_dims](x, w, b, stride, padding, dilation, groups)


def is_pointwise(kernel_size: tuple[int, ...] | list[int], conv: ConvArgs) -> bool:
    """Whether kernel mixing runs the conv as a batched matmul: a 1 x 1 kernel, one group, no padding
    (``conv.padding`` as the conv gets it, after any padding_mode pre-pad)."""
    if conv.groups != 1 or any(k != 1 for k in kernel_size):
        return False
    if isinstance(conv.padding, str):
        return conv.padding in ("valid", "same")  # both mean no padding for a 1 x 1 kernel
    return not any(conv.padding)


def _pointwise(x: torch.Tensor, ks: list[int], conv: ConvArgs) -> tuple[torch.Tensor, list] | None:
    """For a pointwise conv (a 1 x 1 kernel, one group, no padding): the input as (B, I, L) at the
    positions the conv reads (every ``stride``-th), and the output's sizes; else None.

    Such a conv of per-sample kernels is a batched matmul, (B, O, I) @ (B, I, L): faster on CPU than the
    conv of B groups it equals (no per-group convs too small to keep the threads busy, and a strided 1 x 1
    conv skips the subsampling copy's reorder)."""
    if not is_pointwise(ks, conv):
        return None
    spatial_dims = len(ks)
    if any(st != 1 for st in conv.stride):
        x = x[(slice(None), slice(None), *[slice(None, None, st) for st in conv.stride])]
    sizes = _spatial(x, spatial_dims)
    return x.reshape(x.shape[0], x.shape[1], -1), sizes


#: Below this many output positions the batched matmul of :func:`_pointwise_conv` runs transposed, with the
#: positions as its rows, where no gradient is needed: faster on the smallest maps (2x2), slower from 4x4 on;
#: its backward is slower, so training keeps the other.
THIN_POSITIONS = 16


def _pointwise_conv(cols: torch.Tensor, w: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """(B, I, L) columns, (B, O, I) per-sample kernels, (B, O) biases -> (B, O, L)."""
    thin = isinstance(cols.shape[2], int) and cols.shape[2] < THIN_POSITIONS
    if thin and not (torch.is_grad_enabled() and (cols.requires_grad or w.requires_grad)):
        # a few positions, no backward: (B, L, I) @ (B, I, O)
        cols_t, w_t = cols.transpose(1, 2), w.transpose(1, 2)
        y = torch.bmm(cols_t, w_t) if bias is None else torch.baddbmm(bias.unsqueeze(1), cols_t, w_t)
        return y.transpose(1, 2).contiguous()
    if bias is None:
        return torch.bmm(w, cols)
    return torch.baddbmm(bias.unsqueeze(2), w, cols)


def pad_amounts_of(conv: ConvArgs, ks: tuple[int, ...] | list[int]) -> tuple[int, ...]:
    """``F.pad``'s zero padding (last dim first) that equals ``conv.padding``: ints, ``"valid"`` or
    ``"same"`` (the extra one of an even total on the right, as nn.ConvNd does)."""
    spatial_dims = len(ks)
    if conv.padding == "valid":
        return (0,) * (2 * spatial_dims)
    if conv.padding == "same":
        totals = [d * (k - 1) for d, k in zip(conv.dilation, ks)]
        return tuple(v for t in reversed(totals) for v in (t // 2, t - t // 2))
    return tuple(v for p in reversed(conv.padding) for v in (p, p))


def _im2col(x: torch.Tensor, ks: list[int], conv: ConvArgs, pad_amounts: tuple[int, ...]) -> tuple[torch.Tensor, list]:
    """The input's im2col columns ((B, C, prod(ks), L), the output's sizes) after the zero padding ``pad_amounts``
    (F.pad's order): ``F.unfold`` in 2-D, strided slices in 1-D and 3-D."""
    if any(pad_amounts):
        x = F.pad(x, pad_amounts)
    spatial_dims = len(ks)
    b, c = x.shape[0], x.shape[1]
    if spatial_dims != 2:
        return _windows(x, ks, conv.dilation, conv.stride)
    (kh, kw), dilation, stride = ks, conv.dilation, conv.stride
    cols = F.unfold(x, (kh, kw), dilation=dilation, stride=stride)  # (B, C*kh*kw, L)
    outs = [(x.shape[2] - dilation[0] * (kh - 1) - 1) // stride[0] + 1,
            (x.shape[3] - dilation[1] * (kw - 1) - 1) // stride[1] + 1]
    return cols.view(b, c, kh * kw, -1), outs


def _matmul_columns(x: torch.Tensor, ks: list[int], conv: ConvArgs, columns: bool,
                    pad_amounts: tuple[int, ...] | None) -> tuple[torch.Tensor | None, list | None]:
    """The columns kernel mixing multiplies the B kernels with, and the output's sizes: a pointwise conv's
    (strided) input (B, I, L); with ``columns``, a conv of one group's im2col (B, I, P, L) (``pad_amounts``
    default: from ``conv.padding``); else (None, None): the conv of B groups."""
    pointwise = _pointwise(x, ks, conv)
    if pointwise is not None:
        return pointwise
    if columns and conv.groups == 1:
        return _im2col(x, ks, conv, pad_amounts_of(conv, ks) if pad_amounts is None else pad_amounts)
    return None, None


def _mixed_bias(bias: torch.Tensor | None, a: torch.Tensor | None, b: int, o: int) -> torch.Tensor | None:
    """The B biases (B, O) of the experts' biases (K, O): ``sum_k a_bk bias_k`` (``bias_0`` for every sample when
    ``a`` is None); None without a bias."""
    if bias is None:
        return None
    return bias[0].expand(b, o) if a is None else torch.mm(a, bias)


def _finish(y: torch.Tensor, bias: torch.Tensor | None, out_scale: torch.Tensor | None,
            spatial_dims: int = 2) -> torch.Tensor:
    if out_scale is not None:
        y = y * _per_channel(out_scale, spatial_dims)
    if bias is not None:
        y = y + _per_channel(bias, spatial_dims)
    return y


def kernel_mixing(
    x: torch.Tensor,
    shape: tuple[int, ...],
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    a: torch.Tensor | None,
    s: torch.Tensor | None,
    out_scale: torch.Tensor | None,
    conv: ConvArgs,
    in_scale: torch.Tensor | None = None,
    fold_out: bool = False,
    columns: bool = False,
    pad_amounts: tuple[int, ...] | None = None,
) -> torch.Tensor:
    """``in_scale`` (B, in_channels), the input-channel scaling x * in_scale, and ``fold_out`` (the
    output-channel scaling ``out_scale``) go into the B kernels instead of the feature maps: equal,
    and cheaper where the maps hold more values than the kernels (large maps, few channels).
    ``columns``: a conv of one group runs as a batched matmul of the B kernels with the input's im2col
    columns (zero-padded by ``pad_amounts``, F.pad's order; default: from ``conv.padding``), which take
    the scalings instead of the kernels. In inference the B kernels go to this thread's scratch buffer
    (:mod:`dynattn.workspace`), a batch whose kernels exceed it in chunks of samples."""
    scratch = _scratch_use(x, weight, a, s, in_scale, out_scale)
    if scratch:
        chunks = _sample_chunks(x.shape[0], math.prod(shape[1:]) * weight.element_size())
        if chunks:
            return torch.cat([kernel_mixing(x[c], shape, weight, bias, *_rows(c, a, s, out_scale), conv,
                                            _rows(c, in_scale)[0], fold_out, columns, pad_amounts) for c in chunks])
    _, o, i_g, *ks = shape
    spatial_dims = len(ks)
    b = x.shape[0]
    mixed_bias = _mixed_bias(bias, a, b, o)
    if a is None:
        weight = weight[:1]
    cols, outs = _matmul_columns(x, ks, conv, columns, pad_amounts)
    if cols is not None:  # the scalings go to the columns (or, one kernel position, to the mix weights)
        a, s, cols = _scale_columns(cols, a, s, in_scale, b, i_g, math.prod(ks))
        in_scale = None
    if fold_out:  # the output-channel scaling goes into the kernels, not onto the maps
        out_scale, kernel_out_scale = None, out_scale
    else:
        kernel_out_scale = None
    w = _mixed(weight, a, s, b, o, i_g, ks, in_scale, kernel_out_scale, conv.groups, scratch)
    fused_bias = mixed_bias is not None and out_scale is None
    if cols is not None:
        y = _pointwise_conv(cols, w.reshape(b, o, -1), mixed_bias if fused_bias else None).view(b, o, *outs)
        return y if fused_bias else _finish(y, mixed_bias, out_scale, spatial_dims)
    y = _conv(
        spatial_dims,
        x.reshape(1, -1, *_spatial(x, spatial_dims)),
        w.reshape(b * o, i_g, *ks),
        mixed_bias.reshape(-1) if fused_bias else None,
        conv.stride, conv.padding, conv.dilation, conv.groups * b,
    )
    y = y.view(b, o, *_spatial(y, spatial_dims))
    return y if fused_bias else _finish(y, mixed_bias, out_scale, spatial_dims)


def sample_kernels_conv(x: torch.Tensor, kernels: torch.Tensor, shape: tuple[int, ...], bias: torch.Tensor | None,
                        conv: ConvArgs, pad_amounts: tuple[int, ...], columns: bool = False) -> torch.Tensor:
    """The conv of each sample b of ``x`` with its own kernel ``kernels[b]`` (B, O, I/g, *kernel; ``shape`` is
    (O, I/g, *kernel) as ints, so that exporters see constants), plus ``bias`` (O,): the batch folded into the conv's
    groups, or (a pointwise conv; with ``columns``, any conv of one group) a batched matmul with the input's
    columns, whose shapes do not depend on the batch size (export). KernelWarehouse assembles such kernels from
    its cells instead of mixing experts."""
    o, i_g, *ks = shape
    spatial_dims = len(ks)
    cols, outs = _matmul_columns(x, ks, conv, columns, pad_amounts)
    if cols is not None:
        y = _pointwise_conv(cols.flatten(1, 2) if cols.dim() == 4 else cols, kernels.flatten(2), None)
        y = y.view(-1, o, *outs)
    else:
        b = x.shape[0]
        y = _conv(spatial_dims, x.reshape(1, -1, *_spatial(x, spatial_dims)), kernels.reshape(-1, i_g, *ks), None,
                  conv.stride, conv.padding, conv.dilation, conv.groups * b)
        y = y.view(b, o, *_spatial(y, spatial_dims))
    return y if bias is None else y + bias[(None, slice(None)) + (None,) * spatial_dims]


def position_kernels_conv(x: torch.Tensor, kernels: torch.Tensor, shape: tuple[int, ...], bias: torch.Tensor | None,
                          conv: ConvArgs, pad_amounts: tuple[int, ...]) -> torch.Tensor:
    """The conv of one group of each sample b with its kernel given by kernel position, ``kernels`` (B, P, O, I)
    for P = prod(kernel) positions (``shape``: (O, I, *kernel) as ints): one matmul per sample and position with the
    input's im2col columns, summed over the positions. Its intermediate (B, P, O, L) is smaller than the B kernels
    in conv layout where the output has fewer positions L than the conv has inputs (a deep layer's small maps), and
    no kernel is reordered (KernelWarehouse assembles its kernels position-major)."""
    o, _, *ks = shape
    cols, outs = _im2col(x, ks, conv, pad_amounts)  # (B, I, P, L)
    y = torch.matmul(kernels, cols.transpose(1, 2)).sum(1)  # (B, P, O, I) @ (B, P, I, L), summed over P
    y = y.view(-1, o, *outs)
    return y if bias is None else y + bias[(None, slice(None)) + (None,) * len(ks)]


def _scratch_use(x: torch.Tensor, weight: torch.Tensor, *factors: torch.Tensor | None) -> bool:
    """Whether the B mixed kernels may go to this thread's scratch buffer: inference on plain CPU tensors of one
    dtype, the batch size an int, no autocast (see :mod:`dynattn.workspace`)."""
    return (isinstance(x.shape[0], int) and not torch.is_autocast_enabled("cpu")
            and all(f is None or f.dtype == weight.dtype for f in factors)
            and workspace.usable(x, weight, *factors))


def _sample_chunks(batch: int, per_sample_bytes: int) -> list[slice]:
    """Chunks of samples whose mixed kernels fit the scratch buffer (none where the whole batch fits)."""
    total = batch * per_sample_bytes
    if batch <= 1 or total <= workspace.MAX_BYTES:
        return []
    size = -(-batch // -(-total // workspace.MAX_BYTES))
    return [slice(i, i + size) for i in range(0, batch, size)]


def _rows(chunk: slice, *tensors: torch.Tensor | None) -> list[torch.Tensor | None]:
    return [None if t is None else t[chunk] for t in tensors]


def _mixed(weight: torch.Tensor, a: torch.Tensor | None, s: torch.Tensor | None, b: int, o: int, i_g: int,
           ks: list[int], in_scale: torch.Tensor | None = None, out_scale: torch.Tensor | None = None,
           groups: int = 1, scratch: bool = False) -> torch.Tensor:
    """The B kernels (B, O, I/g, *ks) of the experts ``weight`` (K, O, I/g, *ks): ``sum_k a_bk W_k`` (``W_0`` for
    every sample when ``a`` is None), scaled per kernel position by ``s`` (B, prod(ks)), then per input channel by
    ``in_scale`` (B, I), then per output channel by ``out_scale`` (B, O) where given. ``scratch``: written to this
    thread's scratch buffer and scaled there in place (inference only: nothing may keep them)."""
    shape, ones = (b, o, i_g, *ks), (1,) * len(ks)
    factors = []  # (factor, the view of the kernels it broadcasts against)
    if s is not None:
        factors.append((s.view(b, 1, 1, *ks), shape))
    if in_scale is not None and groups in (1, o):  # one group, or depthwise: a broadcast, no regrouping views
        factors.append((in_scale.view(b, 1 if groups == 1 else o, i_g, *ones), shape))
    elif in_scale is not None:
        factors.append((in_scale.view(b, groups, 1, i_g, *ones), (b, groups, o // groups, i_g, *ks)))
    if out_scale is not None:
        factors.append((out_scale.view(b, o, 1, *ones), shape))
    if a is None and not factors:  # one expert, nothing per sample: no kernels to write
        return weight[0].unsqueeze(0).expand(shape)
    out = workspace.scratch(math.prod(shape), weight) if scratch else None
    if a is None:
        w, written = weight[0].unsqueeze(0).expand(shape), False
    else:
        flat = weight.reshape(weight.shape[0], -1)
        w = (torch.mm(a, flat) if out is None else torch.mm(a, flat, out=out.view(b, -1))).view(shape)
        written = True
    for factor, view in factors:
        if out is None:
            w = w.view(view) * factor
        elif written:
            w = w.view(view).mul_(factor)
        else:  # the first scaling of the one expert writes the buffer
            w, written = torch.mul(w.view(view), factor, out=out.view(view)), True
        w = w.view(shape)
    return w


def _scale_columns(cols: torch.Tensor, a: torch.Tensor | None, s: torch.Tensor | None,
                   in_scale: torch.Tensor | None, b: int, i_g: int, positions: int
                   ) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor]:
    """Columns (B, I, P, L) or (B, I, L) with the input-channel scaling ``in_scale`` (B, I) and the kernel-position
    scaling ``s`` (B, P) applied, as (B, I*P, L); where the kernel has one position, ``s`` (B, 1) scales the mix
    weights ``a`` instead (the mixed bias is computed from the unscaled ``a`` before). Returns (a, s, columns)."""
    if s is None and in_scale is None and cols.dim() == 3:  # a pointwise conv's columns, nothing to scale
        return a, s, cols
    if s is not None and positions == 1:
        a = s if a is None else a * s  # (B, K) * (B, 1): sum_k (s_b a_bk) W_k, and W_0 * s_b with one expert
        s = None
    if s is not None:
        cols = cols.view(b, i_g, positions, -1) * s.view(b, 1, positions, 1)
        s = None
    if in_scale is not None:
        cols = cols.view(b, i_g, -1) * in_scale.view(b, i_g, 1)
    return a, s, cols.reshape(b, i_g * positions, -1)


#: Bytes of the B mixed kernels of one block in :func:`blocked_kernel_mixing`: about what the
#: caches of a CPU core keep between writing them and the conv reading them.
BLOCK_BYTES = 2 * 2**20
#: ... but blocks of at least this many output channels (each block is two calls).
MIN_BLOCK_CHANNELS = 16


def block_channels(batch: int, shape: tuple[int, ...], groups: int, itemsize: int = 4, *,
                   block_bytes: int = BLOCK_BYTES, min_channels: int = MIN_BLOCK_CHANNELS) -> int:
    """Output channels per block of :func:`blocked_kernel_mixing`: whose B mixed kernels take about
    ``block_bytes``, at least ``min_channels`` (or all), and whole conv groups when grouped."""
    _, o, i_g, *ks = shape
    o_g = o // groups
    per_channel = max(1, batch * i_g * math.prod(ks) * itemsize)
    n = max(block_bytes // per_channel, min_channels, 1)
    if groups > 1:  # whole groups
        n = max(1, n // o_g) * o_g
    elif n > min_channels:  # multiples of the minimum (16: the conv's vector width; unaligned blocks run slower)
        n -= n % min_channels
    return min(o, n)


def blocked_kernel_mixing(
    x: torch.Tensor,
    shape: tuple[int, ...],
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    a: torch.Tensor | None,
    s: torch.Tensor | None,
    out_scale: torch.Tensor | None,
    conv: ConvArgs,
    columns: bool = False,
    pad_amounts: tuple[int, ...] | None = None,
    block_bytes: int = BLOCK_BYTES,
    min_block_channels: int = MIN_BLOCK_CHANNELS,
) -> torch.Tensor:
    """Kernel mixing one block of output channels at a time (whole conv groups per block), so
    that each block's B mixed kernels are read by the conv while they are still in cache. With a
    symbolic batch size (torch.export, dynamic shapes) it is kernel mixing: the blocks depend on B.
    ``columns`` and ``pad_amounts`` as in :func:`kernel_mixing` (the columns are made once, for every block);
    ``block_bytes`` and ``min_block_channels`` size the blocks (:func:`block_channels`)."""
    k, o, i_g, *ks = shape
    spatial_dims = len(ks)
    b, sizes = x.shape[0], _spatial(x, spatial_dims)
    groups = conv.groups
    # one block: kernel mixing; so with a symbolic batch (export, dynamic shapes), where blocks would guard on it
    step = o if not isinstance(b, int) else block_channels(b, shape, groups, x.element_size(),
                                                           block_bytes=block_bytes, min_channels=min_block_channels)
    if step >= o:
        return kernel_mixing(x, shape, weight, bias, a, s, out_scale, conv, columns=columns, pad_amounts=pad_amounts)
    o_g = o // groups
    experts = weight.reshape(k, o, i_g, *ks)
    scratch = _scratch_use(x, weight, a, s, out_scale)  # every block's kernels to one buffer, in turn
    mixed_bias = _mixed_bias(bias, a, b, o)
    if a is None:
        experts = experts[:1]
    fused_bias = mixed_bias is not None and out_scale is None
    cols, out_sizes = _matmul_columns(x, ks, conv, columns, pad_amounts)
    if cols is not None:  # one group: every block reads all of the columns, scaled once
        a, s, cols = _scale_columns(cols, a, s, None, b, i_g, math.prod(ks))
    # splits, not slices: a split's backward is one concatenation, where each slice would add a
    # full-size zero gradient of the expert bank (or of x) per block
    xs = [x] * len(range(0, o, step)) if groups == 1 else x.split(step // o_g * i_g, dim=1)
    biases = mixed_bias.split(step, dim=1) if fused_bias else [None] * len(xs)
    outs = []
    for block, xb, bb in zip(experts.split(step, dim=1), xs, biases):
        n = block.shape[1]
        wb = _mixed(block, a, s, b, n, i_g, ks, scratch=scratch)
        if cols is not None:
            outs.append(_pointwise_conv(cols, wb.reshape(b, n, -1), bb).view(b, n, *out_sizes))
            continue
        g_blk = 1 if groups == 1 else n // o_g
        y = _conv(spatial_dims, xb.reshape(1, -1, *sizes), wb.reshape(b * n, i_g, *ks),
                  None if bb is None else bb.reshape(-1), conv.stride, conv.padding, conv.dilation, g_blk * b)
        outs.append(y.view(b, n, *_spatial(y, spatial_dims)))
    y = torch.cat(outs, 1)
    return y if fused_bias else _finish(y, mixed_bias, out_scale, spatial_dims)


def _grouped_expert_weight(weight: torch.Tensor, shape: tuple[int, ...], groups: int) -> torch.Tensor:
    """(K, O, I/g, *kernel) -> (g * K * O/g, I/g, *kernel): each conv group holds its outputs of every expert."""
    k, o, i_g, *ks = shape
    if groups == 1:
        return weight.reshape(k * o, i_g, *ks)
    return weight.reshape(k, groups, o // groups, i_g, *ks).transpose(0, 1).reshape(k * o, i_g, *ks)


def _weighted_output_sum(y: torch.Tensor, a: torch.Tensor | None, k: int, o: int, groups: int,
                         spatial_dims: int = 2) -> torch.Tensor:
    """(B, g * K * O/g, *spatial) outputs of every expert -> (B, O, *spatial) weighted by a (B, K)."""
    if a is None:
        return y
    b, sizes = y.shape[0], _spatial(y, spatial_dims)
    if groups == 1:
        mixed = torch.bmm(a.unsqueeze(1), y.reshape(b, k, -1))
    else:
        mixed = torch.einsum("bgkr,bk->bgr", y.reshape(b, groups, k, -1), a)
    return mixed.reshape(b, o, *sizes)


def _windows(x: torch.Tensor, ks: list[int], dilation: tuple[int, ...], stride: tuple[int, ...]
             ) -> tuple[torch.Tensor, list]:
    """im2col of an already padded (B, C, *spatial) map of any rank, from strided slices:
    ((B, C, prod(ks), L) with the kernel positions in row-major order, the output sizes)."""
    spatial_dims = len(ks)
    sizes = _spatial(x, spatial_dims)
    outs = [(n - d * (kk - 1) - 1) // st + 1 for n, kk, d, st in zip(sizes, ks, dilation, stride)]
    taps = []
    for offsets in itertools.product(*[range(kk) for kk in ks]):
        window = [slice(off * d, off * d + st * (n - 1) + 1, st)
                  for off, d, st, n in zip(offsets, dilation, stride, outs)]
        taps.append(x[(slice(None), slice(None), *window)])
    cols = torch.stack(taps, 2)  # (B, C, P, *outs)
    return cols.reshape(x.shape[0], x.shape[1], len(taps), -1), outs


def output_mixing(
    x: torch.Tensor,
    shape: tuple[int, ...],
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    a: torch.Tensor | None,
    s: torch.Tensor | None,
    out_scale: torch.Tensor | None,
    conv: ConvArgs,
    pad_amounts: tuple[int, ...],
    columns: bool = False,
) -> torch.Tensor:
    """``pad_amounts`` is ``F.pad``'s (last dim first) zero padding, applied to x before the im2col of a
    spatial head (where the conv's ``padding`` would not reach it). ``columns``: a conv of one group runs as one
    matmul of the whole batch's im2col columns with the K experts (:func:`_output_columns`), not as a conv with
    K * O output channels, which runs slowly on small maps (in a training step most of all)."""
    stride, padding, dilation, groups = conv
    k, o, i_g, *ks = shape
    spatial_dims = len(ks)
    if a is None:
        weight, k = weight[:1], 1
        shape = (1, o, i_g, *ks)
    mixed_bias = _mixed_bias(bias, a, x.shape[0], o)
    if s is None and columns and groups == 1:
        y = _output_columns(x, shape, weight, a, conv, pad_amounts)
        return _finish(y, mixed_bias, out_scale, spatial_dims)
    if s is None:
        experts = _grouped_expert_weight(weight, shape, groups)
        y = CONV_FNS[spatial_dims](x, experts, None, stride, padding, dilation, groups)
        return _finish(_weighted_output_sum(y, a, k, o, groups, spatial_dims), mixed_bias, out_scale, spatial_dims)
    # per-sample kernel-position scaling: scale the unfolded input, then one matmul per group
    b, c = x.shape[0], x.shape[1]
    positions = math.prod(ks)
    cols, outs = _im2col(x, ks, conv, pad_amounts)  # (B, C, P, L)
    cols = (cols * s.view(b, 1, positions, 1)).view(b, groups, c // groups * positions, -1)
    wg = _grouped_expert_weight(weight, shape, groups).view(groups, k * o // groups, -1)
    y = torch.einsum("gor,bgrl->bgol", wg, cols).reshape(b, k * o, *outs)
    return _finish(_weighted_output_sum(y, a, k, o, groups, spatial_dims), mixed_bias, out_scale, spatial_dims)


def _output_columns(x: torch.Tensor, shape: tuple[int, ...], weight: torch.Tensor, a: torch.Tensor | None,
                    conv: ConvArgs, pad_amounts: tuple[int, ...]) -> torch.Tensor:
    """Output mixing of a conv of one group as one matmul: the im2col columns of every sample and output position
    (B * L, I * P) times the K experts (I * P, K * O), then the K outputs of each sample weighted by ``a``
    (B, K; None: one expert). One large matmul reads each expert once for the whole batch."""
    k, o, _, *ks = shape
    b = x.shape[0]
    cols, outs = _im2col(x, ks, conv, pad_amounts)  # (B, I, P, L)
    rows = cols.flatten(1, 2).transpose(1, 2).reshape(-1, cols.shape[1] * cols.shape[2])
    z = torch.mm(rows, weight.reshape(k * o, -1).t()).view(b, -1, k, o)  # (B, L, K, O)
    y = z.squeeze(2) if a is None else torch.matmul(a.view(b, 1, 1, k), z).squeeze(2)  # (B, L, O)
    return y.transpose(1, 2).contiguous().view(b, o, *outs)  # the conv's layout, not channels-last strides
