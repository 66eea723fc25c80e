"""Bad specs and bad build arguments raise SpecError (a ValueError) naming field, value and allowed values."""

import copy
import pickle

import pytest
import torch

import dynattn
from dynattn import AttnSpec, SpecError, build, get_spec
from dynattn.errors import ModelError
from graph_passes import insert_attention


def _raises(fn, *fragments, field=None):
    with pytest.raises(SpecError) as info:
        fn()
    err = info.value
    assert isinstance(err, ValueError)
    message = str(err)
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"
    if field is not None:
        assert err.field == field
    return err


def test_unknown_pool_op():
    err = _raises(lambda: AttnSpec(pool=["avg", "mean"]), "AttnSpec.pool='mean'", "unknown value",
                  "allowed: 'avg', 'max', 'lse', 'lp', 'std', 'std_unbiased', 'attn', 'dct', 'std_unbiased_eps', "
                  "'none'",
                  field="AttnSpec.pool")
    assert err.value == "mean" and "avg" in err.allowed


def test_empty_pool():
    _raises(lambda: AttnSpec(pool=[]), "AttnSpec.pool=()", "at least one pooling op", "allowed: 'avg'")


def test_unknown_gate_suggests_the_closest():
    _raises(lambda: AttnSpec(gate="sigmod"), "AttnSpec.gate='sigmod'", "did you mean 'sigmoid'?",
            "'hard_sigmoid', 'softmax', 'tanh', 'identity'")


def test_unknown_target():
    _raises(lambda: AttnSpec(target="channels"), "AttnSpec.target='channels'",
            "allowed: 'channel', 'spatial', 'element', 'strip', 'kernel'", "did you mean 'channel'?")


@pytest.mark.parametrize("channels", [0, -3])
def test_channels_not_positive(channels):
    _raises(lambda: build(AttnSpec.se(), channels=channels), f"channels={channels}", "must be > 0",
            field="channels")


@pytest.mark.parametrize("channels", [64.0, "64", True, None])
def test_channels_wrong_type(channels):
    _raises(lambda: build(AttnSpec.se(), channels=channels), "channels=", field="channels")


def test_reduction_that_leaves_zero_hidden_units():
    _raises(lambda: build(AttnSpec.se(), channels=8), "AttnSpec.reduction=16.0",
            "leaves 0 hidden units at channels=8", "rounding='nearest'")
    _raises(lambda: build(AttnSpec.cbam(), channels=15), "leaves 0 hidden units at channels=15")
    _raises(lambda: build(AttnSpec(divisor=8, reduction=4), channels=16), "int(16 / 4) // 8 * 8 = 0")


@pytest.mark.parametrize("ks", [4, 0, 2.0, "7"])
def test_kernel_size_must_be_odd_int(ks):
    _raises(lambda: AttnSpec(target="spatial", kernel_size=ks), f"AttnSpec.kernel_size={ks!r}")


def test_even_kernel_message_offers_neighbours():
    _raises(lambda: AttnSpec.cbam(kernel_size=6), "must be odd", "use 5 or 7")
    _raises(lambda: AttnSpec(excite="conv1d", kernel_size=4), "must be odd")


def test_unknown_preset_lists_valid_names():
    _raises(lambda: get_spec("cbma"), "preset='cbma'", "'se', 'eca', 'cbam', 'gam', 'triplet'",
            "did you mean 'cbam'?")
    _raises(lambda: build("sqeeze", channels=8), "preset='sqeeze'")


def test_excite_that_does_not_serve_the_target():
    _raises(lambda: AttnSpec(target="spatial", excite="mlp"), "AttnSpec.excite='mlp'",
            "does not serve target='spatial'", "allowed: 'conv', 'linear', 'none'")


def test_field_without_effect():
    _raises(lambda: AttnSpec(excite="conv1d", reduction=8), "AttnSpec.reduction=8.0", "has no effect")
    _raises(lambda: AttnSpec(bn_momentum=0.01), "set norm='bn' first")
    _raises(lambda: AttnSpec(experts=8), "they configure target='kernel'")


def test_bad_rotations():
    _raises(lambda: AttnSpec(target="spatial", branches=["b c h w -> c b h w"]), "keep the batch axis first")
    _raises(lambda: AttnSpec(target="spatial", branches=["b c h w -> b c h"]), "is not a rotation of four axes")
    _raises(lambda: AttnSpec(target="spatial", branches=["b c h w -> b c h x"]), "same four distinct axes")
    _raises(lambda: AttnSpec(excite="mlp", branches=["b c h w -> b h c w"]),
            "moves the channel axis", "rotate a spatial stage")


