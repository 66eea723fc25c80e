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
    "se", "eca", "cbam", "gam", "triplet", "condconv", "dyconv", "odconv", "dcd", "kw", "ese", "ecam", "ceca", "ge",
    "gc", "gca", "lcbam", "coord", "scoord", "ela", "strip", "simam", "bam", "srm", "fca", "scse", "get_spec",
    "list_presets", "PRESETS", "as_spec", "TIMM_ATTENTIONS",
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
    "dcd": ("official",),
    "kw": ("official",),
    "ese": ("official", "timm"),
    "ecam": ("timm",),
    "ceca": ("timm",),
    "ge": ("official", "timm"),
    "gc": ("official", "timm"),
    "gca": ("official", "timm"),
    "lcbam": ("timm",),
    "coord": ("official", "timm"),
    "scoord": ("timm",),
    "ela": ("timm",),
    "strip": ("timm",),
    "simam": ("official",),
    "bam": ("official", "paper"),
    "srm": ("official",),
    "fca": ("official",),
    "scse": ("official", "smp"),
}

#: The lightweight attentions ``timm.layers.create_attn`` names (``get_attn``); each is a preset of
#: the same name whose ``flavor="timm"`` reproduces that timm module.
TIMM_ATTENTIONS = ("se", "ese", "eca", "ecam", "ceca", "ge", "gc", "gca", "cbam", "lcbam", "coord", "scoord", "ela",
                   "strip")


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
    CVPR 2020 (arXiv:1912.03458), the paper's router: average pooling, FC C -> C/4, ReLU,
    FC -> K, softmax of the logits over the temperature, annealed from 30 to 1 over the first
    epochs (:class:`dynattn.TemperatureSchedule`). The paper states no biases; this router has
    none, and a hidden width of ``int(C / 4)``, at least 4.

    The widely used kaijieshi7/Dynamic-convolution-Pytorch code differs: only its first commits
    had a router without biases; its current ``attention2d`` has ``fc1`` without a bias but ``fc2``
    with one, a hidden width of ``int(C * 0.25) + 1`` (K for an RGB input), and a temperature
    that starts at 34 and steps down by 3. ``AttnSpec.dyconv().replace(...)`` cannot give fc1 and
    fc2 different biases, so that code is not reproduced exactly.
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


def dcd(
    pool_grid: int = 1,
    *,
    latent_dim: int | None = None,
    reduction: float = 16,
    min_width: int | None = None,
    flavor: str = "official",
    init: str = "default",
) -> AttnSpec:
    """DCD, dynamic convolution decomposition: W(x) = Lambda(x) W0 + P Phi(x) Q^T, one static kernel W0 whose
    output channels are scaled per sample (Lambda) plus a dynamic channel fusion Phi in a latent space of L
    channels (L = int(sqrt(C_in)) by default), instead of K expert kernels.

    ``official``: Li et al., "Revisiting Dynamic Convolution via Matrix Decomposition", ICLR 2021
    (arXiv:2103.08756), liyunsheng13/dcd's ``conv_dy`` (``pool_grid=2``: ``conv_basic_dy``, its ResNet
    basic block's 3x3 convs, which average x over a 2 x 2 grid, so L = int(sqrt(4 C_in))). Its router:
    pooling, a linear layer to ``C // 16`` (hidden width; ``conv_basic_dy`` keeps at least 4: ``min_width``
    None gives 1 and 4), DCD's ``SEModule_small`` (``act="self_gate"``), then one linear layer to Lambda's
    logits (gate relu6(z + 3) / 3, 1 at z = 0: ``scale_gate="hard_sigmoid_x2"``) and Phi (no gate), no
    biases, no temperature. The latent path is ``p(bn2(Phi bn1(q(x))) + bn1(q(x)))`` with q, p 1x1 convs (see
    :mod:`dynattn.dynamic_conv.latent`); the official weights load with :func:`dynattn.interop.load_dcd_weights`.
    ``conv_dy`` has a hidden width of 0 for C_in < 16 (a layer that cannot train); here it is at least 1.

    ``init="identity"`` (and ``from_conv``, which sets it): Lambda starts at 1 and the latent path's last 1x1
    conv at zero, so an upcycled conv gives the static conv's output.
    """
    _flavor("dcd", flavor)
    return AttnSpec(
        pool=("avg",), target="kernel", excite="mlp", reduction=reduction,
        min_width=min_width if min_width is not None else (4 if pool_grid > 1 else 1), bias=False,
        act="self_gate", experts=1, heads=("out", "latent"), scale_gate="hard_sigmoid_x2", latent_dim=latent_dim,
        pool_grid=pool_grid, init=init, name="DCD",
        reference="Li et al. 2021, DCD (arXiv:2103.08756), liyunsheng13/dcd",
    )


