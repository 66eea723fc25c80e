"""flavor="timm" presets against timm.layers' modules, weights copied with load_timm_weights.

Every lightweight attention that ``timm.layers.create_attn`` names is a preset of the same name:
``get_spec(name, flavor="timm")`` builds a module equal to ``create_attn(name, C)`` to 1e-5 in train
and eval mode, with every parameter and BatchNorm statistic of the timm module randomised first
(zero-initialised layers, such as global context's, would otherwise hide a wrong mapping).
"""

import pytest
import torch
from timm.layers import (
    ConvMlp,
    EcaModule,
    EffectiveSEModule,
    GatherExcite,
    GlobalContext,
    SEModule,
    create_attn,
    make_divisible,
)
from timm.layers.cbam import CbamModule, LightCbamModule
from timm.layers.coord_attn import CoordAttn, EfficientLocalAttn, SimpleCoordAttn, StripAttn
from torch import nn

from dynattn import AttnSpec, SpecError, build, get_spec
from dynattn.interop import TIMM_KEY_MAPS, load_timm_weights
from dynattn.presets import TIMM_ATTENTIONS
from tests.weights import randomize_norms, randomize_parameters

CHANNELS = (33, 64, 96, 256)

#: Further configurations of the timm modules, beyond create_attn's defaults.
CASES = {
    "se_r8": (lambda c: SEModule(c, rd_ratio=1 / 8), AttnSpec.se(8, flavor="timm")),
    "cbam_k3_r4": (lambda c: CbamModule(c, rd_ratio=1 / 4, spatial_kernel_size=3),
                   AttnSpec.cbam(4, 3, flavor="timm")),
    "lcbam_k3_r4": (lambda c: LightCbamModule(c, rd_ratio=1 / 4, spatial_kernel_size=3),
                    AttnSpec.lcbam(4, 3)),
    "ge_extent2": (lambda c: gather_excite(c, extent=2), AttnSpec.ge(2, flavor="timm")),
    "ge_extent4": (lambda c: gather_excite(c, extent=4), AttnSpec.ge(4, flavor="timm")),
    "gc_r4": (lambda c: GlobalContext(c, rd_ratio=1 / 4), AttnSpec.gc(4, flavor="timm")),
    "coord_r8": (lambda c: CoordAttn(c, rd_ratio=1 / 8, se_factor=1.0), AttnSpec.coord(8, flavor="timm")),
    "ela_k5": (lambda c: EfficientLocalAttn(c, kernel_size=5), AttnSpec.ela(5)),
    "strip_k5": (lambda c: StripAttn(c, kernel_size=5), AttnSpec.strip(5)),
}
#: The module classes behind create_attn's names (weights map across by these class names).
TIMM_CLASSES = {"se": SEModule, "ese": EffectiveSEModule, "eca": EcaModule, "ecam": EcaModule,
                "ceca": type(create_attn("ceca", 8)), "ge": GatherExcite, "gc": GlobalContext, "gca": GlobalContext,
                "cbam": CbamModule, "lcbam": LightCbamModule, "coord": CoordAttn, "scoord": SimpleCoordAttn,
                "ela": EfficientLocalAttn, "strip": StripAttn}


def gather_excite(channels, **kwargs):
    """timm's GatherExcite. timm 1.0.31 cannot build it with its MLP (its ``__init__`` passes ``*dd``, the
    device/dtype dict unpacked as positional arguments, to ``ConvMlp``: "got multiple values for argument
    'act_layer'"); then it is built without, and given the ConvMlp that line means to build."""
    try:
        return GatherExcite(channels, **kwargs)
    except TypeError:
        module = GatherExcite(channels, use_mlp=False, **kwargs)
        module.mlp = ConvMlp(channels, make_divisible(channels / 16, 1, round_limit=0.0), act_layer=nn.ReLU)
        return module


def _make(name, channels):
    return gather_excite(channels) if name == "ge" else create_attn(name, channels)


