"""torch.compile: every preset and every drawn spec compiles with fullgraph=True (no graph breaks),
and inductor's result equals eager at odd channel counts."""

import pytest
import torch
import torch._dynamo
import torchvision
from hypothesis import given, settings
from hypothesis import strategies as st

from dynattn import AttnSpec, DynamicConv2d, build, get_spec
from dynattn.dynamic_conv import choose_strategy
from dynattn.testing import specs
from dynattn.vocab import FEATURE_TARGETS
from tests.blocks import small_blocks
from tests.presets import FEATURE_PRESETS


@pytest.fixture(autouse=True)
def _fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def _no_graph_breaks(module, x):
    # fullgraph=True raises at the first graph break, with its reason (one dynamo trace, no inductor)
    compiled = torch.compile(module, fullgraph=True, backend="eager")
    torch.testing.assert_close(compiled(x), module(x))


@pytest.mark.parametrize("name", FEATURE_PRESETS)
def test_feature_presets_compile_without_graph_breaks(name):
    module = build(get_spec(name), channels=33).eval()
    _no_graph_breaks(module, torch.randn(2, 33, 9, 7))


@pytest.mark.parametrize("strategy", ["kernel", "blocked", "output"])
@pytest.mark.parametrize("name", ["condconv", "dyconv", "odconv"])
def test_dynamic_conv_compiles_without_graph_breaks(name, strategy):
    module = DynamicConv2d(33, 33, 3, padding=1, spec=get_spec(name), strategy=strategy).eval()
    _no_graph_breaks(module, torch.randn(2, 33, 9, 7))


def test_blocked_mixing_compiles_in_several_blocks():
    module = DynamicConv2d(33, 33, 3, padding=1, spec=get_spec("odconv"), strategy="blocked").eval()
    with small_blocks(8):  # 33 outputs: blocks of 8, 8, 8, 8 and 1
        _no_graph_breaks(module, torch.randn(2, 33, 9, 7))


def _drawn_spec_compiles(spec, channels):
    torch._dynamo.reset()
    _no_graph_breaks(build(spec, channels=channels).eval(), torch.randn(2, channels, 6, 5))


@settings(max_examples=8, deadline=None)
@given(specs(FEATURE_TARGETS), st.integers(1, 40))
def test_drawn_specs_compile_without_graph_breaks(spec, channels):
    _drawn_spec_compiles(spec, channels)


@pytest.mark.heavy
@settings(max_examples=100, deadline=None)
@given(specs(FEATURE_TARGETS), st.integers(1, 70))
def test_many_drawn_specs_compile_without_graph_breaks(spec, channels):
    _drawn_spec_compiles(spec, channels)


def _inductor_matches_eager(module, x):
    compiled = torch.compile(module, fullgraph=True)
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), module(x), atol=1e-5, rtol=0)


@pytest.mark.parametrize(("name", "channels"), [("cbam", 33), ("se", 65), ("coord", 33), ("fca", 64), ("gc", 33),
                                               ("gam", 20)])
def test_inductor_equals_eager_at_odd_channels(name, channels):
    spec = get_spec(name, flavor="timm") if name == "se" else get_spec(name)
    _inductor_matches_eager(build(spec, channels=channels).eval(), torch.randn(4, channels, 11, 9))


@pytest.mark.heavy
@pytest.mark.parametrize("channels", [33, 65])
@pytest.mark.parametrize("name", FEATURE_PRESETS)
def test_inductor_equals_eager_every_preset(name, channels):
    for train in (False, True):
        module = build(get_spec(name, init="default"), channels=channels).train(train)
        x = torch.randn(4, channels, 11, 9)
        compiled = torch.compile(module, fullgraph=True)
        with torch.no_grad():
            torch.testing.assert_close(compiled(x), module(x), atol=1e-5, rtol=0)


def test_dcd_compiles_fullgraph_and_equals_eager():
    """DCD's latent path (strided 1x1 conv, BatchNorm over (B, L, positions), a per-sample L x L matmul) beside
    the Lambda-scaled conv: one dynamo graph, inductor's output equal to eager's."""
    torch.manual_seed(0)
    module = DynamicConv2d(33, 47, 3, stride=2, padding=1, spec=AttnSpec.dcd()).eval()
    _inductor_matches_eager(module, torch.randn(4, 33, 11, 9))


def test_kw_compiles_fullgraph_and_equals_eager():
    """KernelWarehouse's cell attention and kernel assembly (a matmul with the warehouse's cells, a permute), then
    the conv of B groups: one dynamo graph at a blend between the attention and the one-hot, inductor's output
    equal to eager's."""
    torch.manual_seed(0)
    module = DynamicConv2d(33, 47, 3, stride=2, padding=1, spec=AttnSpec.kw(2)).eval()
    module.temperature = 0.3
    _inductor_matches_eager(module, torch.randn(4, 33, 11, 9))