def kw(
    budget: float = 1.0,
    *,
    cell_ratio: float | None = None,
    sharing: str = "stage",
    reduction: float = 16,
    temperature: float = 1.0,
    flavor: str = "official",
    init: str = "default",
) -> AttnSpec:
    """KernelWarehouse: each kernel is split into cells (1 x 1 in space, ``cell_ratio`` times the greatest common
    divisor of the warehouse's channel counts), and each cell-sized piece of a kernel is a mixture, per sample, of
    the cells of a warehouse that the convs of a stage share (``sharing="stage"``; ``"layer"``: one each). The
    warehouse holds ``budget`` times as many cells as its convs' kernels are split into: ``budget=1`` (1x) about the
    static network's parameters, ``4`` (4x), ``0.5`` (1/2x, ``cell_ratio`` 0.5 by default below 1x).

    ``official``: Li and Yao, "KernelWarehouse: Rethinking the Design of Dynamic Convolution", ICML 2024
    (arXiv:2406.07879), OSVAI/KernelWarehouse's ``KWconvNd`` and ``Warehouse_Manager`` (configs/resnet18:
    ``kw1x``, ``kw4x``, ``kw1d2x``). Its ``Attention``: average pooling, a linear layer to
    ``max(int(C / reduction), 16)`` units, BatchNorm, ReLU, a linear layer with bias to ``M + 1`` logits per
    mixture (M cells and a zero cell), each mixture's logits divided by the sum of their absolute values (+ 1e-3),
    then blended toward a fixed one-hot (each mixture's own cell) by the ``temperature`` t (official schedule:
    1 -> 0 linearly over the first 20 epochs): ``(1 - t) a + t one_hot``. ``init="identity"`` (and ``from_conv``,
    which sets it) starts t at 1, where each kernel is its own cells': an upcycled conv's output, exactly at budgets
    >= 1. See :mod:`dynattn.dynamic_conv.warehouse`.
    Differences: the first linear layer has a bias (as ODConv's preset with ``norm="bn"``; redundant before the
    BatchNorm, zero in the official weights); the official ``nonlocal_basis_ratio`` and
    ``spatial_partition=False`` options are not offered (off in every official config).
    """
    _flavor("kw", flavor)
    ratio = cell_ratio if cell_ratio is not None else (1.0 if budget >= 1 else 0.5)
    return AttnSpec(
        pool=("avg",), target="kernel", excite="mlp", reduction=reduction, min_width=16, bias=True, act="relu",
        norm="bn", experts=1, heads=("cells",), budget=budget, cell_in_ratio=ratio, cell_out_ratio=ratio,
        sharing=sharing, temperature=temperature, init=init, name="KernelWarehouse",
        reference="Li & Yao 2024, KernelWarehouse (arXiv:2406.07879), OSVAI/KernelWarehouse",
    )


