"""AttnSpec as data: frozen, hashable, normalized, presets and the registry."""

import dataclasses

import pytest
import torch

import dynattn
from dynattn import AttnSpec, build, get_spec, list_presets
from dynattn.compiler.lower import eca_kernel_size, hidden_width, lower


def test_user_form_stores_tuples_and_is_hashable():
    spec = AttnSpec(pool=["avg", "max"], target="kernel")
    assert spec.pool == ("avg", "max") and isinstance(spec.heads, tuple)
    assert {spec: 1}[AttnSpec(pool=("avg", "max"), target="kernel")] == 1


def test_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        AttnSpec().gate = "tanh"


def test_defaults_are_resolved_per_target_so_equal_specs_compare_equal():
    assert AttnSpec(target="spatial") == AttnSpec(target="spatial", pool=("max", "avg"), excite="conv",
                                                  merge="concat", kernel_size=7, gate="sigmoid")
    assert AttnSpec() == AttnSpec(target="channel", pool="avg", excite="mlp")
    assert AttnSpec(target="kernel").gate == "softmax"
    assert AttnSpec(reduction=16) == AttnSpec(reduction=16.0)


def test_repr_round_trips_and_is_short():
    for name in list_presets():
        spec = get_spec(name)
        assert eval(repr(spec), {"AttnSpec": AttnSpec}) == spec
    assert repr(AttnSpec(pool=["avg", "max"], target="kernel")) == "AttnSpec(target='kernel', pool=('avg', 'max'))"


def test_rotations_are_normalized_to_bchw_names():
    a = AttnSpec(target="spatial", branches=["n c y x -> n y c x"])
    assert a.branches == ("b c h w -> b h c w",)
    assert a == AttnSpec(target="spatial", branches=["b c h w  ->  b h c w"])


def test_composites_and_init():
    cbam = AttnSpec.cbam(init="identity")
    assert cbam.is_composite and cbam.init == "identity"
    assert all(leaf.init == "identity" for leaf in cbam.leaves())
    assert AttnSpec(stages=AttnSpec.cbam().stages, init="identity", name="CBAM",
                    reference=AttnSpec.cbam().reference) == cbam
    assert AttnSpec.cbam().with_init("identity") == cbam
    mixed = AttnSpec.chain(AttnSpec.se(init="identity"), AttnSpec.eca())
    assert mixed.init == "default" and [s.init for s in mixed.leaves()] == ["identity", "default"]


def test_presets_by_classmethod_and_by_name():
    for name in ("se", "eca", "cbam", "gam", "triplet"):
        assert getattr(AttnSpec, name)() == get_spec(name) == get_spec(name.upper())
        assert get_spec(name).reference, name
    assert get_spec("cbam", flavor="timm") == AttnSpec.cbam(flavor="timm") != AttnSpec.cbam()
    assert set(list_presets()) >= {"se", "eca", "cbam", "gam", "triplet"}
    assert dynattn.get_spec is get_spec


def test_preset_defaults_follow_their_references():
    se, se_timm = AttnSpec.se(), AttnSpec.se(flavor="timm")
    assert (se.reduction, se.rounding, se.divisor, se.bias) == (16, "floor", 1, True)
    assert hidden_width(se, 96) == 6 and hidden_width(se_timm, 96) == 8 and hidden_width(se_timm, 33) == 8
    ch, sp = AttnSpec.cbam().stages
    assert ch.pool == ("avg", "max") and ch.merge == "sum" and ch.bias
    assert sp.pool == ("max", "avg") and sp.merge == "concat" and sp.bn_momentum == 0.01 and not sp.bias
    tch, tsp = AttnSpec.cbam(flavor="timm").stages
    assert not tch.bias and tsp.pool == ("avg", "max") and tsp.bn_momentum == 0.1
    assert hidden_width(tch, 24) == 2 and hidden_width(ch, 24) == 1
    assert len(AttnSpec.triplet().branches) == 3 and len(AttnSpec.triplet(no_spatial=True).branches) == 2


@pytest.mark.parametrize("channels,official,timm", [(8, 3, 3), (16, 3, 3), (64, 3, 3), (128, 5, 5),
                                                    (256, 5, 5), (512, 5, 5), (1024, 5, 5), (2, 1, 3)])
def test_eca_adaptive_kernel(channels, official, timm):
    assert eca_kernel_size(AttnSpec.eca(), channels) == official
    assert eca_kernel_size(AttnSpec.eca(flavor="timm"), channels) == timm


def test_lowering_is_shared_per_spec_and_channels_while_parameters_are_fresh():
    # equal specs (made separately) share one immutable plan; another channel count gets its own
    assert lower(AttnSpec.cbam(), 64) is lower(AttnSpec.cbam(), 64)
    assert lower(AttnSpec.cbam(), 32).channels == 32
    a, b = build(AttnSpec.cbam(), channels=64), build(AttnSpec.cbam(), channels=64)
    assert a.code == b.code
    assert all(pa is not pb for pa, pb in zip(a.parameters(), b.parameters()))
    assert not all(torch.equal(pa, pb) for pa, pb in zip(a.parameters(), b.parameters()))


def test_replace_validates():
    assert AttnSpec.se().replace(reduction=4).reduction == 4
    with pytest.raises(dynattn.SpecError):
        AttnSpec.se().replace(gate="nope")
