"""Built modules and rewritten models survive pickle, deepcopy, torch.save/load and state_dict round trips."""

import copy
import io
import pickle

import pytest
import torch
import torchvision
from hypothesis import given
from hypothesis import strategies as st

from dynattn import AttnSpec, DynamicConv2d, build, get_spec, list_presets
from dynattn.testing import specs
from dynattn.vocab import FEATURE_TARGETS
from graph_passes import insert_attention, report


def _save_load(obj):
    buf = io.BytesIO()
    torch.save(obj, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=False)  # a whole module is code, not only weights


def _state_round_trip(module, rebuild):
    buf = io.BytesIO()
    torch.save(module.state_dict(), buf)
    buf.seek(0)
    fresh = rebuild()
    fresh.load_state_dict(torch.load(buf))  # weights_only: tensors only
    return fresh


def _same(a, b, x):
    a.eval()
    b.eval()
    with torch.no_grad():
        torch.testing.assert_close(b(x), a(x), atol=0, rtol=0)


def _perturb(module):
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.randn_like(p) * 0.1)
        for name, b in module.named_buffers():
            if "running_var" in name:
                b.uniform_(0.5, 1.5)


@pytest.mark.parametrize("name", list_presets())
def test_every_preset_round_trips(name):
    spec = get_spec(name)
    if spec.kind == "kernel":
        module = DynamicConv2d(16, 16, 3, padding=1, spec=spec)

        def rebuild():
            return DynamicConv2d(16, 16, 3, padding=1, spec=spec)
    else:
        module = build(spec, channels=16)

        def rebuild():
            return build(spec, channels=16)
    _perturb(module)
    x = torch.randn(3, 16, 7, 5)
    for clone in (pickle.loads(pickle.dumps(module)), copy.deepcopy(module), _save_load(module),
                  _state_round_trip(module, rebuild)):
        _same(module, clone, x)
        assert type(clone).__name__ == type(module).__name__


@given(specs(FEATURE_TARGETS), st.integers(1, 20))
def test_drawn_specs_round_trip(spec, channels):
    module = build(spec, channels=channels)
    _perturb(module)
    x = torch.randn(2, channels, 4, 3)
    for clone in (pickle.loads(pickle.dumps(module)), copy.deepcopy(module)):
        _same(module, clone, x)
        assert clone.code == module.code


@pytest.mark.parametrize("model_name", ["resnet18", "mobilenet_v3_small"])
def test_rewritten_models_round_trip(model_name):
    torch.manual_seed(0)
    original = torchvision.models.get_model(model_name, weights=None).eval()
    model = insert_attention(original, AttnSpec.cbam())
    model = insert_attention(model, AttnSpec.dyconv(), where="conv:features.1*" if "mobilenet" in model_name
                             else "conv:layer4.*")
    _perturb(model)
    x = torch.randn(2, 3, 64, 64)
    for clone in (pickle.loads(pickle.dumps(model)), copy.deepcopy(model), _save_load(model)):
        _same(model, clone, x)
        assert report(clone).records == report(model).records
    # an original checkpoint loads with strict=False, only attention and router keys missing
    fresh = insert_attention(insert_attention(original, AttnSpec.cbam()), AttnSpec.dyconv(),
                             where="conv:features.1*" if "mobilenet" in model_name else "conv:layer4.*")
    result = fresh.load_state_dict(original.state_dict(), strict=False)
    assert not result.unexpected_keys
    assert all("_cbam." in k or ".router." in k for k in result.missing_keys)


def test_energy_specs_written_with_bn_eps_still_load():
    """SimAM's lambda was ``bn_eps`` before ``energy_lambda``: an old dict, text or pickle still means it, and
    the old spelling warns once."""
    import dataclasses
    import warnings

    from dynattn import validate
    from dynattn.spec_parse import parse_spec

    new = AttnSpec.simam(1e-3)
    old = {f.name: getattr(new, f.name) for f in dataclasses.fields(AttnSpec) if f.name != "energy_lambda"}
    old["bn_eps"] = 1e-3
    validate._warned_energy_eps.clear()
    with pytest.warns(DeprecationWarning, match="energy_lambda"):
        assert AttnSpec(**old) == new
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # once only
        assert parse_spec("AttnSpec(target='element', excite='energy', bn_eps=0.001)") == new.replace(
            name=None, reference=None)
    state = {k: v for k, v in old.items()}
    unpickled = AttnSpec.__new__(AttnSpec)
    unpickled.__setstate__(state)  # what pickle does with a spec pickled before energy_lambda
    assert unpickled == new and unpickled.bn_eps is None
    assert pickle.loads(pickle.dumps(new)) == new and eval(repr(new), {"AttnSpec": AttnSpec}) == new
    x = torch.randn(2, 4, 5, 3)
    torch.testing.assert_close(build(AttnSpec(**old), channels=4)(x), build(new, channels=4)(x), atol=0, rtol=0)