# ---------------------------------------------------------------------------- timm's attention zoo
def ese(*, flavor: str = "official", init: str = "default") -> AttnSpec:
    """Effective Squeeze-Excitation: average pooling, one 1x1 layer C -> C with bias (no reduction), hard
    sigmoid ``relu6(z + 3) / 6``, channel scale.

    - ``official``: Lee & Park, "CenterMask: Real-Time Anchor-Free Instance Segmentation", CVPR 2020
      (arXiv:1911.06667), the eSE module of youngwanLEE/CenterMask's VoVNetV2.
    - ``timm``: ``timm.layers.EffectiveSEModule``: the same numerics.
    """
    timm = _flavor("ese", flavor) == "timm"
    return AttnSpec(
        pool=("avg",), target="channel", excite="linear", bias=True, gate="hard_sigmoid", init=init, name="ESE",
        reference="timm.layers.EffectiveSEModule" if timm else
        "Lee & Park 2020, CenterMask eSE (arXiv:1911.06667), youngwanLEE/CenterMask",
    )


def ecam(*, flavor: str = "timm", init: str = "default") -> AttnSpec:
    """ECA with an MLP, a timm experiment (``EcaModule(channels=C, use_mlp=True)``; timm's code marks it
    "not in paper", so timm is its reference): average pooling, each channel's value through a
    1x1 layer 1 -> hidden with bias and ReLU, then ECA's k-wide conv hidden -> 1 with bias, sigmoid.
    Hidden ``make_divisible(C / 8, 8)`` (timm's default 0.9 round limit); k by ECA's rule, at least 3.
    """
    _flavor("ecam", flavor)
    return AttnSpec(
        pool=("avg",), target="channel", excite="conv1d_mlp", kernel_size="adaptive", kernel_min=3, reduction=8,
        divisor=8, rounding="nearest_90", bias=True, act="relu", gate="sigmoid", init=init, name="ECAM",
        reference="timm.layers.EcaModule(use_mlp=True)",
    )


def ceca(*, flavor: str = "timm", init: str = "default") -> AttnSpec:
    """Circular ECA, a timm variant (``timm.layers.CecaModule``, by Chris Ha): ECA whose channel conv pads
    circularly, so the first and last channels are neighbours; k by ECA's rule, at least 3; no bias.
    """
    _flavor("ceca", flavor)
    return AttnSpec(
        pool=("avg",), target="channel", excite="conv1d", kernel_size="adaptive", kernel_min=3, bias=False,
        padding_mode="circular", gate="sigmoid", init=init, name="CECA", reference="timm.layers.CecaModule",
    )


def ge(extent: int = 0, *, flavor: str = "official", init: str = "default") -> AttnSpec:
    """Gather-Excite: gather context by average pooling over a local ``extent`` (0: the whole map; e: windows
    of 2e - 1 with stride e), excite, resize the gate back to H x W by nearest neighbours, sigmoid, scale.

    - ``official``: Hu et al., "Gather-Excite: Exploiting Feature Context in Convolutional Neural
      Networks", NeurIPS 2018 (arXiv:1810.12348), the parameter-free GE-theta-minus: the gathered
      average itself through the sigmoid (the authors' partial Caffe code, hujie-frank/GENet, has no
      complete module).
    - ``timm``: ``timm.layers.GatherExcite(C, extent=e)``: an MLP C -> C/16 -> C (1x1 convs with bias,
      ReLU, hidden rounded to the nearest integer) between gather and gate; ``extent`` even, as timm
      asserts.
    """
    timm = _flavor("ge", flavor) == "timm"
    if timm and extent % 2:
        raise SpecError("extent", extent, "timm's GatherExcite takes 0 or an even extent", (0, 2, 4, 8))
    common = dict(pool=("avg",), target="channel", extent=extent, gate="sigmoid", init=init, name="GE")
    if timm:
        return AttnSpec(**common, excite="mlp", reduction=16, rounding="nearest", bias=True, act="relu",
                        reference="timm.layers.GatherExcite")
    return AttnSpec(**common, excite="none",
                    reference="Hu et al. 2018, Gather-Excite GE-theta-minus (arXiv:1810.12348)")


