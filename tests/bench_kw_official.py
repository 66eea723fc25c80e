"""KernelWarehouse's layer against the official one (tests/reference/kw.py, written from OSVAI/KernelWarehouse),
eager and compiled.

    python -m tests.bench_kw_official --batch 32 --channels 64 --size 28 --budget 1 --repeats 20 --threads 1

Not a test (pytest collects test_*.py only) and not in the library (which may not import tests/): the official
layer is a reference, so its timing lives beside it. One 3x3 conv with its own warehouse at the given budget; both
layers hold the same weights (``load_kw_weights``) at the official starting temperature (1); each row's time is
the median of interleaved runs of inference (no grad) and of a training step (forward, sum, backward), with the
ratio to the static conv of the same shape.
"""

import argparse
import time

import torch
from torch import nn

from dynattn import AttnSpec, DynamicConv2d
from dynattn.bench.timing import interleaved_medians, machine_summary, no_grad_call
from dynattn.interop import load_kw_weights
from tests.reference.kw import KWNet


def _train_step(module, x):
    def step():
        module.zero_grad(set_to_none=True)
        module(x).sum().backward()
    return step


def _modules(c: int, budget: float, compiled: bool) -> dict[str, nn.Module]:
    torch.manual_seed(0)
    official = KWNet([((c, c, 3), dict(padding=1, bias=False), "stage0")], cell_num_ratio=budget)
    ours = DynamicConv2d(c, c, 3, padding=1, bias=False, spec=AttnSpec.kw(budget))
    load_kw_weights(ours, official.convs[0].state_dict(), official.warehouse_manager.take_cell(0))
    modules = {"static": nn.Conv2d(c, c, 3, padding=1, bias=False), "official": official.convs[0], "dynattn": ours}
    if compiled:
        modules.update({f"{k}+compiled": torch.compile(m, fullgraph=True) for k, m in list(modules.items())})
    return modules


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--channels", type=int, default=64)
    p.add_argument("--size", type=int, default=28)
    p.add_argument("--budget", type=float, default=1, help="the warehouse's budget (1x, 4x, 0.5x ...)")
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--clock", choices=("wall", "cpu"), default="wall")
    p.add_argument("--compiled", action="store_true")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    clock = time.process_time if args.clock == "cpu" else time.perf_counter
    budget = int(args.budget) if args.budget == int(args.budget) else args.budget
    modules = _modules(args.channels, budget, args.compiled)
    x = torch.randn(args.batch, args.channels, args.size, args.size)
    rows = {}
    for train in (False, True):
        for m in modules.values():
            m.train(train)
        fns = {k: (_train_step(m, x) if train else no_grad_call(m, x)) for k, m in modules.items()}
        rows[train] = interleaved_medians(fns, repeats=args.repeats, clock=clock)
    c, s = args.channels, args.size
    print(f"KernelWarehouse ({budget}x) {c}->{c} 3x3, B={args.batch}, {s}x{s}; medians of {args.repeats} "
          f"interleaved runs ({args.clock} clock); {machine_summary()}\n")
    print("| variant | inference ms | vs static | train step ms | vs static |\n|---|---:|---:|---:|---:|")
    for k in modules:
        base = "static+compiled" if k.endswith("+compiled") else "static"
        inf, tr = rows[False][k], rows[True][k]
        print(f"| {k} | {inf * 1e3:.2f} | {inf / rows[False][base]:.2f}x | {tr * 1e3:.2f} | "
              f"{tr / rows[True][base]:.2f}x |")


if __name__ == "__main__":
    main()
