"""DynamicConv2d: nn.Conv2d semantics, exact upcycling, three equal strategies, references."""

import concurrent.futures
import contextlib
import copy
import dataclasses
import itertools
import pickle

import pytest
import torch
import torch.fx as fx
from torch import nn

from dynattn import AttnSpec, DynamicConv2d, SpecError, build
from dynattn.compiler.router import ConvGeometry
from dynattn.dynamic_conv import (
    COST_MODELS,
    ConvProblem,
    choose_columns,
    choose_strategy,
    clear_measured_strategies,
    cost_model,
    strategy_costs,
    use_cost_model,
)
from dynattn.dynamic_conv import measure as benchmark_mode
from dynattn.dynamic_conv.module import _MEMO_SIZE
from dynattn.errors import InputError
from tests.blocks import columns_form, small_blocks

STRATEGIES = ("kernel", "blocked", "output")
# and each in its columns form (a conv of one group as a matmul with the im2col columns)
RUNS = (*STRATEGIES, "kernel-columns", "blocked-columns", "output-columns")


def _run(name):
    """(the strategy, a context forcing the form of kernel mixing: call it for each use) of a RUNS entry."""
    strategy, _, form = name.partition("-")
    return strategy, lambda: columns_form(form == "columns")


@pytest.fixture
def blocks():
    with small_blocks(5):
        yield

# (name, nn.Conv2d kwargs with in/out channels)
CONFIGS = {
    "3x3": dict(in_channels=16, out_channels=24, kernel_size=3, padding=1),
    "stride2": dict(in_channels=16, out_channels=24, kernel_size=3, stride=2, padding=1),
    "dilation2": dict(in_channels=16, out_channels=24, kernel_size=3, dilation=2, padding=2),
    "1x1": dict(in_channels=16, out_channels=24, kernel_size=1),
    # pointwise convs run as a batched matmul of the strided input (mixing._pointwise)
    "1x1_stride2_odd": dict(in_channels=16, out_channels=23, kernel_size=1, stride=2),
    "1x1_stride3_same_no_bias": dict(in_channels=16, out_channels=24, kernel_size=(1, 1), stride=(3, 1), bias=False),
    "1x1_padded": dict(in_channels=16, out_channels=24, kernel_size=1, padding=1),
    "depthwise": dict(in_channels=16, out_channels=16, kernel_size=3, padding=1, groups=16),
    "groups4": dict(in_channels=16, out_channels=24, kernel_size=3, padding=1, groups=4),
    "rectangular": dict(in_channels=16, out_channels=24, kernel_size=(3, 5), padding=(1, 2)),
    "same": dict(in_channels=16, out_channels=24, kernel_size=3, padding="same"),
    "same_even_dilated": dict(in_channels=16, out_channels=24, kernel_size=4, padding="same", dilation=2),
    "stride3_k4": dict(in_channels=16, out_channels=24, kernel_size=4, stride=3),
    "valid_no_bias": dict(in_channels=16, out_channels=24, kernel_size=3, padding="valid", bias=False),
    "reflect": dict(in_channels=16, out_channels=24, kernel_size=3, padding=1, padding_mode="reflect"),
}

SPECS = {
    "dyconv": AttnSpec.dyconv(),
    "condconv": AttnSpec.condconv(),
    "odconv": AttnSpec.odconv(),
    "avg_max": AttnSpec(pool=["avg", "max"], target="kernel"),
    "odconv_k1": AttnSpec.odconv(experts=1),
}


def _x(batch=3, c=16, h=11, w=9, seed=0):
    return torch.randn(batch, c, h, w, generator=torch.Generator().manual_seed(seed))


def _problem(in_per_group, kernel_area, experts, out_positions, batch, *, out_channels=None, groups=1, **kw):
    """A ConvProblem in the order the tests read: in/groups, kernel area, K, output positions, B (out_channels:
    by default in/groups * groups)."""
    out_channels = in_per_group * groups if out_channels is None else out_channels
    return ConvProblem(in_per_group, out_channels, kernel_area, experts, out_positions, batch, groups=groups, **kw)


def _ran_columns(layer, x) -> bool:
    """Whether ``layer(x)`` ran kernel mixing in its columns form (an im2col of the input) rather than as a conv."""
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        layer(x)
    return any(e.key == "aten::im2col" for e in prof.key_averages())


@torch.no_grad()
def _randomize(m: DynamicConv2d, seed=1):
    """Random experts and router, and identity mixes moved off zero, so every path matters."""
    g = torch.Generator().manual_seed(seed)
    for p in m.parameters():
        p.copy_(torch.randn(p.shape, generator=g) * 0.3)


