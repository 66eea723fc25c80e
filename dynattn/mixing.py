"""The two ways to run a dynamic convolution, equal in value.

With per-sample mixing weights ``a`` (B, K) over expert kernels ``W`` (K, O, I/g, kh, kw)
and an optional per-sample kernel-position scaling ``s`` (B, kh*kw, ODConv's spatial head),
the conv of sample b uses ``W_b = s_b * sum_k a_bk W_k`` and bias ``sum_k a_bk bias_k``.

- :func:`kernel_mixing` builds the B kernels and runs one grouped conv over the batch folded
  into channels (``groups = B * g``). Its cost is one conv plus B kernels; its group count
  depends on the batch size.
- :func:`output_mixing` runs one dense conv with K * O outputs and sums the K results with
  the weights ``a``: K times the conv's arithmetic, but no tensor shape or group count tied
  to the batch size (ONNX export with a dynamic batch). With a spatial head the position
  scaling is applied to the unfolded input (im2col), exact but memory-hungry.

Both take an input already padded for non-zero ``padding_mode``; ``out_scale`` (B, O) is
ODConv's output-channel attention, applied before the bias as it scales the kernel.
``shape`` is the weight's (K, O, I/g, kh, kw), passed as ints so that the functions also
trace with ``torch.fx`` (where the weight is a Proxy).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F

__all__ = ["ConvArgs", "kernel_mixing", "output_mixing", "batched_conv2d", "is_exporting"]

Padding = str | tuple[int, int]


class ConvArgs(NamedTuple):
    """How the conv slides: nn.Conv2d's stride, padding (after any padding_mode pre-pad), dilation, groups."""

    stride: tuple[int, int]
    padding: Padding
    dilation: tuple[int, int]
    groups: int


# ----------------------------------------------------------------------------- the batch-folded conv
# Under torch.compile, inductor's layout optimisation turns the grouped conv of kernel mixing
# into channels-last copies of x, of the B per-sample kernels and of the output, slower than the
# eager call (the DyConv rows of ``python -m dynattn.bench`` measure it). As a custom op the conv
# stays one opaque call in the layouts eager uses. Exporting keeps the plain conv.
@torch.library.custom_op("dynattn::batched_conv2d", mutates_args=())
def batched_conv2d(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, stride: list[int], padding: list[int],
    dilation: list[int], groups: int,
) -> torch.Tensor:
    return F.conv2d(x, weight, bias, stride, padding, dilation, groups)


@batched_conv2d.register_fake
def _(x, weight, bias, stride, padding, dilation, groups):
    return F.conv2d(x, weight, bias, stride, padding, dilation, groups)


def _setup(ctx, inputs, output):
    x, weight, bias, stride, padding, dilation, groups = inputs
    ctx.save_for_backward(x, weight)
    ctx.has_bias, ctx.args = bias is not None, (stride, padding, dilation, groups)


def _backward(ctx, grad):
    x, weight = ctx.saved_tensors
    stride, padding, dilation, groups = ctx.args
    gx, gw, gb = torch.ops.aten.convolution_backward(
        grad, x, weight, [weight.shape[0]] if ctx.has_bias else None, stride, padding, dilation, False, [0, 0],
        groups, [ctx.needs_input_grad[0], ctx.needs_input_grad[1], ctx.has_bias and ctx.needs_input_grad[2]],
    )
    return gx, gw, gb, None, None, None, None


batched_conv2d.register_autograd(_backward, setup_context=_setup)


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


def _conv(x, w, b, stride, padding, dilation, groups):
    compiler = getattr(torch, "compiler", None)
    if compiler is not None and compiler.is_compiling() and not is_exporting() and not isinstance(padding, str):
        return batched_conv2d(x, w, b, list(stride), list(padding), list(dilation), groups)
    return F.conv2d(x, w, b, stride, padding, dilation, groups)


def _finish(y: torch.Tensor, bias: torch.Tensor | None, out_scale: torch.Tensor | None) -> torch.Tensor:
    if out_scale is not None:
        y = y * out_scale[:, :, None, None]
    if bias is not None:
        y = y + bias[:, :, None, None]
    return y


