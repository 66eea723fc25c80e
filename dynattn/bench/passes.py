"""The cost of graph_passes itself: insert_attention and list_sites on real and meta models.

    python -m dynattn.bench.passes

Models: torchvision resnet50 (25.6M parameters, real weights) and a 1.2B-parameter ResNet
(Bottleneck blocks [3, 8, 36, 3], width_per_group=384) built on the meta device, so no weight
memory exists at all. Reported: median wall time of --repeats runs, and the peak memory one
run allocates (Python objects via tracemalloc, plus tensors via the profiler's allocation
events: for resnet50 that includes the deep copy of its weights).
"""

from __future__ import annotations

import argparse
import functools
import statistics
import time
import tracemalloc
import warnings

import torch
import torchvision
from torchvision.models.resnet import Bottleneck, ResNet

from graph_passes import insert_attention, list_sites, report

from ..spec import AttnSpec
from .timing import machine_summary, peak_allocated_mb


def _models() -> dict[str, torch.nn.Module]:
    resnet50 = torchvision.models.resnet50(weights=None).eval()
    with torch.device("meta"):
        big = ResNet(Bottleneck, [3, 8, 36, 3], width_per_group=384).eval()
    return {"resnet50": resnet50, "resnet-1.2B (meta)": big}


def _python_peak_mb(fn) -> float:
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1] / 2**20
    finally:
        tracemalloc.stop()


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args(argv)
    warnings.filterwarnings("ignore")
    cases = {
        "list_sites(cbam)": lambda m: list_sites(m, AttnSpec.cbam()),
        "insert_attention(cbam, identity)": lambda m: insert_attention(m, AttnSpec.cbam(init="identity")),
        "insert_attention(dyconv)": lambda m: insert_attention(m, AttnSpec.dyconv()),
    }
    print(f"graph_passes cost; medians of {args.repeats} runs; {machine_summary()}\n")
    print("| model | parameters | call | sites | median s | peak MB (python) | peak MB (tensors) |")
    print("|---|---:|---|---:|---:|---:|---:|")
    for name, model in _models().items():
        n_params = sum(p.numel() for p in model.parameters())
        for label, fn in cases.items():
            fn(model)  # warm caches (compiler plans, imports)
            times = []
            for _ in range(args.repeats):
                t0 = time.perf_counter()
                result = fn(model)
                times.append(time.perf_counter() - t0)
            sites = len(result) if isinstance(result, list) else len(report(result).records)
            once = functools.partial(fn, model)
            py_peak = _python_peak_mb(once)
            tensor_peak = peak_allocated_mb(once)
            print(f"| {name} | {n_params / 1e6:,.1f}M | {label} | {sites} | {statistics.median(times):.3f} "
                  f"| {py_peak:.1f} | {tensor_peak:.1f} |")


if __name__ == "__main__":
    main()
