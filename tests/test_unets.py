"""U-Nets from MONAI and segmentation_models_pytorch (references nobody here wrote) through the pass:
tracing that recovers from a branching forward, and the bounded input guess."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time

import pytest
import torch

from dynattn import AttnSpec
from dynattn.errors import ModelError
from graph_passes import TraceFailure, insert_attention, list_sites, report
from graph_passes.rewrite import original_class
from graph_passes.shapes import ProbeBudget
from graph_passes.trace import trace_model

monai_nets = pytest.importorskip("monai.networks.nets")


def _check_unchanged(model, out, x):
    assert isinstance(out, type(model)) and original_class(out) is type(model)
    assert set(model.state_dict()) <= set(out.state_dict())
    model.eval()
    out.eval()
    with torch.no_grad():
        torch.testing.assert_close(out(x), model(x), atol=1e-6, rtol=0)


def _training_step_moves_attention(out, x, reported=None):
    """``reported``: the model the pass returned, where ``out`` wraps it."""
    out.train()
    names = [r.module for r in report(reported or out).records]
    before = {n: [p.detach().clone() for p in out.get_submodule(n).parameters()] for n in names}
    out(x).square().mean().backward()
    with torch.no_grad():
        for n in names:
            for p in out.get_submodule(n).parameters():
                if p.grad is not None:
                    p -= 0.1 * p.grad
    moved = [n for n in names if any(not torch.equal(a, b) for a, b in
                                    zip(before[n], out.get_submodule(n).parameters()))]
    assert moved, "no attention module's weights moved in a training step"


def _real_calls(module: torch.nn.Module) -> list[tuple[int, ...]]:
    """The input shapes of ``module``'s calls on real tensors (not meta, not fake), as they happen."""
    from torch._subclasses.fake_tensor import FakeTensor

    calls: list[tuple[int, ...]] = []
    module.register_forward_pre_hook(lambda _m, args: calls.extend(
        tuple(a.shape) for a in args[:1] if a.device.type != "meta" and not isinstance(a, FakeTensor)))
    return calls


def test_basic_unet_2d_recovers_from_upcat():
    """Shape propagation fails in each UpCat (fx recorded its branch for a non-tensor skip): each becomes a leaf.
    Real values cannot mend that failure, so no guessed size is ever run on real zeros (seconds each)."""
    torch.manual_seed(0)
    model = monai_nets.BasicUNet(spatial_dims=2, features=(8, 8, 16, 32, 64, 8)).eval()
    real = _real_calls(model.conv_0.conv_0.conv)
    out = insert_attention(model, AttnSpec.se(init="identity", reduction=4))
    assert real == [], real
    rep = report(out)
    sites = [r.site for r in rep.records]
    assert any(s.startswith("down_") for s in sites), sites  # encoder
    assert any(s.startswith("upcat_") for s in sites), sites  # decoder
    assert {p for p, _ in rep.untraced} == {"upcat_1", "upcat_2", "upcat_3", "upcat_4"}
    assert all("branches" in why and len(why) < 200 for _, why in rep.untraced)
    x = torch.randn(2, 1, 32, 32)
    _check_unchanged(model, out, x)
    _training_step_moves_attention(out, x)


@pytest.mark.heavy
def test_basic_unet_3d_recovers_from_upcat():
    torch.manual_seed(0)
    model = monai_nets.BasicUNet(spatial_dims=3, features=(4, 4, 8, 16, 32, 4)).eval()
    out = insert_attention(model, AttnSpec.se(init="identity", reduction=4))
    sites = [r.site for r in report(out).records]
    assert any(s.startswith("down_") for s in sites) and any(s.startswith("upcat_") for s in sites), sites
    x = torch.randn(1, 1, 32, 32, 32)  # InstanceNorm in training needs more than one voxel at the bottom
    _check_unchanged(model, out, x)
    _training_step_moves_attention(out, x)


