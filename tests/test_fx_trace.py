"""A model that contains built modules still traces with torch.fx.symbolic_trace, and retraces."""

import copy
import pickle

import pytest
import torch
import torch.fx as fx
from torch import nn

from dynattn import AttnSpec, build, get_spec
from dynattn.builder import is_attention
from tests.presets import FEATURE_PRESETS

PRESETS = [get_spec(name) for name in FEATURE_PRESETS] + [
    AttnSpec.cbam(init="identity"), AttnSpec.bam(init="identity"), AttnSpec.ge(2, flavor="timm"),
    AttnSpec(target="spatial", pool=["lse", "std"], gate="softmax", temperature=2.0),
    AttnSpec(target="channel", pool=["avg", "max"], extent=2, excite="linear"),
    AttnSpec(target="channel", pool=["std_unbiased", "dct"], merge="concat", excite="channelwise"),
]


class Block(nn.Module):
    def __init__(self, spec, c=32):
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, padding=1)
        self.attn = build(spec, channels=c)

    def forward(self, x):
        return torch.relu(x + self.attn(self.conv(x)))


@pytest.mark.parametrize("spec", PRESETS, ids=lambda s: s.name or s.target)
def test_host_model_traces_and_retraces(spec):
    model = nn.Sequential(nn.Conv2d(3, 32, 3), Block(spec), nn.AdaptiveAvgPool2d(1)).eval()
    x = torch.randn(2, 3, 13, 10)
    traced = fx.symbolic_trace(model)
    torch.testing.assert_close(traced(x), model(x))
    # einops calls are recorded as leaf calls, so the traced model traces again
    if "einops" in model[1].attn.code:
        assert any(n.op == "call_function" and "einops" in getattr(n.target, "__module__", "")
                   for n in traced.graph.nodes)
    retraced = fx.symbolic_trace(traced)
    torch.testing.assert_close(retraced(x), model(x))
    torch.testing.assert_close(pickle.loads(pickle.dumps(retraced))(x), model(x))


@pytest.mark.parametrize("spec", PRESETS, ids=lambda s: s.name or s.target)
def test_built_module_survives_copy_and_pickle(spec):
    m = build(spec, channels=16).eval()
    x = torch.randn(2, 16, 5, 6)
    for clone in (copy.deepcopy(m), pickle.loads(pickle.dumps(m))):
        torch.testing.assert_close(clone(x), m(x))
        assert is_attention(clone) and clone.spec == spec and clone.channels == 16
        assert type(clone).__name__ == type(m).__name__


def test_modules_register_nothing_with_fx_when_built_or_traced():
    """The generated code has no ``torch.fx.wrap`` lines: fx keeps the globals of every module whose code
    runs one for good, and every later ``symbolic_trace`` walks them all (a trace of a two-layer net took
    11 ms, then 190 ms after 6,600 modules were built). The calls a host's trace must record whole
    (einops, the input check, the BatchNorm guard) record themselves when given a Proxy."""
    from graph_passes import insert_attention

    registry = getattr(fx._symbolic_trace, "_wrapped_fns_to_patch", None)  # private: checked where it exists
    before = len(registry) if registry is not None else 0
    host = nn.Sequential(nn.Conv2d(3, 16, 3), nn.ReLU(), nn.Conv2d(16, 16, 3), nn.ReLU())
    modules = [build(spec, channels=16) for spec in PRESETS]
    modules.append(build(AttnSpec.odconv(), conv=nn.Conv2d(16, 16, 3)).router)
    modules.append(insert_attention(host, AttnSpec.cbam(init="identity")))
    modules.append(fx.symbolic_trace(nn.Sequential(host, build(AttnSpec.cbam(), channels=16)).train()))
    for module in modules:
        graphs = [m for m in module.modules() if isinstance(m, fx.GraphModule)]
        assert graphs and all("wrap(" not in m.code for m in graphs)
        pickle.loads(pickle.dumps(module))
    assert (len(registry) if registry is not None else 0) == before
