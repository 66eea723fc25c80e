"""The excitation layers a compiled attention module calls.

Each is a small ``nn.Module`` whose forward has no Python branch on tensor values or
shapes, so a host model that contains one still traces with ``torch.fx``. Parameter names
follow timm's (``fc1``/``fc2``, ``conv``/``bn``) so checkpoints map across by renaming.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from .errors import InputError
from .leaf_calls import leaf_call
from .mixing import batched_conv, is_exporting
from .vocab import DCT_FREQUENCIES

__all__ = [
    "MLP", "ChannelConv1d", "ChannelConv1dMLP", "Channelwise", "SpatialConv", "SpatialBottleneck", "ConvMLP",
    "PixelMLP", "Energy", "StripMLP", "StripConv", "GroupNorm1", "AttentionPool", "DCTPool", "bn_guard", "dct_basis",
]


@leaf_call
def bn_guard(x: torch.Tensor, training: bool) -> torch.Tensor:
    """``x`` itself; in training mode, first a clear error where BatchNorm would have a single
    value per channel (a batch of 1 through an MLP, a 1x1 map with a batch of 1). A host model
    traced with torch.fx records it as one call (:func:`~dynattn.leaf_calls.leaf_call`)."""
    if training and x.numel() // max(x.shape[1], 1) <= 1:
        raise InputError(
            "input", tuple(x.shape),
            "reaches a BatchNorm (spec norm='bn') with one value per channel in training mode, where batch "
            "statistics do not exist", hint="train with a batch > 1 (and maps larger than 1x1), call .eval(), "
            "or use norm=None",
        )
    return x


def hard_sigmoid_x2(z: torch.Tensor) -> torch.Tensor:
    """``relu6(z + 3) / 3``: twice the hard sigmoid, in [0, 2] and 1 at z = 0 (DCD's ``Hsigmoid``, which
    scales the static kernel's output channels and gates DCD's router), written as DCD writes it."""
    return F.relu6(z + 3.0) / 3.0


class SelfGate(nn.Module):
    """``h * hard_sigmoid_x2(Linear(h))``: a hidden vector gated by a linear map of itself (DCD's
    ``SEModule_small``, the activation of its router: ``act="self_gate"``)."""

    def __init__(self, width: int, *, bias: bool = False, device: torch.device | None = None,
                 dtype: torch.dtype | None = None) -> None:
        super().__init__()
        self.fc = nn.Linear(width, width, bias=bias, device=device, dtype=dtype)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return h * hard_sigmoid_x2(self.fc(h))


#: The module of each activation name of the spec (:data:`dynattn.vocab.ACTS`).
ACT_MODULES: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU, "relu6": nn.ReLU6, "silu": nn.SiLU, "gelu": nn.GELU, "hard_swish": nn.Hardswish,
    "leaky_relu": nn.LeakyReLU, "elu": nn.ELU, "mish": nn.Mish, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid,
    "identity": nn.Identity,
}


def _act(name: str, width: int | None = None, **kwargs) -> nn.Module:
    """The activation ``name``; a weighted one (``self_gate``) takes the hidden ``width`` and ``kwargs``."""
    if name == "self_gate":
        return SelfGate(width, **kwargs)
    return ACT_MODULES[name]()


#: The conv and BatchNorm of a map with 1, 2 or 3 spatial spatial_dims.
CONVS: dict[int, type[nn.Module]] = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}
BATCH_NORMS: dict[int, type[nn.Module]] = {1: nn.BatchNorm1d, 2: nn.BatchNorm2d, 3: nn.BatchNorm3d}


class MLP(nn.Module):
    """Two linear layers over the last axis: ``(..., in) -> (..., hidden) -> (..., out)``.

    SE / CBAM's channel MLP and a dynamic-conv router. Leading axes pass through, so
    several pooled descriptors can share one call when stacked. ``norm`` after the first layer:
    ``"bn"`` (BatchNorm over the hidden units, BAM's channel gate) or ``"ln"`` (LayerNorm over
    them, global context's ``LayerNorm([planes, 1, 1])``).
    """

    def __init__(
        self,
        in_features: int,
        hidden: int,
        out_features: int,
        *,
        bias: bool = True,
        act: str = "relu",
        norm: str | None = None,
        bn_momentum: float = 0.1,
        bn_eps: float = 1e-5,
        device: torch.device | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        dd = {"device": device, "dtype": dtype}
        self.fc1 = nn.Linear(in_features, hidden, bias=bias, **dd)
        self.bn = nn.BatchNorm1d(hidden, eps=bn_eps, momentum=bn_momentum, **dd) if norm == "bn" else None
        self.ln = nn.LayerNorm(hidden, eps=bn_eps, **dd) if norm == "ln" else None
        self.act = _act(act, hidden, bias=bias, **dd)
        self.fc2 = nn.Linear(hidden, out_features, bias=bias, **dd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = _small_linear(self.fc1, x)
        if self.bn is not None:
            x = self.bn(bn_guard(x, self.training))
        if self.ln is not None:
            x = self.ln(x)
        return _small_linear(self.fc2, self.act(x))


def _inductor_on_cpu(x: torch.Tensor) -> bool:
    """Whether ``x`` is traced by torch.compile for CPU, not exported (whose graph keeps the plain ops) and
    not under autocast (where convs and linear layers run in the lower precision and sums would not)."""
    return (torch.compiler.is_compiling() and not is_exporting() and x.device.type == "cpu"
            and not torch.is_autocast_enabled("cpu"))


def _eager_layout_conv(conv: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``conv(x)``; compiled on CPU, one opaque call (:func:`dynattn.mixing.batched_conv`) that keeps the
    layouts eager uses. Inductor otherwise runs the conv channels-last, copying x into that layout and the
    output back, which makes the compiled conv slower than the eager one; the opaque op compiles to what
    eager runs (``python -m dynattn.bench`` times both: GAM's rows)."""
    if not _inductor_on_cpu(x) or conv.padding_mode != "zeros" or isinstance(conv.padding, str):
        return conv(x)
    return batched_conv(x, conv.weight, conv.bias, list(conv.stride), list(conv.padding), list(conv.dilation),
                        conv.groups)


#: Under ``torch.compile`` on CPU, a linear layer with at most this many weights runs as a broadcast
#: multiply and a sum over its inputs (:func:`_small_linear`).
_SMALL_LINEAR_WEIGHTS = 16384


def _small_linear(layer: nn.Linear, x: torch.Tensor) -> torch.Tensor:
    """``layer(x)``; compiled on CPU with a small weight, ``(x[..., None, :] * W).sum(-1) + b``.

    The two are the same arithmetic. The second lets inductor fuse an excitation MLP with the
    pooling before it and the gate after it into one kernel, where ``addmm`` is an external call
    each (SE's rows of ``python -m dynattn.bench``). Past ``_SMALL_LINEAR_WEIGHTS`` the matmul's own
    kernel wins over the fusion, so larger layers keep it, as do eager runs, fx tracing, export (the
    exported graph keeps its ``linear``) and autocast (where ``linear`` runs in the lower precision and a
    sum would not)."""
    if not _inductor_on_cpu(x) or layer.weight.numel() > _SMALL_LINEAR_WEIGHTS:  # fx: weight is a Proxy
        return layer(x)
    y = (x.unsqueeze(-2) * layer.weight).sum(-1)
    return y if layer.bias is None else y + layer.bias


class ChannelConv1d(nn.Module):
    """ECA's excitation: a 1-D conv across the channel sequence, ``(B, C) -> (B, C)``.

    With ``in_descriptors > 1`` the input is ``(B, n, C)``: n pooled descriptors as the
    conv's input channels. ``padding_mode="circular"`` wraps the sequence around (timm's CECA:
    the first and last channels are neighbours), at any channel count.
    """

    def __init__(
        self,
        kernel_size: int,
        *,
        in_descriptors: int = 1,
        bias: bool = False,
        padding_mode: str = "zeros",
        device: torch.device | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self.stacked = in_descriptors > 1
        self.circular = padding_mode == "circular"
        self.conv = nn.Conv1d(
            in_descriptors, 1, kernel_size, padding=(kernel_size - 1) // 2, bias=bias,
            device=device, dtype=dtype,
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # The conv written as a weighted sum over sliding windows of the channel sequence:
        # the same arithmetic as ``self.conv(x)``, but pointwise code that inductor fuses with
        # the pooling and the gate, where a (B, 1, C) conv is an extern call that costs more
        # than the pooling itself (see the ECA rows of ``python -m dynattn.bench``).
        if not self.stacked:
            x = x.unsqueeze(1)
        pad, k = self.conv.padding[0], self.conv.kernel_size[0]
        if self.circular:  # window j of channel i reads channel (i + j - pad) mod C
            c = x.shape[-1]
            index = (torch.arange(c, device=x.device).unsqueeze(1) + torch.arange(k, device=x.device) - pad) % c
            windows = x[..., index]  # (B, n, C, k)
        elif is_exporting():  # TorchScript's ONNX exporter has no Unfold of unknown size: the conv itself
            return self.conv(x).squeeze(1) if not self.stacked else self.conv(x)[:, 0]
        else:
            windows = F.pad(x, (pad, pad)).unfold(-1, k, 1)  # (B, n, C, k)
        y = (windows * self.conv.weight[0].unsqueeze(1)).sum((1, 3))
        return y if self.conv.bias is None else y + self.conv.bias


class SpatialConv(nn.Module):
    """CBAM / Triplet's spatial excitation: ``(B, n, H, W) -> (B, 1, H, W)``, k x k conv [+ BN]
    (a k-wide conv on (B, n, L), k x k x k on (B, n, D, H, W) with ``spatial_dims`` = 1 or 3)."""

    def __init__(
        self,
        in_channels: int,
        kernel_size: int,
        *,
        spatial_dims: int = 2,
        dilation: int = 1,
        bias: bool = False,
        norm: str | None = None,
        bn_momentum: float = 0.1,
        bn_eps: float = 1e-5,
        device: torch.device | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        dd = {"device": device, "dtype": dtype}
        self.conv = CONVS[spatial_dims](in_channels, 1, kernel_size, padding=dilation * (kernel_size - 1) // 2,
                                dilation=dilation, bias=bias, **dd)
        self.bn = BATCH_NORMS[spatial_dims](1, eps=bn_eps, momentum=bn_momentum, **dd) if norm == "bn" else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        if self.bn is not None:
            x = self.bn(bn_guard(x, self.training))
        return x


class ConvMLP(nn.Module):
    """GAM's spatial excitation: k x k conv C -> hidden [+ BN] -> act -> k x k conv hidden -> C [+ BN]
    (k or k x k x k convs with ``spatial_dims`` = 1 or 3)."""

    def __init__(
        self,
        channels: int,
        hidden: int,
        kernel_size: int,
        *,
        spatial_dims: int = 2,
        dilation: int = 1,
        bias: bool = True,
        act: str = "relu",
        norm: str | None = None,
        bn_momentum: float = 0.1,
        bn_eps: float = 1e-5,
        device: torch.device | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        dd = {"device": device, "dtype": dtype}
        conv = {"padding": dilation * (kernel_size - 1) // 2, "dilation": dilation, "bias": bias, **dd}
        bn = norm == "bn"
        conv_nd, bn_nd = CONVS[spatial_dims], BATCH_NORMS[spatial_dims]
        self.conv1 = conv_nd(channels, hidden, kernel_size, **conv)
        self.bn1 = bn_nd(hidden, eps=bn_eps, momentum=bn_momentum, **dd) if bn else None
        self.act = _act(act)
        self.conv2 = conv_nd(hidden, channels, kernel_size, **conv)
        self.bn2 = bn_nd(channels, eps=bn_eps, momentum=bn_momentum, **dd) if bn else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = _eager_layout_conv(self.conv1, x)
        if self.bn1 is not None:
            x = self.bn1(bn_guard(x, self.training))
        x = _eager_layout_conv(self.conv2, self.act(x))
        if self.bn2 is not None:
            x = self.bn2(bn_guard(x, self.training))
        return x


class PixelMLP(nn.Module):
    """The same MLP C -> hidden -> C at every pixel: GAM's channel excitation, and the excitation of
    each window of a local extent (gather-excite, as timm's ``ConvMlp``).

    Written as 1x1 convs (1-wide, 1x1x1 with ``spatial_dims`` = 1 or 3), which compute exactly a per-pixel
    ``Linear`` without the permute copies to (B, HW, C) and back.
    """

    def __init__(
        self,
        channels: int,
        hidden: int,
        *,
        spatial_dims: int = 2,
        out_channels: int | None = None,
        bias: bool = True,
        act: str = "relu",
        norm: str | None = None,
        bn_momentum: float = 0.1,
        bn_eps: float = 1e-5,
        device: torch.device | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        dd = {"device": device, "dtype": dtype}
        self.fc1 = CONVS[spatial_dims](channels, hidden, 1, bias=bias, **dd)
        self.bn = BATCH_NORMS[spatial_dims](hidden, eps=bn_eps, momentum=bn_momentum, **dd) if norm == "bn" else None
        self.act = _act(act)
        self.fc2 = CONVS[spatial_dims](hidden, out_channels or channels, 1, bias=bias, **dd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = _eager_layout_conv(self.fc1, x)
        if self.bn is not None:
            x = self.bn(bn_guard(x, self.training))
        return _eager_layout_conv(self.fc2, self.act(x))


class ChannelConv1dMLP(nn.Module):
    """timm's ECA-MLP (``EcaModule(use_mlp=True)``): each channel's descriptors through a hidden
    layer of width ``hidden`` (a 1x1 conv along the channel sequence), the activation, then ECA's
    k-wide conv back to one value per channel: ``(B, C)`` or ``(B, n, C)`` -> ``(B, C)``."""

    def __init__(
        self,
        kernel_size: int,
        hidden: int,
        *,
        in_descriptors: int = 1,
        bias: bool = True,
        act: str = "relu",
        device: torch.device | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        dd = {"device": device, "dtype": dtype}
        self.stacked = in_descriptors > 1
        self.conv = nn.Conv1d(in_descriptors, hidden, 1, bias=bias, **dd)
        self.act = _act(act)
        self.conv2 = nn.Conv1d(hidden, 1, kernel_size, padding=(kernel_size - 1) // 2, bias=bias, **dd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.stacked:
            x = x.unsqueeze(1)
        return self.conv2(self.act(self.conv(x))).squeeze(1)


class Channelwise(nn.Module):
    """SRM's channel-wise fully connected layer: channel c's n descriptors weighted by channel c's own
    n weights and summed, ``(B, n, C)`` (or ``(B, C)``) -> ``(B, C)``, then BatchNorm over channels.

    The weights start at zero, as the authors' code initialises them (the gate starts at
    sigmoid(BN bias))."""

    def __init__(
        self,
        channels: int,
        in_descriptors: int,
        *,
        bias: bool = False,
        norm: str | None = None,
        bn_momentum: float = 0.1,
        bn_eps: float = 1e-5,
        device: torch.device | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        dd = {"device": device, "dtype": dtype}
        self.stacked = in_descriptors > 1
        self.weight = nn.Parameter(torch.zeros(channels, in_descriptors, **dd))
        self.bias = nn.Parameter(torch.zeros(channels, **dd)) if bias else None
        self.bn = nn.BatchNorm1d(channels, eps=bn_eps, momentum=bn_momentum, **dd) if norm == "bn" else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.stacked:
            x = x.unsqueeze(1)
        y = (x * self.weight.t()).sum(1)
        if self.bias is not None:
            y = y + self.bias
        if self.bn is not None:
            y = self.bn(bn_guard(y, self.training))
        return y


class SpatialBottleneck(nn.Module):
    """BAM's spatial branch: every channel of x (no pooling) to one map, ``(B, C, H, W) -> (B, 1, H, W)``:
    a 1x1 conv to ``hidden`` channels, two k x k convs dilated by ``dilation``, each followed by
    [BN and] the activation, then a 1x1 conv to one channel (1-D / 3-D convs with ``spatial_dims`` = 1 or 3)."""

    def __init__(
        self,
        channels: int,
        hidden: int,
        kernel_size: int,
        *,
        spatial_dims: int = 2,
        dilation: int = 1,
        bias: bool = True,
        act: str = "relu",
        norm: str | None = None,
        bn_momentum: float = 0.1,
        bn_eps: float = 1e-5,
        device: torch.device | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        dd = {"device": device, "dtype": dtype}
        conv = {"padding": dilation * (kernel_size - 1) // 2, "dilation": dilation, "bias": bias, **dd}

        def bn() -> nn.Module | None:
            return BATCH_NORMS[spatial_dims](hidden, eps=bn_eps, momentum=bn_momentum, **dd) if norm == "bn" else None

        conv_nd = CONVS[spatial_dims]
        self.conv_reduce = conv_nd(channels, hidden, 1, bias=bias, **dd)
        self.bn_reduce = bn()
        self.conv1 = conv_nd(hidden, hidden, kernel_size, **conv)
        self.bn1 = bn()
        self.conv2 = conv_nd(hidden, hidden, kernel_size, **conv)
        self.bn2 = bn()
        self.act = _act(act)
        self.conv_final = conv_nd(hidden, 1, 1, bias=bias, **dd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for conv, bn in ((self.conv_reduce, self.bn_reduce), (self.conv1, self.bn1), (self.conv2, self.bn2)):
            x = conv(x)
            if bn is not None:
                x = bn(bn_guard(x, self.training))
            x = self.act(x)
        return self.conv_final(x)


#: Half-precision dtypes whose range a statistic can leave (float16 ends at 65,504; bfloat16 keeps float32's
#: range but not its precision over a long sum): statistics of such inputs are computed in float32.
HALF_DTYPES = (torch.float16, torch.bfloat16)


@leaf_call
def simam_energy(x: torch.Tensor, map_axes: tuple[int, ...], lam: float) -> torch.Tensor:
    """:class:`Energy`'s formula. A float16 or bfloat16 ``x`` is computed in float32 and the result cast back:
    the sum of squared deviations passes float16's largest value at activations of ordinary scale (|x| ~ 30 over
    a 14 x 14 map sums to ~176,000). The dtype test is one Python comparison; a float32 input runs the same ops
    as before. A host model traced with torch.fx records it as one call."""
    low = x.dtype in HALF_DTYPES
    y = x.float() if low else x
    positions = 1
    for d in map_axes:
        positions = positions * y.shape[d]
    n = positions - 1
    n = n + (n == 0)  # 1 on a map of one position; no Python branch on a (symbolic) shape under export
    deviation = (y - y.mean(dim=map_axes, keepdim=True)).pow(2)
    energy = deviation / (4 * (deviation.sum(dim=map_axes, keepdim=True) / n + lam)) + 0.5
    return energy.to(x.dtype) if low else energy


class Energy(nn.Module):
    """SimAM's parameter-free excitation, the inverse of each neuron's minimal energy:
    ``(x - mean)^2 / (4 * (var + lambda)) + 1/2`` with mean and var = sum((x - mean)^2) / (n - 1)
    over each map of n = H * W positions (L or D * H * W with ``spatial_dims`` = 1 or 3; n - 1 taken as 1
    on a map of one position, where the authors' code divides by zero)."""

    def __init__(self, lam: float = 1e-4, *, spatial_dims: int = 2) -> None:
        super().__init__()
        self.lam = lam
        self.map_axes = tuple(range(-spatial_dims, 0))  # the axes each map spans

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return simam_energy(x, self.map_axes, self.lam)

    def extra_repr(self) -> str:
        return f"lam={self.lam:g}" + ("" if len(self.map_axes) == 2 else f", spatial_dims={len(self.map_axes)}")


class StripMLP(nn.Module):
    """Coordinate attention's excitation: the H strip (B, C, H, 1) and the W strip (B, C, 1, W) through
    one shared 1x1 layer C -> hidden [+ BN] + activation, computed on both strips together (so
    BatchNorm's statistics cover both, as the official code's ``cat`` does), then a 1x1 layer
    hidden -> C of its own per direction (``fc_h``, ``fc_w``). Returns the excitations in their strip
    layouts. On 1-D and 3-D maps, one strip per spatial axis of ``axes``: ``fc_d``, ``fc_h``, ``fc_w`` on a
    3-D map, ``fc_l`` on a 1-D map (whose one strip is the map)."""

    def __init__(
        self,
        channels: int,
        hidden: int,
        *,
        axes: tuple[str, ...] = ("h", "w"),
        bias: bool = True,
        act: str = "relu",
        norm: str | None = None,
        bn_momentum: float = 0.1,
        bn_eps: float = 1e-5,
        device: torch.device | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        dd = {"device": device, "dtype": dtype}
        self.axes = tuple(axes)
        self.fc1 = nn.Conv1d(channels, hidden, 1, bias=bias, **dd)
        self.bn = nn.BatchNorm1d(hidden, eps=bn_eps, momentum=bn_momentum, **dd) if norm == "bn" else None
        self.act = _act(act)
        for axis in self.axes:
            self.add_module(f"fc_{axis}", nn.Conv1d(hidden, channels, 1, bias=bias, **dd))

    def forward(self, *strips: torch.Tensor) -> tuple[torch.Tensor, ...]:
        flat = [s.flatten(2) for s in strips]  # (B, C, length of the strip) each
        y = self.fc1(torch.cat(flat, dim=2) if len(flat) > 1 else flat[0])
        if self.bn is not None:
            y = self.bn(bn_guard(y, self.training))
        parts = torch.split(self.act(y), [f.shape[2] for f in flat], dim=2)
        # indexed, not iterated: a host model traced with torch.fx sees ``parts`` as one Proxy
        return tuple(getattr(self, f"fc_{axis}")(parts[i]).view_as(strips[i]) for i, axis in enumerate(self.axes))


class GroupNorm1(nn.GroupNorm):
    """GroupNorm with one group over a (B, C, H, W) map: each sample normalised over all of its values, then a
    per-channel scale and shift (timm's ``GroupNorm1``). It calls the ATen op directly: ``F.group_norm``
    refuses a map of a single value (one sample, one channel, 1x1), which the op normalises to 0."""

    def __init__(self, channels: int, *, eps: float = 1e-5, device: torch.device | None = None,
                 dtype: torch.dtype | None = None) -> None:
        super().__init__(1, channels, eps=eps, device=device, dtype=dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.group_norm(x, 1, self.weight, self.bias, self.eps, torch.backends.cudnn.enabled)


def _strip_conv1d(x: torch.Tensor, conv: nn.Module) -> torch.Tensor:
    """A depthwise conv along a strip, (B, C, L, 1) or (B, C, 1, L) (any strip of a 1-D, 2-D or 3-D map), run
    as the 1-D conv it is on (B, C, L): the same arithmetic as ``conv(x)``, without the 2-D conv's layout
    (inductor lays 2-D conv outputs out channels-last, then transposes them back inside the gate's loop)."""
    k = conv.weight[0, 0].numel()
    y = F.conv1d(x.flatten(2), conv.weight.view(-1, 1, k), conv.bias, padding=(k - 1) // 2, groups=conv.groups)
    return y.view_as(x)


class StripConv(nn.Module):
    """Strip attention's / ELA's excitation: a depthwise k-wide conv along each strip, one per direction
    (``conv_h`` on (B, C, H, 1), ``conv_w`` on (B, C, 1, W)), then [a norm per direction: BN, or
    GroupNorm with one group] and the activation. On 1-D and 3-D maps one per spatial axis of ``axes``
    (``conv_d``, ``conv_h``, ``conv_w`` with k x 1 x 1, 1 x k x 1, 1 x 1 x k kernels; ``conv_l``)."""

    def __init__(
        self,
        channels: int,
        kernel_size: int,
        *,
        axes: tuple[str, ...] = ("h", "w"),
        bias: bool = False,
        act: str = "identity",
        norm: str | None = None,
        bn_momentum: float = 0.1,
        bn_eps: float = 1e-5,
        device: torch.device | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        dd = {"device": device, "dtype": dtype}
        self.axes = tuple(axes)
        spatial_dims = len(self.axes)
        pad = (kernel_size - 1) // 2

        def make_norm() -> nn.Module | None:
            if norm == "bn":
                return BATCH_NORMS[spatial_dims](channels, eps=bn_eps, momentum=bn_momentum, **dd)
            if norm == "gn":
                return GroupNorm1(channels, eps=bn_eps, **dd)
            return None

        for i, axis in enumerate(self.axes):
            kernel = tuple(kernel_size if j == i else 1 for j in range(spatial_dims))
            padding = tuple(pad if j == i else 0 for j in range(spatial_dims))
            self.add_module(f"conv_{axis}", CONVS[spatial_dims](channels, channels, kernel, padding=padding,
                                                                groups=channels, bias=bias, **dd))
        for axis in self.axes:
            self.add_module(f"norm_{axis}", make_norm())
        self.bn_checked = norm == "bn"
        self.act = _act(act)

    def _one(self, x: torch.Tensor, conv: nn.Module, norm: nn.Module | None) -> torch.Tensor:
        x = _strip_conv1d(x, conv)
        if norm is not None:
            x = norm(bn_guard(x, self.training) if self.bn_checked else x)
        return self.act(x)

    def forward(self, *strips: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(self._one(x, getattr(self, f"conv_{axis}"), getattr(self, f"norm_{axis}"))
                     for axis, x in zip(self.axes, strips))


class AttentionPool(nn.Module):
    """Global context's attention pooling: a 1x1 conv C -> 1 gives one logit per position, a softmax over
    the positions weights them, and the weighted sum of x is the channel descriptor: ``(B, C, H, W) ->
    (B, C)``. The conv starts Kaiming-normal (fan in), as GCNet's code and timm initialise it (1-wide or
    1x1x1 on maps with ``spatial_dims`` = 1 or 3)."""

    def __init__(self, channels: int, *, spatial_dims: int = 2, device: torch.device | None = None,
                 dtype: torch.dtype | None = None):
        super().__init__()
        self.conv = CONVS[spatial_dims](channels, 1, 1, bias=True, device=device, dtype=dtype)
        nn.init.kaiming_normal_(self.conv.weight, mode="fan_in", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if _inductor_on_cpu(x):  # a compiled 1x1 conv copies x into a conv layout first; a channel sum reads x as is
            logits = (x * self.conv.weight).sum(1, keepdim=True) + self.conv.bias
        else:
            logits = self.conv(x)
        weights = torch.softmax(logits.flatten(2), dim=-1)  # (B, 1, HW)
        return torch.bmm(x.flatten(2), weights.transpose(1, 2)).flatten(1)


def dct_basis(frequencies: torch.Tensor, n: int) -> torch.Tensor:
    """Orthonormal DCT-II basis rows ``cos(pi * f * (t + 1/2) / n) / sqrt(n)`` (times sqrt(2) where f > 0),
    one per entry of ``frequencies``: ``(len(f), n)``, in float32. The angle is reduced exactly in
    integers first (period 4n in f * (2t + 1)), so it stays accurate at high frequencies."""
    t = torch.arange(n, device=frequencies.device)
    phase = (frequencies.unsqueeze(1) * (2 * t + 1)) % (4 * n)
    basis = torch.cos(phase.to(torch.float32) * (math.pi / 2) / n) * n ** -0.5
    return torch.where(frequencies.unsqueeze(1) == 0, basis, basis * math.sqrt(2))


class DCTPool(nn.Module):
    """FcaNet's multi-spectral pooling: channel c's descriptor is the 2-D DCT component of its map at the
    frequency (u, v) of its group, ``sum_hw x[c, h, w] * B_u(h) * B_v(w)``: ``(B, C, H, W) -> (B, C)``.

    ``selection`` names FcaNet's frequencies (``"top16"``: the 16 best of the paper's ablation, in a
    7x7 frequency space); the channels are split into that many equal groups (channel c takes
    frequency ``c * n // C``: FcaNet's split where n divides C). As FcaNet does for a DCT of size
    H x W, the 7x7 indices are scaled by ``H // 7`` and ``W // 7``; the basis is built for each map
    size as it comes (FcaNet fixes one size per stage: 56, 28, 14, 7 in its ResNets), so the module
    takes any input size without adaptive pooling. No parameters and no state.

    Other numbers of spatial dims (``spatial_dims``), with the orthonormal DCT-II along every axis: on a
    3-D map the component at (0, u, v) over (D, H, W), the selection on H x W and frequency 0 along the
    depth; on a 1-D map the component at u along L (the map taken as L x 1, where FcaNet's rule scales v by 1 // 7 = 0).
    """

    def __init__(self, channels: int, selection: str = "top16", *, spatial_dims: int = 2,
                 device: torch.device | None = None) -> None:
        super().__init__()
        kind, n = selection[:3], int(selection[3:])
        us, vs = (f[:n] for f in DCT_FREQUENCIES[kind])
        group = torch.tensor([c * n // channels for c in range(channels)], device=device)
        self.selection = selection
        self.spatial_dims = spatial_dims
        self.register_buffer("u", torch.tensor(us, device=device), persistent=False)  # (n,) 7x7 indices
        self.register_buffer("v", torch.tensor(vs, device=device), persistent=False)
        # channel c's row picks its group's frequency: a one-hot (C, n) matrix
        self.register_buffer("groups", F.one_hot(group, n).float(), persistent=False)
        self._filters: dict[tuple, torch.Tensor] = {}  # eager only: (sizes, dtype, device) -> (C, *sizes) filter

    def filter(self, *sizes: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """The (C, *sizes) DCT filter of each channel at this map size ((H, W); (L,) or (D, H, W) on other
        ranks). A dtype may also come last among the positional arguments: ``filter(h, w, dtype)``."""
        if sizes and isinstance(sizes[-1], torch.dtype):
            *sizes, dtype = sizes
        groups = self.groups.float()
        # each channel's basis rows, picked from the n frequencies' by a matmul: exact (one-hot), and a
        # compiler materialises them once per call instead of folding the cosines into the pooling loop
        if len(sizes) == 1:
            return (groups @ dct_basis(self.u * (sizes[0] // 7), sizes[0])).to(dtype)  # (C, L)
        h, w = sizes[-2:]
        basis_h = groups @ dct_basis(self.u * (h // 7), h)  # (C, H)
        basis_w = groups @ dct_basis(self.v * (w // 7), w)  # (C, W)
        filt = basis_h.unsqueeze(2) * basis_w.unsqueeze(1)
        if len(sizes) == 3:  # frequency 0 along the depth: the constant 1 / sqrt(D)
            filt = filt.unsqueeze(1).expand(-1, sizes[0], -1, -1) * sizes[0] ** -0.5
        return filt.to(dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        sizes = tuple(x.shape[2 + i] for i in range(self.spatial_dims))  # indexed: a traced shape cannot be iterated
        if all(isinstance(n, int) for n in sizes) and not torch.compiler.is_compiling():
            # eager: reuse the filter of this size (compiled, it is remade in each call, two small matmuls;
            # a host model traced with torch.fx records the computation)
            key = (sizes, x.dtype, x.device, self.u.device)
            filt = self._filters.get(key)
            if filt is None:
                if len(self._filters) >= 8:
                    self._filters.clear()
                filt = self._filters[key] = self.filter(*sizes, dtype=x.dtype)
        else:
            filt = self.filter(*sizes, dtype=x.dtype)
        return (x * filt).sum(dim=tuple(range(2, 2 + self.spatial_dims)))

    def extra_repr(self) -> str:
        shown_dims = "" if self.spatial_dims == 2 else f", spatial_dims={self.spatial_dims}"
        return f"selection={self.selection!r}{shown_dims}"
