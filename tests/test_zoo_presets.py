"""Every feature preset, in every flavor, is a working module in the places users put one: identity
initialisation is exactly the identity, timm takes ``spec.layer`` as its ``attn_layer``, and
``insert_attention`` puts it into a model whose outputs an identity-initialised insertion leaves unchanged."""

import pytest
import timm
import torch
import torchvision

from dynattn import build, get_spec
from dynattn.presets import _FLAVORS
from graph_passes import insert_attention, report
from tests.presets import FEATURE_PRESETS

FLAVORED = [(name, flavor) for name in FEATURE_PRESETS for flavor in _FLAVORS[name]]


@pytest.mark.parametrize(("name", "flavor"), FLAVORED)
def test_identity_init_is_exactly_the_identity(name, flavor):
    torch.manual_seed(0)
    module = build(get_spec(name, flavor=flavor, init="identity"), channels=40)
    assert any(n.endswith("mix") for n, _ in module.named_parameters())
    for train in (True, False):
        module.train(train)
        for shape in ((2, 40, 9, 6), (3, 40, 4, 11)):
            x = torch.randn(*shape) * 2
            assert torch.equal(module(x), x)
    with torch.no_grad():  # and the gate takes effect as soon as mix moves
        for n, p in module.named_parameters():
            if n.endswith("mix"):
                p.fill_(1.0)
    x = torch.randn(2, 40, 9, 6)
    assert not torch.allclose(module.eval()(x), x)


@pytest.mark.parametrize("name", FEATURE_PRESETS)
def test_timm_takes_spec_layer_as_attn_layer(name):
    torch.manual_seed(0)
    spec = get_spec(name)
    model = timm.create_model("resnet18", block_args=dict(attn_layer=spec.layer)).eval()
    attn = model.layer2[0].se
    assert type(attn).__name__ == type(build(spec, channels=128)).__name__ and attn.channels == 128
    out = model(torch.randn(2, 3, 64, 64))
    assert out.shape == (2, 1000) and torch.isfinite(out).all()


@pytest.mark.parametrize("name", FEATURE_PRESETS)
def test_insert_attention_into_a_model(name):
    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        ref = model(x)
        same = insert_attention(model, get_spec(name, init="identity"))
        torch.testing.assert_close(same(x), ref, atol=0, rtol=0)
    result = insert_attention(model, get_spec(name))
    assert len(report(result).records) == 8
    out = result.train()(x)
    assert out.shape == ref.shape and torch.isfinite(out).all()
    out.sum().backward()
    attention = [p for n, p in result.named_parameters() if "layer1.0.bn2_" in n]
    assert all(p.grad is not None for p in attention)