def _global_context(preset: str, fuse_add: bool, reduction: float | None, flavor: str, init: str) -> AttnSpec:
    timm = _flavor(preset, flavor) == "timm"
    if timm:  # rd_ratio 1/8, make_divisible(divisor=1, round_limit=0), LayerNorm2d(eps=1e-6)
        hidden = dict(reduction=8 if reduction is None else reduction, rounding="nearest", bn_eps=1e-6)
        reference = "timm.layers.GlobalContext" + ("(fuse_add=True, fuse_scale=False)" if fuse_add else "")
    else:  # planes = int(C * ratio), LayerNorm([planes, 1, 1]) with torch's eps
        hidden = dict(reduction=16 if reduction is None else reduction, rounding="floor", bn_eps=1e-5)
        reference = "Cao et al. 2019, GCNet (arXiv:1904.11492), xvjiarui/GCNet ContextBlock"
    add = fuse_add or not timm
    return AttnSpec(
        pool=("attn",), target="channel", excite="mlp", **hidden, bias=True, act="relu", norm="ln",
        gate="identity" if add else "sigmoid", fuse="add" if add else "mul", init=init,
        name="GCA" if preset == "gca" else "GC", reference=reference,
    )


def gc(reduction: float | None = None, *, flavor: str = "official", init: str = "default") -> AttnSpec:
    """Global context: attention pooling (a 1x1 conv C -> 1, softmax over positions, weighted sum of x), a
    bottleneck C -> C/r -> C of 1x1 layers with LayerNorm and ReLU between, then fused with x.

    - ``official``: Cao et al., "GCNet: Non-local Networks Meet Squeeze-Excitation Networks and Beyond",
      ICCVW 2019 (arXiv:1904.11492), xvjiarui/GCNet's ``ContextBlock`` with its defaults: fusion by
      addition (``channel_add``), ``x + transform(context)``; r = 16 (``int(C / 16)``), LayerNorm eps 1e-5.
    - ``timm``: ``timm.layers.GlobalContext(C)``: fusion by scaling, ``x * sigmoid(transform(context))``;
      r = 8 rounded to the nearest integer, LayerNorm eps 1e-6.
    """
    return _global_context("gc", False, reduction, flavor, init)


def gca(reduction: float | None = None, *, flavor: str = "official", init: str = "default") -> AttnSpec:
    """Global context fused by addition, ``x + transform(context)`` (see :func:`gc`).

    - ``official``: GCNet's block as its paper and ``ContextBlock`` define it (the same spec as
      ``gc(flavor="official")``).
    - ``timm``: ``timm.layers.GlobalContext(C, fuse_add=True, fuse_scale=False)`` (``get_attn("gca")``).
    """
    return _global_context("gca", True, reduction, flavor, init)


def lcbam(reduction: float = 16, kernel_size: int = 7, *, flavor: str = "timm", init: str = "default") -> AttnSpec:
    """Light CBAM, a timm experiment (``timm.layers.cbam.LightCbamModule``; timm is its reference): CBAM
    whose branches average the mean and max pools before one excitation, ``0.5 * mean + 0.5 * max``:
    channel MLP without bias (hidden ``round(C / r)``), spatial conv (1 -> 1, k x k, no bias) + BN.
    """
    _flavor("lcbam", flavor)
    channel = AttnSpec(pool=("avg", "max"), target="channel", excite="mlp", merge="mean", reduction=reduction,
                       rounding="nearest", bias=False, gate="sigmoid", init=init, name="channel")
    spatial = AttnSpec(pool=("avg", "max"), target="spatial", excite="conv", merge="mean", kernel_size=kernel_size,
                       bias=False, norm="bn", gate="sigmoid", init=init, name="spatial")
    return AttnSpec(stages=(channel, spatial), name="LightCBAM", reference="timm.layers.cbam.LightCbamModule")


