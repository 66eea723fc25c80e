"""The names a spec may use, in one place, so that validation, docs and the CLI agree."""

from __future__ import annotations

#: Where the attention weights go. ``strip`` builds them from an H strip (B, C, H, 1) and a W
#: strip (B, C, 1, W): pooling along one axis (coordinate attention, strip pooling).
FEATURE_TARGETS = ("channel", "spatial", "element", "strip")
TARGETS = (*FEATURE_TARGETS, "kernel")

#: Pooling ops. ``none`` keeps every position (element target; spatial with a conv bottleneck).
#: ``std_unbiased`` divides by n - 1 (SRM); ``attn`` is global context's attention pooling (a
#: learned 1x1 conv, softmax over positions, weighted sum); ``dct`` is FcaNet's multi-spectral
#: pooling (2-D DCT components at the frequencies ``frequencies`` selects).
#: ``std_unbiased_eps`` is sqrt(that variance + 1e-5) (SRM's official code at its HEAD, f6221c7).
POOLS = ("avg", "max", "lse", "lp", "std", "std_unbiased", "attn", "dct", "std_unbiased_eps", "none")
#: Pooling ops with weights or a basis of their own: channel target only, no rotations.
MODULE_POOLS = ("attn", "dct")
#: Pooling ops a local ``extent`` (gather-excite) can gather with.
EXTENT_POOLS = ("avg", "max")

#: How several pooled descriptors merge: ``sum`` runs one shared excitation on each
#: descriptor and sums the results (CBAM's channel branch); ``concat`` stacks them as
#: input channels of the excitation (CBAM's spatial branch); ``mean`` averages the
#: descriptors before one excitation (timm's ``add_maxpool``). On target ``strip`` the two
#: strips merge: ``sum`` adds their excitations before one gate, ``prod`` gates each and
#: multiplies the gates (coordinate attention).
MERGES = ("sum", "concat", "mean", "prod")
MERGES_BY_TARGET: dict[str, tuple[str, ...]] = {
    "channel": ("sum", "concat", "mean"),
    "spatial": ("sum", "concat", "mean"),
    "element": ("sum", "concat", "mean"),
    "kernel": ("sum", "concat", "mean"),
    "strip": ("sum", "prod"),
}
#: A composite with ``merge`` runs its stages in parallel on the same input: their gate maps are
#: summed or multiplied (broadcast), then the composite's gate and fuse apply (BAM).
COMPOSITE_MERGES = ("sum", "prod")

#: How the weights w meet the feature map x: ``x * w``, ``x * (1 + w)`` (BAM), ``x + w`` (global
#: context's add fusion). With ``init="identity"`` w starts at the value that leaves x unchanged.
FUSES = ("mul", "mul_one_plus", "add")
FUSE_NEUTRAL = {"mul": 1.0, "mul_one_plus": 0.0, "add": 0.0}

#: Excitations, and the targets each can serve. ``conv1d_mlp``: a per-channel hidden layer
#: before ECA's conv (timm's ECA-MLP); ``channelwise``: each channel's descriptors weighted by
#: that channel's own weights (SRM's channel-wise fully connected layer); ``energy``: SimAM's
#: parameter-free energy, (x - mean)^2 / (4 (var + lambda)) + 1/2 over each map (lambda: ``energy_lambda``).
#: On target ``spatial``, ``linear`` is one 1x1 layer from the stage's input channels to one map (every
#: channel with ``pool="none"``: scSE's spatial squeeze), ``conv`` a k x k conv (or, unpooled, BAM's bottleneck).
EXCITES = ("mlp", "linear", "conv1d", "conv1d_mlp", "channelwise", "conv", "pixel_mlp", "energy", "none")
EXCITES_BY_TARGET: dict[str, tuple[str, ...]] = {
    "channel": ("mlp", "linear", "conv1d", "conv1d_mlp", "channelwise", "none"),
    "spatial": ("conv", "linear", "none"),
    "element": ("pixel_mlp", "conv", "energy", "none"),
    "kernel": ("mlp", "linear"),
    "strip": ("mlp", "conv", "none"),
}

