"""flavor="timm" presets against timm.layers' modules, weights copied with load_timm_weights."""

import pytest
import torch
from timm.layers import EcaModule, SEModule
from timm.layers.cbam import CbamModule

from dynattn import AttnSpec, SpecError, build
from dynattn.interop import load_timm_weights
from tests.weights import randomize_norms

CHANNELS = (33, 64, 96, 256)

CASES = {
    "se": (lambda c: SEModule(c), AttnSpec.se(flavor="timm")),
    "se_r8": (lambda c: SEModule(c, rd_ratio=1 / 8), AttnSpec.se(8, flavor="timm")),
    "eca": (lambda c: EcaModule(channels=c), AttnSpec.eca(flavor="timm")),
    "cbam": (lambda c: CbamModule(c), AttnSpec.cbam(flavor="timm")),
    "cbam_k3_r4": (lambda c: CbamModule(c, rd_ratio=1 / 4, spatial_kernel_size=3),
                   AttnSpec.cbam(4, 3, flavor="timm")),
}


@pytest.mark.parametrize("channels", CHANNELS)
@pytest.mark.parametrize("case", list(CASES))
def test_matches_timm(case, channels):
    make_timm, spec = CASES[case]
    torch.manual_seed(channels)
    ref = make_timm(channels)
    randomize_norms(ref)
    ours = load_timm_weights(build(spec, channels=channels), ref)
    for train in (True, False):
        ref.train(train)
        ours.train(train)
        for _ in range(2):
            x = torch.randn(4, channels, 7, 12) * 3
            torch.testing.assert_close(ours(x), ref(x), atol=1e-5, rtol=0)
    for (name, a), (_, b) in zip(sorted(ref.named_buffers()), sorted(ours.named_buffers())):
        torch.testing.assert_close(a.float(), b.float(), atol=1e-5, rtol=0, msg=name)


def test_parameter_counts_match_timm():
    for case, (make_timm, spec) in CASES.items():
        for c in CHANNELS:
            n_ref = sum(p.numel() for p in make_timm(c).parameters())
            n_ours = sum(p.numel() for p in build(spec, channels=c).parameters())
            assert n_ref == n_ours, (case, c)


def test_load_timm_weights_rejects_mismatch():
    with pytest.raises(SpecError, match="shape"):
        load_timm_weights(build(AttnSpec.se(flavor="timm"), channels=64), SEModule(128))
    with pytest.raises(SpecError, match="no weight mapping"):
        load_timm_weights(build(AttnSpec.se(flavor="timm"), channels=64), torch.nn.Conv2d(1, 1, 1))
