"""The names a spec may use, in one place, so that validation, docs and the CLI agree."""

from __future__ import annotations

from torch import nn

#: Where the attention weights go.
FEATURE_TARGETS = ("channel", "spatial", "element")
TARGETS = (*FEATURE_TARGETS, "kernel")

#: Pooling ops. ``none`` keeps every position (element target only).
POOLS = ("avg", "max", "lse", "lp", "std", "none")

#: How several pooled descriptors merge: ``sum`` runs one shared excitation on each
#: descriptor and sums the results (CBAM's channel branch); ``concat`` stacks them as
#: input channels of the excitation (CBAM's spatial branch); ``mean`` averages the
#: descriptors before one excitation (timm's ``add_maxpool``).
MERGES = ("sum", "concat", "mean")

#: Excitations, and the targets each can serve.
EXCITES = ("mlp", "linear", "conv1d", "conv", "pixel_mlp", "none")
EXCITES_BY_TARGET: dict[str, tuple[str, ...]] = {
    "channel": ("mlp", "linear", "conv1d", "none"),
    "spatial": ("conv", "none"),
    "element": ("pixel_mlp", "conv", "none"),
    "kernel": ("mlp", "linear"),
}

GATES = ("sigmoid", "hard_sigmoid", "softmax", "tanh", "identity")
INITS = ("default", "identity")
ROUNDINGS = ("floor", "nearest")
NORMS = (None, "bn")

#: The heads of a kernel-target router: ``kernel`` mixes the expert kernels; ``in``,
#: ``out`` and ``spatial`` are ODConv's input-channel, output-channel and
#: kernel-position attentions.
HEADS = ("kernel", "in", "out", "spatial")

#: Activation between the two layers of an excitation.
ACTS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "relu6": nn.ReLU6,
    "silu": nn.SiLU,
    "gelu": nn.GELU,
    "hard_swish": nn.Hardswish,
    "leaky_relu": nn.LeakyReLU,
    "elu": nn.ELU,
    "mish": nn.Mish,
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
    "identity": nn.Identity,
}

# Per-target defaults, applied when a field is left as None.
DEFAULT_POOL = {"channel": ("avg",), "spatial": ("max", "avg"), "element": ("none",), "kernel": ("avg",)}
DEFAULT_EXCITE = {"channel": "mlp", "spatial": "conv", "element": "pixel_mlp", "kernel": "mlp"}
DEFAULT_MERGE = {"channel": "sum", "spatial": "concat", "element": "sum", "kernel": "sum"}
DEFAULT_GATE = {"channel": "sigmoid", "spatial": "sigmoid", "element": "sigmoid", "kernel": "softmax"}
DEFAULT_KERNEL_SIZE = {"conv": 7, "conv1d": 3}

#: The four axes of an NCHW feature map, as rotations name them.
AXES = ("b", "c", "h", "w")