def kernel_mixing(
    x: torch.Tensor,
    shape: tuple[int, int, int, int, int],
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    a: torch.Tensor | None,
    s: torch.Tensor | None,
    out_scale: torch.Tensor | None,
    conv: ConvArgs,
) -> torch.Tensor:
    k, o, i_g, kh, kw = shape
    b = x.shape[0]
    if a is None:  # one expert: the kernel varies only through s
        w = weight[0].unsqueeze(0).expand(b, o, i_g, kh, kw)
        mixed_bias = None if bias is None else bias[0].unsqueeze(0).expand(b, o)
    else:
        w = torch.mm(a, weight.reshape(k, -1)).view(b, o, i_g, kh, kw)
        mixed_bias = None if bias is None else torch.mm(a, bias)
    if s is not None:
        w = w * s.view(b, 1, 1, kh, kw)
    fused_bias = mixed_bias is not None and out_scale is None
    y = _conv(
        x.reshape(1, -1, x.shape[2], x.shape[3]),
        w.reshape(b * o, i_g, kh, kw),
        mixed_bias.reshape(-1) if fused_bias else None,
        conv.stride, conv.padding, conv.dilation, conv.groups * b,
    )
    y = y.view(b, o, y.shape[2], y.shape[3])
    return y if fused_bias else _finish(y, mixed_bias, out_scale)


def _grouped_expert_weight(weight: torch.Tensor, shape: tuple[int, ...], groups: int) -> torch.Tensor:
    """(K, O, I/g, kh, kw) -> (g * K * O/g, I/g, kh, kw): each conv group holds its outputs of every expert."""
    k, o, i_g, kh, kw = shape
    if groups == 1:
        return weight.reshape(k * o, i_g, kh, kw)
    return weight.reshape(k, groups, o // groups, i_g, kh, kw).transpose(0, 1).reshape(k * o, i_g, kh, kw)


def _mix(y: torch.Tensor, a: torch.Tensor | None, k: int, o: int, groups: int) -> torch.Tensor:
    """(B, g * K * O/g, H, W) outputs of every expert -> (B, O, H, W) weighted by a (B, K)."""
    if a is None:
        return y
    b, h, w = y.shape[0], y.shape[2], y.shape[3]
    if groups == 1:
        mixed = torch.bmm(a.unsqueeze(1), y.reshape(b, k, -1))
    else:
        mixed = torch.einsum("bgkr,bk->bgr", y.reshape(b, groups, k, -1), a)
    return mixed.reshape(b, o, h, w)


def output_mixing(
    x: torch.Tensor,
    shape: tuple[int, int, int, int, int],
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    a: torch.Tensor | None,
    s: torch.Tensor | None,
    out_scale: torch.Tensor | None,
    conv: ConvArgs,
    pad_amounts: tuple[int, int, int, int],
) -> torch.Tensor:
    stride, padding, dilation, groups = conv
    k, o, i_g, kh, kw = shape
    if a is None:
        weight, k = weight[:1], 1
        shape = (1, o, i_g, kh, kw)
    mixed_bias = None
    if bias is not None:
        mixed_bias = bias[0].expand(x.shape[0], o) if a is None else torch.mm(a, bias)
    if s is None:
        y = F.conv2d(x, _grouped_expert_weight(weight, shape, groups), None, stride, padding, dilation, groups)
        return _finish(_mix(y, a, k, o, groups), mixed_bias, out_scale)
    # per-sample kernel-position scaling: scale the unfolded input, then one matmul per group
    if any(pad_amounts):
        x = F.pad(x, pad_amounts)
    b, c, h, w_ = x.shape[0], x.shape[1], x.shape[2], x.shape[3]
    cols = F.unfold(x, (kh, kw), dilation=dilation, stride=stride)  # (B, C*kh*kw, L)
    oh = (h - dilation[0] * (kh - 1) - 1) // stride[0] + 1
    ow = (w_ - dilation[1] * (kw - 1) - 1) // stride[1] + 1
    cols = (cols.view(b, c, kh * kw, -1) * s.view(b, 1, kh * kw, 1)).view(b, groups, -1, oh * ow)
    wg = _grouped_expert_weight(weight, shape, groups).view(groups, k * o // groups, -1)
    y = torch.einsum("gor,bgrl->bgol", wg, cols).reshape(b, k * o, oh, ow)
    return _finish(_mix(y, a, k, o, groups), mixed_bias, out_scale)
