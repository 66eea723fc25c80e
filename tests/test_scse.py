"""The scSE preset against segmentation_models_pytorch's own ``SCSEModule`` (weights copied with
``dynattn.interop.load_smp_weights``), the paper's form, identity init, ranks and errors."""

import pytest
import torch

smp_modules = pytest.importorskip("segmentation_models_pytorch.base.modules")

from dynattn import AttnSpec, build, get_spec, load_timm_weights  # noqa: E402
from dynattn.errors import SpecError  # noqa: E402
from dynattn.interop import load_smp_weights  # noqa: E402

SCSEModule = smp_modules.SCSEModule

#: (channels, reduction): odd and even channel counts with smp's default r = 16 and the paper's r = 2.
CASES = [(33, 16), (64, 16), (96, 16), (33, 2), (64, 2), (96, 2)]


def _randomised(module: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Every parameter drawn afresh, biases included (a zero bias hides a mapping error)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype) * 0.5)
    return module


def _pair(channels: int, reduction: int, dtype=torch.float32, seed: int = 0):
    theirs = _randomised(SCSEModule(channels, reduction=reduction), seed).to(dtype)
    ours = build(AttnSpec.scse(reduction, flavor="smp"), channels=channels, dtype=dtype)
    return load_smp_weights(ours, theirs), theirs


@pytest.mark.parametrize("channels, reduction", CASES)
@pytest.mark.parametrize("train", [True, False])
def test_equals_smp_scse(channels, reduction, train):
    ours, theirs = _pair(channels, reduction, seed=channels + reduction)
    ours.train(train)
    theirs.train(train)
    x = torch.randn(3, channels, 11, 7, generator=torch.Generator().manual_seed(1))
    want = theirs(x)
    got = ours(x)
    assert got.shape == want.shape == x.shape
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    assert (got - x).abs().max() > 1e-2  # the module does something: not an identity by accident


