"""DynamicConv1d and DynamicConv3d: nn.Conv1d / nn.Conv3d semantics, every strategy equal to a per-sample
reference, exact upcycling, ODConv's heads over k or kd*kh*kw positions, build's dispatch, ONNX with a
dynamic batch, and graph_passes converting 1-D and 3-D models."""

import warnings

import pytest
import torch
import torch.fx as fx
import torch.nn.functional as F
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from torch import nn

from dynattn import AttnSpec, DynamicConv1d, DynamicConv2d, DynamicConv3d, SpecError, build, mixing, set_temperature
from dynattn.dynamic_conv import choose_strategy
from dynattn.errors import InputError
from dynattn.registry import leaf_modules
from graph_passes import insert_attention, list_sites, report
from tests.blocks import columns_form, small_blocks

STRATEGIES = ("kernel", "blocked", "output")
# each strategy, and kernel and blocked mixing also in their columns form (im2col and a batched matmul)
RUNS = [(s, False) for s in STRATEGIES] + [("kernel", True), ("blocked", True), ("output", True)]
CLASSES = {1: (DynamicConv1d, nn.Conv1d), 3: (DynamicConv3d, nn.Conv3d)}
SIZES = {1: (13,), 3: (5, 6, 4)}  # spatial sizes of the test inputs

SPECS = {
    "dyconv": AttnSpec.dyconv(),
    "condconv": AttnSpec.condconv(),
    "odconv": AttnSpec.odconv(),
    "avg_max_lse": AttnSpec(pool=["avg", "max", "lse"], target="kernel"),
}

# nn.ConvNd keyword arguments (channels included); int arguments broadcast to every spatial dim
CONFIGS = {
    "k3": dict(in_channels=4, out_channels=6, kernel_size=3, padding=1),
    "stride2_dilation2": dict(in_channels=4, out_channels=6, kernel_size=3, stride=2, dilation=2, padding=2),
    "k1_no_bias": dict(in_channels=4, out_channels=6, kernel_size=1, bias=False),
    "k1_stride2": dict(in_channels=4, out_channels=6, kernel_size=1, stride=2),  # a batched matmul (mixing._pointwise)
    "groups2": dict(in_channels=4, out_channels=6, kernel_size=3, padding=1, groups=2),
    "depthwise": dict(in_channels=4, out_channels=4, kernel_size=3, padding=1, groups=4),
    "same_even": dict(in_channels=4, out_channels=6, kernel_size=2, padding="same"),
    "valid": dict(in_channels=4, out_channels=6, kernel_size=2, padding="valid"),
    "reflect": dict(in_channels=4, out_channels=6, kernel_size=3, padding=1, padding_mode="reflect"),
    "circular": dict(in_channels=4, out_channels=6, kernel_size=3, padding=2, padding_mode="circular"),
    "replicate": dict(in_channels=4, out_channels=6, kernel_size=3, stride=2, padding=1, padding_mode="replicate"),
}


def _x(spatial_dims, batch=3, channels=4, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, channels, *SIZES[spatial_dims], generator=g).to(dtype)


@torch.no_grad()
def _randomize(module, seed=1):
    g = torch.Generator().manual_seed(seed)
    for p in module.parameters():
        p.copy_(torch.randn(p.shape, generator=g) * 0.3)