def coord(reduction: float | None = None, *, flavor: str = "official", init: str = "default") -> AttnSpec:
    """Coordinate attention: x averaged along W (an H strip) and along H (a W strip); both strips through one
    shared 1x1 layer C -> hidden with BN and h-swish (on their concatenation, as the official code
    does), a 1x1 layer hidden -> C per direction, a sigmoid gate per direction; ``x * a_h * a_w``.

    - ``official``: Hou et al., "Coordinate Attention for Efficient Mobile Network Design", CVPR 2021
      (arXiv:2103.02907), houqb/CoordAttention's ``CoordAtt``: hidden ``max(8, C // 32)``, convs with bias.
    - ``timm``: ``timm.layers.CoordAttn(C)``: hidden ``make_divisible(C / 16 * 2/3, 8)`` (r = 24,
      nearest multiple of 8), convs without bias.
    """
    timm = _flavor("coord", flavor) == "timm"
    common = dict(pool=("avg",), target="strip", excite="mlp", merge="prod", norm="bn", act="hard_swish",
                  gate="sigmoid", init=init, name="CoordAtt")
    if timm:
        return AttnSpec(**common, reduction=24 if reduction is None else reduction, divisor=8, rounding="nearest",
                        bias=False, reference="timm.layers.CoordAttn")
    return AttnSpec(**common, reduction=32 if reduction is None else reduction, min_width=8, bias=True,
                    reference="Hou et al. 2021, Coordinate Attention (arXiv:2103.02907), houqb/CoordAttention")


def scoord(*, flavor: str = "timm", init: str = "default") -> AttnSpec:
    """Simple coordinate attention, a timm variant (``timm.layers.SimpleCoordAttn``; timm is its reference):
    the strips through a shared linear layer C -> hidden with SiLU (no norm), a linear layer per
    direction, their sum through one sigmoid: ``x * sigmoid(z_h + z_w)``; hidden
    ``make_divisible(C / 4 * 2/3, 8)`` (r = 6)."""
    _flavor("scoord", flavor)
    return AttnSpec(
        pool=("avg",), target="strip", excite="mlp", merge="sum", reduction=6, divisor=8, rounding="nearest",
        bias=True, act="silu", gate="sigmoid", init=init, name="SimpleCoordAtt",
        reference="timm.layers.SimpleCoordAttn",
    )


def ela(kernel_size: int = 7, *, flavor: str = "timm", init: str = "default") -> AttnSpec:
    """Efficient local attention as timm writes it (``timm.layers.EfficientLocalAttn``): the strips each
    through a depthwise k-wide conv of their own (no bias), GroupNorm with one group, SiLU, and a
    sigmoid gate; ``x * a_h * a_w``.

    Only ``flavor="timm"``: the ELA paper's code (Xu & Wan 2024, arXiv:2403.01123) shares one conv and
    one GroupNorm of 16 groups between the two strips and has no SiLU; a spec has no way to share a
    strip conv between the directions, so that form is not offered.
    """
    _flavor("ela", flavor)
    return AttnSpec(
        pool=("avg",), target="strip", excite="conv", merge="prod", kernel_size=kernel_size, bias=False, norm="gn",
        act="silu", gate="sigmoid", init=init, name="ELA", reference="timm.layers.EfficientLocalAttn",
    )


def strip(kernel_size: int = 3, *, flavor: str = "timm", init: str = "default") -> AttnSpec:
    """Strip attention, a timm module (``timm.layers.StripAttn``; timm is its reference): the strips each
    through a depthwise k-wide conv of their own (no bias), summed into one map, sigmoid:
    ``x * sigmoid(conv_h(x_h) + conv_w(x_w))``."""
    _flavor("strip", flavor)
    return AttnSpec(
        pool=("avg",), target="strip", excite="conv", merge="sum", kernel_size=kernel_size, bias=False,
        gate="sigmoid", init=init, name="StripAttn", reference="timm.layers.StripAttn",
    )


