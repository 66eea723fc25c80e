"""Each compiler pass keeps the output unchanged (optimised vs unoptimised graph, same weights)."""

import copy

import torch
import torch.fx as fx
from hypothesis import assume, given
from hypothesis import strategies as st

from dynattn import AttnSpec, DynamicConv2d, build, einops_calls
from dynattn.compiler import build_feature, emit_graph, lower
from dynattn.compiler.optimize import batch_shared_excitation, eliminate_common_subexpressions
from dynattn.testing import specs
from dynattn.vocab import FEATURE_TARGETS

FEATURE = FEATURE_TARGETS  # every feature target: channel, spatial, element, strip


def _pair(spec, channels, seed=0):
    torch.manual_seed(seed)
    plain = build_feature(spec, channels, optimize=False, dtype=torch.float64)
    fast = build_feature(spec, channels, optimize=True, dtype=torch.float64)
    fast.load_state_dict(plain.state_dict())
    return plain, fast


def _with_pass(spec, channels, the_pass):
    plain, _ = _pair(spec, channels)
    graph = copy.deepcopy(emit_graph(lower(spec, channels), False))
    changed = the_pass(graph)
    module = fx.GraphModule(plain, graph)
    return plain, module, changed


@given(specs(FEATURE), st.integers(1, 24), st.integers(1, 7), st.integers(1, 7), st.integers(0, 99), st.booleans())
def test_optimised_graph_equals_the_plain_one(spec, channels, h, w, seed, train):
    plain, fast = _pair(spec, channels, seed)
    plain.train(train)
    fast.train(train)
    assume(not (train and any(leaf.norm == "bn" for leaf in spec.leaves()) and h * w == 1))
    x = torch.randn(3, channels, h, w, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
    torch.testing.assert_close(fast(x), plain(x), atol=1e-12, rtol=1e-12)
    # pooling is mean / amax, never an adaptive pooling module, and x is never permuted
    code = fast.code
    assert "adaptive" not in code and "permute" not in code and "contiguous" not in code


def test_batch_shared_excitation():
    spec = AttnSpec.cbam()
    plain, module, changed = _with_pass(spec, 64, batch_shared_excitation)
    assert changed == 1
    calls = [n for n in module.graph.nodes if n.op == "call_module" and n.target == "channel.excite"]
    assert len(calls) == 1 and calls[0].args[0].target is torch.cat
    x = torch.randn(4, 64, 9, 7, dtype=torch.float64)
    for train in (True, False):
        torch.testing.assert_close(module.train(train)(x), plain.train(train)(x), atol=1e-12, rtol=1e-12)


def test_batching_skips_an_excitation_with_batchnorm():
    spec = AttnSpec(pool=["avg", "max"], excite="mlp", norm="bn", reduction=4)
    _, _, changed = _with_pass(spec, 32, batch_shared_excitation)
    assert changed == 0  # BatchNorm statistics over a batch of avg and max rows would differ


def test_common_pooled_values_are_computed_once():
    # two branches pooling the same axis of x: one reduction each for max and mean, shared
    spec = AttnSpec(target="spatial", pool=["max", "avg"], branches=["b c h w -> b c h w", "b c h w -> b c w h"])
    plain, module, removed = _with_pass(spec, 16, eliminate_common_subexpressions)
    assert removed == 2
    reduces = [n for n in module.graph.nodes if n.target is einops_calls.reduce]
    assert len(reduces) == 2
    x = torch.randn(2, 16, 5, 7, dtype=torch.float64)
    torch.testing.assert_close(module(x), plain(x), atol=1e-12, rtol=1e-12)


def test_router_of_several_pools_runs_its_excitation_once():
    dyn = DynamicConv2d(16, 16, 3, padding=1, spec=AttnSpec(pool=["avg", "max", "std"], target="kernel"))
    calls = [n for n in dyn.router.graph.nodes if n.op == "call_module"]
    assert len(calls) == 1


def test_dynamic_conv_applies_channel_heads_to_features(monkeypatch):
    """ODConv's input/output-channel heads scale the feature maps, not the B per-sample kernels
    (the ODConv reference in tests/reference applies them to the kernel, and agrees)."""
    import dynattn.mixing as mixing

    dyn = DynamicConv2d(16, 24, 3, padding=1, spec=AttnSpec.odconv(), strategy="kernel")
    x = torch.randn(2, 16, 8, 8)
    kernel_gate, in_gate, out_gate, spatial_gate = dyn.router(x)
    seen = {}
    original = mixing.kernel_mixing

    def spy(xs, shape, weight, bias, a, s, out_scale, *rest, **kwargs):
        seen.update(x=xs, a=a, s=s, out_scale=out_scale)
        return original(xs, shape, weight, bias, a, s, out_scale, *rest, **kwargs)

    monkeypatch.setattr(mixing, "kernel_mixing", spy)
    dyn(x)
    torch.testing.assert_close(seen["x"], x * in_gate[:, :, None, None])  # input head: on x
    torch.testing.assert_close(seen["out_scale"], out_gate)  # output head: on the conv's output
    torch.testing.assert_close(seen["a"], kernel_gate)  # only these two shape the kernels
    torch.testing.assert_close(seen["s"], spatial_gate)


def test_copies_keep_the_optimised_flag():
    m = build(AttnSpec.cbam(), channels=32, optimize=False)
    assert copy.deepcopy(m).code == m.code and "batched" not in m.code