def test_composite_rejects_leaf_fields_and_kernel_stages():
    _raises(lambda: AttnSpec(stages=[AttnSpec.se()], gate="tanh"), "AttnSpec.gate='tanh'",
            "has no effect on a composite spec")
    _raises(lambda: AttnSpec(stages=[AttnSpec.se(), AttnSpec(target="kernel")]), "AttnSpec.stages[1].target")
    _raises(lambda: AttnSpec(stages=["se"]), "AttnSpec.stages[0]='se'", "must be an AttnSpec")


@pytest.mark.parametrize("field,value", [
    ("reduction", float("nan")), ("reduction", -4), ("temperature", 0.0), ("temperature", float("inf")),
    ("bn_eps", -1e-5), ("experts", True), ("experts", 0), ("divisor", 2.5), ("width", 0),
])
def test_bad_numbers(field, value):
    kw = {"target": "kernel"} if field == "experts" else {}
    if field == "bn_eps":
        kw["norm"] = "bn"
    _raises(lambda: AttnSpec(**kw, **{field: value}), f"AttnSpec.{field}=")


def test_pool_none_only_for_element():
    _raises(lambda: AttnSpec(pool=["none"]), "'none' (no pooling) stands alone and only with target='element'")
    _raises(lambda: AttnSpec(target="element", pool=["avg"]), "keeps every position")


def test_bad_spec_argument_and_flavor_and_name():
    _raises(lambda: build(42, channels=8), "spec=42", "must be an AttnSpec or a preset name")
    _raises(lambda: AttnSpec.se(flavor="tim"), "flavor='tim'", "allowed: 'official', 'timm'")
    _raises(lambda: AttnSpec(name="my attention"), "must be a Python identifier")
    _raises(lambda: AttnSpec(act="rleu"), "did you mean 'relu'?")
    _raises(lambda: AttnSpec(pool=7), "must be a list or tuple")
    _raises(lambda: AttnSpec.se().replace(gates="tanh"), "unknown field")
    _raises(lambda: get_spec("se", ratio=4), "AttnSpec.se='ratio'", "takes no such argument", "'reduction'")


def test_kernel_target_is_accepted_by_the_spec():
    spec = AttnSpec(pool=["avg", "max"], target="kernel")
    assert spec.pool == ("avg", "max") and spec.kind == "kernel" and spec.gate == "softmax"
    _raises(lambda: AttnSpec(target="kernel", experts=4, heads=["in"]), "the 'kernel' head must mix them")
    _raises(lambda: build(AttnSpec.se(), channels=8, conv=torch.nn.Conv2d(8, 8, 3)), "only a kernel-target")


def test_spec_error_pickles_with_its_fields():
    err = _raises(lambda: AttnSpec(gate="nope"), "nope")
    back = pickle.loads(pickle.dumps(err))
    assert isinstance(back, SpecError) and str(back) == str(err) and back.field == "AttnSpec.gate"


def test_details_survive_pickling_and_copy():
    """A pass's error keeps the attempts it made (``details``) through pickling (a worker, DDP) and copy."""
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.Flatten(), torch.nn.Linear(8, 2))
    with pytest.raises(ModelError) as info:  # 16 x 16 input: the Linear gets 8 * 14 * 14 features
        insert_attention(model, AttnSpec.se(), example_inputs=torch.randn(1, 3, 16, 16))
    err = info.value
    assert err.details and "on meta tensors" in err.details
    for back in (pickle.loads(pickle.dumps(err)), copy.copy(err), copy.deepcopy(err)):
        assert type(back) is type(err) and str(back) == str(err) and back.field == err.field
        assert back.details == err.details and back.allowed == err.allowed
    spec_err = _raises(lambda: AttnSpec(gate="nope"), "nope")
    assert pickle.loads(pickle.dumps(spec_err)).allowed == spec_err.allowed and spec_err.allowed


def test_spec_error_is_exported():
    assert dynattn.SpecError is SpecError and issubclass(SpecError, ValueError)


