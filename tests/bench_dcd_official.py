"""DCD's layer against the official one (tests/reference/dcd.py, written from liyunsheng13/dcd), eager and compiled.

    python -m tests.bench_dcd_official --batch 32 --channels 64 --size 28 --repeats 20 --threads 1 --clock cpu

Not a test (pytest collects test_*.py only) and not in the library (which may not import tests/): the official
layer is a reference, so its timing lives beside it. Both layers hold the same weights; each row's time is the
median of interleaved runs of inference (no grad) and of a training step (forward, sum, backward), with the
ratio to the static conv of the same shape.
"""

import argparse
import time

import torch
from torch import nn

from dynattn import AttnSpec, DynamicConv2d
from dynattn.bench.timing import interleaved_medians, machine_summary, no_grad_call
from dynattn.interop import load_dcd_weights
from tests.reference.dcd import DCDReference


def _train_step(module, x):
    def step():
        module.zero_grad(set_to_none=True)
        module(x).sum().backward()
    return step


def _modules(c: int, grid: int, compiled: bool) -> dict[str, nn.Module]:
    torch.manual_seed(0)
    official = DCDReference(c, c, 3, 1, 1, grid=grid)
    ours = DynamicConv2d(c, c, 3, padding=1, bias=False, spec=AttnSpec.dcd(pool_grid=grid))
    load_dcd_weights(ours, official.state_dict())
    modules = {"static": nn.Conv2d(c, c, 3, padding=1, bias=False), "official": official, "dynattn": ours}
    if compiled:
        modules.update({f"{k}+compiled": torch.compile(m, fullgraph=True) for k, m in list(modules.items())})
    return modules


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--channels", type=int, default=64)
    p.add_argument("--size", type=int, default=28)
    p.add_argument("--grid", type=int, default=1, help="1: conv_dy; 2: conv_basic_dy")
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--clock", choices=("wall", "cpu"), default="wall")
    p.add_argument("--compiled", action="store_true")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    clock = time.process_time if args.clock == "cpu" else time.perf_counter
    modules = _modules(args.channels, args.grid, args.compiled)
    x = torch.randn(args.batch, args.channels, args.size, args.size)
    rows = {}
    for train in (False, True):
        for m in modules.values():
            m.train(train)
        fns = {k: (_train_step(m, x) if train else no_grad_call(m, x)) for k, m in modules.items()}
        rows[train] = interleaved_medians(fns, repeats=args.repeats, clock=clock)
    c, s = args.channels, args.size
    print(f"DCD (pool_grid={args.grid}) {c}->{c} 3x3, B={args.batch}, {s}x{s}; medians of {args.repeats} "
          f"interleaved runs ({args.clock} clock); {machine_summary()}\n")
    print("| variant | inference ms | vs static | train step ms | vs static |\n|---|---:|---:|---:|---:|")
    for k in modules:
        base = "static+compiled" if k.endswith("+compiled") else "static"
        inf, tr = rows[False][k], rows[True][k]
        print(f"| {k} | {inf * 1e3:.2f} | {inf / rows[False][base]:.2f}x | {tr * 1e3:.2f} | "
              f"{tr / rows[True][base]:.2f}x |")


if __name__ == "__main__":
    main()
