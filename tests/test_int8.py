"""int8 recipes for a ResNet-18 with CBAM and DyConv in layer4 (in CI: a ResNet of its blocks, one per stage):
PT2E through torchao's x86 inductor quantizer (after graph_passes.unshare_modules) and ONNX Runtime's static
quantization of an exported model.

These are the recipes docs/export.md gives ("int8 quantization"); the accuracy drop on real data is measured by
examples/quantize_int8.py. Here: the quantized model runs, agrees with float32 on a fixed input to the
stated tolerance, and the quantizer did quantize (int8 ops / QDQ nodes are present)."""

import numpy as np
import pytest
import torch
from torchvision.models.resnet import BasicBlock, ResNet

from dynattn import AttnSpec
from graph_passes import insert_attention, unshare_modules

#: Largest |int8 - float32| logit over the largest |float32| logit at random weights (measured 2-3%).
TOLERANCE = 0.08


def _network(blocks: list[int]) -> torch.nn.Module:
    torch.manual_seed(0)
    net = ResNet(BasicBlock, blocks, num_classes=10).eval()
    net = insert_attention(net, AttnSpec.cbam(init="identity"))
    return insert_attention(net, AttnSpec.dyconv(), where=["layer4.*"]).eval()


@pytest.fixture(scope="module", params=[
    pytest.param([1, 1, 1, 1], id="resnet10"),  # ResNet-18's blocks, one per stage: the CI case
    pytest.param([2, 2, 2, 2], id="resnet18", marks=pytest.mark.heavy),
])
def model(request):
    return _network(request.param)


def _batches(n, seed=1):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(4, 3, 32, 32, generator=g) for _ in range(n)]


def _relative(y, ref):
    return float((y - ref).abs().max() / ref.abs().max())


@pytest.mark.heavy  # convert_pt2e alone takes 20-70 s here: it exports ~100 conv-bn patterns whatever the model
def test_pt2e_x86_inductor_quantizer(model):
    pt2e = pytest.importorskip("torchao.quantization.pt2e.quantize_pt2e")
    xiq = pytest.importorskip("torchao.quantization.pt2e.quantizer.x86_inductor_quantizer")
    x = _batches(1, seed=2)[0]
    quantizer = xiq.X86InductorQuantizer().set_global(xiq.get_default_x86_inductor_quantization_config())
    exported = torch.export.export(unshare_modules(model), (x,)).module()
    prepared = pt2e.prepare_pt2e(exported, quantizer)
    for batch in _batches(3):
        prepared(batch)
    quantized = pt2e.convert_pt2e(prepared)
    ops = {str(n.target) for n in quantized.graph.nodes if n.op == "call_function"}
    assert any("quantize_per_tensor" in op for op in ops) and any("dequantize_per_channel" in op for op in ops)
    with torch.no_grad():
        assert _relative(quantized(x), model(x)) < TOLERANCE


def test_onnxruntime_static_quantization(model, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    quantization = pytest.importorskip("onnxruntime.quantization")
    x = _batches(1, seed=2)[0]
    path, qpath = tmp_path / "model.onnx", tmp_path / "model.int8.onnx"
    torch.onnx.export(model, (x,), path, input_names=["x"], output_names=["logits"],
                      dynamic_axes={"x": {0: "batch"}, "logits": {0: "batch"}}, dynamo=False)

    class Calibration(quantization.CalibrationDataReader):
        def __init__(self):
            self.batches = iter([{"x": b.numpy()} for b in _batches(3)])

        def get_next(self):
            return next(self.batches, None)

    quantization.quantize_static(str(path), str(qpath), Calibration(), quant_format=quantization.QuantFormat.QDQ,
                                 activation_type=quantization.QuantType.QUInt8,
                                 weight_type=quantization.QuantType.QInt8)
    session = ort.InferenceSession(str(qpath), providers=["CPUExecutionProvider"])
    import onnx

    assert sum(n.op_type == "QuantizeLinear" for n in onnx.load(str(qpath)).graph.node) > 10
    y = session.run(None, {"x": np.concatenate([x.numpy(), x[:1].numpy()])})[0]  # a batch of 5: dynamic
    with torch.no_grad():
        ref = model(torch.cat([x, x[:1]]))
    assert y.shape == (5, 10) and _relative(torch.from_numpy(y), ref) < TOLERANCE
