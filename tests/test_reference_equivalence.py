"""dynattn's official-flavor presets against the reference formulas in tests/reference/.

Weights are copied from the reference into the built module; outputs must agree within
1e-5 in train and eval mode, at odd and even channel counts, with H != W; in train mode
the BatchNorm running statistics must update identically (momentum included).
"""

import pytest
import torch

from dynattn import AttnSpec, build
from tests.reference.cbam import CBAMReference
from tests.reference.eca import ECAReference
from tests.reference.gam import GAMReference
from tests.reference.se import SEReference
from tests.reference.triplet import TripletReference
from tests.weights import copy_weights, randomize_norms

CHANNELS = (33, 64, 96, 256)
TOL = 1e-5


def _check(ours, ref, mapping, channels, steps=2, shape=(11, 7)):
    torch.manual_seed(channels)
    randomize_norms(ref)
    copy_weights(ours, ref, mapping)
    for train in (True, False):
        ours.train(train)
        ref.train(train)
        for _ in range(steps):
            x = torch.randn(3, channels, *shape) * 2
            expected, got = ref(x), ours(x)
            assert got.shape == x.shape
            torch.testing.assert_close(got, expected, atol=TOL, rtol=0)
    # the train-mode forwards updated the running statistics the same way
    ours_state = ours.state_dict()
    for key, value in ref.state_dict().items():
        if "running" in key:
            prefix = next(s for s in mapping if key.startswith(s))
            torch.testing.assert_close(ours_state[mapping[prefix] + key[len(prefix):]], value, atol=TOL, rtol=0)


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