def reference(dyn, x):
    """Each sample through the plain torch conv (its padding and padding_mode) with the kernel mixed
    by the router's gates: ``s_b * in_b * out_b * sum_k a_bk W_k`` and bias ``sum_k a_bk bias_k``."""
    conv = dyn.conv_class(dyn.in_channels, dyn.out_channels, dyn.kernel_size, dyn.stride, dyn.padding,
                          dyn.dilation, dyn.groups, False, dyn.padding_mode, device="meta")
    gates = dict(zip(dyn.router.heads, dyn.router(x)))
    k, o, g = dyn.experts, dyn.out_channels, dyn.groups
    i_g, ks, ones = dyn.in_channels // g, dyn.kernel_size, (1,) * dyn.spatial_dims
    experts = dyn.weight.reshape(k, o, i_g, *ks)
    outs = []
    for b in range(x.shape[0]):
        a = gates.get("kernel")
        w = experts[0] if a is None else sum(a[b, j] * experts[j] for j in range(k))
        bias = None if dyn.bias is None else dyn.bias[0] if a is None else a[b] @ dyn.bias
        if "spatial" in gates:
            w = w * gates["spatial"][b].view(1, 1, *ks)
        if "in" in gates:
            w = (w.view(g, o // g, i_g, *ks) * gates["in"][b].view(g, 1, i_g, *ones)).view(o, i_g, *ks)
        if "out" in gates:
            w = w * gates["out"][b].view(o, 1, *ones)
        outs.append(conv._conv_forward(x[b:b + 1], w, bias))
    return torch.cat(outs)


def _compare_with_reference(dyn, x, train):
    """Every strategy against the reference in float64: the output and, in training, the gradients of x
    and of every parameter (router included)."""
    dyn = dyn.double().train(train)
    x = x.double()
    params = list(dyn.parameters())
    xr = x.clone().requires_grad_(train)
    want = reference(dyn, xr)
    grad_out = torch.randn_like(want)
    want_grads = torch.autograd.grad(want, [xr, *params], grad_out) if train else ()
    for strategy, columns in RUNS:
        dyn.strategy = strategy
        xi = x.clone().requires_grad_(train)
        with small_blocks(2), columns_form(columns):
            got = dyn(xi)
            grads = torch.autograd.grad(got, [xi, *params], grad_out) if train else ()
        run = f"{strategy}{' (columns)' if columns else ''}"
        torch.testing.assert_close(got, want, atol=1e-10, rtol=1e-10, msg=lambda m, s=run: f"{s}: {m}")
        for name, a, b in zip(["x", *(n for n, _ in dyn.named_parameters())], grads, want_grads):
            torch.testing.assert_close(a, b, atol=1e-10, rtol=1e-10,
                                       msg=lambda m, s=run, n=name: f"{s} d/d{n}: {m}")


@pytest.mark.parametrize("spec", ["dyconv", "odconv", "avg_max_lse"])
@pytest.mark.parametrize("config", list(CONFIGS))
@pytest.mark.parametrize("spatial_dims", [1, 3])
def test_strategies_equal_the_per_sample_reference(spatial_dims, config, spec):
    cls, conv_cls = CLASSES[spatial_dims]
    dyn = cls(**CONFIGS[config], spec=SPECS[spec].with_init("identity"))
    _randomize(dyn)
    x = _x(spatial_dims)
    assert dyn(x).shape == conv_cls(**CONFIGS[config])(x).shape
    for train in (False, True):
        _compare_with_reference(dyn, x, train)


@st.composite
def conv_configs(draw, spatial_dims):
    groups = draw(st.sampled_from((1, 2)))
    cin, cout = groups * draw(st.integers(1, 3)), groups * draw(st.integers(1, 3))
    if draw(st.integers(0, 4)) == 0:  # depthwise
        groups, cin, cout = cin, cin, cin
    per_dim = st.lists(st.integers(1, 3), min_size=spatial_dims, max_size=spatial_dims).map(tuple)
    kernel, stride, dilation = draw(per_dim), draw(per_dim), draw(per_dim.map(lambda t: tuple(min(v, 2) for v in t)))
    mode = draw(st.sampled_from(("int", "tuple", "same", "valid")))
    if mode == "same" and set(stride) == {1}:
        padding = "same"
    elif mode == "valid":
        padding = "valid"
    elif mode == "tuple":
        padding = tuple(draw(st.integers(0, 2)) for _ in range(spatial_dims))
    else:
        padding = draw(st.integers(0, 2))
    padding_mode = draw(st.sampled_from(("zeros", "reflect", "circular", "replicate")))
    return dict(in_channels=cin, out_channels=cout, kernel_size=kernel, stride=stride, padding=padding,
                dilation=dilation, groups=groups, bias=draw(st.booleans()), padding_mode=padding_mode)


def _drawn(spatial_dims, cfg, spec, train):
    cls, conv_cls = CLASSES[spatial_dims]
    try:
        dyn = cls(**cfg, spec=spec.with_init("identity"))
    except SpecError as err:
        if "leave nothing dynamic" not in str(err):  # else arguments that nn.ConvNd refuses as well
            with pytest.raises((ValueError, RuntimeError, TypeError)):
                conv_cls(**cfg)
        assume(False)
    x = _x(spatial_dims, batch=2, channels=cfg["in_channels"], seed=5)
    try:
        expected = conv_cls(**cfg)(x)
    except RuntimeError:  # the padded input is smaller than the kernel
        assume(False)
    _randomize(dyn)
    assert dyn(x).shape == expected.shape
    _compare_with_reference(dyn, x, train)


@settings(max_examples=8, deadline=None)
@given(conv_configs(1), st.sampled_from(list(SPECS.values())), st.booleans())
def test_drawn_1d_geometries_equal_the_reference(cfg, spec, train):
    _drawn(1, cfg, spec, train)


@settings(max_examples=6, deadline=None)
@given(conv_configs(3), st.sampled_from(list(SPECS.values())), st.booleans())
def test_drawn_3d_geometries_equal_the_reference(cfg, spec, train):
    _drawn(3, cfg, spec, train)


@pytest.mark.parametrize("spec", ["dyconv", "condconv", "odconv"])
@pytest.mark.parametrize("spatial_dims", [1, 3])
def test_upcycled_equals_the_conv_and_loads_its_checkpoint(spatial_dims, spec):
    cls, conv_cls = CLASSES[spatial_dims]
    for config in ("groups2", "reflect", "same_even"):
        conv = conv_cls(**CONFIGS[config])
        x = _x(spatial_dims)
        for train in (False, True):
            conv.train(train)
            expected = conv(x)
            for strategy in STRATEGIES:
                dyn = cls.from_conv(conv, spec, strategy=strategy)
                assert type(dyn) is cls and dyn.training == train
                with small_blocks(2):
                    torch.testing.assert_close(dyn(x), expected, atol=1e-5, rtol=0)
        # a checkpoint of the plain conv fills every expert; only the router's keys are missing
        fresh = cls(**CONFIGS[config], spec=AttnSpec.dyconv())
        missing, unexpected = fresh.load_state_dict(conv.state_dict(), strict=False)
        assert not unexpected and all(k.startswith("router.") for k in missing)
        torch.testing.assert_close(fresh.eval()(x), conv.eval()(x), atol=1e-5, rtol=0)
        assert set(conv.state_dict()) <= set(dyn.state_dict())


@pytest.mark.parametrize("spatial_dims", [1, 3])
def test_odconv_heads_cover_every_kernel_position(spatial_dims):
    cls, _ = CLASSES[spatial_dims]
    k = (3,) * spatial_dims
    dyn = cls(4, 6, 3, padding=1, spec="odconv")
    assert dyn.router.heads == ("kernel", "in", "out", "spatial")
    gates = dict(zip(dyn.router.heads, dyn.router(_x(spatial_dims))))
    assert gates["spatial"].shape == (3, 3 ** spatial_dims)
    assert gates["in"].shape == (3, 4) and gates["out"].shape == (3, 6)
    assert dyn.weight.shape == (4 * 6, 4, *k) and dyn.expert_weights.shape == (4, 6, 4, *k)
    assert cls(4, 4, 3, groups=4, spec="odconv").router.heads == ("kernel", "in", "spatial")  # depthwise
    assert cls(4, 6, 1, spec="odconv").router.heads == ("kernel", "in", "out")  # one position
    assert dyn.router.geometry.kernel_size == k
    assert ("b c l" if spatial_dims == 1 else "b c d h w") + " -> b c" in dyn.router.code


def test_build_dispatches_on_the_conv_rank():
    for conv, cls in ((nn.Conv1d(4, 6, 3), DynamicConv1d), (nn.Conv2d(4, 6, 3), DynamicConv2d),
                      (nn.Conv3d(4, 6, 3), DynamicConv3d)):
        for spec in ("dyconv", "odconv"):
            built = build(spec, conv=conv)
            assert type(built) is cls and built.kernel_size == conv.kernel_size
    with pytest.raises(SpecError, match=r"only a plain nn\.Conv2d"):
        build("dyconv", conv=nn.Linear(4, 4))


def test_clear_errors():
    with pytest.raises(InputError, match=r"DynamicConv3d takes a 5-D \(B, C, D, H, W\) feature map, got a 4-D"):
        DynamicConv3d(4, 6, 3)(torch.randn(2, 4, 5, 5))
    with pytest.raises(InputError, match=r"DynamicConv1d takes a 3-D \(B, C, L\) feature map, got a 4-D"):
        DynamicConv1d(4, 6, 3)(torch.randn(2, 4, 5, 5))
    with pytest.raises(InputError, match="built for 4 channels but got 5"):
        DynamicConv1d(4, 6, 3)(torch.randn(2, 5, 9))
    with pytest.raises(SpecError, match=r"only a plain nn\.Conv3d .* by DynamicConv3d.*DynamicConv2d\.from_conv"):
        DynamicConv3d.from_conv(nn.Conv2d(4, 6, 3), "dyconv")
    with pytest.raises(SpecError, match=r"only a plain nn\.Conv1d"):
        DynamicConv1d.from_conv(nn.Conv3d(4, 6, 3), "dyconv")
    with pytest.raises(SpecError, match="in_channels must be divisible by groups") as info:
        DynamicConv3d(5, 6, 3, groups=2)
    assert "nn.Conv3d" in str(info.value)
    with pytest.raises(SpecError, match="padding='same' is not supported for strided convolutions"):
        DynamicConv1d(4, 4, 3, stride=2, padding="same")
    with pytest.raises(SpecError, match="DynamicConv1d needs a kernel-target spec"):
        DynamicConv1d(4, 4, 3, spec=AttnSpec.se())
    with pytest.raises(SpecError, match=r"leave nothing dynamic.*kernel 1x1x1"):
        DynamicConv3d(4, 4, 1, spec=AttnSpec(target="kernel", experts=1, heads=("spatial",)))
    with pytest.raises(TypeError, match=r"torch\.jit\.script"):
        torch.jit.script(DynamicConv1d(4, 4, 3))


def test_repr_state_dict_and_registration():
    dyn = DynamicConv3d(4, 6, (1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1), spec="dyconv")
    assert repr(dyn).startswith("DynamicConv3d(\n  4, 6, kernel_size=(1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1), "
                                "experts=4, spec=DyConv")
    assert "padding" not in DynamicConv1d(4, 6, 3).extra_repr()
    assert {"weight", "bias"} <= set(dyn.state_dict()) and dyn.bias.shape == (4, 6)
    assert DynamicConv1d in leaf_modules("conv") and DynamicConv3d in leaf_modules("conv")


def test_temperature_and_cost_model_inputs():
    dyn = DynamicConv3d(8, 8, 3, padding=1, stride=(1, 2, 2), spec=AttnSpec.dyconv(temperature=30.0))
    assert dyn.temperature == 30.0 and "router.temperature" in dyn.state_dict()
    assert set_temperature(nn.Sequential(dyn, DynamicConv1d(8, 8, 3)), 2.0) == 2 and dyn.temperature == 2.0
    x = torch.zeros(4, 8, 6, 10, 10)
    problem = dyn.conv_problem(x)
    assert problem.kernel_area == 27 and problem.out_positions == 6 * 5 * 5 and problem.in_positions == 600
    assert dyn.chosen_strategy(x) == choose_strategy(problem) in ("kernel", "blocked", "output")
    reflect = DynamicConv1d(8, 8, 5, padding=2, padding_mode="reflect")
    assert reflect.conv_problem(torch.zeros(2, 8, 9)).out_positions == 9  # padding counted once


def test_benchmark_mode_is_per_class(monkeypatch):
    from dynattn.dynamic_conv import measure as benchmark_mode

    monkeypatch.setattr(DynamicConv1d, "benchmark", True)
    benchmark_mode.clear_measured_strategies()
    try:
        dyn = DynamicConv1d(4, 6, 3, padding=1, spec="odconv")
        _randomize(dyn)
        x = _x(1)
        dyn.strategy = "kernel"
        expected = dyn(x)
        dyn.strategy = "auto"
        torch.testing.assert_close(dyn(x), expected, atol=1e-5, rtol=1e-5)
        assert len(benchmark_mode._MEASURED) == 1  # timed once for this shape
        DynamicConv3d(4, 6, 3, padding=1)(_x(3))
        assert len(benchmark_mode._MEASURED) == 1  # DynamicConv3d.benchmark is still off
    finally:
        benchmark_mode.clear_measured_strategies()


def test_host_model_traces_with_output_mixing():
    model = nn.Sequential(nn.Conv3d(3, 4, 3), nn.ReLU(), DynamicConv3d(4, 4, 3, padding=1, spec="odconv"),
                          DynamicConv3d(4, 6, 1, spec="condconv")).eval()
    x = torch.randn(2, 3, 6, 7, 5)
    traced = fx.symbolic_trace(model)
    torch.testing.assert_close(traced(x), model(x), atol=1e-5, rtol=1e-5)


def test_compiled_kernel_mixing_trains_like_eager():
    """Under torch.compile kernel mixing runs the custom batched conv, whose backward works in 1-D and 3-D."""
    for spatial_dims in (1, 3):
        cls, _ = CLASSES[spatial_dims]
        torch.manual_seed(0)
        eager = cls(4, 6, 3, padding=1, spec="odconv", strategy="kernel").train()
        twin = cls(4, 6, 3, padding=1, spec="odconv", strategy="kernel").train()
        twin.load_state_dict(eager.state_dict())
        compiled = torch.compile(twin, fullgraph=True, backend="aot_eager")
        x = _x(spatial_dims)
        (eager(x) ** 2).sum().backward()
        (compiled(x) ** 2).sum().backward()
        for (name, a), b in zip(eager.named_parameters(), twin.parameters()):
            torch.testing.assert_close(b.grad, a.grad, atol=1e-5, rtol=1e-4, msg=name)
    x1, w1 = torch.randn(1, 6, 9, requires_grad=True), torch.randn(8, 3, 3, requires_grad=True)
    torch.library.opcheck(mixing.batched_conv, (x1, w1, None, [2], [1], [1], 2))
    x3, w3 = torch.randn(1, 4, 4, 5, 3, requires_grad=True), torch.randn(4, 2, 2, 3, 1, requires_grad=True)
    torch.library.opcheck(mixing.batched_conv, (x3, w3, torch.randn(4), [1, 2, 1], [0, 1, 0], [2, 1, 1], 2))


@pytest.mark.parametrize(("spatial_dims", "dynamo"), [(1, False), (3, True)])
def test_onnx_export_with_a_dynamic_batch(spatial_dims, dynamo, tmp_path):
    """Output mixing under export (a forced kernel mixing falls back to it): one graph for every batch size.
    The 1-D conv goes through the TorchScript-based exporter, the 3-D one through dynamo (the slower)."""
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    cls, _ = CLASSES[spatial_dims]
    torch.manual_seed(0)
    module = nn.Sequential(cls(4, 6, 3, padding=1, spec="odconv", strategy="kernel"),
                           cls(6, 5, 3, stride=2, spec="dyconv", padding_mode="reflect", padding=1)).eval()
    x = _x(spatial_dims, batch=2)
    path = tmp_path / "dynconv.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if dynamo:
            torch.onnx.export(module, (x,), str(path), input_names=["x"], output_names=["y"], dynamo=True,
                              dynamic_shapes={"input": {0: torch.export.Dim("batch", min=1, max=64)}}, verbose=False)
        else:
            torch.onnx.export(module, (x,), str(path), input_names=["x"], output_names=["y"], dynamo=False,
                              dynamic_axes={"x": {0: "batch"}, "y": {0: "batch"}})
    session = ort.InferenceSession(str(path))
    for batch in (1, 5):
        xb = _x(spatial_dims, batch=batch, seed=batch)
        with torch.no_grad():
            expected = module(xb)
        got = torch.from_numpy(session.run(None, {"x": xb.numpy()})[0])
        torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


# ----------------------------------------------------------------------------- graph_passes
class Block1d(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = nn.Conv1d(cin, cout, 3, stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm1d(cout)
        self.conv2 = nn.Conv1d(cout, cout, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm1d(cout)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv1d(cin, cout, 1, stride, bias=False), nn.BatchNorm1d(cout))

    def forward(self, x):
        y = torch.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return torch.relu(y + (x if self.downsample is None else self.downsample(x)))


class ResNet1d(nn.Module):
    """A small 1-D ResNet (signals): a strided stem, four stages at output strides 2, 4, 8 and 16, a head."""

    def __init__(self, channels=2, classes=5):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv1d(channels, 8, 7, stride=2, padding=3, bias=False), nn.BatchNorm1d(8),
                                  nn.ReLU())
        self.layer1 = Block1d(8, 8, 1)
        self.layer2 = Block1d(8, 12, 2)
        self.layer3 = Block1d(12, 16, 2)
        self.layer4 = Block1d(16, 16, 2)
        self.fc = nn.Linear(16, classes)

    def forward(self, x):
        x = self.layer4(self.layer3(self.layer2(self.layer1(self.stem(x)))))
        return self.fc(F.adaptive_avg_pool1d(x, 1).flatten(1))


def _randomize_bn(model):
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.running_mean.normal_(0, 0.1, generator=g)
                m.running_var.uniform_(0.5, 1.5, generator=g)


def _converted(model, spec, x, **kw):
    out = insert_attention(model, spec, **kw)
    with torch.no_grad():
        torch.testing.assert_close(out(x), model(x), atol=1e-4, rtol=1e-4)  # identity at insertion
    assert set(model.state_dict()) <= set(out.state_dict())  # every original key kept
    assert all(".router." in k for k in set(out.state_dict()) - set(model.state_dict()))
    return out, {r.site: r for r in report(out).records}


def test_insert_attention_upcycles_a_1d_resnet():
    torch.manual_seed(0)
    model = ResNet1d().eval()
    _randomize_bn(model)
    x = torch.randn(2, 2, 64)
    convs = [n for n, m in model.named_modules() if isinstance(m, nn.Conv1d)]
    out, records = _converted(model, AttnSpec.dyconv(), x)
    assert sorted(records) == sorted(n for n in convs if n != "stem.0")  # DyConv: all but the stem
    assert all(isinstance(out.get_submodule(n), DynamicConv1d) for n in records)
    assert type(out.get_submodule("stem.0")) is nn.Conv1d
    _, records = _converted(model, AttnSpec.odconv(), x)
    assert "layer2.downsample.0" not in records and "layer2.conv1" in records  # ODConv: shortcuts static
    # CondConv: output stride >= 16 (measured along L on meta tensors), shortcuts static
    assert [s.name for s in list_sites(model, AttnSpec.condconv())] == ["layer4.conv1", "layer4.conv2"]
    converted, records = _converted(model, AttnSpec.condconv(), x, example_inputs=(x,))
    assert sorted(records) == ["layer4.conv1", "layer4.conv2"]
    # a converted model is still 1-D: its remaining plain convs convert, and feature attention goes on its
    # (B, C, L) maps, the DynamicConv1d outputs included
    assert "layer4.conv1" not in [s.name for s in list_sites(converted, AttnSpec.dyconv(), where="conv")]
    assert "stem.0" in [s.name for s in list_sites(converted, AttnSpec.dyconv(), where="conv")]
    with_eca = insert_attention(converted, AttnSpec.eca(init="identity"), where="conv", example_inputs=(x,))
    ecas = [m for n, m in with_eca.named_modules() if n.endswith("_eca")]
    assert ecas and all(m.spatial_dims == 1 for m in ecas)
    with torch.no_grad():
        torch.testing.assert_close(with_eca.eval()(x), converted.eval()(x), atol=0, rtol=0)


def test_insert_attention_upcycles_r3d_18():
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    model = torchvision.models.video.r3d_18(weights=None).eval()
    _randomize_bn(model)
    x = torch.randn(1, 3, 8, 32, 32)
    convs = [n for n, m in model.named_modules() if isinstance(m, nn.Conv3d)]
    out, records = _converted(model, AttnSpec.dyconv(), x, example_inputs=(x,))
    assert sorted(records) == sorted(n for n in convs if not n.startswith("stem."))
    assert "layer2.0.downsample.0" in records and type(out.stem[0]) is nn.Conv3d
    assert all(isinstance(out.get_submodule(n), DynamicConv3d) for n in records)
    # without example inputs the probe is a (2, 3, 16, 112, 112) meta tensor: the same convs
    assert [s.name for s in list_sites(model, AttnSpec.dyconv())] == [n for n in convs if n in records]