def test_propagation_error_is_short_with_details():
    model = monai_nets.BasicUNet(spatial_dims=2, features=(8, 8, 16, 32, 64, 8))
    with pytest.raises(ModelError) as info:
        insert_attention(model, "se", example_inputs=torch.randn(2, 3, 32, 32))
    first = str(info.value).splitlines()[0]
    assert len(first) < 200, first
    assert "failed at node 'conv_0_conv_0_conv'" in first and "leaf_modules=['conv_0']" in first
    assert "on meta tensors" in info.value.details


_BOUNDED = textwrap.dedent("""
    import resource, sys
    resource.setrlimit(resource.RLIMIT_AS, (8_000_000_000, 8_000_000_000))
    import segmentation_models_pytorch as smp
    from graph_passes import list_sites
    model = smp.UnetPlusPlus("resnet18", encoder_weights=None)
    try:
        sites = list_sites(model, "se")
    except Exception as exc:
        print("ERROR", type(exc).__name__, str(exc).splitlines()[0])
    else:
        print("SITES", len(sites), sorted({s.name.split(".")[0] for s in sites}))
""")


@pytest.mark.heavy
def test_unetplusplus_guess_is_bounded():
    pytest.importorskip("segmentation_models_pytorch")
    run = subprocess.run([sys.executable, "-c", _BOUNDED], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.startswith("SITES") or "example_inputs" in run.stdout, run.stdout


# smp's root forward checks the input size (control flow fx cannot trace): the pass descends into the
# encoder and decoder. Decoder sites under the default placement (residual, with skip and decoder where the model
# has them) both ways: a decoder that takes a list of features (UnetPlusPlus, DeepLabV3Plus) gets it from one run
# of the whole model on a guessed meta input.
_SMP = [("FPN", True, True), ("FPN", False, True), ("UnetPlusPlus", True, True), ("UnetPlusPlus", False, True),
        ("DeepLabV3Plus", True, True), ("DeepLabV3Plus", False, True), ("Unet", True, True), ("Unet", False, True)]


@pytest.mark.parametrize("name, given, decoder", [pytest.param(*case, marks=() if case[:2] == ("FPN", True)
                                                                else pytest.mark.heavy) for case in _SMP])
def test_smp_untraceable_root_descends(name, given, decoder):
    smp = pytest.importorskip("segmentation_models_pytorch")
    torch.manual_seed(0)
    model = getattr(smp, name)("resnet18", encoder_weights=None).eval()
    x = torch.randn(2, 3, 64, 64)
    out = insert_attention(model, AttnSpec.se(init="identity"), example_inputs=x if given else None)
    rep = report(out)
    parts = {r.site.split(".")[0] for r in rep.records}
    assert "encoder" in parts and ("decoder" in parts) == decoder, parts
    if name != "Unet":
        assert rep.untraced[0][0] == "" and "forward itself" in rep.untraced[0][1]
    _check_unchanged(model, out, x)
    _training_step_moves_attention(out, x)


class _ValueGate(torch.nn.Module):
    """Control flow on a tensor's value: fx cannot trace it, and only real tensors can run it."""

    def forward(self, x):
        return x * 2 if x.mean() > 0 else x


def _value_net():
    return torch.nn.Sequential(torch.nn.Conv2d(3, 16, 3, padding=1), _ValueGate(), torch.nn.Conv2d(16, 16, 3),
                               torch.nn.BatchNorm2d(16), torch.nn.ReLU())


def test_probe_on_real_tensors_is_bounded(monkeypatch):
    import graph_passes.analysis as analysis

    assert list_sites(_value_net(), "se")  # within the default budget: a guessed input runs on real zeros
    monkeypatch.setattr(analysis, "PROBE_BYTES", 10_000)
    with pytest.raises(ProbeBudget) as info:
        list_sites(_value_net(), "se")
    first = str(info.value).splitlines()[0]
    assert "over the probe budget" in first and "pass example_inputs" in first and len(first) < 200, first
    assert "on meta tensors" in info.value.details  # the attempts that led to a run on real tensors
    # given inputs are the caller's choice: no budget
    assert list_sites(_value_net(), "se", example_inputs=torch.randn(1, 3, 32, 32))


class _BranchOverGate(torch.nn.Module):
    """Branches on a type (fx records one branch) around a leaf that needs values: its failure on meta and fake
    tensors is mended by real zeros, not by making this module a leaf."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.gate, self.conv2 = torch.nn.Conv2d(16, 16, 3, padding=1), _ValueGate(), torch.nn.Conv2d(
            16, 16, 3, padding=1)

    def forward(self, x):
        if isinstance(x, (list, tuple)):
            x = x[0]
        return self.conv2(self.gate(self.conv1(x)))


def test_failure_values_can_mend_runs_on_real_zeros():
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 16, 3, padding=1), _BranchOverGate(), torch.nn.ReLU())
    real = _real_calls(model[1].conv1)
    out = insert_attention(model, AttnSpec.se(reduction=2), where="conv")
    assert real and all(shape[-2:] == (224, 224) for shape in real), real  # the first size guessed, on real zeros
    assert "1.conv1" in {r.site for r in report(out).records}  # traced through, not made a leaf
    assert not report(out).untraced


class _SlowUnlessLarge(torch.nn.Module):
    """Takes 20 ms a call and accepts only 512-pixel inputs (the last size guessed): every guess before fails."""

    def forward(self, x):
        time.sleep(0.02)
        if x.shape[-1] != 512:
            raise ValueError(f"expects 512 pixels, got {x.shape[-1]}")
        return x


def _slow_net():
    return torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), _SlowUnlessLarge(), torch.nn.Conv2d(8, 8, 3),
                               torch.nn.BatchNorm2d(8), torch.nn.ReLU())


def test_probe_time_is_bounded(monkeypatch):
    """``DYNATTN_PROBE_S``: guessing sizes stops once it has taken longer, with an error asking for
    example_inputs; within the default budget the same model finds its size."""
    import graph_passes.analysis as analysis

    assert list_sites(_slow_net(), "se")  # the 4th size guessed runs
    monkeypatch.setattr(analysis, "PROBE_S", 0.01)
    start = time.monotonic()
    with pytest.raises(ProbeBudget) as info:
        list_sites(_slow_net(), "se")
    assert time.monotonic() - start < 2.0  # one guess, not all four
    first = str(info.value).splitlines()[0]
    assert "took over 0.01 s (the probe budget)" in first and "example_inputs" in first and len(first) < 200, first
    assert list_sites(_slow_net(), "se", example_inputs=torch.randn(1, 3, 512, 512))  # given inputs: no budget


def test_trace_failure_first_line_is_short():
    smp = pytest.importorskip("segmentation_models_pytorch")
    with pytest.raises(TraceFailure) as info:
        trace_model(smp.FPN("resnet18", encoder_weights=None))
    first = str(info.value).splitlines()[0]
    assert len(first) < 200 and "FPN.forward itself" in first and "leaf_modules" in first, first
    assert "symbolically traced variables cannot be used as inputs to control flow" in info.value.details


@pytest.mark.heavy
@pytest.mark.parametrize("dims", [2, 3])
def test_monai_unet_residual_units(dims):
    """MONAI's UNet with residual units: a site per residual unit, encoder and decoder (6 for 3 levels), and its
    skip connections and decoder blocks (the default adds them where a residual model has them)."""
    torch.manual_seed(0)
    model = monai_nets.UNet(spatial_dims=dims, in_channels=1, out_channels=2, channels=(8, 16, 32, 64),
                            strides=(2, 2, 2), num_res_units=2).eval()
    out = insert_attention(model, AttnSpec.se(init="identity", reduction=4))
    rules = [r.rule for r in report(out).records]
    assert rules.count("residual") == 6 and {"skip", "decoder"} <= set(rules), rules
    x = torch.randn(2, 1, *(16,) * dims)
    _check_unchanged(model, out, x)
    _training_step_moves_attention(out, x)


@pytest.mark.heavy
@pytest.mark.parametrize("dims", [2, 3])
def test_basic_unet_default_features(dims):
    """The issue's call as written: MONAI's defaults (32..256 features), no leaf, where or example_inputs.
    The guessed input's probe stays on meta tensors once the UpCats are leaves (no real-tensor budget hit)."""
    model = monai_nets.BasicUNet(spatial_dims=dims).eval()
    out = insert_attention(model, AttnSpec.se(init="identity"))
    rep = report(out)
    assert rep.traced == ("",) and "" not in {p for p, _ in rep.untraced}, rep.untraced
    sites = [r.site for r in rep.records]
    encoder = {s.split(".")[0] for s in sites if not s.startswith("upcat_")}
    assert encoder == {"conv_0", "down_1", "down_2", "down_3"}, sites  # the features the UpCats take
    assert {"upcat_1", "upcat_2", "upcat_3", "upcat_4"} <= set(sites)
    _check_unchanged(model, out, torch.randn(1, 1, *(32,) * dims))


def _segmentation_models() -> dict:
    """The models of the issue, each a builder and the shape of an input it takes (small configurations)."""
    torchvision = pytest.importorskip("torchvision")
    smp = pytest.importorskip("segmentation_models_pytorch")
    seg = torchvision.models.segmentation
    mono, rgb = (2, 1, 64, 64), (2, 3, 64, 64)
    return {
        "monai.BasicUNet-2d": (lambda: monai_nets.BasicUNet(spatial_dims=2, features=(8, 8, 16, 32, 64, 8)), mono),
        "monai.BasicUNet-3d": (lambda: monai_nets.BasicUNet(spatial_dims=3, features=(4, 4, 8, 16, 32, 4)),
                               (1, 1, 32, 32, 32)),
        "monai.UNet": (lambda: monai_nets.UNet(spatial_dims=2, in_channels=1, out_channels=2, channels=(8, 16, 32, 64),
                                               strides=(2, 2, 2)), mono),
        "monai.DynUNet": (lambda: monai_nets.DynUNet(2, 1, 2, kernel_size=[3, 3, 3, 3], strides=[1, 2, 2, 2],
                                                     upsample_kernel_size=[2, 2, 2]), mono),
        "monai.SegResNet": (lambda: monai_nets.SegResNet(spatial_dims=2, init_filters=8, in_channels=1,
                                                         out_channels=2), mono),
        "monai.AttentionUnet": (lambda: monai_nets.AttentionUnet(spatial_dims=2, in_channels=1, out_channels=2,
                                                                 channels=(8, 16, 32), strides=(2, 2)), mono),
        **{f"smp.{name}": (lambda name=name: getattr(smp, name)("resnet18", encoder_weights=None), rgb)
           for name in ("Unet", "FPN", "DeepLabV3Plus", "UnetPlusPlus")},
        "torchvision.lraspp_mobilenet_v3_large": (lambda: seg.lraspp_mobilenet_v3_large(
            weights=None, weights_backbone=None, num_classes=3), rgb),
        "torchvision.deeplabv3_resnet50": (lambda: seg.deeplabv3_resnet50(weights=None, weights_backbone=None,
                                                                            num_classes=3), rgb),
    }


_NO_ARGUMENT_CI = ("monai.DynUNet", "monai.SegResNet", "monai.AttentionUnet", "torchvision.lraspp_mobilenet_v3_large")
_NO_ARGUMENT = (*_NO_ARGUMENT_CI, "torchvision.deeplabv3_resnet50")  # the rest's default has its own tests above
_RULE_CASES = [(name, where, given) for name in (
    "monai.BasicUNet-2d", "monai.BasicUNet-3d", "monai.UNet", *_NO_ARGUMENT[:3], "smp.Unet", "smp.FPN",
    "smp.DeepLabV3Plus", "smp.UnetPlusPlus", *_NO_ARGUMENT[3:]) for where in ("decoder", "skip", "encoder")
    for given in ((False, True) if name.startswith("smp") else (False,))]


@pytest.mark.parametrize("name, where, given", [
    *(pytest.param(name, None, False, marks=() if name in _NO_ARGUMENT_CI else pytest.mark.heavy)
      for name in _NO_ARGUMENT),
    *(pytest.param(*case, marks=pytest.mark.heavy) for case in _RULE_CASES)])
def test_the_segmentation_networks_of_the_issue_take_attention(name, where, given):
    """Each with the default placement and no leaf / where / example_inputs argument, and with each U-Net rule
    (with and without example_inputs where the root does not trace): sites found, class and state_dict keys kept,
    identity init unchanged, a training step moves the attention's weights; a rule that finds nothing says so in
    a short first line, and no guessed input exceeds its probe budget."""
    torch.manual_seed(0)
    build, shape = _segmentation_models()[name]
    model, x = build().eval(), torch.randn(shape)
    try:
        out = insert_attention(model, AttnSpec.se(init="identity", reduction=4), where=where,
                               example_inputs=x if given else None)
    except ModelError as err:
        first = str(err).splitlines()[0]
        assert where is not None and not isinstance(err, ProbeBudget), first
        assert f"site rule {where!r} finds no" in first and len(first) < 300, first
        return
    assert report(out).records and (where is None or {r.rule for r in report(out).records} == {where})
    reported = out
    if name.startswith("torchvision"):  # a dict of maps: the "out" map is the segmentation
        model, out = _OutMap(model), _OutMap(out)
    _check_unchanged(model, out, x)
    _training_step_moves_attention(out, x, reported)


class _OutMap(torch.nn.Module):
    """A torchvision segmentation model's ``"out"`` map as its output, its attention reachable by its names."""

    def __init__(self, inner: torch.nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x):
        return self.inner(x)["out"]

    def get_submodule(self, target: str) -> torch.nn.Module:
        return self.inner.get_submodule(target)


class _Residual(torch.nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.body = torch.nn.Sequential(torch.nn.Conv2d(c, c, 3, padding=1), torch.nn.BatchNorm2d(c),
                                        torch.nn.ReLU(), torch.nn.Conv2d(c, c, 3, padding=1))

    def forward(self, x):
        return x + self.body(x)


class _TwoParts(torch.nn.Module):
    """A root whose forward checks the input's size (no trace) over a residual part, a plain conv stack of one
    resolution (no residual add, no stage output: the default finds nothing there) and a head making the logits."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), _Residual(8))
        self.plain = torch.nn.Sequential(torch.nn.Conv2d(8, 8, 3, padding=1), torch.nn.BatchNorm2d(8),
                                         torch.nn.ReLU(), torch.nn.Conv2d(8, 8, 3, padding=1))
        self.head = torch.nn.Sequential(torch.nn.Conv2d(8, 4, 1), torch.nn.Identity())

    def forward(self, x):
        if x.shape[-1] % 2:
            raise ValueError("even sizes only")
        return self.head(self.plain(self.stem(x)))


def test_no_site_fallback_is_per_part():
    """The default's fallback (each conv block) applies to the part where the default finds nothing; the part
    with residual adds keeps its residual sites; the head whose output is the model's (the logits) gets none."""
    x = torch.randn(2, 3, 16, 16)
    for given in ((x,), None):
        sites = list_sites(_TwoParts(), AttnSpec.se(reduction=2), example_inputs=given)
        by_part = {part: {s.rule for s in sites if s.name.startswith(part + ".")} for part in ("stem", "plain", "head")}
        assert by_part == {"stem": {"residual"}, "plain": {"conv"}, "head": set()}, [(s.name, s.rule) for s in sites]
        assert [s.name for s in sites if s.rule == "conv"] == ["plain.2", "plain.3"]
    model = _TwoParts().eval()
    out = insert_attention(model, AttnSpec.se(init="identity", reduction=2))
    _check_unchanged(model, out, x)