@pytest.mark.parametrize(("make", "fragments"), [
    # fuse
    (lambda: AttnSpec(fuse="multiply"), ("AttnSpec.fuse='multiply'", "allowed: 'mul', 'mul_one_plus', 'add'")),
    (lambda: AttnSpec(target="kernel", fuse="add"), ("AttnSpec.fuse='add'", "has no effect here", "kernel target")),
    # extent
    (lambda: AttnSpec(extent=1), ("AttnSpec.extent=1", "0 (global pooling) or an int >= 2")),
    (lambda: AttnSpec(extent=-2), ("AttnSpec.extent=-2",)),
    (lambda: AttnSpec(target="spatial", extent=2), ("AttnSpec.extent=2", "has no effect here")),
    (lambda: AttnSpec(pool=["lse"], extent=2), ("'lse' cannot gather over a local extent", "allowed: 'avg', 'max'")),
    (lambda: AttnSpec(excite="conv1d", extent=2), ("AttnSpec.excite='conv1d'", "a local extent excites")),
    (lambda: AttnSpec(extent=2, branches=["b c h w -> b c w h"]), ("AttnSpec.branches", "rotations apply")),
    # strip
    (lambda: AttnSpec(target="strip", pool=["avg", "max"]), ("target='strip' pools along W and along H with one op",)),
    (lambda: AttnSpec(target="strip", merge="concat"), ("AttnSpec.merge='concat'", "allowed: 'sum', 'prod'")),
    (lambda: AttnSpec(target="channel", merge="prod"), ("AttnSpec.merge='prod'", "does not serve target='channel'")),
    (lambda: AttnSpec(target="strip", excite="conv1d"), ("AttnSpec.excite='conv1d'", "does not serve")),
    (lambda: AttnSpec(target="strip", excite="mlp", norm="gn"), ("AttnSpec.norm='gn'", "allowed: None, 'bn'")),
    # pools with modules
    (lambda: AttnSpec(target="spatial", pool=["attn"]), ("'attn' pools a channel descriptor",)),
    (lambda: AttnSpec(pool=["dct"], frequencies="top3"), ("AttnSpec.frequencies='top3'", "'top4'")),
    (lambda: AttnSpec(frequencies="low4"), ("AttnSpec.frequencies='low4'", "has no effect here", "pool='dct'")),
    (lambda: AttnSpec(pool=["attn"], branches=["b c h w -> b c w h"]), ("rotations apply",)),
    # excitations and their fields
    (lambda: AttnSpec(target="spatial", pool=["none"], excite="none"), ("an unpooled spatial stage",)),
    (lambda: AttnSpec(padding_mode="circular"), ("AttnSpec.padding_mode='circular'", "it pads excite='conv1d'")),
    (lambda: AttnSpec(excite="conv1d", padding_mode="reflect"), ("allowed: 'zeros', 'circular'",)),
    (lambda: AttnSpec(dilation=2), ("AttnSpec.dilation=2", "has no effect here")),
    (lambda: AttnSpec(target="spatial", dilation=0), ("AttnSpec.dilation=0", "must be >= 1")),
    (lambda: AttnSpec(target="element", excite="energy", bias=False), ("AttnSpec.bias=False", "'energy'")),
    (lambda: AttnSpec(bn_eps=1e-3), ("AttnSpec.bn_eps=0.001", "has no effect here", "SimAM's lambda")),
    (lambda: AttnSpec(norm="ln", excite="channelwise"), ("AttnSpec.norm='ln'", "allowed: None, 'bn'")),
    (lambda: AttnSpec(excite="linear", act="relu"), ("AttnSpec.act='relu'", "has no effect here")),
    (lambda: AttnSpec(rounding="up"), ("AttnSpec.rounding='up'", "'nearest_90'")),
    # parallel composites
    (lambda: AttnSpec(stages=[AttnSpec.se()], fuse="add"), ("AttnSpec.fuse='add'", "merge='sum' or 'prod'")),
    (lambda: AttnSpec(stages=[AttnSpec.se()], merge="concat"), ("AttnSpec.merge='concat'", "allowed: 'sum', 'prod'")),
    (lambda: AttnSpec(stages=[AttnSpec.se()], merge="sum", gate="softmax"), ("AttnSpec.gate='softmax'",)),
    (lambda: AttnSpec(stages=[AttnSpec.cbam()], merge="sum"), ("AttnSpec.stages[0]", "combines leaf stages")),
    (lambda: AttnSpec(stages=[AttnSpec.se(init="identity")], merge="sum"), ("AttnSpec.stages[0].init='identity'",)),
    (lambda: AttnSpec(stages=[AttnSpec(fuse="add")], merge="prod"), ("AttnSpec.stages[0].fuse='add'",)),
    # presets
    (lambda: AttnSpec.ge(3, flavor="timm"), ("extent=3", "timm's GatherExcite takes 0 or an even extent")),
    (lambda: AttnSpec.ela(flavor="official"), ("flavor='official'", "allowed: 'timm'")),
])
def test_new_fields_are_validated(make, fragments):
    _raises(make, *fragments)