def _check(ref, spec, channels, shapes=((7, 12), (12, 7))):
    torch.manual_seed(channels)
    randomize_parameters(ref)
    randomize_norms(ref)
    ours = load_timm_weights(build(spec, channels=channels), ref)
    worst = 0.0
    for train in (True, False):
        ref.train(train)
        ours.train(train)
        for shape in shapes:
            x = torch.randn(4, channels, *shape) * 3
            expected, got = ref(x), ours(x)
            # float32 rounding: the summation order follows the thread count (1 per pytest-xdist worker)
            torch.testing.assert_close(got, expected, atol=1e-5, rtol=1.3e-6)
            worst = max(worst, (got - expected).abs().max().item())
    for (name, a), (_, b) in zip(sorted(ref.named_buffers()), sorted(ours.named_buffers())):
        torch.testing.assert_close(a.float(), b.float(), atol=1e-5, rtol=0, msg=name)
    return worst


def test_the_preset_list_is_timms_list():
    import importlib
    import inspect

    source = inspect.getsource(importlib.import_module("timm.layers.create_attn").get_attn)
    source = source.split("Attention / attention-like modules w/ significant")[0]  # the lightweight ones
    names = tuple(n for n in TIMM_ATTENTIONS if f"attn_type == '{n}'" in source)
    assert names == TIMM_ATTENTIONS and source.count("attn_type == '") == len(TIMM_ATTENTIONS)


@pytest.mark.parametrize("channels", CHANNELS)
@pytest.mark.parametrize("name", TIMM_ATTENTIONS)
def test_every_timm_attention_by_name(name, channels):
    """get_spec(name, flavor="timm") == timm.layers.create_attn(name, C), train and eval, H != W."""
    ref = _make(name, channels)
    assert type(ref) is TIMM_CLASSES[name]
    _check(ref, get_spec(name, flavor="timm"), channels)


@pytest.mark.parametrize("channels", (64, 96))
@pytest.mark.parametrize("case", list(CASES))
def test_matches_timm_configurations(case, channels):
    make_timm, spec = CASES[case]
    _check(make_timm(channels), spec, channels)


def test_timm_layer_argument_builds_the_same_module():
    """spec.layer takes timm's keywords: rd_ratio and act_layer reach every stage with a hidden layer."""
    layer = AttnSpec.coord(flavor="timm").layer(64, rd_ratio=1 / 8)
    ref = CoordAttn(64, rd_ratio=1 / 8 * 3 / 2)  # timm scales rd_ratio by se_factor = 2/3
    _check(ref, layer.spec, 64)


def test_parameter_counts_match_timm():
    for name in TIMM_ATTENTIONS:
        for c in CHANNELS:
            n_ref = sum(p.numel() for p in _make(name, c).parameters())
            n_ours = sum(p.numel() for p in build(get_spec(name, flavor="timm"), channels=c).parameters())
            assert n_ref == n_ours, (name, c)
    for case, (make_timm, spec) in CASES.items():
        for c in CHANNELS:
            n_ref = sum(p.numel() for p in make_timm(c).parameters())
            n_ours = sum(p.numel() for p in build(spec, channels=c).parameters())
            assert n_ref == n_ours, (case, c)


def test_every_timm_class_has_a_weight_map():
    assert {cls.__name__ for cls in TIMM_CLASSES.values()} <= set(TIMM_KEY_MAPS)


def test_load_timm_weights_rejects_mismatch():
    with pytest.raises(SpecError, match="shape"):
        load_timm_weights(build(AttnSpec.se(flavor="timm"), channels=64), SEModule(128))
    with pytest.raises(SpecError, match="no weight mapping"):
        load_timm_weights(build(AttnSpec.se(flavor="timm"), channels=64), torch.nn.Conv2d(1, 1, 1))
    with pytest.raises(SpecError, match="has no counterpart"):  # CoordAttn's BatchNorm: none in scoord
        load_timm_weights(build(AttnSpec.scoord(), channels=64), CoordAttn(64))
    with pytest.raises(SpecError, match="is not set by"):  # the official CoordAtt has biases, timm's not
        load_timm_weights(build(AttnSpec.coord(), channels=64), CoordAttn(64))
