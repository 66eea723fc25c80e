"""The encoder-decoder site rules, ``where="skip"`` and ``where="decoder"``, and the default placement of a U-Net,
checked against the models' own structure: segmentation_models_pytorch's Unet (where smp itself puts its decoder
attention), MONAI's BasicUNet (its ``UpCat`` blocks) and UNet (its ``SkipConnection`` blocks and transposed convs)."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from dynattn import AttnSpec
from dynattn.errors import ModelError, SpecError
from dynattn.interop import load_smp_weights
from graph_passes import insert_attention, list_sites, report
from graph_passes.sites import SITE_RULES

smp = pytest.importorskip("segmentation_models_pytorch")
monai_nets = pytest.importorskip("monai.networks.nets")
basic_unet = pytest.importorskip("monai.networks.nets.basic_unet")


def _smp_unet(**kwargs) -> nn.Module:
    torch.manual_seed(0)
    return smp.Unet("resnet18", encoder_weights=None, classes=2, **kwargs).eval()


def _smp_attention_inputs(model: nn.Module, x: torch.Tensor) -> dict[str, tuple[int, ...]]:
    """The shape of what smp's own decoder attention slots receive, by slot name, from a forward hook."""
    seen: dict[str, tuple[int, ...]] = {}
    def record(name: str):
        def hook(module: nn.Module, args: tuple) -> None:
            seen.setdefault(name, tuple(args[0].shape))
        return hook

    hooks = [module.register_forward_pre_hook(record(name))
             for name, module in model.named_modules() if name.endswith((".attention1", ".attention2"))]
    with torch.no_grad():
        model(x)
    for hook in hooks:
        hook.remove()
    return seen


def test_smp_unet_rules_select_smps_own_attention_positions():
    model, x = _smp_unet(), torch.randn(1, 3, 64, 64)
    slots = _smp_attention_inputs(model, x)  # attention1 runs only in blocks that get a skip
    skip = list_sites(model, AttnSpec.se(), where="skip", example_inputs=(x,))
    decoder = list_sites(model, AttnSpec.se(), where="decoder", example_inputs=(x,))
    blocks = [f"decoder.blocks.{i}" for i in range(len(model.decoder.blocks))]
    with_skip = [b for b in blocks if f"{b}.attention1" in slots]
    assert 0 < len(with_skip) < len(blocks)  # smp's last block has no skip
    assert [s.name for s in skip] == [f"{b}.cat" for b in with_skip]
    assert [s.shape for s in skip] == [slots[f"{b}.attention1"] for b in with_skip]
    assert [s.channels for s in skip] == [model.get_submodule(b).conv1[0].in_channels for b in with_skip]
    assert all(b in s.aliases for s, b in zip(decoder, blocks, strict=True))
    assert [s.shape for s in decoder] == [slots[f"{b}.attention2"] for b in blocks]
    assert [s.channels for s in decoder] == [model.get_submodule(b).conv2[0].out_channels for b in blocks]
    assert {s.rule for s in skip} == {"skip"} and {s.rule for s in decoder} == {"decoder"}


def test_smp_unet_attention_inserted_by_the_rules_equals_it_in_smps_own_slots():
    """SE (random init) inserted with ``where=["decoder", "skip"]`` computes what the same modules compute
    in smp's ``attention1`` / ``attention2`` slots: the sites are exactly smp's positions."""
    model, x = _smp_unet(), torch.randn(2, 3, 64, 64)
    torch.manual_seed(1)
    out = insert_attention(model, AttnSpec.se(reduction=4), where=["decoder", "skip"], example_inputs=(x,))
    records = report(out).records
    assert len(records) == 2 * len(model.decoder.blocks) - 1
    slotted = copy.deepcopy(model)
    for rec in records:
        block = rec.site.split(".cat")[0] if rec.rule == "skip" else rec.site.rsplit(".attention2", 1)[0]
        slot = "attention1" if rec.rule == "skip" else "attention2"
        getattr(slotted.get_submodule(block), slot).attention = copy.deepcopy(out.get_submodule(rec.module))
    out.eval()
    with torch.no_grad():
        got, want, plain = out(x), slotted(x), model(x)
    assert not torch.allclose(got, plain, atol=1e-4)  # the attention does something
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def _monai_unet() -> nn.Module:
    torch.manual_seed(0)
    return monai_nets.UNet(spatial_dims=2, in_channels=1, out_channels=2, channels=(8, 16, 32, 64),
                           strides=(2, 2, 2)).eval()


