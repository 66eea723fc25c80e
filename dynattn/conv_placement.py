"""Where each kernel preset puts dynamic convs by default, following its paper's and official code's
own models; ``graph_passes.insert_attention(model, spec)`` applies it when ``where=None``.

A placement is data: which of a model's plain convs stay static. The parts it names are found by
graph_passes without names of any particular model zoo:

- the **stem**: the convs of the model's first part that holds convs (descending into a part that
  holds every conv, as torchvision's ``features``, or more than three, as a detector's backbone):
  ResNet's ``conv1`` (timm's deep stem: all three of ``conv1``), MobileNet's ``features.0``,
  EfficientNet's ``conv_stem``, Faster R-CNN's ``backbone.body.conv1``;
- the **head**: the last part holding convs next to the stem, when it is a single 1x1 conv
  (MobileNetV3's and EfficientNet's final 1x1 conv; a ResNet has none);
- **projection shortcuts**: 1x1 convs inside a module named ``downsample``, ``shortcut``, ``proj``
  or ``skip`` (torchvision's and timm's names for ResNet/RegNet projection shortcuts);
- **later stages**: convs whose output stride (input size / output size) is at least
  ``min_stride``, measured by one forward pass on meta tensors;
- convs applied to 1x1 maps (the excitation convs of SE blocks inside MobileNetV3 and EfficientNet,
  1x1-conv classifiers) always stay static: they are linear layers in disguise, and no paper makes
  them dynamic.

``where="conv"`` converts every plain conv; any other ``where`` selects as for feature targets.
"""

from __future__ import annotations

from dataclasses import dataclass

from .spec import AttnSpec

__all__ = ["ConvPlacement", "conv_placement", "EVERY_CONV", "PRESET_PLACEMENTS"]


@dataclass(frozen=True)
class ConvPlacement:
    """Which plain convs a kernel-target spec converts by default (``where=None``)."""

    stem: bool = True
    head: bool = True
    shortcuts: bool = True
    #: only convs whose output stride is at least this (1: every stage)
    min_stride: int = 1
    #: where the rule comes from
    reference: str = ""

    def describe(self) -> str:
        static = [part for part, on in (("the stem", self.stem), ("the head", self.head),
                                         ("projection shortcuts", self.shortcuts)) if not on]
        text = "every conv" if self.min_stride <= 1 else f"convs at output stride >= {self.min_stride}"
        if static:
            text += " except " + ", ".join(static)
        return text + " (convs on 1x1 maps stay static)"


#: ``where="conv"``: every plain conv.
EVERY_CONV = ConvPlacement(reference="every plain nn.Conv2d")

#: The presets' own placements, by ``AttnSpec.name``.
PRESET_PLACEMENTS: dict[str, ConvPlacement] = {
    "DyConv": ConvPlacement(
        stem=False,
        reference="Chen et al. 2020 use dynamic convolution in every layer but the first; the "
                  "kaijieshi7/Dynamic-convolution-Pytorch ResNet keeps conv1 static and makes the 1x1 "
                  "downsample convs dynamic",
    ),
    "ODConv": ConvPlacement(
        stem=False, shortcuts=False,
        reference="OSVAI/ODConv models/od_resnet.py (conv1 and the downsample 1x1 convs are nn.Conv2d) and "
                  "od_mobilenetv2.py (the first conv static; every block conv and the last 1x1 conv ODConv)",
    ),
    "KernelWarehouse": ConvPlacement(
        stem=False,
        reference="OSVAI/KernelWarehouse models/kw_resnet.py: conv1 and fc static; every block conv and the "
                  "strided 1x1 downsample convs take their cells from a warehouse",
    ),
    "CondConv": ConvPlacement(
        stem=False, head=False, shortcuts=False, min_stride=16,
        reference="Yang et al. 2019 find CondConv most useful in later layers; the official "
                  "CondConv-EfficientNet (tensorflow/tpu condconv, timm efficientnet_cc_b0_*) converts the "
                  "blocks of the last three of seven stages (stride 16 and 32), stem and head static",
    ),
}


def conv_placement(spec: AttnSpec) -> ConvPlacement:
    """The default placement of a kernel-target spec: its preset's (by ``spec.name``, so
    ``AttnSpec.dyconv(experts=8)`` keeps DyConv's), or every conv for a spec of your own."""
    return PRESET_PLACEMENTS.get(spec.name or "", EVERY_CONV)