@pytest.mark.parametrize("channels, reduction", [(33, 16), (64, 2)])
def test_gradients_equal_smp_scse(channels, reduction):
    ours, theirs = _pair(channels, reduction, dtype=torch.float64, seed=7)
    x = torch.randn(2, channels, 6, 9, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    g = torch.randn_like(x)
    (ours(xa) * g).sum().backward()
    (theirs(xb) * g).sum().backward()
    torch.testing.assert_close(xa.grad, xb.grad, atol=1e-10, rtol=1e-10)
    pairs = {"channel.excite.fc1": theirs.cSE[1], "channel.excite.fc2": theirs.cSE[3],
             "spatial.excite.conv": theirs.sSE[0]}
    for path, ref in pairs.items():
        mine = ours.get_submodule(path)
        for name in ("weight", "bias"):
            got, want = getattr(mine, name).grad, getattr(ref, name).grad
            assert got is not None and want.abs().max() > 0
            torch.testing.assert_close(got.reshape(want.shape), want, atol=1e-10, rtol=1e-10)


def test_default_reduction_is_smps_16():
    ours = build(AttnSpec.scse(flavor="smp"), channels=64)
    load_smp_weights(ours, SCSEModule(64))  # smp's default reduction=16: the shapes agree
    assert ours.channel.excite.fc1.out_features == 64 // 16


def test_paper_form_structure():
    """The paper's module: cSE (average pooling, FC C -> C // 2 with bias, ReLU, FC back, sigmoid) and sSE (a
    1x1 conv C -> 1 with bias, sigmoid) on the same x, their maps summed; the smp flavor differs only in r."""
    spec = AttnSpec.scse()
    assert spec == get_spec("scse") == get_spec("scse", flavor="official")
    assert spec.merge == "sum" and spec.gate == "identity" and spec.fuse == "mul"
    channel, spatial = spec.stages
    assert (channel.target, channel.pool, channel.excite, channel.reduction, channel.rounding, channel.bias,
            channel.act, channel.gate) == ("channel", ("avg",), "mlp", 2, "floor", True, "relu", "sigmoid")
    assert (spatial.target, spatial.pool, spatial.excite, spatial.bias, spatial.gate) == (
        "spatial", ("none",), "linear", True, "sigmoid")
    assert "1803.02579" in spec.reference and "SCSEModule" in AttnSpec.scse(flavor="smp").reference
    assert AttnSpec.scse(flavor="smp") == spec.replace(
        stages=(channel.replace(reduction=16), spatial), reference=AttnSpec.scse(flavor="smp").reference)
    m = build(spec, channels=33)
    assert (m.channel.excite.fc1.in_features, m.channel.excite.fc1.out_features) == (33, 16)
    assert tuple(m.spatial.excite.conv.weight.shape) == (1, 33, 1, 1)
    # the paper's formula, written out from the built module's own layers
    x = torch.randn(2, 33, 5, 8)
    fc1, fc2, conv = m.channel.excite.fc1, m.channel.excite.fc2, m.spatial.excite.conv
    c = torch.sigmoid(fc2(torch.relu(fc1(x.mean((2, 3))))))[:, :, None, None]
    s = torch.sigmoid(conv(x))
    torch.testing.assert_close(m(x), x * c + x * s, atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("flavor", ["official", "smp"])
def test_identity_init_is_exact(flavor):
    m = build(AttnSpec.scse(flavor=flavor, init="identity"), channels=48)
    _randomised(m, 3)
    with torch.no_grad():
        m.mix.zero_()  # the blend's own parameter starts at 0; every other weight is random
    for train in (True, False):
        m.train(train)
        x = torch.randn(2, 48, 9, 5)
        assert torch.equal(m(x), x)
    m(torch.randn(2, 48, 9, 5)).sum().backward()
    assert m.mix.grad is not None and m.mix.grad.abs() > 0  # training moves it away from the identity
    with torch.no_grad():
        m.mix.fill_(1.0)  # mix = 1: the plain scSE, x * (cSE + sSE)
    plain = build(AttnSpec.scse(flavor=flavor), channels=48)
    plain.load_state_dict({k: v for k, v in m.state_dict().items() if k != "mix"})
    x = torch.randn(2, 48, 9, 5)
    torch.testing.assert_close(m(x), plain(x), atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("dims", [1, 3])
def test_other_ranks_equal_smp_on_a_flattened_map(dims):
    """smp's module is 2-D. cSE pools over every position and sSE maps each position on its own, so scSE on a
    (B, C, L) or (B, C, D, H, W) map equals smp's on the same values laid out as (B, C, L, 1) / (B, C, D*H, W)."""
    ours, theirs = _pair(40, 4, seed=11)
    m = build(AttnSpec.scse(4, flavor="smp"), channels=40, spatial_dims=dims)
    m.load_state_dict({k: v.reshape(m.state_dict()[k].shape) for k, v in ours.state_dict().items()})
    shape = (2, 40, 13) if dims == 1 else (2, 40, 3, 5, 4)
    x = torch.randn(shape)
    flat = x.reshape(2, 40, -1, 1 if dims == 1 else shape[-1])
    torch.testing.assert_close(m(x), theirs(flat).reshape(shape), atol=1e-5, rtol=1e-5)


def test_errors_for_bad_arguments():
    with pytest.raises(SpecError, match=r"flavor='timm'.*'official', 'smp'"):
        AttnSpec.scse(flavor="timm")
    with pytest.raises(SpecError, match="reduction"):
        AttnSpec.scse(reduction=0)
    with pytest.raises(SpecError, match="takes no such argument"):
        get_spec("scse", ratio=2)
    with pytest.raises(SpecError, match="leaves 0 hidden units at channels=8"):  # smp builds a 0-wide conv here
        build(AttnSpec.scse(flavor="smp"), channels=8)
    with pytest.raises(SpecError, match="has shape"):  # r = 2 module, r = 16 weights: refused before copying
        load_smp_weights(build(AttnSpec.scse(), channels=64), SCSEModule(64))
    with pytest.raises(SpecError, match=r"no weight mapping.*'SCSEModule'"):
        load_smp_weights(build(AttnSpec.scse(), channels=64), torch.nn.Conv2d(64, 1, 1))
    with pytest.raises(SpecError, match="load_smp_weights"):
        load_timm_weights(build(AttnSpec.scse(flavor="smp"), channels=64), SCSEModule(64))
    with pytest.raises(SpecError, match="is not set by"):  # an identity module's mix has no counterpart in smp
        load_smp_weights(build(AttnSpec.scse(flavor="smp", init="identity"), channels=64), SCSEModule(64))


def test_spatial_linear_validation():
    """The 1x1 spatial layer is ``excite='linear'`` on target 'spatial'; an unpooled spatial stage takes it or the
    conv bottleneck, nothing else."""
    spec = AttnSpec(target="spatial", pool=["none"], excite="linear")
    assert build(spec, channels=16)(torch.randn(2, 16, 4, 4)).shape == (2, 16, 4, 4)
    with pytest.raises(SpecError, match="'conv', 'linear'"):
        AttnSpec(target="spatial", pool=["none"], excite="none")
    with pytest.raises(SpecError, match="kernel_size"):
        AttnSpec(target="spatial", pool=["none"], excite="linear", kernel_size=3)
    pooled = AttnSpec(target="spatial", pool=["max", "avg"], excite="linear")  # a 1x1 layer over the descriptors
    same = AttnSpec(target="spatial", pool=["max", "avg"], excite="conv", kernel_size=1)
    a, b = build(pooled, channels=16), build(same, channels=16)
    b.load_state_dict(a.state_dict())
    x = torch.randn(2, 16, 5, 6)
    torch.testing.assert_close(a(x), b(x))