def test_monai_unet_gets_a_site_per_level_by_default_and_identity_init_is_exact():
    model, x = _monai_unet(), torch.randn(2, 1, 32, 32)
    skips = [name for name, m in model.named_modules() if type(m).__name__ == "SkipConnection"]
    ups = [name for name, m in model.named_modules()
           if isinstance(m, nn.ConvTranspose2d)]  # MONAI's up layers; the outermost one makes the logits
    sites = list_sites(model, AttnSpec.se(), example_inputs=(x,))
    assert [s.name for s in sites if s.rule == "skip"] == [f"{p}.cat" for p in reversed(skips)]
    decoder = [s for s in sites if s.rule == "decoder"]
    assert [s.name.rsplit(".adn", 1)[0] for s in decoder] == [u.rsplit(".conv", 1)[0] for u in ups[:-1]]
    assert [s.channels for s in decoder] == [model.get_submodule(u).out_channels for u in ups[:-1]]
    assert {s.shape[-1] for s in sites} == {4, 8, 16}  # every level below the input's size
    out = insert_attention(model, AttnSpec.se(init="identity", reduction=2), example_inputs=(x,))
    assert type(out) is type(model) and set(model.state_dict()) <= set(out.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(out.eval()(x), model(x), rtol=0, atol=0)


@pytest.mark.parametrize("dims", [2, 3])
def test_monai_basic_unet_decoder_sites_are_its_upcat_blocks(dims):
    torch.manual_seed(0)
    model = monai_nets.BasicUNet(spatial_dims=dims, in_channels=1, out_channels=2,
                                 features=(4, 4, 8, 8, 16, 4)).eval()
    x, leaves = torch.randn(1, 1, *(32,) * dims), [basic_unet.UpCat]
    upcats = [(name, m) for name, m in model.named_children() if isinstance(m, basic_unet.UpCat)]
    decoder = list_sites(model, AttnSpec.se(), where="decoder", example_inputs=(x,), leaf_modules=leaves)
    assert [s.name for s in decoder] == [name for name, _ in upcats]
    assert [s.channels for s in decoder] == [m.convs.conv_1.conv.out_channels for _, m in upcats]
    # no residual add, so the default is the encoder features the decoder blocks take, and the decoder blocks
    # (the concatenations are inside the leaves)
    default = list_sites(model, AttnSpec.se(), example_inputs=(x,), leaf_modules=leaves)
    assert [s for s in default if s.rule == "decoder"] == decoder
    encoder = [s for s in default if s.rule == "encoder"]
    assert [s.channels for s in encoder] == [4, 4, 8, 8]  # features[:4]: conv_0 and down_1..3, the skips' sources
    assert [s.name.split(".")[0] for s in encoder] == ["conv_0", "down_1", "down_2", "down_3"]
    with pytest.raises(ModelError, match=r"where='skip': site rule 'skip' finds no skip connection.*list_sites"):
        list_sites(model, AttnSpec.se(), where="skip", example_inputs=(x,), leaf_modules=leaves)
    out = insert_attention(model, AttnSpec.se(init="identity", reduction=2), example_inputs=(x,),
                           leaf_modules=leaves)
    assert len(report(out).records) == len(default)
    with torch.no_grad():
        torch.testing.assert_close(out.eval()(x), model(x), rtol=0, atol=0)


class _DenseNet(nn.Module):
    """Dense blocks concatenate ``x`` with ``f(x)`` too, with no upsampling anywhere: no skip connection."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.grow = nn.ModuleList([nn.Conv2d(8, 8, 3, padding=1), nn.Conv2d(16, 8, 3, padding=1)])
        self.pool = nn.AvgPool2d(2)
        self.head = nn.Conv2d(24, 4, 1)

    def forward(self, x):
        x = self.stem(x)
        for conv in self.grow:
            x = torch.cat([x, torch.relu(conv(x))], dim=1)
        return self.head(self.pool(x))


def test_rules_have_no_false_positives_and_clear_errors():
    assert {"decoder", "skip"} <= set(SITE_RULES)
    model, x = _DenseNet(), torch.randn(1, 3, 16, 16)
    for rule in ("skip", "decoder"):
        with pytest.raises(ModelError, match=rf"site rule '{rule}' finds no .* in _DenseNet.*list_sites\(model, spec"):
            list_sites(model, AttnSpec.se(), where=rule, example_inputs=(x,))
    with pytest.raises(SpecError, match=r"where='decodr'.*did you mean 'decoder'\?"):
        list_sites(model, AttnSpec.se(), where="decodr", example_inputs=(x,))
    with pytest.raises(SpecError, match=r"where='skp:layer\*'.*did you mean 'skip'\?"):
        list_sites(model, AttnSpec.se(), where="skp:layer*", example_inputs=(x,))
    with pytest.raises(SpecError, match=r"is not a selector.*'decoder'.*'skip'.*'re:<regex>'"):
        list_sites(model, AttnSpec.se(), where=3, example_inputs=(x,))
    assert [s.name for s in list_sites(model, AttnSpec.se(), where="grow*", example_inputs=(x,))] == ["grow.0",
                                                                                                      "grow.1"]


def test_rule_glob_and_union_select_among_a_rules_sites():
    model, x = _monai_unet(), torch.randn(1, 1, 32, 32)
    every = list_sites(model, AttnSpec.se(), where=["encoder", "decoder", "skip"], example_inputs=(x,))
    assert every == list_sites(model, AttnSpec.se(), example_inputs=(x,))  # the default is the same union
    inner = list_sites(model, AttnSpec.se(), where="skip:model.1.submodule.*", example_inputs=(x,))
    assert [s.name for s in inner] == ["model.1.submodule.1.submodule.1.cat", "model.1.submodule.1.cat"]


def test_monai_3d_unet_with_residual_units_decoder_sites_are_whole_up_layers():
    """With residual units an up layer is a transposed conv and a ResidualUnit: its site is the whole layer's
    output (the unit's add), not the transposed conv's. The model has residual adds: the default is residual with
    the skip and decoder sites."""
    torch.manual_seed(0)
    model = monai_nets.UNet(spatial_dims=3, in_channels=1, out_channels=2, channels=(4, 8, 16, 32), strides=(2, 2, 2),
                            num_res_units=1).eval()
    x = torch.randn(1, 1, 16, 16, 16)
    ups = [name for name, m in model.named_modules() if isinstance(m, nn.ConvTranspose3d)]
    layers = [u.rsplit(".", 2)[0] for u in ups[:-1]]  # <up layer>.0.conv: the transposed conv's layer
    decoder = list_sites(model, AttnSpec.se(reduction=2), where="decoder", example_inputs=(x,))
    assert len(layers) == 2 and [next(a for a in s.aliases if a in layers) for s in decoder] == layers
    assert [s.channels for s in decoder] == [model.get_submodule(u).out_channels for u in ups[:-1]]
    skips = [name for name, m in model.named_modules() if type(m).__name__ == "SkipConnection"]
    skip = list_sites(model, AttnSpec.se(reduction=2), where="skip", example_inputs=(x,))
    assert [s.name for s in skip] == [f"{p}.cat" for p in reversed(skips)]
    default = list_sites(model, AttnSpec.se(reduction=2), example_inputs=(x,))
    assert {s.rule for s in default} == {"residual", "skip", "decoder"}
    assert {s.name for s in skip + decoder} <= {s.name for s in default}


def test_scse_inserted_at_smps_positions_equals_smps_own_scse_unet():
    """smp's ``Unet(decoder_attention_type="scse")`` against the same network built without attention, scSE
    (``flavor="smp"``) inserted by ``where=["decoder", "skip"]`` and its weights loaded from smp's modules: the
    same outputs, which proves the preset and the placement together."""
    torch.manual_seed(0)
    theirs = smp.Unet("resnet18", encoder_weights=None, classes=2, decoder_attention_type="scse").eval()
    with torch.no_grad():  # scSE's own weights moved off their init, so that every path matters
        for name, p in theirs.named_parameters():
            if ".attention" in name:
                p.copy_(torch.randn_like(p) * 0.3)
    plain = _smp_unet()
    missing, unexpected = plain.load_state_dict(theirs.state_dict(), strict=False)
    assert not missing and all(".attention" in k for k in unexpected)
    x = torch.randn(2, 3, 64, 64)
    ours = insert_attention(plain, AttnSpec.scse(flavor="smp"), where=["decoder", "skip"], example_inputs=(x,))
    for rec in report(ours).records:
        block = rec.site.split(".cat")[0] if rec.rule == "skip" else rec.site.rsplit(".attention2", 1)[0]
        slot = "attention1" if rec.rule == "skip" else "attention2"
        load_smp_weights(ours.get_submodule(rec.module), getattr(theirs.get_submodule(block), slot).attention)
    with torch.no_grad():  # float64: x * (cSE + sSE) and smp's x * cSE + x * sSE round apart in float32 (2e-5)
        torch.testing.assert_close(ours.eval().double()(x.double()), theirs.double()(x.double()), rtol=1e-9,
                                   atol=1e-9)


def test_smp_unet_encoder_rule_selects_the_features_its_decoder_reads():
    model, x = _smp_unet(), torch.randn(1, 3, 64, 64)
    seen: list[tuple[int, ...]] = []
    hook = model.decoder.register_forward_pre_hook(lambda m, args: seen.extend(tuple(f.shape) for f in args[0]))
    with torch.no_grad():
        model(x)
    hook.remove()
    encoder = list_sites(model, AttnSpec.se(), where="encoder", example_inputs=(x,))
    skips = list_sites(model, AttnSpec.se(), where="skip", example_inputs=(x,))
    # one encoder site per skip connection: the skip tensor of each, one of the features smp's decoder is given
    assert len(encoder) == len(skips) and {s.rule for s in encoder} == {"encoder"}
    assert all(s.name.startswith("encoder.") and s.shape in seen for s in encoder)
    assert [s.channels for s in encoder] == sorted(s.channels for s in encoder)  # shallow to deep
    with pytest.raises(ModelError, match="site rule 'encoder' finds no encoder feature"):
        list_sites(_DenseNet(), AttnSpec.se(), where="encoder", example_inputs=(torch.randn(1, 3, 8, 8),))


class _Pooling(nn.Module):
    """ASPP's image pooling branch: a global descriptor, broadcast back to the map's size by interpolate."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.pool, self.conv = nn.AdaptiveAvgPool2d(1), nn.Conv2d(c, c, 1)

    def forward(self, x):
        return F.interpolate(torch.relu(self.conv(self.pool(x))), size=x.shape[-2:], mode="nearest")


class _Up(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2 * c, c, 3, padding=1)

    def forward(self, deep, skip):
        return torch.relu(self.conv(torch.cat([F.interpolate(deep, scale_factor=2.0), skip], dim=1)))


class _TinyUNet(nn.Module):
    """Down to 1x1 at an 8-pixel input (the deepest map 1x1, as smp's Unet at 32 px), a decoder block that
    upsamples the 1x1 map and concatenates a skip, which an ASPP-like context block has seen."""

    def __init__(self, c: int = 8) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, c, 3, padding=1)
        self.down = nn.Sequential(nn.Conv2d(c, c, 3, stride=2, padding=1), nn.Conv2d(c, c, 3, stride=2, padding=1),
                                  nn.Conv2d(c, c, 3, stride=2, padding=1))
        self.aspp = nn.ModuleList([nn.Conv2d(c, c, 1), _Pooling(c)])
        self.project = nn.Conv2d(2 * c, c, 1)
        self.up = _Up(c)
        self.head = nn.Conv2d(c, 2, 1)

    def forward(self, x):
        skip = self.down[1](self.down[0](self.stem(x)))
        deep = self.down[2](skip)
        skip = self.project(torch.cat([m(skip) for m in self.aspp], dim=1))
        return self.head(F.interpolate(self.up(deep, skip), scale_factor=4.0))


def test_upsampling_from_a_1x1_map_counts_and_a_broadcast_is_no_skip():
    """Upsampling: a larger map than the input's in every spatial dim, from 1x1 too. An upsampled global
    descriptor (ASPP's pooling branch) is a decoder block, but the concatenation it joins is no skip."""
    model, x = _TinyUNet().eval(), torch.randn(1, 3, 8, 8)
    decoder = list_sites(model, AttnSpec.se(reduction=2), where="decoder", example_inputs=(x,))
    assert [s.name for s in decoder] == ["aspp.1.interpolate", "up.relu"] and decoder[1].shape[-2:] == (2, 2)
    skip = list_sites(model, AttnSpec.se(reduction=2), where="skip", example_inputs=(x,))
    assert [s.name for s in skip] == ["up.cat"]  # not the context concatenation, although one part is upsampled
    encoder = list_sites(model, AttnSpec.se(reduction=2), where="encoder", example_inputs=(x,))
    assert [s.name for s in encoder] == ["project"]


def test_smp_unet_first_decoder_block_counts_at_32_px():
    """At 32 px smp's deepest feature is 1x1: its first decoder block upsamples from 1x1 and is a site."""
    model = _smp_unet()
    sites = list_sites(model, AttnSpec.se(), where="decoder", example_inputs=(torch.randn(1, 3, 32, 32),))
    assert all(f"decoder.blocks.{i}" in s.aliases for i, s in enumerate(sites))
    assert len(sites) == len(model.decoder.blocks)
    assert sites[0].shape[-2:] == (2, 2)


@pytest.mark.parametrize("name", ["DeepLabV3Plus", pytest.param("UnetPlusPlus", marks=pytest.mark.heavy)])
def test_smp_decoder_taking_a_list_gets_sites_without_example_inputs(name):
    """The root's forward does not trace and the decoder takes a list of features: its arguments come from one
    run of the whole model on a guessed meta input, so the sites are those found with example_inputs."""
    torch.manual_seed(0)
    model = getattr(smp, name)("resnet18", encoder_weights=None).eval()
    guessed = list_sites(model, AttnSpec.se())
    given = list_sites(model, AttnSpec.se(), example_inputs=(torch.randn(2, 3, 64, 64),))
    assert [(s.name, s.rule, s.channels) for s in guessed] == [(s.name, s.rule, s.channels) for s in given]
    decoder = [s.name for s in guessed if s.rule == "decoder"]
    if name == "DeepLabV3Plus":  # ASPP (its pooling branch upsamples from 1x1) and the skip's concatenation
        assert decoder == ["decoder.aspp.3"] and [s.name for s in guessed if s.rule == "skip"] == ["decoder.cat"]
    else:  # every nested block, the last one too (a part's output is no logits: the head follows)
        blocks = [f"decoder.blocks.{b}" for b in model.decoder.blocks]
        found = [next(a for a in s.aliases if a in blocks) for s in guessed if s.rule == "decoder"]
        assert sorted(found) == sorted(blocks)


class _Block(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.conv, self.bn = nn.Conv2d(c, c, 3, padding=1), nn.BatchNorm2d(c)

    def forward(self, x):
        return F.relu(x + self.bn(self.conv(x)))


class _TwoTermHead(nn.Module):
    """LRASPP's head: the sum of two class maps (a residual add of two same-shape maps) forms the logits."""

    def __init__(self, c: int, classes: int) -> None:
        super().__init__()
        self.low, self.high = nn.Conv2d(c, classes, 1), nn.Sequential(nn.Conv2d(c, c, 3, padding=1), nn.ReLU(),
                                                                       nn.Conv2d(c, classes, 1))

    def forward(self, x):
        return self.low(x) + self.high(x)


class _Segmenter(nn.Module):
    """A residual encoder, a stride-2 stage, a two-term head, the logits resized to the input."""

    def __init__(self, head: bool = True) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.block1, self.down, self.block2 = _Block(8), nn.Conv2d(8, 8, 3, stride=2, padding=1), _Block(8)
        self.head = _TwoTermHead(8, 3) if head else None

    def forward(self, x):
        y = self.block2(self.down(self.block1(self.stem(x))))
        return y if self.head is None else F.interpolate(self.head(y), size=x.shape[-2:], mode="bilinear")


def test_no_site_rule_selects_the_logits():
    """The head's sum of class maps is a residual add and the logits a stage output before the resize, but no
    rule puts attention on the logits or a term of their sum; a name still selects them, and "conv" every conv.
    A backbone whose output is its last residual block (BN, add, ReLU: no head) keeps that block's site."""
    spec, x = AttnSpec.se(reduction=2), (torch.randn(1, 3, 16, 16),)
    names = {where: [s.name for s in list_sites(_Segmenter(), spec, where=where, example_inputs=x)]
             for where in (None, "residual", "stage", "conv")}
    assert names[None] == names["residual"] == ["block1.bn", "block2.bn"], names
    assert not any(n.startswith("head") for n in names["stage"]), names
    assert {"head.low", "head.high.2"} <= set(names["conv"]), names
    assert [s.name for s in list_sites(_Segmenter(), spec, where="head.high.2", example_inputs=x)] == ["head.high.2"]
    backbone = list_sites(_Segmenter(head=False), spec, example_inputs=x)
    assert [s.name for s in backbone] == ["block1.bn", "block2.bn"]


@pytest.mark.parametrize("name, logits", [pytest.param("smp.FPN", "segmentation_head.0", marks=pytest.mark.heavy),
                                          pytest.param("smp.DeepLabV3Plus", "segmentation_head.0",
                                                       marks=pytest.mark.heavy),
                                          ("lraspp", "classifier.high_classifier")])
def test_segmentation_logits_get_no_default_site(name, logits):
    """smp's segmentation head (a conv, then a resize: a stage output) and LRASPP's class-map sum (a residual add)
    take no attention by default, nor from a rule; the encoder and decoder do; named, the logits are selected."""
    torch.manual_seed(0)
    if name == "lraspp":
        seg = pytest.importorskip("torchvision.models.segmentation")
        model = seg.lraspp_mobilenet_v3_large(weights=None, weights_backbone=None, num_classes=3).eval()
    else:
        model = getattr(smp, name.split(".")[1])("resnet18", encoder_weights=None).eval()
    x = (torch.randn(2, 3, 64, 64),)
    default = [s.name for s in list_sites(model, AttnSpec.se(), example_inputs=x)]
    assert logits not in default and len(default) >= 10, default
    for rule in ("residual", "stage"):
        try:
            assert logits not in [s.name for s in list_sites(model, AttnSpec.se(), where=rule, example_inputs=x)]
        except ModelError as err:
            assert "finds no" in str(err)
    assert [s.name for s in list_sites(model, AttnSpec.se(), where=logits, example_inputs=x)] == [logits]


class _NestedDecoder(nn.Module):
    """UNet++'s pattern: the decoder takes the encoder's features as a list and indexes it again at each use
    (``features[1]`` and ``features[2]`` each feed two nested blocks)."""

    def __init__(self, c: int = 4) -> None:
        super().__init__()
        self.x00, self.x01, self.x11 = (nn.Conv2d(2 * c, c, 3, padding=1) for _ in range(3))
        self.head = nn.Conv2d(2 * c, 2, 1)

    def forward(self, features):
        features = features[1:][::-1]  # deepest first
        x00 = self.x00(torch.cat([F.interpolate(features[0], scale_factor=2.0), features[1]], dim=1))
        x01 = self.x01(torch.cat([F.interpolate(x00, scale_factor=2.0), features[2]], dim=1))
        x11 = self.x11(torch.cat([F.interpolate(features[1], scale_factor=2.0), features[2]], dim=1))
        return self.head(torch.cat([x01, x11], dim=1))


def _features() -> tuple[list[torch.Tensor]]:
    torch.manual_seed(0)
    return ([torch.randn(1, 4, 16, 16), torch.randn(1, 4, 16, 16), torch.randn(1, 4, 8, 8), torch.randn(1, 4, 4, 4)],)


def test_an_input_feature_used_twice_is_one_site_that_reaches_every_use():
    """An encoder feature the decoder indexes out of its input list at each use is one site, named by its place in
    the list (``features[1:][::-1][2]`` is ``features.-3``); what is inserted there feeds every use."""
    model, x = _NestedDecoder().eval(), _features()
    encoder = [s.name for s in list_sites(model, AttnSpec.se(reduction=2), where="encoder", example_inputs=x)]
    assert encoder == ["features.-2", "features.-3"]
    out = insert_attention(model, AttnSpec.se(reduction=2, init="identity"), where="features.-3", example_inputs=x)
    (record,) = report(out).records
    out.get_submodule(record.module).register_forward_hook(lambda _m, _a, y: torch.zeros_like(y))
    zeroed = [f if i != len(x[0]) - 3 else torch.zeros_like(f) for i, f in enumerate(x[0])]
    with torch.no_grad():
        torch.testing.assert_close(out(*x), model(zeroed), atol=0, rtol=0)  # both uses see the inserted module


def test_unetplusplus_encoder_features_are_one_site_each():
    model = smp.UnetPlusPlus("resnet18", encoder_weights=None).eval()
    sites = list_sites(model, AttnSpec.se(), where="encoder", example_inputs=(torch.randn(2, 3, 64, 64),))
    assert [s.name for s in sites] == ["decoder.features.-2", "decoder.features.-3", "decoder.features.-4",
                                       "decoder.features.-5"]
    assert [s.channels for s in sites] == [256, 128, 64, 64]  # resnet18's layer3, layer2, layer1, stem
