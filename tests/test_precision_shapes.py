"""Half precision, channels_last, batch 1 in training, 1x1 maps, H != W, non-contiguous inputs:
a correct output or a clear error, never a crash deep inside torch."""

import pytest
import torch
import torchvision

from dynattn import AttnSpec, DynamicConv2d, build, get_spec
from dynattn.errors import InputError
from graph_passes import insert_attention
from tests.presets import FEATURE_PRESETS, KERNEL_PRESETS, fewest_batchnorm_values


def _module(name, channels=24):
    spec = get_spec(name)
    if spec.kind == "kernel":
        return DynamicConv2d(channels, channels, 3, padding=1, spec=spec)
    return build(spec, channels=channels)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("name", FEATURE_PRESETS + KERNEL_PRESETS)
def test_autocast_on_cpu(name, dtype):
    torch.manual_seed(0)
    module = _module(name).eval()
    x = torch.randn(2, 24, 9, 7)
    with torch.no_grad():
        ref = module(x)
        with torch.autocast("cpu", dtype=dtype):
            out = module(x)
    assert out.shape == ref.shape and torch.isfinite(out).all()
    torch.testing.assert_close(out.float(), ref, atol=0.05 * ref.abs().max().item() + 0.05, rtol=0.05)


@pytest.mark.parametrize("name", FEATURE_PRESETS + KERNEL_PRESETS)
def test_bfloat16_module(name):
    torch.manual_seed(0)
    module = _module(name).eval()
    x = torch.randn(2, 24, 9, 7)
    ref = module(x)
    low = _module(name).eval()
    low.load_state_dict(module.state_dict())
    low = low.to(torch.bfloat16)
    out = low(x.to(torch.bfloat16))
    assert out.dtype == torch.bfloat16 and torch.isfinite(out.float()).all()
    torch.testing.assert_close(out.float(), ref, atol=0.05 * ref.abs().max().item() + 0.05, rtol=0.05)


@pytest.mark.parametrize("name", FEATURE_PRESETS + KERNEL_PRESETS)
def test_memory_formats_and_views(name):
    module = _module(name).eval()
    x = torch.randn(3, 24, 9, 7)
    ref = module(x)
    torch.testing.assert_close(module(x.contiguous(memory_format=torch.channels_last)), ref, atol=1e-5, rtol=1e-5)
    strided = torch.randn(3, 24, 7, 9).transpose(2, 3)  # non-contiguous, H != W
    torch.testing.assert_close(module(strided), module(strided.contiguous()), atol=1e-5, rtol=1e-5)
    sliced = torch.randn(6, 48, 9, 7)[::2, ::2]
    torch.testing.assert_close(module(sliced), module(sliced.contiguous()), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", FEATURE_PRESETS + KERNEL_PRESETS)
def test_batch_of_one_in_training(name):
    module = _module(name).train()
    if fewest_batchnorm_values(get_spec(name), 1, 6, 5) == 1:  # BatchNorm after pooling (BAM, SRM): per sample
        with pytest.raises(InputError, match="one value per channel in training mode"):
            module(torch.randn(1, 24, 6, 5))
        return
    x = torch.randn(1, 24, 6, 5, requires_grad=True)  # parameter-free presets: the gradient reaches x
    out = module(x)  # BatchNorm over H*W > 1 values: fine
    assert out.shape == (1, 24, 6, 5)
    out.sum().backward()
    assert torch.isfinite(x.grad).all()


@pytest.mark.parametrize("name", FEATURE_PRESETS + KERNEL_PRESETS)
def test_one_by_one_maps(name):
    module = _module(name)
    x = torch.randn(2, 24, 1, 1)
    assert module.eval()(x).shape == x.shape
    module.train()
    spec = get_spec(name)
    if fewest_batchnorm_values(spec, 1, 1, 1) == 1:  # a 1x1 map, a batch of 1: a clear error, not a crash
        with pytest.raises(InputError, match="one value per channel in training mode"):
            module(torch.randn(1, 24, 1, 1))
    else:
        assert module(torch.randn(1, 24, 1, 1)).shape == (1, 24, 1, 1)
    assert module(x).shape == x.shape


def test_router_batchnorm_at_batch_one_is_a_clear_error():
    conv = DynamicConv2d(8, 8, 3, padding=1, spec=AttnSpec.odconv(norm="bn")).train()
    with pytest.raises(InputError, match=r"one value per channel in training mode.*norm=None"):
        conv(torch.randn(1, 8, 5, 5))
    assert conv(torch.randn(2, 8, 5, 5)).shape == (2, 8, 5, 5)


def test_rewritten_model_in_half_precision_and_channels_last():
    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None).eval()
    model = insert_attention(insert_attention(model, AttnSpec.cbam()), AttnSpec.condconv(), where="conv:layer4.*")
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        ref = model(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = model(x)
        cl = model.to(memory_format=torch.channels_last)(x.contiguous(memory_format=torch.channels_last))
    torch.testing.assert_close(low.float(), ref, atol=0.1 * ref.abs().max().item(), rtol=0.1)
    torch.testing.assert_close(cl, ref, atol=1e-4, rtol=1e-4)
