"""dynattn's official-flavor presets against the reference formulas in tests/reference/.

Weights are copied from the reference into the built module; outputs must agree within
1e-5 in train and eval mode, at odd and even channel counts, with H != W; in train mode
the BatchNorm running statistics must update identically (momentum included).
"""

import pytest
import torch

from dynattn import AttnSpec, build
from tests.reference.bam import BAMReference
from tests.reference.cbam import CBAMReference
from tests.reference.coord import CoordAttReference
from tests.reference.eca import ECAReference
from tests.reference.ese import ESEReference
from tests.reference.fca import FcaReference
from tests.reference.gam import GAMReference
from tests.reference.gather_excite import GEThetaMinusReference
from tests.reference.gcnet import ContextBlockReference
from tests.reference.se import SEReference
from tests.reference.simam import SimAMReference
from tests.reference.srm import SRMReference
from tests.reference.triplet import TripletReference
from tests.weights import assert_equivalent, copy_weights, randomize_parameters

CHANNELS = (33, 64, 96, 256)
TOL = 1e-5


def _check(ours, ref, mapping, channels, steps=2, shape=(11, 7), randomize=False):
    """``randomize=True`` also draws every parameter of the reference at random first (for references
    whose layers start at zero or one)."""
    assert_equivalent(ours, ref, mapping, (3, channels, *shape), seed=channels, steps=steps, randomize=randomize,
                      tol=TOL)


@pytest.mark.parametrize("channels", CHANNELS)
def test_se_official(channels):
    ref = SEReference(channels, reduction=16)
    ours = build(AttnSpec.se(), channels=channels)
    _check(ours, ref, {"fc1.": "excite.fc1.", "fc2.": "excite.fc2."}, channels)


@pytest.mark.parametrize("channels", CHANNELS)
@pytest.mark.parametrize("k_size", [None, 3])
def test_eca_official(channels, k_size):
    ref = ECAReference(channels, k_size=k_size)
    ours = build(AttnSpec.eca("adaptive" if k_size is None else k_size), channels=channels)
    _check(ours, ref, {"conv.": "excite.conv."}, channels)


CBAM_MAP = {
    "ChannelGate.mlp.1.": "channel.excite.fc1.",
    "ChannelGate.mlp.3.": "channel.excite.fc2.",
    "SpatialGate.spatial.conv.": "spatial.excite.conv.",
    "SpatialGate.spatial.bn.": "spatial.excite.bn.",
}


@pytest.mark.parametrize("channels", CHANNELS)
def test_cbam_official(channels):
    ref = CBAMReference(channels, reduction=16, kernel_size=7)
    ours = build(AttnSpec.cbam(), channels=channels)
    _check(ours, ref, CBAM_MAP, channels)


@pytest.mark.parametrize("pools", [("avg", "max", "lp", "lse"), ("lse",), ("lp", "avg")])
def test_cbam_official_pool_types(pools):
    """The official code's lp and lse pool types (L2 norm and log-sum-exp over positions)."""
    ref = CBAMReference(64, reduction=8, kernel_size=3, pool_types=pools)
    cbam = AttnSpec.cbam(reduction=8, kernel_size=3)
    spec = AttnSpec.chain(cbam.stages[0].replace(pool=pools), cbam.stages[1], name="CBAM")
    ours = build(spec, channels=64)
    _check(ours, ref, CBAM_MAP, 64)


TRIPLET_MAP = {
    "ChannelGateH.spatial.": "cw.excite.",
    "ChannelGateW.spatial.": "hc.excite.",
    "SpatialGate.spatial.": "hw.excite.",
}


@pytest.mark.parametrize("channels", CHANNELS)
@pytest.mark.parametrize("no_spatial", [False, True])
def test_triplet_official(channels, no_spatial):
    ref = TripletReference(kernel_size=7, no_spatial=no_spatial)
    ours = build(AttnSpec.triplet(no_spatial=no_spatial), channels=channels)
    mapping = {k: v for k, v in TRIPLET_MAP.items() if not (no_spatial and k.startswith("SpatialGate"))}
    _check(ours, ref, mapping, channels)