@pytest.mark.heavy
def test_kw_trains_under_compile_with_a_shared_warehouse():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(16, 16, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(16, 32, 1))
    from graph_passes import insert_attention
    kw = insert_attention(model, AttnSpec.kw(), where="conv").train()
    for m in kw.modules():
        if isinstance(m, DynamicConv2d):
            m.temperature = 0.5
    x = torch.randn(4, 16, 8, 8)
    expected = torch.autograd.grad(kw(x).square().sum(), kw[0].warehouse.cells)[0]
    got = torch.autograd.grad(torch.compile(kw, fullgraph=True)(x).square().sum(), kw[0].warehouse.cells)[0]
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)


@pytest.mark.heavy
@pytest.mark.parametrize("train", [False, True])
@pytest.mark.parametrize("grid", [1, 2])
def test_dcd_inductor_equals_eager_train_and_grid(grid, train):
    torch.manual_seed(0)
    module = DynamicConv2d(33, 47, 3, padding=1, spec=AttnSpec.dcd(pool_grid=grid)).train(train)
    x = torch.randn(4, 33, 11, 9)
    expected = module(x)  # before the compiled call moves the running statistics again
    torch.testing.assert_close(torch.compile(module, fullgraph=True)(x), expected, atol=1e-5, rtol=1e-5)


@pytest.mark.heavy
@pytest.mark.parametrize("strategy", ["kernel", "blocked", "output"])
@pytest.mark.parametrize("name", ["condconv", "dyconv", "odconv"])
def test_inductor_equals_eager_dynamic_conv(name, strategy):
    module = DynamicConv2d(33, 65, 3, padding=1, spec=get_spec(name), strategy=strategy).eval()
    _inductor_matches_eager(module, torch.randn(4, 33, 11, 9))


def _dynamo_graph(module, x):
    graphs = []

    def backend(gm, example_inputs):
        graphs.append(gm)
        return gm

    torch.compile(module, fullgraph=True, backend=backend)(x)
    return graphs[0]


def test_small_linear_layers_run_as_a_sum_under_compile():
    """SE's MLP compiles as broadcast multiply + sum (one fusable kernel with the pooling and the gate);
    a layer above _SMALL_LINEAR_WEIGHTS keeps linear; both equal eager, forward and gradients."""
    from dynattn.layers import _SMALL_LINEAR_WEIGHTS, _small_linear

    small, large = build(AttnSpec.se(), channels=65), build(AttnSpec.se(reduction=1), channels=160)
    assert small.excite.fc1.weight.numel() <= _SMALL_LINEAR_WEIGHTS < large.excite.fc1.weight.numel()
    for module, channels, expect_linear in ((small, 65, False), (large, 160, True)):
        x = torch.randn(3, channels, 5, 4)
        targets = {str(n.target) for n in _dynamo_graph(module, x).graph.nodes}
        assert any("linear" in t for t in targets) == expect_linear, targets
        assert any("sum" in t for t in targets) != expect_linear, targets
    layer = torch.nn.Linear(33, 7)
    x = torch.randn(2, 5, 33, requires_grad=True)
    compiled = torch.compile(_small_linear, fullgraph=True, backend="aot_eager")
    out = compiled(layer, x)
    torch.testing.assert_close(out, layer(x))
    grads = torch.autograd.grad(out.square().sum(), (x, layer.weight, layer.bias))
    expected = torch.autograd.grad(layer(x).square().sum(), (x, layer.weight, layer.bias))
    for a, b in zip(grads, expected):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    without_bias = torch.nn.Linear(33, 7, bias=False)
    torch.testing.assert_close(compiled(without_bias, x), without_bias(x))


def test_compiled_gc_and_gam_keep_their_convs_out_of_inductors_layouts():
    """Global context's C -> 1 logits conv compiles as a channel sum, GAM's convs as the opaque batched_conv
    op (inductor re-lays both out channels-last, slower than eager); equal to eager, gradients too."""
    for name, channels in (("gc", 33), ("gam", 20)):
        module = build(get_spec(name), channels=channels).train().double()  # float64: GC's logit gradients cancel
        x = torch.randn(3, channels, 7, 6, dtype=torch.float64, requires_grad=True)
        targets = [str(n.target) for n in _dynamo_graph(module, x).graph.nodes]
        assert not any("conv2d" in t and "batched" not in t for t in targets), targets
        assert any("batched_conv" in t for t in targets) == (name == "gam"), targets
        twin = build(get_spec(name), channels=channels).train().double()
        twin.load_state_dict(module.state_dict())
        compiled = torch.compile(twin, fullgraph=True, backend="aot_eager")
        x2 = x.detach().clone().requires_grad_()
        torch.testing.assert_close(compiled(x2), module(x), atol=1e-5, rtol=1e-5)
        module(x).square().sum().backward()
        compiled(x2).square().sum().backward()
        torch.testing.assert_close(x2.grad, x.grad, atol=1e-5, rtol=1e-4)
        for (pname, a), b in zip(module.named_parameters(), twin.parameters()):
            torch.testing.assert_close(b.grad, a.grad, atol=1e-5, rtol=1e-4, msg=pname)