# ---------------------------------------------------------------------------- beyond timm
def simam(e_lambda: float = 1e-4, *, flavor: str = "official", init: str = "default") -> AttnSpec:
    """SimAM: a parameter-free element gate from each neuron's energy, ``x * sigmoid((x - mu)^2 / (4 (var +
    lambda)) + 1/2)`` with mu and var = sum((x - mu)^2) / (H W - 1) over each map.

    ``official``: Yang et al., "SimAM: A Simple, Parameter-Free Attention Module for Convolutional Neural
    Networks", ICML 2021, ZjjConan/SimAM's ``simam_module`` (lambda = 1e-4, ``e_lambda``). On a 1x1 map,
    where that code divides by zero, H W - 1 is taken as 1.
    """
    _flavor("simam", flavor)
    return AttnSpec(
        pool=("none",), target="element", excite="energy", energy_lambda=e_lambda, gate="sigmoid", init=init,
        name="SimAM", reference="Yang et al. 2021, SimAM (ICML 2021), ZjjConan/SimAM",
    )


def bam(reduction: float = 16, dilation: int = 4, *, flavor: str = "official", init: str = "default") -> AttnSpec:
    """Bottleneck attention module: a channel branch (average pooling, MLP C -> C/r -> C with BN and ReLU)
    and a spatial branch (1x1 conv C -> C/r, two 3x3 convs dilated by 4, a 1x1 conv to one map; BN and
    ReLU after each but the last) run in parallel on x; ``x * (1 + sigmoid(combined))``.

    - ``official``: Park et al., "BAM: Bottleneck Attention Module", BMVC 2018 (arXiv:1807.06514), as
      the authors' Jongchan/attention-module computes it: the branches are *multiplied*,
      ``1 + sigmoid(M_c * M_s)``; hidden ``C // r``.
    - ``paper``: the paper's equation, ``1 + sigmoid(M_c + M_s)`` (the branches added).
    """
    merge = "prod" if _flavor("bam", flavor) == "official" else "sum"
    channel = AttnSpec(pool=("avg",), target="channel", excite="mlp", reduction=reduction, bias=True, norm="bn",
                       act="relu", gate="identity", name="channel")
    spatial = AttnSpec(pool=("none",), target="spatial", excite="conv", kernel_size=3, dilation=dilation,
                       reduction=reduction, bias=True, norm="bn", act="relu", gate="identity", name="spatial")
    reference = "Park et al. 2018, BAM (arXiv:1807.06514)" + (
        ", Jongchan/attention-module" if merge == "prod" else ", the paper's equation")
    return AttnSpec(stages=(channel, spatial), merge=merge, gate="sigmoid", fuse="mul_one_plus", init=init,
                    name="BAM", reference=reference)


def srm(*, flavor: str = "official", init: str = "default") -> AttnSpec:
    """Style-based recalibration: style pooling (each channel's mean and standard deviation), a
    channel-wise fully connected layer (per channel, 2 weights, no bias), BatchNorm, sigmoid.

    ``official``: Lee et al., "SRM: A Style-based Recalibration Module for Convolutional Neural Networks",
    ICCV 2019 (arXiv:1903.10829), hyunjaelee410/style-based-recalibration-module's ``SRMLayer`` at the
    repository's HEAD (f6221c7, "FIX : style pooling"): the standard deviation is ``sqrt(var + 1e-5)`` with the
    variance divided by n - 1 (``pool="std_unbiased_eps"``; the first commit's ``x.std()`` is
    ``pool="std_unbiased"``: they differ where a channel's variance is small). The channel-wise weights start
    at zero.
    """
    _flavor("srm", flavor)
    return AttnSpec(
        pool=("avg", "std_unbiased_eps"), target="channel", merge="concat", excite="channelwise", bias=False,
        norm="bn", gate="sigmoid", init=init, name="SRM",
        reference="Lee et al. 2019, SRM (arXiv:1903.10829), hyunjaelee410/style-based-recalibration-module",
    )