@pytest.mark.parametrize("channels", CHANNELS)
def test_gam_official(channels):
    ref = GAMReference(channels, rate=4)
    ours = build(AttnSpec.gam(), channels=channels)
    _check(ours, ref, {
        "channel_attention.0.": "channel.excite.fc1.",
        "channel_attention.2.": "channel.excite.fc2.",
        "spatial_attention.0.": "spatial.excite.conv1.",
        "spatial_attention.1.": "spatial.excite.bn1.",
        "spatial_attention.3.": "spatial.excite.conv2.",
        "spatial_attention.4.": "spatial.excite.bn2.",
    }, channels, shape=(9, 6))


def test_triplet_uses_no_permute_copies():
    """The rotations are folded into the pooling patterns: no permute/contiguous of x."""
    code = build(AttnSpec.triplet(), channels=16).code
    assert "permute" not in code and "contiguous" not in code
    assert "'b c h w -> b 1 c w'" in code and "'b c h w -> b 1 c h'" in code  # pooled in place
    assert "'b 1 c h -> b 1 h c'" in code  # then viewed in the branch's order


# ---------------------------------------------------------------------------- beyond the first five
COORD_MAP = {"conv1.": "excite.fc1.", "bn1.": "excite.bn.", "conv_h.": "excite.fc_h.", "conv_w.": "excite.fc_w."}


@pytest.mark.parametrize("channels", CHANNELS)
@pytest.mark.parametrize("shape", [(11, 7), (6, 13)])
def test_coord_official(channels, shape):
    _check(build(AttnSpec.coord(), channels=channels), CoordAttReference(channels), COORD_MAP, channels,
           shape=shape, randomize=True)


@pytest.mark.parametrize("channels", CHANNELS)
@pytest.mark.parametrize("shape", [(11, 7), (2, 5)])
def test_simam_official(channels, shape):
    ours = build(AttnSpec.simam(), channels=channels)
    assert not list(ours.parameters()) and not list(ours.buffers())  # parameter-free
    _check(ours, SimAMReference(), {}, channels, shape=shape)


def test_simam_on_a_single_position_is_finite_where_the_official_code_divides_by_zero():
    x = torch.randn(2, 8, 1, 1)
    assert torch.isnan(SimAMReference()(x)).all()
    torch.testing.assert_close(build(AttnSpec.simam(), channels=8)(x), x * torch.sigmoid(torch.tensor(0.5)))


BAM_MAP = {
    "channel_att.gate_c.gate_c_fc_0.": "channel.excite.fc1.",
    "channel_att.gate_c.gate_c_bn_1.": "channel.excite.bn.",
    "channel_att.gate_c.gate_c_fc_final.": "channel.excite.fc2.",
    "spatial_att.gate_s.gate_s_conv_reduce0.": "spatial.excite.conv_reduce.",
    "spatial_att.gate_s.gate_s_bn_reduce0.": "spatial.excite.bn_reduce.",
    "spatial_att.gate_s.gate_s_conv_di_0.": "spatial.excite.conv1.",
    "spatial_att.gate_s.gate_s_bn_di_0.": "spatial.excite.bn1.",
    "spatial_att.gate_s.gate_s_conv_di_1.": "spatial.excite.conv2.",
    "spatial_att.gate_s.gate_s_bn_di_1.": "spatial.excite.bn2.",
    "spatial_att.gate_s.gate_s_conv_final.": "spatial.excite.conv_final.",
}


@pytest.mark.parametrize("channels", CHANNELS)
@pytest.mark.parametrize(("flavor", "combine"), [("official", "prod"), ("paper", "sum")])
@pytest.mark.parametrize("shape", [(11, 7), (9, 9)])
def test_bam(channels, flavor, combine, shape):
    ref = BAMReference(channels, reduction=16, combine=combine)
    _check(build(AttnSpec.bam(flavor=flavor), channels=channels), ref, BAM_MAP, channels, shape=shape)


