"""Every exporter with a dynamic batch, run at batch sizes the export never saw: torch.export, ONNX through
both exporters (dynamo=True with dynamic_shapes, the TorchScript-based dynamo=False with dynamic_axes),
torch.jit.trace; torch.jit.script says what to use instead."""

import warnings

import pytest
import torch
import torchvision

from dynattn import AttnSpec, DynamicConv2d, build, get_spec
from graph_passes import insert_attention
from tests.presets import FEATURE_PRESETS

ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")



def _dynamic(x):
    return {"x": {0: torch.export.Dim("batch", min=1, max=64)}}


BATCHES = (1, 3, 17)  # sizes the exports never saw (they are made at batch 2)


#: Presets the TorchScript-based ONNX exporter (dynamo=False) cannot take yet (SymbolicValueError on their
#: GroupNorm / std pooling with a dynamic batch); dynamo=True, torch.export and jit.trace work for them.
LEGACY_ONNX_UNSUPPORTED = {"ela", "srm"}


def _check_export(module, x_shape, tmp_path, tol=1e-5, legacy=True, onnx=True):
    module.eval()
    x = torch.randn(2, *x_shape)
    ep = torch.export.export(module, (x,), dynamic_shapes=_dynamic(x))
    sessions = {}
    exporters = () if not onnx else (True, False) if legacy else (True,)  # dynamo=True / False
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for dynamo in exporters:
            path = tmp_path / f"model_{dynamo}.onnx"
            if dynamo:
                torch.onnx.export(module, (x,), str(path), input_names=["x"], output_names=["y"],
                                  dynamic_shapes=_dynamic(x), dynamo=True, verbose=False)
            else:  # the TorchScript-based exporter many deployment pipelines still call
                torch.onnx.export(module, (x,), str(path), input_names=["x"], output_names=["y"],
                                  dynamic_axes={"x": {0: "batch"}, "y": {0: "batch"}}, dynamo=False)
            sessions[dynamo] = ort.InferenceSession(str(path))
        traced = torch.jit.trace(module, (x,), check_trace=False)
    for batch in BATCHES:
        xb = torch.randn(batch, *x_shape)
        with torch.no_grad():
            expected = module(xb)
            torch.testing.assert_close(traced(xb), expected, atol=tol, rtol=tol)
        torch.testing.assert_close(ep.module()(xb), expected, atol=tol, rtol=tol)
        for dynamo, session in sessions.items():
            got = torch.from_numpy(session.run(None, {"x": xb.numpy()})[0])
            torch.testing.assert_close(got, expected, atol=tol, rtol=tol, msg=lambda m, d=dynamo: f"dynamo={d}: {m}")


@pytest.mark.parametrize("name", FEATURE_PRESETS)
def test_presets_export(name, tmp_path):
    torch.manual_seed(0)  # the same weights whatever ran before: the tolerance is float32 rounding through
    # normalisation layers (GroupNorm in ELA, BatchNorm over std pooling in SRM) at batch 17, not luck
    _check_export(build(get_spec(name), channels=33), (33, 9, 7), tmp_path, tol=1e-4,
                  legacy=name not in LEGACY_ONNX_UNSUPPORTED)


#: Flavors and options whose graphs differ from the defaults': a local extent (pooling windows and a
#: nearest resize), timm's scale-fused global context, a strip MLP without bias, BAM's sum.
FLAVORS = {
    "ge_extent2_timm": AttnSpec.ge(2, flavor="timm"),
    "gc_timm": AttnSpec.gc(flavor="timm"),
    "coord_timm": AttnSpec.coord(flavor="timm"),
    "bam_paper": AttnSpec.bam(flavor="paper"),
    "bam_identity": AttnSpec.bam(init="identity"),
}


@pytest.mark.parametrize("name", list(FLAVORS))
def test_flavors_export(name, tmp_path):
    _check_export(build(FLAVORS[name], channels=33), (33, 14, 9), tmp_path)