def test_build_compile_switch():
    module = build(AttnSpec.cbam(), channels=33, compile={"backend": "eager"})
    assert "_compiled_call_impl" in module.__dict__ and module.meta["dynattn_compile"]["fullgraph"]
    x = torch.randn(2, 33, 5, 6)
    plain = build(AttnSpec.cbam(), channels=33)
    plain.load_state_dict(module.state_dict())
    torch.testing.assert_close(module(x), plain(x))
    assert list(module.state_dict()) == list(plain.state_dict())  # same keys, no _orig_mod prefix


def test_batched_conv_custom_op_is_registered_correctly():
    """The op that keeps inductor from re-laying out kernel mixing's conv: schema, fake and autograd."""
    from dynattn.mixing import batched_conv

    x = torch.randn(1, 6, 7, 5, requires_grad=True)
    w = torch.randn(8, 3, 3, 3, requires_grad=True)
    b = torch.randn(8, requires_grad=True)
    torch.library.opcheck(batched_conv, (x, w, b, [1, 1], [1, 1], [1, 1], 2))
    w3 = torch.randn(6, 2, 3, 3)
    out = batched_conv(x, w3, None, [2, 1], [0, 1], [1, 2], 3)
    torch.testing.assert_close(out, torch.nn.functional.conv2d(x, w3, None, (2, 1), (0, 1), (1, 2), 3))


def test_compiled_dynamic_conv_trains_like_eager():
    torch.manual_seed(0)
    eager = DynamicConv2d(16, 16, 3, padding=1, spec=AttnSpec.odconv(), strategy="kernel").train()
    compiled_mod = DynamicConv2d(16, 16, 3, padding=1, spec=AttnSpec.odconv(), strategy="kernel").train()
    compiled_mod.load_state_dict(eager.state_dict())
    compiled = torch.compile(compiled_mod, fullgraph=True, backend="aot_eager")
    x = torch.randn(4, 16, 8, 8)
    (eager(x) ** 2).sum().backward()
    (compiled(x) ** 2).sum().backward()
    for (name, a), b in zip(eager.named_parameters(), compiled_mod.parameters()):
        torch.testing.assert_close(b.grad, a.grad, atol=1e-5, rtol=1e-4, msg=name)


@pytest.mark.parametrize("spec,where", [(AttnSpec.cbam(), None), (AttnSpec.dyconv(), "conv:layer4.*")],
                         ids=["cbam", "dyconv"])
def test_rewritten_model_compiles_once_for_every_batch_size(spec, where):
    """fullgraph=True, dynamic=True: no recompilation per batch (the input checks and the rewritten
    forwards are Python on sizes, evaluated while tracing); a dynamic conv's cost model compares
    symbolic ints, so a new graph comes only where its choice of strategy changes."""
    from torch._dynamo.testing import CompileCounter

    from graph_passes import insert_attention

    torch.manual_seed(0)
    model = insert_attention(torchvision.models.resnet18(weights=None), spec, where=where).eval()
    choices = []  # the dynamic convs' strategies under compile, for each batch size
    hooks = [m.register_forward_pre_hook(lambda m, args: choices[-1].append(
        choose_strategy(m.conv_problem(args[0]), compiling=True)))
        for m in model.modules() if isinstance(m, DynamicConv2d)]
    with torch.no_grad():
        for batch in (2, 3, 5, 7):
            choices.append([])
            model(torch.randn(batch, 3, 32, 32))
    for hook in hooks:
        hook.remove()
    torch._dynamo.reset()
    counter = CompileCounter()
    compiled = torch.compile(model, fullgraph=True, dynamic=True, backend=counter)
    with torch.no_grad():
        for batch in (2, 3, 5, 7):
            x = torch.randn(batch, 3, 32, 32)
            torch.testing.assert_close(compiled(x), model(x), atol=1e-5, rtol=1e-5)
    # one graph per combination of strategies the cost model picks (a symbolic guard), not per batch size
    expected = len({tuple(c) for c in choices})
    assert expected <= 2  # the choices change once at most over these batch sizes
    assert counter.frame_count == expected, f"compiled {counter.frame_count} times for 4 batch sizes"


@pytest.mark.parametrize("dims", [1, 3])
@pytest.mark.parametrize("name", ["cbam", "triplet", "coord", "fca", "gc", "simam", "ge"])
def test_presets_per_rank_compile_without_graph_breaks(name, dims):
    module = build(get_spec(name), channels=32, spatial_dims=dims).eval()
    _no_graph_breaks(module, torch.randn(2, 32, *{1: (21,), 3: (4, 9, 7)}[dims]))


def test_inductor_equals_eager_on_a_3d_map():
    torch.manual_seed(0)
    module = build(AttnSpec.cbam(), channels=33, spatial_dims=3).eval()
    x = torch.randn(2, 33, 4, 9, 7)
    torch.testing.assert_close(torch.compile(module, fullgraph=True)(x), module(x), atol=1e-5, rtol=1e-5)
