"""torch.export and ONNX export with a dynamic batch, run at batch sizes the export never saw."""

import warnings

import pytest
import torch
import torchvision

from dynattn import AttnSpec, DynamicConv2d, build, get_spec
from graph_passes import insert_attention

ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

FEATURE_PRESETS = ["se", "eca", "cbam", "gam", "triplet"]


def _dynamic(x):
    return {"x": {0: torch.export.Dim("batch", min=1, max=64)}}


def _check_export(module, x_shape, tmp_path, tol=1e-5):
    module.eval()
    x = torch.randn(2, *x_shape)
    ep = torch.export.export(module, (x,), dynamic_shapes=_dynamic(x))
    path = tmp_path / "model.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (x,), str(path), input_names=["x"], output_names=["y"],
                          dynamic_shapes=_dynamic(x), dynamo=True, verbose=False)
    session = ort.InferenceSession(str(path))
    for batch in (1, 3):  # sizes the export never saw
        xb = torch.randn(batch, *x_shape)
        with torch.no_grad():
            expected = module(xb)
        torch.testing.assert_close(ep.module()(xb), expected, atol=tol, rtol=tol)
        got = torch.from_numpy(session.run(None, {"x": xb.numpy()})[0])
        torch.testing.assert_close(got, expected, atol=tol, rtol=tol)


@pytest.mark.parametrize("name", FEATURE_PRESETS)
def test_presets_export(name, tmp_path):
    _check_export(build(get_spec(name), channels=33), (33, 9, 7), tmp_path)


@pytest.mark.parametrize("strategy", ["auto", "kernel", "blocked", "output"])
@pytest.mark.parametrize("name", ["condconv", "dyconv", "odconv"])
def test_dynamic_conv_exports_in_each_strategy(name, strategy, tmp_path):
    _check_export(DynamicConv2d(33, 24, 3, padding=1, spec=get_spec(name), strategy=strategy), (33, 9, 7), tmp_path)


def test_forced_kernel_mixing_says_how_it_exports_to_onnx(tmp_path):
    conv = DynamicConv2d(8, 8, 3, padding=1, spec="dyconv", strategy="kernel").eval()
    x = torch.randn(2, 8, 6, 6)
    with pytest.warns(UserWarning, match="group count.*exporting output mixing instead"):
        torch.onnx.export(conv, (x,), str(tmp_path / "k.onnx"), dynamic_shapes=_dynamic(x), dynamo=True,
                          verbose=False)


@pytest.mark.parametrize("model_name", ["resnet18", pytest.param("mobilenet_v3_small", marks=pytest.mark.heavy)])
def test_rewritten_torchvision_models_export(model_name, tmp_path):
    torch.manual_seed(0)
    model = torchvision.models.get_model(model_name, weights=None).eval()
    model = insert_attention(model, AttnSpec.cbam())
    model = insert_attention(model, AttnSpec.dyconv(), where="conv:layer4.*" if model_name == "resnet18"
                             else "conv:features.1*")
    _check_export(model, (3, 64, 64), tmp_path, tol=1e-4)


def test_no_adaptive_max_pool_in_onnx(tmp_path):
    """CBAM's max pooling exports as ReduceMax, not a fixed-size MaxPool."""
    import onnx

    module = build(AttnSpec.cbam(), channels=16).eval()
    x = torch.randn(2, 16, 8, 8)
    path = tmp_path / "cbam.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (x,), str(path), dynamic_shapes=_dynamic(x), dynamo=True, verbose=False)
    ops = {n.op_type for n in onnx.load(str(path)).graph.node}
    assert "MaxPool" not in ops and "GlobalMaxPool" not in ops and "ReduceMax" in ops