GATES = ("sigmoid", "hard_sigmoid", "softmax", "tanh", "identity")
INITS = ("default", "identity")
#: Hidden-width rounding: ``floor`` (int(C / r)), ``nearest`` (timm's make_divisible with
#: round_limit=0), ``nearest_90`` (make_divisible's default: raised by one divisor where the
#: nearest multiple falls below 90% of C / r).
ROUNDINGS = ("floor", "nearest", "nearest_90")
#: BatchNorm, LayerNorm over the hidden channels (global context), GroupNorm with one group
#: (timm's ELA).
NORMS = (None, "bn", "ln", "gn")
#: Padding of a ``conv1d`` excitation: zeros (ECA) or circular (timm's CECA).
PADDING_MODES = ("zeros", "circular")

#: The heads of a kernel-target router: ``kernel`` mixes the expert kernels; ``in``,
#: ``out`` and ``spatial`` are ODConv's input-channel, output-channel and
#: kernel-position attentions; ``latent`` is DCD's dynamic channel fusion Phi (an L x L matrix per
#: sample, applied in a latent space of L channels: ``latent_dim``); ``cells`` is KernelWarehouse's
#: attention over the cells of a warehouse, one mixture per cell-sized piece of the kernel.
HEADS = ("kernel", "in", "out", "spatial", "latent", "cells")
#: KernelWarehouse: who shares a warehouse of kernel cells when ``insert_attention`` converts a model's
#: convs: each conv its own (``layer``), or the convs that read maps of one resolution (``stage``, the
#: official ``Warehouse_Manager``'s per-stage sharing). A conv built alone always has its own.
WAREHOUSE_SHARING = ("layer", "stage")
#: Gates of the scaling heads (``in``, ``out``, ``spatial``): ODConv's sigmoid, or DCD's
#: ``hard_sigmoid_x2`` (relu6(z + 3) / 3: in [0, 2], 1 at z = 0).
SCALE_GATES = ("sigmoid", "hard_sigmoid", "hard_sigmoid_x2")

#: Activation between the two layers of an excitation (the torch modules: ``dynattn.layers.ACT_MODULES``).
ACTS = ("relu", "relu6", "silu", "gelu", "hard_swish", "leaky_relu", "elu", "mish", "tanh", "sigmoid", "identity")

#: Activations with weights of their own, sized by the hidden width (``excite="mlp"`` only):
#: ``self_gate`` is DCD's SEModule_small, h * hard_sigmoid_x2(Linear(h)).
WEIGHTED_ACTS = ("self_gate",)

# Per-target defaults, applied when a field is left as None.
DEFAULT_POOL = {"channel": ("avg",), "spatial": ("max", "avg"), "element": ("none",), "kernel": ("avg",),
                "strip": ("avg",)}
DEFAULT_EXCITE = {"channel": "mlp", "spatial": "conv", "element": "pixel_mlp", "kernel": "mlp", "strip": "mlp"}
DEFAULT_MERGE = {"channel": "sum", "spatial": "concat", "element": "sum", "kernel": "sum", "strip": "prod"}
DEFAULT_GATE = {"channel": "sigmoid", "spatial": "sigmoid", "element": "sigmoid", "kernel": "softmax",
                "strip": "sigmoid"}
DEFAULT_KERNEL_SIZE = {"conv": 7, "conv1d": 3, "conv1d_mlp": 3}

