"""What the benchmarks of dynattn's layers against official ones (tests/bench_*_official.py) share: the command
line, interleaved timing of inference and a training step, and the table of ratios to the static conv.

Not a test (pytest collects test_*.py only) and not in the library (which may not import tests/): the official
layers are references, so their timing lives beside them.
"""

import argparse
import time
from collections.abc import Callable

import torch
from torch import nn

from dynattn.bench.timing import interleaved_medians, machine_summary, no_grad_call


def parser(description: str) -> argparse.ArgumentParser:
    """The options every such benchmark takes; each adds its own (the layer's variant)."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--channels", type=int, default=64)
    p.add_argument("--size", type=int, default=28)
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--clock", choices=("wall", "cpu"), default="wall")
    p.add_argument("--compiled", action="store_true")
    return p


def with_compiled(modules: dict[str, nn.Module], compiled: bool) -> dict[str, nn.Module]:
    """``modules``, and each under ``torch.compile(fullgraph=True)`` as ``<name>+compiled`` when ``compiled``."""
    if compiled:
        modules.update({f"{k}+compiled": torch.compile(m, fullgraph=True) for k, m in list(modules.items())})
    return modules


def _train_step(module: nn.Module, x: torch.Tensor) -> Callable[[], None]:
    def step():
        module.zero_grad(set_to_none=True)
        module(x).sum().backward()
    return step


def compare(args: argparse.Namespace, modules: dict[str, nn.Module], title: str) -> None:
    """Time ``modules`` (a ``static`` conv among them) on one input, inference (no grad) and a training step (forward,
    sum, backward), medians of interleaved runs, and print a markdown table with each one's ratio to the static
    conv (compiled rows to the compiled static conv)."""
    if args.threads:
        torch.set_num_threads(args.threads)
    clock = time.process_time if args.clock == "cpu" else time.perf_counter
    x = torch.randn(args.batch, args.channels, args.size, args.size)
    rows = {}
    for train in (False, True):
        for m in modules.values():
            m.train(train)
        fns = {k: (_train_step(m, x) if train else no_grad_call(m, x)) for k, m in modules.items()}
        rows[train] = interleaved_medians(fns, repeats=args.repeats, clock=clock)
    c, s = args.channels, args.size
    print(f"{title} {c}->{c} 3x3, B={args.batch}, {s}x{s}; medians of {args.repeats} interleaved runs "
          f"({args.clock} clock); {machine_summary()}\n")
    print("| variant | inference ms | vs static | train step ms | vs static |\n|---|---:|---:|---:|---:|")
    for k in modules:
        base = "static+compiled" if k.endswith("+compiled") else "static"
        inf, tr = rows[False][k], rows[True][k]
        print(f"| {k} | {inf * 1e3:.2f} | {inf / rows[False][base]:.2f}x | {tr * 1e3:.2f} | "
              f"{tr / rows[True][base]:.2f}x |")