@pytest.mark.parametrize("strategy", ["auto", "kernel", "blocked", "output"])
@pytest.mark.parametrize("name", ["condconv", "dyconv", "odconv"])
def test_dynamic_conv_exports_in_each_strategy(name, strategy, tmp_path):
    # ONNX and jit.trace run output mixing whatever the strategy (the next test): their files are
    # checked once, with "auto"; torch.export keeps each strategy
    _check_export(DynamicConv2d(33, 24, 3, padding=1, spec=get_spec(name), strategy=strategy), (33, 9, 7), tmp_path,
                  onnx=strategy == "auto")


@pytest.mark.parametrize("name", ["condconv", "odconv"])
def test_upcycled_dynamic_conv_exports(name, tmp_path):
    """Upcycled heads blend their gate with the neutral value (one torch.lerp per head, the neutral value a
    non-persistent buffer): moved off their initial 0, every exporter keeps the blend."""
    torch.manual_seed(0)
    dyn = DynamicConv2d.from_conv(torch.nn.Conv2d(33, 24, 3, padding=1), get_spec(name))
    mixes = [p for n, p in dyn.router.named_parameters() if n.endswith("_mix")]
    assert mixes
    with torch.no_grad():
        for i, p in enumerate(mixes):
            p.fill_(0.3 + 0.2 * i)
    _check_export(dyn, (33, 9, 7), tmp_path)


@pytest.mark.parametrize("grid", [1, 2])
def test_dcd_exports(grid, tmp_path):
    """DCD's latent path at a dynamic batch (its L x L matmul per sample, BatchNorm1d over (B, L, positions)),
    upcycled, with Lambda's mix and the latent path's last conv moved off their zeros; the 2 x 2 grid pooling on a
    map it does not divide (which adaptive_avg_pool2d would not export through the TorchScript-based exporter)."""
    torch.manual_seed(0)
    dyn = DynamicConv2d.from_conv(torch.nn.Conv2d(33, 24, 3, stride=2, padding=1), AttnSpec.dcd(pool_grid=grid))
    with torch.no_grad():
        dyn.router.out_mix.fill_(0.7)
        dyn.latent.p.weight.normal_(0, 0.1)
    _check_export(dyn, (33, 9, 7), tmp_path)


def test_kw_exports(tmp_path):
    """KernelWarehouse at a dynamic batch: exporting, its conv runs as a batched matmul with the input's im2col
    columns (no group count tied to the batch), blended at a temperature between the attention and the one-hot."""
    torch.manual_seed(0)
    dyn = DynamicConv2d.from_conv(torch.nn.Conv2d(33, 24, 3, stride=2, padding=1), AttnSpec.kw(2))
    dyn.temperature = 0.4
    _check_export(dyn, (33, 9, 7), tmp_path)


def test_forced_kernel_mixing_says_how_it_exports_to_onnx(tmp_path):
    conv = DynamicConv2d(8, 8, 3, padding=1, spec="dyconv", strategy="kernel").eval()
    x = torch.randn(2, 8, 6, 6)
    with pytest.warns(UserWarning, match="group count.*output mixing instead"):
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


def test_rewritten_timm_model_exports(tmp_path):
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    model = insert_attention(timm.create_model("resnet18", pretrained=False).eval(), AttnSpec.eca())
    _check_export(model, (3, 48, 48), tmp_path, tol=1e-4)


def test_torchscript_scripting_says_what_to_use_instead():
    for module in (build(AttnSpec.se(), channels=32), DynamicConv2d(8, 8, 3, spec="dyconv"),
                   insert_attention(torchvision.models.resnet18(weights=None), "se")):
        with pytest.raises(TypeError, match=r"cannot be compiled by torch\.jit\.script.*torch\.jit\.trace"):
            torch.jit.script(module)


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


@pytest.mark.parametrize(("name", "dims", "sizes"), [("cbam", 3, (4, 9, 7)), ("coord", 1, (23,))])
def test_presets_export_per_rank(name, dims, sizes, tmp_path):
    """A clip's / a signal's attention exports with a dynamic batch like an image's."""
    torch.manual_seed(0)
    _check_export(build(get_spec(name), channels=33, spatial_dims=dims), (33, *sizes), tmp_path, tol=1e-4)