def fca(reduction: float = 16, frequencies: str = "top16", *, flavor: str = "official",
        init: str = "default") -> AttnSpec:
    """FcaNet's multi-spectral channel attention: the channels split into groups, each pooled by one 2-D DCT
    component (``frequencies``: the paper's selection, ``top16`` by default), then SE's MLP C -> C/r -> C
    without bias, sigmoid.

    ``official``: Qin et al., "FcaNet: Frequency Channel Attention Networks", ICCV 2021
    (arXiv:2012.11879), cfzd/FcaNet's ``MultiSpectralAttentionLayer``: 7x7 frequency indices scaled by
    ``H // 7`` for a DCT of size H x W. FcaNet builds the DCT for one size per stage (56, 28, 14, 7 in
    its ResNets) and average-pools other inputs to it; here the DCT is built for the size of each
    input, which equals FcaNet's module wherever the input has its stage's size.
    """
    _flavor("fca", flavor)
    return AttnSpec(
        pool=("dct",), frequencies=frequencies, target="channel", excite="mlp", reduction=reduction, bias=False,
        act="relu", gate="sigmoid", init=init, name="FcaNet",
        reference="Qin et al. 2021, FcaNet (arXiv:2012.11879), cfzd/FcaNet",
    )


def scse(reduction: float | None = None, *, flavor: str = "official", init: str = "default") -> AttnSpec:
    """Concurrent spatial and channel squeeze & excitation: a channel gate (average pooling, MLP
    C -> C/r -> C with bias and ReLU, sigmoid) and a spatial gate (a 1x1 layer C -> 1 with bias, sigmoid) in
    parallel on x, ``x * cSE(x) + x * sSE(x)``, computed as ``x * (cSE(x) + sSE(x))``. Hidden ``C // r``.

    - ``official``: Roy et al., "Concurrent Spatial and Channel 'Squeeze & Excitation' in Fully
      Convolutional Networks", MICCAI 2018 (arXiv:1803.02579): the paper's sum of the two recalibrated
      maps, with r = 2, the reduction of the authors' ai-med/squeeze_and_excitation code. That code's
      ``ChannelSpatialSELayer`` takes the element-wise *max* of the two maps instead (the aggregation of
      the authors' later journal version, arXiv:1808.08127); a spec has no max of scaled maps, so that
      form is not offered.
    - ``smp``: segmentation_models_pytorch's ``SCSEModule(C, reduction=16)`` (``decoder_attention_type=
      "scse"``): the same sum, r = 16; its weights load with :func:`dynattn.interop.load_smp_weights`.

    ``init="identity"``: the module returns x exactly (``x * (cSE + sSE)`` is 2x at any weights where both
    gates are near 1, so the two gates' sum is blended with 1 by a learnable ``mix`` that starts at 0:
    ``x * ((1 - mix) + mix * (cSE + sSE))``).
    """
    smp = _flavor("scse", flavor) == "smp"
    r = (16 if smp else 2) if reduction is None else reduction
    channel = AttnSpec(pool=("avg",), target="channel", excite="mlp", reduction=r, rounding="floor", bias=True,
                       act="relu", gate="sigmoid", name="channel")
    spatial = AttnSpec(pool=("none",), target="spatial", excite="linear", bias=True, gate="sigmoid", name="spatial")
    reference = ("segmentation_models_pytorch.base.modules.SCSEModule" if smp else
                 "Roy et al. 2018, scSE (arXiv:1803.02579), the paper's sum, ai-med/squeeze_and_excitation")
    return AttnSpec(stages=(channel, spatial), merge="sum", gate="identity", fuse="mul", init=init, name="scSE",
                    reference=reference)


PRESETS: dict[str, Callable[..., AttnSpec]] = {
    "se": se,
    "eca": eca,
    "cbam": cbam,
    "gam": gam,
    "triplet": triplet,
    "condconv": condconv,
    "dyconv": dyconv,
    "odconv": odconv,
    "dcd": dcd,
    "kw": kw,
    "ese": ese,
    "ecam": ecam,
    "ceca": ceca,
    "ge": ge,
    "gc": gc,
    "gca": gca,
    "lcbam": lcbam,
    "coord": coord,
    "scoord": scoord,
    "ela": ela,
    "strip": strip,
    "simam": simam,
    "bam": bam,
    "srm": srm,
    "fca": fca,
    "scse": scse,
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