@pytest.mark.parametrize("train", [False, True], ids=["eval", "train"])
@pytest.mark.parametrize("spec", list(SPECS))
@pytest.mark.parametrize("config", list(CONFIGS))
def test_upcycled_equals_the_conv(config, spec, train, blocks):
    conv = nn.Conv2d(**CONFIGS[config]).train(train)
    x = _x()
    expected = conv(x)
    for name in RUNS:
        strategy, form = _run(name)
        dyn = DynamicConv2d.from_conv(conv, SPECS[spec], strategy=strategy)
        assert dyn.training == train
        with form():
            torch.testing.assert_close(dyn(x), expected, atol=1e-5, rtol=0, msg=lambda m, n=name: f"{n}: {m}")
    via_build = build(SPECS[spec], conv=conv)
    assert isinstance(via_build, DynamicConv2d)
    torch.testing.assert_close(via_build(x), expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize("spec", list(SPECS))
@pytest.mark.parametrize("config", list(CONFIGS))
def test_strategies_are_equal_with_random_experts(config, spec, blocks):
    dyn = DynamicConv2d(**CONFIGS[config], spec=SPECS[spec].with_init("identity"))
    _randomize(dyn)
    x = _x()
    dyn.strategy = "kernel"
    a = dyn(x)
    for strategy in ("blocked", "output"):
        dyn.strategy = strategy
        torch.testing.assert_close(dyn(x), a, atol=1e-5, rtol=1e-5)
    assert a.shape == nn.Conv2d(**CONFIGS[config])(x).shape


@pytest.mark.parametrize("spec", list(SPECS))
@pytest.mark.parametrize("config", list(CONFIGS))
def test_strategies_have_equal_training_gradients(config, spec, blocks):
    """Forward and backward agree across strategies: the input's gradient and every parameter's."""
    dyn = DynamicConv2d(**CONFIGS[config], spec=SPECS[spec].with_init("identity")).double().train()
    _randomize(dyn)
    x = _x().double()
    g = torch.randn_like(dyn(x))
    results = {}
    for name in RUNS:
        dyn.strategy, form = _run(name)
        xi = x.clone().requires_grad_()
        with form():
            out = dyn(xi)
            grads = torch.autograd.grad(out, [xi, *dyn.parameters()], g)
        results[name] = (out, grads)
    out, grads = results["kernel"]
    for strategy in RUNS[1:]:
        torch.testing.assert_close(results[strategy][0], out, atol=1e-10, rtol=1e-10)
        for (name, _), got, want in zip([("x", None), *dyn.named_parameters()], results[strategy][1], grads):
            torch.testing.assert_close(got, want, atol=1e-10, rtol=1e-10, msg=f"{strategy}: d/d{name}")


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("spec", ["dyconv", "odconv", "condconv"])
def test_each_sample_depends_only_on_itself(spec, strategy, blocks):
    dyn = DynamicConv2d(16, 24, 3, padding=1, spec=SPECS[spec], strategy=strategy).double()
    _randomize(dyn)
    x = _x().double()
    other = x.clone()
    other[1:] = _x(seed=5)[1:].double()
    for train in (True, False):
        dyn.train(train)
        out = dyn(x)
        torch.testing.assert_close(dyn(other)[0], out[0], atol=1e-12, rtol=1e-12)
        torch.testing.assert_close(dyn(x[:1])[0], out[0], atol=1e-12, rtol=1e-12)


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("config", ["3x3", "stride2", "groups4", "1x1", "depthwise"])
def test_matches_timm_condconv_given_the_same_routing(config, strategy, blocks):
    from timm.layers.cond_conv2d import CondConv2d

    cfg = dict(CONFIGS[config])
    dyn = DynamicConv2d(**cfg, spec=AttnSpec.condconv(experts=5), strategy=strategy)
    _randomize(dyn)
    ref = CondConv2d(cfg["in_channels"], cfg["out_channels"], cfg["kernel_size"], stride=cfg.get("stride", 1),
                     padding=cfg.get("padding", 0), dilation=cfg.get("dilation", 1), groups=cfg.get("groups", 1),
                     bias=True, num_experts=5)
    with torch.no_grad():
        ref.weight.copy_(dyn.expert_weights.reshape(5, -1))
        ref.bias.copy_(dyn.bias)
    x = _x(batch=4)
    (routing,) = dyn.router(x)
    assert routing.shape == (4, 5) and bool(((routing > 0) & (routing < 1)).all())  # sigmoid routing
    torch.testing.assert_close(dyn(x), ref(x, routing), atol=1e-5, rtol=1e-5)


def test_condconv_router_is_timms_routing_fn():
    """timm's CondConvResidual routes with sigmoid(Linear(avgpool(x))): the same layer."""
    dyn = DynamicConv2d(16, 24, 3, padding=1, spec=AttnSpec.condconv())
    linear = dyn.router.excite
    assert isinstance(linear, nn.Linear) and linear.bias is not None and linear.out_features == 4
    x = _x()
    expected = torch.sigmoid(linear(x.mean((2, 3))))
    torch.testing.assert_close(dyn.router(x)[0], expected)


@pytest.mark.parametrize("config", ["3x3", "stride2", "groups4", "rectangular", "same", "1x1"])
@pytest.mark.parametrize("run", RUNS)
def test_matches_the_dyconv_formula(config, run, blocks):
    from tests.reference.dyconv import DyConvReference

    strategy, form = _run(run)
    cfg = dict(CONFIGS[config])
    k = cfg["kernel_size"] if isinstance(cfg["kernel_size"], tuple) else (cfg["kernel_size"],) * 2
    dyn = DynamicConv2d(**cfg, spec=AttnSpec.dyconv(), strategy=strategy)
    hidden = dyn.router.excite.fc1.out_features
    ref = DyConvReference(cfg["in_channels"], cfg["out_channels"], k, hidden=hidden, temperature=30.0,
                          stride=cfg.get("stride", 1), padding=cfg.get("padding", 0),
                          dilation=cfg.get("dilation", 1), groups=cfg.get("groups", 1))
    with torch.no_grad():
        dyn.weight.copy_(ref.weight.reshape(dyn.weight.shape))
        dyn.bias.copy_(ref.bias)
        dyn.router.excite.fc1.weight.copy_(ref.fc1.weight)
        dyn.router.excite.fc2.weight.copy_(ref.fc2.weight * 20)  # sharpen the routing so it matters
        ref.fc2.weight.mul_(20)
    x = _x()
    for train in (True, False):
        dyn.train(train)
        ref.train(train)
        with form():
            torch.testing.assert_close(dyn(x), ref(x), atol=1e-5, rtol=1e-5)


def _copy_odconv(dyn: DynamicConv2d, ref, norm: bool):
    r = dyn.router
    with torch.no_grad():
        dyn.weight.copy_(ref.weight.reshape(dyn.weight.shape))
        if ref.bias is not None:
            dyn.bias.copy_(ref.bias)
        r.excite.fc1.weight.copy_(ref.fc.weight.flatten(1))
        if r.excite.fc1.bias is not None:
            r.excite.fc1.bias.copy_(ref.fc.bias if ref.fc.bias is not None else torch.zeros_like(r.excite.fc1.bias))
        heads = {"kernel": ref.kernel_fc, "in": ref.channel_fc, "out": ref.filter_fc, "spatial": ref.spatial_fc}
        r.excite.fc2.weight.copy_(torch.cat([heads[h].weight.flatten(1) for h in r.heads]))
        r.excite.fc2.bias.copy_(torch.cat([heads[h].bias for h in r.heads]))
        if norm:
            for key in ("weight", "bias", "running_mean", "running_var"):
                getattr(r.excite.bn, key).copy_(getattr(ref.bn, key))


@pytest.mark.parametrize("config", ["3x3", "stride2", "groups4", "rectangular", "same", "dilation2"])
@pytest.mark.parametrize("run", RUNS)
@pytest.mark.parametrize("variant", ["official_no_bias", "with_bias", "bn"])
def test_matches_the_odconv_formula(config, run, variant, blocks):
    from tests.reference.odconv import ODConvReference

    strategy, form = _run(run)
    cfg = dict(CONFIGS[config])
    bias = variant == "with_bias"
    norm = variant == "bn"
    cfg["bias"] = bias
    k = cfg["kernel_size"] if isinstance(cfg["kernel_size"], tuple) else (cfg["kernel_size"],) * 2
    dyn = DynamicConv2d(**cfg, spec=AttnSpec.odconv(temperature=2.0, norm="bn" if norm else None),
                        strategy=strategy)
    assert dyn.router.heads == ("kernel", "in", "out", "spatial")
    ref = ODConvReference(cfg["in_channels"], cfg["out_channels"], k, hidden=16, temperature=2.0,
                          stride=cfg.get("stride", 1), padding=cfg.get("padding", 0),
                          dilation=cfg.get("dilation", 1), groups=cfg.get("groups", 1), bias=bias, norm=norm,
                          fc_bias=not norm)
    with torch.no_grad():
        for m in ref.modules():
            if isinstance(m, nn.Conv2d):
                m.weight.normal_(0, 0.5)
                if m.bias is not None:
                    m.bias.normal_(0, 0.5)
        if norm:
            ref.bn.running_mean.normal_(0, 0.2)
            ref.bn.running_var.uniform_(0.5, 1.5)
    _copy_odconv(dyn, ref, norm)
    x = _x()
    for train in (True, False):
        dyn.train(train)
        ref.train(train)
        with form():
            torch.testing.assert_close(dyn(x), ref(x), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("spec", list(SPECS))
def test_gradients_reach_every_parameter(spec, strategy, blocks):
    dyn = DynamicConv2d(16, 24, 3, padding=1, spec=SPECS[spec].with_init("identity"), strategy=strategy).train()
    _randomize(dyn)
    x = _x().requires_grad_()
    (dyn(x) * torch.randn(3, 24, 11, 9)).sum().backward()
    for name, p in dyn.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name
    assert x.grad.abs().sum() > 0


def test_upcycled_experts_move_apart_under_training():
    """Identity-initialised sigmoid heads must not lock the experts into symmetry."""
    torch.manual_seed(0)
    conv = nn.Conv2d(8, 8, 3, padding=1)
    dyn = DynamicConv2d.from_conv(conv, AttnSpec.condconv())
    opt = torch.optim.SGD(dyn.parameters(), lr=0.5)
    for _ in range(5):
        x = torch.randn(4, 8, 6, 6)
        opt.zero_grad()
        ((dyn(x) - torch.randn(4, 8, 6, 6)) ** 2).mean().backward()
        opt.step()
    experts = dyn.expert_weights
    spread = (experts - experts.mean(0, keepdim=True)).abs().max()
    assert spread > 1e-4 and dyn.router.kernel_mix.abs() > 0


@pytest.mark.parametrize("spec", [AttnSpec.odconv(), AttnSpec.condconv()], ids=["odconv", "condconv"])
def test_identity_heads_blend_their_gate_with_the_neutral_value(spec):
    """Each identity-initialised sigmoid head's gate is neutral + mix * (gate - neutral) (ODConv's in, out and
    spatial heads, CondConv's kernel head; a softmax head is not blended), written out here from the router's
    own layers: in float64, under bfloat16 autocast (a gate of lower precision than the mixes) and in each
    mix's gradient."""
    conv = nn.Conv2d(12, 20, 3, padding=1)
    dyn = DynamicConv2d.from_conv(conv, spec).double()
    _randomize(dyn)
    router = dyn.router
    x = _x(c=12).double()
    sizes = {"kernel": dyn.experts, "in": 12, "out": 20, "spatial": 9}

    def raw_gates(x):
        z = router.excite(x.mean((2, 3))) / router.temperature
        logits = z.split([sizes[h] for h in router.heads], 1)
        return {h: torch.softmax(zh, -1) if h == "kernel" and spec.gate == "softmax" else torch.sigmoid(zh)
                for h, zh in zip(router.heads, logits)}

    def neutral(name):
        return None if name == "kernel" and spec.gate == "softmax" else 1.0 / dyn.experts if name == "kernel" else 1.0

    def expected(x):
        return [g if neutral(h) is None else neutral(h) + getattr(router, f"{h}_mix") * (g - neutral(h))
                for h, g in raw_gates(x).items()]

    assert router.heads == tuple(h for h in spec.heads if h in sizes)
    for got, want in zip(router(x), expected(x)):
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    low = copy.deepcopy(dyn).float()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        gates = low.router(x.float())
    for got, want in zip(gates, expected(x)):
        torch.testing.assert_close(got.double(), want, rtol=0.02, atol=0.02)
    router.zero_grad()
    sum(g.sum() for g in router(x)).backward()
    for h, g in raw_gates(x).items():
        if neutral(h) is not None:
            torch.testing.assert_close(getattr(router, f"{h}_mix").grad, (g - neutral(h)).sum().detach())
    assert not any(k.endswith("_neutral") for k in dyn.state_dict())  # a constant, not state


def test_batch_of_one_in_training():
    for spec in (AttnSpec.dyconv(), AttnSpec.condconv(), AttnSpec.odconv()):
        dyn = DynamicConv2d(8, 8, 3, padding=1, spec=spec).train()
        assert dyn(torch.randn(1, 8, 5, 5)).shape == (1, 8, 5, 5)
    bn = DynamicConv2d(8, 8, 3, padding=1, spec=AttnSpec.odconv(norm="bn")).train()
    with pytest.raises(InputError, match=r"one value per channel in training mode.*norm=None"):
        bn(torch.randn(1, 8, 5, 5))
    assert bn.eval()(torch.randn(1, 8, 5, 5)).shape == (1, 8, 5, 5)


def test_temperature_is_a_buffer_and_sharpens_or_flattens_the_routing():
    dyn = DynamicConv2d(8, 8, 3, padding=1, spec=AttnSpec.dyconv(temperature=30.0))
    assert "router.temperature" in dyn.state_dict() and dyn.temperature == 30.0
    _randomize(dyn)
    x = _x(c=8)
    flat = dyn.router(x)[0]
    dyn.temperature = 0.1
    sharp = dyn.router(x)[0]
    assert flat.std(1).mean() < sharp.std(1).mean()
    with pytest.raises(SpecError):
        dyn.temperature = -1


def test_kernel_mixing_takes_the_columns_form_on_small_maps():
    one = COST_MODELS[1]
    # on small maps the columns form ran faster at 1 thread than the conv of B groups (512 -> 512 3x3 at 4x4 and
    # 7x7, 256 -> 512 3x3 stride 2 at 8x8), slower on large ones (64 -> 64 at 32x32)
    assert choose_columns(_problem(512, 9, 4, 4 * 4, 8), one)
    assert choose_columns(_problem(256, 9, 4, 4 * 4, 8, out_channels=512, in_positions=64), one)
    assert choose_columns(_problem(512, 9, 4, 7 * 7, 32, training=True), one)
    assert not choose_columns(_problem(64, 9, 4, 32 * 32, 8), one)
    assert not choose_columns(_problem(256, 9, 4, 14 * 14, 8), one)
    # a batch of one is one dense conv; grouped and pointwise convs keep their own forms
    assert not choose_columns(_problem(512, 9, 4, 4 * 4, 1), one)
    assert not choose_columns(_problem(1, 9, 4, 4 * 4, 8, groups=512, out_channels=512), one)
    assert not choose_columns(_problem(512, 1, 4, 4 * 4, 8, pointwise=True), one)
    # ODConv's spatial head scales the B kernels of the conv form (one more pass over them), the columns otherwise
    large, small = (strategy_costs(ConvProblem(64, 64, 9, 4, 56 * 56, 8, spatial_head=h), one)["kernel"]
                    for h in (True, False))
    assert large > small
    # the layer runs the form the model chose, per input shape
    dyn = DynamicConv2d(512, 512, 3, padding=1, spec="dyconv", strategy="kernel").eval()
    odconv = DynamicConv2d(64, 64, 3, padding=1, spec="odconv", strategy="kernel").eval()
    with use_cost_model(one), torch.no_grad():
        forms = [_ran_columns(dyn, torch.randn(8, 512, 4, 4)), _ran_columns(dyn, torch.randn(1, 512, 4, 4)),
                 _ran_columns(odconv, torch.randn(8, 64, 32, 32))]
    assert forms == [True, False, False]


def test_output_mixing_takes_the_columns_form_where_kernel_mixing_does():
    """On small maps output mixing runs as one matmul with the batch's im2col columns (a conv of K * O channels
    ran 2x slower there, in a training step most), on large maps as a conv; equal either way."""
    layer = DynamicConv2d(512, 512, 3, padding=1, strategy="output")
    _randomize(layer)
    small, large = torch.randn(8, 512, 4, 4), torch.randn(2, 512, 32, 32)
    with use_cost_model(COST_MODELS[1]), torch.no_grad():
        assert layer._columns(small) and not layer._columns(large)
        assert _ran_columns(layer, small) and not _ran_columns(layer, large)
        as_columns = layer(small)
    with columns_form(False), torch.no_grad():
        assert not _ran_columns(layer, small)
        torch.testing.assert_close(as_columns, layer(small), rtol=1e-4, atol=1e-4)

def test_auto_strategy_follows_the_cost_model():
    two, one = COST_MODELS[2], COST_MODELS[1]

    def pick(cin, k, positions, batch, model=two, tracing=False, **kw):
        return choose_strategy(_problem(cin, k * k, 4, positions, batch, **kw), model, tracing=tracing)

    for model in (one, two):  # regimes both thread counts agree on
        assert pick(64, 3, 56 * 56, 32, model) == "kernel"  # large maps: the grouped conv is compute-bound
        assert pick(64, 3, 28 * 28, 8, model, training=True) == "kernel"
        assert pick(1, 5, 7 * 7, 8, model, groups=672, out_channels=672) == "kernel"  # depthwise: tiny kernels
        assert pick(256, 3, 8 * 8, 32, model, spatial_head=True) == "kernel"  # ODConv's im2col copy costs on maps
        assert pick(512, 3, 2 * 2, 1, model) == "kernel"  # batch 1: one kernel, written once
        assert pick(64, 3, 28 * 28, 32, model, tracing=True) == "output"
    # small maps: kernel mixing in its columns form (im2col and a batched matmul), the fastest measured on
    # 512 -> 512 3x3 at 4x4 (1 and 2 threads) and 2x2 (1 thread)
    for model, positions, batch in itertools.product((one, two), (2 * 2, 4 * 4), (8, 32)):
        if model is one or positions == 4 * 4:
            assert pick(512, 3, positions, batch, model) == "kernel"
        assert choose_columns(_problem(512, 9, 4, positions, batch), model)
    # pointwise convs run kernel mixing as a batched matmul (no conv of B groups): kernel mixing wins at both
    # thread counts, down to ResNet-18's 256->512 1x1 stride-2 shortcut at 8x8 (measured the fastest at B=32,
    # 1 thread); a matmul's kernel mixing is costed below a conv of B groups'
    for model in (one, two):
        assert pick(256, 1, 4 * 4, 32, model, out_channels=512, in_positions=64, pointwise=True) == "kernel"
        assert pick(1024, 1, 14 * 14, 32, model, out_channels=256, pointwise=True) == "kernel"
        as_matmul, as_conv = (strategy_costs(ConvProblem(256, 512, 1, 4, 16, 32, in_positions=64, pointwise=p),
                                             model) for p in (True, False))
        assert as_matmul["kernel"] < as_conv["kernel"] and as_matmul["output"] == as_conv["output"]
    assert DynamicConv2d(8, 16, 1, stride=2).conv_problem(torch.zeros(2, 8, 6, 6)).pointwise
    assert not any(DynamicConv2d(8, 16, k, padding=p, groups=g).conv_problem(torch.zeros(2, 8, 6, 6)).pointwise
                   for k, p, g in ((3, 1, 1), (1, 1, 1), (1, 0, 2)))
    assert cost_model(1) is one and cost_model(2) is two and cost_model(16) is COST_MODELS[max(COST_MODELS)]
    costs = strategy_costs(ConvProblem(256, 256, 9, 4, 64, 8))
    assert set(costs) == {"kernel", "blocked", "output"} and all(c > 0 for c in costs.values())
    one_block = ConvProblem(64, 64, 9, 4, 3136, 8)
    assert set(strategy_costs(one_block)) == {"kernel", "output"}  # one block: blocked is kernel
    dyn = DynamicConv2d(128, 128, 3, padding=1)
    assert dyn.conv_problem(torch.zeros(8, 128, 16, 16)).out_positions == 256
    tiny = torch.zeros(32, 128, 2, 2)
    assert dyn.chosen_strategy(tiny) == choose_strategy(dyn.conv_problem(tiny))
    assert dyn.chosen_strategy(torch.zeros(2, 128, 56, 56)) == "kernel"
    reflect = DynamicConv2d(16, 16, 3, padding=1, padding_mode="reflect")
    assert reflect.conv_problem(torch.zeros(2, 16, 9, 7)).out_positions == 63  # padding counted once


def _strategy_choices(dyn):
    """The keys of ``dyn``'s memo of its cost-model choices of strategy, in the order they were made."""
    return [key for key in dyn.__dict__.get("_shape_memo", {}) if key[0] == "strategy"]


def test_auto_choice_is_kept_per_shape_and_follows_what_it_reads():
    """Eager calls keep the cost model's choice per input shape and mode (no Python cost model per call) and
    see every change it depends on: the batch, the mode, the cost model in force, the layer's stride."""
    dyn = DynamicConv2d(16, 24, 3, padding=1, spec=AttnSpec.odconv())
    x = torch.randn(2, 16, 9, 7)
    for _ in range(3):
        dyn(x)
    assert len(_strategy_choices(dyn)) == 1
    dyn(torch.randn(3, 16, 9, 7))
    dyn.eval()(x)
    with torch.no_grad():
        dyn.train()(x)  # training without gradients costs as inference: the eval entry
    calls = _strategy_choices(dyn)  # ("strategy", shape, dtype, training, model, ...)
    assert len(calls) == 3 and [c[1][0] for c in calls] == [2, 3, 2] and calls[0][3]
    before = dyn.chosen_strategy(x)
    costly_kernels = dataclasses.replace(cost_model(), kernel_mix=(1e6, 1e6), pointwise_mix=(1e6, 1e6))
    with use_cost_model(costly_kernels):
        assert before == "kernel" and dyn.chosen_strategy(x) == "output" == choose_strategy(dyn.conv_problem(x))
        assert _strategy_choices(dyn)[-1][4] is costly_kernels
    assert dyn.chosen_strategy(x) == "kernel"  # the choice under the model in force before, kept
    dyn.stride = (2, 2)
    dyn.chosen_strategy(x)
    assert _strategy_choices(dyn)[-1][-4] == (2, 2) and dyn.conv_problem(x).out_positions == 5 * 4
    for h in range(1, 100):  # inputs of ever-changing size: the memo stays small
        dyn.chosen_strategy(torch.zeros(1, 16, h, 3))
    assert len(dyn._shape_memo) <= _MEMO_SIZE
    assert "_shape_memo" not in str(dyn.state_dict().keys())
    torch.testing.assert_close(pickle.loads(pickle.dumps(dyn))(x), dyn(x))


def test_threads_keep_their_own_cost_model():
    """``use_cost_model`` holds for its own thread: 8 threads calling one layer, each under its own model (kernel
    mixing's columns form or its conv of B groups, small blocks or the default ones), give the serial outputs and
    never take a choice made under another thread's model."""
    torch.manual_seed(0)
    dyn = DynamicConv2d(16, 24, 3, padding=1, spec=AttnSpec.odconv().with_init("identity"), strategy="blocked")
    _randomize(dyn.eval())
    runs = [(columns, blocks, seed) for columns in (True, False) for blocks in (None, 5) for seed in (0, 1)]

    def call(run):
        columns, blocks, seed = run
        x = _x(batch=2 + seed, seed=seed)
        with torch.no_grad(), columns_form(columns), small_blocks(blocks) if blocks else contextlib.nullcontext():
            return [(dyn(x), dyn._columns(x)) for _ in range(4)]

    serial = [call(run) for run in runs]
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        threaded = list(pool.map(call, runs))
    for got, want, (columns, _, _) in zip(threaded, serial, runs):
        for (out, form), (expected, expected_form) in zip(got, want):
            assert form == expected_form == columns
            torch.testing.assert_close(out, expected)


def _count_runs(layer, runs: list) -> None:
    """Append to ``runs`` each time ``layer`` runs a strategy: once per call, 1 + BENCHMARK_CALLS times per
    strategy benchmark mode times."""
    run = layer._run_strategy

    def counted(*args, **kwargs):
        runs.append(layer)
        return run(*args, **kwargs)
    layer._run_strategy = counted


def test_benchmark_mode_times_each_shape_once_and_keeps_the_fastest(monkeypatch, blocks):
    monkeypatch.setattr(DynamicConv2d, "benchmark", True)
    clear_measured_strategies()
    dyn = DynamicConv2d(16, 24, 3, padding=1, spec=AttnSpec.odconv().with_init("identity"))
    _randomize(dyn)
    twin = copy.deepcopy(dyn)
    runs = []
    _count_runs(dyn, runs)
    _count_runs(twin, runs)
    x = _x()
    dyn.strategy = "kernel"
    expected = dyn(x)
    dyn.strategy = "auto"
    try:
        for train in (False, True):
            dyn.train(train)
            twin.train(train)
            before = len(runs)
            torch.testing.assert_close(dyn(x), expected, atol=1e-5, rtol=1e-5)
            assert len(runs) - before > benchmark_mode.BENCHMARK_CALLS  # timed on the first call of this shape ...
            after = len(runs)
            dyn(x)
            twin(x)  # ... and never again, by this layer or another of its geometry: one run per call at most
            assert len(runs) - after <= 2
            assert all(p.grad is None for p in dyn.parameters())  # timing leaves no gradients behind
        measured = benchmark_mode._MEASURED
        assert len(measured) == 2 and set(measured.values()) <= set(STRATEGIES)
        key = next(iter(measured))
        assert key[:3] == (16, 24, (3, 3))
        dyn(_x(batch=5))  # a new batch size is a new shape
        assert len(measured) == 3
    finally:
        clear_measured_strategies()
    monkeypatch.setattr(DynamicConv2d, "benchmark", False)
    before = len(runs)
    dyn(_x(batch=6))
    assert len(runs) - before <= 1 and not benchmark_mode._MEASURED  # off: the cost model decides


def test_host_model_traces_with_output_mixing():
    model = nn.Sequential(nn.Conv2d(3, 16, 3), nn.ReLU(), DynamicConv2d(16, 16, 3, padding=1, spec="odconv"),
                          DynamicConv2d(16, 8, 1, spec="condconv")).eval()
    x = torch.randn(2, 3, 12, 10)
    traced = fx.symbolic_trace(model)
    torch.testing.assert_close(traced(x), model(x), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(traced(torch.randn(5, 3, 12, 10)).shape, model(torch.randn(5, 3, 12, 10)).shape)


@pytest.mark.parametrize("spec", ["dyconv", "odconv", "condconv"])
def test_pickle_and_deepcopy(spec):
    dyn = DynamicConv2d(16, 24, 3, padding=1, spec=SPECS[spec]).eval()
    _randomize(dyn)
    x = _x()
    for clone in (copy.deepcopy(dyn), pickle.loads(pickle.dumps(dyn))):
        torch.testing.assert_close(clone(x), dyn(x))
        assert clone.router.code == dyn.router.code and type(clone.router).__name__ == type(dyn.router).__name__


def test_router_geometry_drops_heads_as_odconv_does():
    spec = AttnSpec.odconv()
    assert DynamicConv2d(16, 16, 3, groups=16, spec=spec).router.heads == ("kernel", "in", "spatial")
    assert DynamicConv2d(16, 24, 1, spec=spec).router.heads == ("kernel", "in", "out")
    assert DynamicConv2d(16, 24, 3, spec=AttnSpec.odconv(experts=1)).router.heads == ("in", "out", "spatial")
    assert DynamicConv2d(16, 24, 3, spec=spec).router.geometry == ConvGeometry(16, 24, (3, 3), 1)


def test_bad_arguments_raise_spec_errors():
    with pytest.raises(SpecError, match="in_channels must be divisible by groups"):
        DynamicConv2d(10, 8, 3, groups=4)
    with pytest.raises(SpecError, match="padding='same' is not supported for strided convolutions"):
        DynamicConv2d(8, 8, 3, stride=2, padding="same")
    with pytest.raises(SpecError, match="needs a kernel-target spec"):
        DynamicConv2d(8, 8, 3, spec=AttnSpec.se())
    with pytest.raises(SpecError, match=r"strategy='fast'.*'blocked'"):
        DynamicConv2d(8, 8, 3, strategy="fast")
    with pytest.raises(SpecError, match="leave nothing dynamic"):
        DynamicConv2d(8, 8, 3, spec=AttnSpec.dyconv(experts=1))
    with pytest.raises(SpecError, match="builds a DynamicConv2d from the conv"):
        build(AttnSpec.dyconv(), channels=8)

    class StdConv(nn.Conv2d):
        def forward(self, x):
            w = (self.weight - self.weight.mean((1, 2, 3), keepdim=True))
            return self._conv_forward(x, w, self.bias)

    with pytest.raises(SpecError, match=r"only a plain nn\.Conv2d"):
        DynamicConv2d.from_conv(StdConv(8, 8, 3), "dyconv")


@pytest.mark.parametrize(("cin", "cout", "k", "groups", "stride", "mode"),
                         [(16, 24, 3, 1, 1, "zeros"), (24, 24, 3, 24, 2, "zeros"), (16, 32, 3, 4, 1, "reflect"),
                          (32, 64, 1, 1, 1, "zeros")])
def test_odconv_channel_scalings_folded_into_the_kernels_are_equal(cin, cout, k, groups, stride, mode):
    """Kernel mixing puts ODConv's input- and output-channel scalings into the B kernels where those hold
    fewer values than the maps: outputs and every gradient equal the feature-map scalings (float64)."""
    torch.manual_seed(0)
    spec = AttnSpec.odconv(init="default")
    folded = DynamicConv2d(cin, cout, k, stride, padding=k // 2, groups=groups, padding_mode=mode, spec=spec,
                           strategy="kernel").double()
    for p in folded.parameters():
        torch.nn.init.normal_(p, std=0.3)
    plain = copy.deepcopy(folded)
    plain._kernels_smaller = lambda x: False  # the feature-map scalings, as the official code does
    x = torch.randn(3, cin, 20, 20, dtype=torch.float64)
    assert folded._kernels_smaller(x)
    results = []
    for m in (folded, plain):
        xi = x.clone().requires_grad_()
        y = m(xi)
        y.square().sum().backward()
        results.append((y.detach(), xi.grad, [p.grad for p in m.parameters()]))
    (y1, gx1, gp1), (y2, gx2, gp2) = results
    torch.testing.assert_close(y1, y2, atol=1e-10, rtol=0)
    torch.testing.assert_close(gx1, gx2, atol=1e-10, rtol=0)
    for a, b in zip(gp1, gp2):
        torch.testing.assert_close(a, b, atol=1e-10, rtol=0)