@pytest.mark.parametrize("channels", CHANNELS)
@pytest.mark.parametrize("shape", [(11, 7), (1, 2)])
def test_srm_official(channels, shape):
    ref = SRMReference(channels)
    _check(build(AttnSpec.srm(), channels=channels), ref, {"cfc": "excite.weight", "bn.": "excite.bn."}, channels,
           shape=shape, randomize=True)


def test_srm_follows_the_official_head_at_small_variance():
    """SRM's official HEAD takes sqrt(var + 1e-5): on channels of variance about 1e-8 the epsilon dominates the
    style std, so the preset agrees with the HEAD reference there and the first commit's ``x.std()`` does not."""
    channels = 8
    ref = SRMReference(channels)
    torch.manual_seed(0)
    randomize_parameters(ref)
    ours, first_commit = build(AttnSpec.srm(), channels=channels), build(
        AttnSpec.srm().replace(pool=("avg", "std_unbiased")), channels=channels)
    mapping = {"cfc": "excite.weight", "bn.": "excite.bn."}
    copy_weights(ours, ref, mapping)
    copy_weights(first_commit, ref, mapping)
    x = 1 + 1e-4 * torch.randn(2, channels, 6, 5)  # std 1e-4 against sqrt(1e-5) = 3e-3
    for module in (ours, first_commit, ref):
        module.eval()
    torch.testing.assert_close(ours(x), ref(x), atol=1e-6, rtol=0)
    assert (first_commit(x) - ref(x)).abs().max() > 100 * 1e-6


FCA_MAP = {"fc.0.": "excite.fc1.", "fc.2.": "excite.fc2."}


@pytest.mark.parametrize("channels", [64, 96, 256])
@pytest.mark.parametrize("shape", [(14, 7), (7, 21), (28, 28), (5, 9)])
def test_fca_official(channels, shape):
    """The DCT built for each input size equals FcaNet's layer built for that size (its ResNets use 56, 28,
    14 and 7), frequency indices scaled by size // 7 (all 0 below 7, as in FcaNet)."""
    ref = FcaReference(channels, *shape)
    _check(build(AttnSpec.fca(), channels=channels), ref, FCA_MAP, channels, shape=shape)


@pytest.mark.parametrize("frequencies", ["top1", "top32", "low4", "bot8"])
def test_fca_frequency_selections(frequencies):
    ref = FcaReference(64, 14, 21, freq_sel_method=frequencies)
    _check(build(AttnSpec.fca(frequencies=frequencies), channels=64), ref, FCA_MAP, 64, shape=(14, 21))


@pytest.mark.parametrize("channels", CHANNELS)
def test_gc_official(channels):
    ref = ContextBlockReference(channels, ratio=1 / 16)
    mapping = {"conv_mask.": "pool_attn.conv.", "channel_add_conv.0.": "excite.fc1.",
               "channel_add_conv.1.": "excite.ln.", "channel_add_conv.3.": "excite.fc2."}
    for name in ("gc", "gca"):
        _check(build(getattr(AttnSpec, name)(), channels=channels), ref, mapping, channels, randomize=True)


@pytest.mark.parametrize("channels", CHANNELS)
@pytest.mark.parametrize("extent", [0, 2, 3, 4])
def test_ge_official(channels, extent):
    ours = build(AttnSpec.ge(extent), channels=channels)
    _check(ours, GEThetaMinusReference(extent), {}, channels, shape=(11, 7))


@pytest.mark.parametrize("channels", CHANNELS)
def test_ese_official(channels):
    _check(build(AttnSpec.ese(), channels=channels), ESEReference(channels), {"fc.": "excite."}, channels,
           randomize=True)
