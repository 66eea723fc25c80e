"""Presets: the published attention modules as specs, each naming the reference it follows.

Every preset returns a plain :class:`~dynattn.spec.AttnSpec`, so a preset is a starting
point (``AttnSpec.cbam().replace(...)`` or a stage swapped out), not a class of its own.
``flavor`` picks between references where they disagree on numerics:

- ``"official"``: the paper's formula as its authors' code computes it.
- ``"timm"``: the module of ``timm.layers``, reproduced to float rounding with its
  weights copied in (see :func:`dynattn.interop.load_timm_weights`).

Each preset is one function, written once: it is also ``AttnSpec.<name>`` (attached at the end
of this file), so ``AttnSpec.odconv(...)`` and ``get_spec("odconv", ...)`` take the same
arguments by construction.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any

from .errors import SpecError
from .spec import AttnSpec

__all__ = [
    "se", "eca", "cbam", "gam", "triplet", "condconv", "dyconv", "odconv", "get_spec", "list_presets", "PRESETS",
    "as_spec",
]

_FLAVORS = {
    "se": ("official", "timm"),
    "eca": ("official", "timm"),
    "cbam": ("official", "timm"),
    "gam": ("official",),
    "triplet": ("official",),
    "condconv": ("official",),
    "dyconv": ("official",),
    "odconv": ("official",),
}


def _flavor(preset: str, flavor: str) -> str:
    if flavor not in _FLAVORS[preset]:
        raise SpecError("flavor", flavor, f"unknown flavor of AttnSpec.{preset}()", _FLAVORS[preset])
    return flavor


def se(reduction: float = 16, *, flavor: str = "official", init: str = "default") -> AttnSpec:
    """Squeeze-and-Excitation: avg pool, MLP C -> C/r -> C with ReLU, sigmoid, channel scale.

    - ``official``: Hu et al., "Squeeze-and-Excitation Networks", CVPR 2018
      (arXiv:1709.01507), as in the authors' SE-ResNet: FC layers with bias, hidden
      width ``C // reduction``.
    - ``timm``: ``timm.layers.SEModule`` defaults: hidden width rounded to the nearest
      multiple of 8 (at least 8), 1x1 convs with bias.
    """
    if _flavor("se", flavor) == "timm":
        return AttnSpec(
            pool=("avg",), target="channel", excite="mlp", reduction=reduction, divisor=8,
            rounding="nearest", bias=True, gate="sigmoid", init=init, name="SE",
            reference="timm.layers.SEModule",
        )
    return AttnSpec(
        pool=("avg",), target="channel", excite="mlp", reduction=reduction, rounding="floor",
        bias=True, gate="sigmoid", init=init, name="SE",
        reference="Hu et al. 2018, Squeeze-and-Excitation Networks (arXiv:1709.01507)",
    )


def eca(
    kernel_size: int | str = "adaptive",
    *,
    gamma: float = 2,
    beta: float = 1,
    flavor: str = "official",
    init: str = "default",
) -> AttnSpec:
    """Efficient Channel Attention: avg pool, 1-D conv across channels (no bias), sigmoid.

    The adaptive kernel size is ``t if t is odd else t + 1`` with
    ``t = int(|log2(C) + beta| / gamma)``. The paper writes ``|t|_odd`` (nearest odd),
    which is ambiguous where t is an even integer (C = 8, 128, ...); the official code,
    and this preset, round up there.

    - ``official``: Wang et al., "ECA-Net", CVPR 2020 (arXiv:1910.03151), the rule of the
      authors' ECANet code; pass an int ``kernel_size`` for their fixed-k ResNet models.
    - ``timm``: ``timm.layers.EcaModule(channels=C)``: the same rule, but at least 3.
    """
    adaptive = kernel_size == "adaptive"
    common = dict(
        pool=("avg",), target="channel", excite="conv1d", kernel_size=kernel_size, bias=False,
        gate="sigmoid", init=init, name="ECA",
    )
    if not adaptive and (gamma, beta) != (2, 1):
        raise SpecError("gamma, beta", (gamma, beta), "only shape ECA's adaptive kernel",
                        hint="pass kernel_size='adaptive' or leave gamma and beta alone")
    if _flavor("eca", flavor) == "timm":
        if not adaptive:
            raise SpecError("kernel_size", kernel_size,
                            "AttnSpec.eca(flavor='timm') follows EcaModule(channels=C), which always uses the "
                            "adaptive rule", ("adaptive",))
        return AttnSpec(**common, gamma=gamma, beta=beta, kernel_min=3, reference="timm.layers.EcaModule")
    extra = dict(gamma=gamma, beta=beta) if adaptive else {}
    return AttnSpec(
        **common, **extra,
        reference="Wang et al. 2020, ECA-Net (arXiv:1910.03151), BangguWu/ECANet",
    )


def cbam(
    reduction: float = 16, kernel_size: int = 7, *, flavor: str = "official", init: str = "default"
) -> AttnSpec:
    """CBAM: channel attention (avg and max through one shared MLP, summed) then spatial
    attention (channel-wise max and mean, k x k conv, BN).

    - ``official``: Woo et al., "CBAM", ECCV 2018 (arXiv:1807.06521), as the authors'
      Jongchan/attention-module computes it: MLP with bias, hidden ``C // reduction``;
      spatial input ``cat([max, mean])``, conv without bias, BN(momentum=0.01).
    - ``timm``: ``timm.layers.cbam.CbamModule``: MLP without bias, hidden width
      ``round(C / reduction)`` (at least 1); spatial input ``cat([mean, max])``,
      conv without bias, BN(momentum=0.1).
    """
    timm = _flavor("cbam", flavor) == "timm"
    channel = AttnSpec(
        pool=("avg", "max"), target="channel", excite="mlp", merge="sum", reduction=reduction,
        rounding="nearest" if timm else "floor", bias=not timm, gate="sigmoid", init=init,
        name="channel",
    )
    spatial = AttnSpec(
        pool=("avg", "max") if timm else ("max", "avg"), target="spatial", excite="conv",
        merge="concat", kernel_size=kernel_size, bias=False, norm="bn",
        bn_momentum=0.1 if timm else 0.01, gate="sigmoid", init=init, name="spatial",
    )
    reference = ("timm.layers.cbam.CbamModule" if timm else
                 "Woo et al. 2018, CBAM (arXiv:1807.06521), Jongchan/attention-module")
    return AttnSpec(stages=(channel, spatial), name="CBAM", reference=reference)


def gam(rate: float = 4, kernel_size: int = 7, *, flavor: str = "official", init: str = "default") -> AttnSpec:
    """Global Attention Mechanism: a per-pixel channel MLP, then two k x k convs; no pooling.

    ``official``: Liu et al., "Global Attention Mechanism: Retain Information to Enhance
    Channel-Spatial Interactions" (arXiv:2112.05561): channel submodule
    ``sigmoid(MLP(permute(x)))`` with MLP C -> int(C / rate) -> C (bias, ReLU); spatial
    submodule ``sigmoid(BN(conv(ReLU(BN(conv(x))))))`` with k x k convs
    C -> int(C / rate) -> C (bias). Both gates are element-wise (B, C, H, W).
    """
    _flavor("gam", flavor)
    channel = AttnSpec(
        pool=("none",), target="element", excite="pixel_mlp", reduction=rate, bias=True,
        gate="sigmoid", init=init, name="channel",
    )
    spatial = AttnSpec(
        pool=("none",), target="element", excite="conv", kernel_size=kernel_size, reduction=rate,
        bias=True, norm="bn", gate="sigmoid", init=init, name="spatial",
    )
    return AttnSpec(stages=(channel, spatial), name="GAM",
                    reference="Liu et al. 2021, GAM (arXiv:2112.05561)")


#: Triplet attention's three branches: (C, W) seen by the conv, (H, C), and (H, W).
TRIPLET_ROTATIONS = ("b c h w -> b h c w", "b c h w -> b w h c", "b c h w -> b c h w")


def triplet(
    kernel_size: int = 7, *, no_spatial: bool = False, flavor: str = "official", init: str = "default"
) -> AttnSpec:
    """Triplet attention: one spatial gate (Z-pool ``cat([max, mean])``, k x k conv without
    bias, BN, sigmoid) under three axis rotations, each with its own weights, averaged.

    ``official``: Misra et al., "Rotate to Attend: Convolutional Triplet Attention
    Module", WACV 2021 (arXiv:2010.03045), as landskape-ai/triplet-attention computes it:
    BN(eps=1e-5, momentum=0.01); ``no_spatial=True`` drops the plain (H, W) branch and
    averages the other two.
    """
    _flavor("triplet", flavor)
    rotations = TRIPLET_ROTATIONS[:2] if no_spatial else TRIPLET_ROTATIONS
    return AttnSpec(
        pool=("max", "avg"), target="spatial", excite="conv", merge="concat", kernel_size=kernel_size,
        bias=False, norm="bn", bn_momentum=0.01, gate="sigmoid", branches=rotations, init=init,
        name="Triplet",
        reference="Misra et al. 2021, Triplet attention (arXiv:2010.03045), landskape-ai/triplet-attention",
    )


def condconv(experts: int = 4, *, flavor: str = "official", init: str = "default") -> AttnSpec:
    """CondConv: W = sum_k r_k W_k with r = sigmoid(Linear(avgpool(x))), one linear layer with bias.

    ``official``: Yang et al., "CondConv: Conditionally Parameterized Convolutions for
    Efficient Inference", NeurIPS 2019 (arXiv:1904.04971), as the TPU reference code and
    timm's ``CondConvResidual`` route (``timm.layers.CondConv2d`` takes those weights). The
    routing weights do not sum to one: upcycling a conv starts them at 1/K (see
    ``init="identity"``).
    """
    _flavor("condconv", flavor)
    return AttnSpec(
        pool=("avg",), target="kernel", excite="linear", bias=True, gate="sigmoid", experts=experts,
        heads=("kernel",), init=init, name="CondConv",
        reference="Yang et al. 2019, CondConv (arXiv:1904.04971)",
    )


def dyconv(
    experts: int = 4,
    temperature: float = 30.0,
    *,
    reduction: float = 4,
    flavor: str = "official",
    init: str = "default",
) -> AttnSpec:
    """Dynamic convolution: W = sum_k pi_k W_k with pi = softmax(MLP(avgpool(x)) / T).

    ``official``: Chen et al., "Dynamic Convolution: Attention over Convolution Kernels",
    CVPR 2020 (arXiv:1912.03458): MLP C -> C/4 -> K with ReLU, temperature annealed from 30
    to 1 over the first epochs (:class:`dynattn.TemperatureSchedule`). As in the widely used
    kaijieshi7/Dynamic-convolution-Pytorch code the router has no bias (that code starts T
    at 34 and steps by 3); the hidden width is at least 4 (that code uses K for RGB input).
    """
    _flavor("dyconv", flavor)
    return AttnSpec(
        pool=("avg",), target="kernel", excite="mlp", reduction=reduction, min_width=4, bias=False,
        act="relu", gate="softmax", temperature=temperature, experts=experts, heads=("kernel",), init=init,
        name="DyConv", reference="Chen et al. 2020, Dynamic Convolution (arXiv:1912.03458)",
    )


def odconv(
    experts: int = 4,
    temperature: float = 1.0,
    *,
    reduction: float = 16,
    min_width: int = 16,
    norm: str | None = None,
    flavor: str = "official",
    init: str = "default",
) -> AttnSpec:
    """ODConv: four heads from one router: the kernel mixing weights (softmax), and sigmoid
    attentions over input channels, output channels and kernel positions.

    ``official``: Li et al., "Omni-Dimensional Dynamic Convolution", ICLR 2022
    (arXiv:2209.07947), OSVAI/ODConv: hidden width ``max(int(C / 16), 16)``, ReLU, every
    head's logits divided by the temperature; the input- and output-channel attentions
    scale the feature maps (equivalent, and cheaper); the spatial head is dropped for 1x1
    kernels, the output head for depthwise convs, the kernel head for K = 1. The official
    router has BatchNorm after its first layer, which fails at batch size 1 in training and
    couples the samples of a batch; it is off here (``norm=None``, with a bias in its
    place) and ``norm="bn"`` restores it.
    """
    _flavor("odconv", flavor)
    return AttnSpec(
        pool=("avg",), target="kernel", excite="mlp", reduction=reduction, min_width=min_width, bias=True,
        act="relu", norm=norm, gate="softmax", temperature=temperature, experts=experts,
        heads=("kernel", "in", "out", "spatial"), init=init, name="ODConv",
        reference="Li et al. 2022, ODConv (arXiv:2209.07947), OSVAI/ODConv",
    )


PRESETS: dict[str, Callable[..., AttnSpec]] = {
    "se": se,
    "eca": eca,
    "cbam": cbam,
    "gam": gam,
    "triplet": triplet,
    "condconv": condconv,
    "dyconv": dyconv,
    "odconv": odconv,
}


def list_presets() -> tuple[str, ...]:
    """The preset names :func:`get_spec` accepts."""
    return tuple(PRESETS)


def get_spec(name: str, **kwargs: object) -> AttnSpec:
    """A preset by name, e.g. ``get_spec("cbam", flavor="timm")``."""
    key = name.lower() if isinstance(name, str) else name
    if key not in PRESETS:
        raise SpecError("preset", name, "unknown preset name", tuple(PRESETS))
    return PRESETS[key](**kwargs)  # a misspelt argument: SpecError with the closest one


def as_spec(spec: AttnSpec | str) -> AttnSpec:
    """``spec`` itself, or the preset of that name."""
    if isinstance(spec, AttnSpec):
        return spec
    if isinstance(spec, str):
        return get_spec(spec)
    raise SpecError("spec", spec, "must be an AttnSpec or a preset name", hint="e.g. AttnSpec.se() or 'cbam'")


def _checked(name: str, fn: Callable[..., AttnSpec]) -> Callable[..., AttnSpec]:
    """``fn`` with a misspelt keyword answered as ``SpecError`` naming the closest argument."""
    params = tuple(inspect.signature(fn).parameters)

    @functools.wraps(fn)
    def preset(*args: Any, **kwargs: Any) -> AttnSpec:
        for key in kwargs:
            if key not in params:
                raise SpecError(f"AttnSpec.{name}", key, "takes no such argument", params)
        return fn(*args, **kwargs)

    return preset


def _attach(name: str, fn: Callable[..., AttnSpec]) -> None:
    if name in {f for f in AttnSpec.__dataclass_fields__} or name in vars(AttnSpec):
        raise AssertionError(f"preset {name!r} would shadow AttnSpec.{name}")
    setattr(AttnSpec, name, staticmethod(fn))


for _name, _fn in list(PRESETS.items()):  # AttnSpec.se(), AttnSpec.cbam(), ...: one function each
    PRESETS[_name] = _checked(_name, _fn)
    _attach(_name, PRESETS[_name])