#: FcaNet's frequency selections (cfzd/FcaNet ``get_freq_indices``): (u, v) indices in a 7x7 DCT
#: space, best first by the paper's single-frequency ablation (``top``), lowest first (``low``)
#: or worst first (``bot``); ``"top16"`` takes the first 16.
DCT_FREQUENCIES: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = {
    "top": ((0, 0, 6, 0, 0, 1, 1, 4, 5, 1, 3, 0, 0, 0, 3, 2, 4, 6, 3, 5, 5, 2, 6, 5, 5, 3, 3, 4, 2, 2, 6, 1),
            (0, 1, 0, 5, 2, 0, 2, 0, 0, 6, 0, 4, 6, 3, 5, 2, 6, 3, 3, 3, 5, 1, 1, 2, 4, 2, 1, 1, 3, 0, 5, 3)),
    "low": ((0, 0, 1, 1, 0, 2, 2, 1, 2, 0, 3, 4, 0, 1, 3, 0, 1, 2, 3, 4, 5, 0, 1, 2, 3, 4, 5, 6, 1, 2, 3, 4),
            (0, 1, 0, 1, 2, 0, 1, 2, 2, 3, 0, 0, 4, 3, 1, 5, 4, 3, 2, 1, 0, 6, 5, 4, 3, 2, 1, 0, 6, 5, 4, 3)),
    "bot": ((6, 1, 3, 3, 2, 4, 1, 2, 4, 4, 5, 1, 4, 6, 2, 5, 6, 1, 6, 2, 2, 4, 3, 3, 5, 5, 6, 2, 5, 5, 3, 6),
            (6, 4, 4, 6, 6, 3, 1, 4, 4, 5, 6, 5, 2, 2, 5, 1, 4, 3, 5, 0, 3, 1, 1, 2, 4, 2, 1, 1, 5, 3, 3, 3)),
}
DCT_SELECTIONS = tuple(f"{kind}{n}" for kind in DCT_FREQUENCIES for n in (1, 2, 4, 8, 16, 32))

#: The four axes of an NCHW feature map, as rotations name them.
AXES = ("b", "c", "h", "w")
#: The number of spatial dims a feature map may have: 1 (B, C, L: audio, signals), 2 (B, C, H, W:
#: images) or 3 (B, C, D, H, W: video, volumes).
SPATIAL_DIMS = (1, 2, 3)
#: The axes of a feature map by its number of spatial dims.
AXES_BY_SPATIAL_DIMS: dict[int, tuple[str, ...]] = {1: ("b", "c", "l"), 2: AXES, 3: ("b", "c", "d", "h", "w")}
#: The layout of a feature map by its number of spatial dims, as messages name it.
LAYOUTS = {1: "(B, C, L)", 2: "(B, C, H, W)", 3: "(B, C, D, H, W)"}

#: Every spec field and what it takes, for ``dynattn list --fields`` (validation checks the same names).
FIELD_VALUES: dict[str, str | tuple] = {
    "target": TARGETS,
    "pool": POOLS,
    "merge": MERGES,
    "excite": EXCITES,
    "reduction": "a number > 0",
    "width": "None or an int >= 1",
    "divisor": "an int >= 1",
    "rounding": ROUNDINGS,
    "min_width": "None or an int >= 1",
    "bias": (True, False),
    "act": (*ACTS, *WEIGHTED_ACTS),
    "norm": NORMS,
    "bn_momentum": "a number in [0, 1]",
    "bn_eps": "None or a number > 0 (a norm's eps)",
    "energy_lambda": "None or a number > 0 (SimAM's lambda, excite='energy')",
    "kernel_size": "an odd int, or 'adaptive' (conv1d, conv1d_mlp)",
    "gamma": "a number > 0",
    "beta": "a number",
    "kernel_min": "an odd int >= 1",
    "dilation": "an int >= 1",
    "padding_mode": PADDING_MODES,
    "extent": "0, or an int >= 2",
    "frequencies": "top, low or bot, then 1, 2, 4, 8, 16 or 32 (FcaNet's selections)",
    "gate": GATES,
    "temperature": "a number > 0",
    "fuse": FUSES,
    "init": INITS,
    "experts": "an int >= 1",
    "heads": HEADS,
    "scale_gate": SCALE_GATES,
    "latent_dim": "None (the integer square root of the router's input width) or an int >= 1 (heads with 'latent')",
    "pool_grid": "an int >= 1: the router averages over a g x g grid (DCD's basic block: 2), kernel target",
    "budget": "KernelWarehouse's cells per kernel cell (heads=('cells',)): an int >= 1 (1x, 4x) or 1/k (0.5, 0.25)",
    "cell_in_ratio": "a number in (0, 1]: a cell's input channels / the gcd of the warehouse's (heads=('cells',))",
    "cell_out_ratio": "a number in (0, 1]: a cell's output channels / the gcd of the warehouse's (heads=('cells',))",
    "sharing": WAREHOUSE_SHARING,
    "branches": "einops rotations 'b c h w -> b h c w'",
    "stages": "AttnSpec stages (merge=None: in sequence; 'sum' / 'prod': in parallel)",
    "name": "None or a Python identifier",
    "reference": "None or a string",
}
