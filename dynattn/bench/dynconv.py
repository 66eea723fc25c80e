"""Dynamic convolution against a static conv and timm's CondConv2d.

    python -m dynattn.bench.dynconv                       # K=4, B=32, 64->64, 3x3, 28x28
    python -m dynattn.bench.dynconv --batch 8 --size 56 --memory-batch 256

Prints a markdown table: median time of inference and of a training step (forward +
backward) as a ratio to the static ``nn.Conv2d`` of the same shape, and the peak tensor
memory one step allocates at ``--memory-batch`` (the input itself not counted). timm's CondConv2d runs with
its usual router (sigmoid of a linear layer on the average-pooled input, as in timm's
CondConvResidual); it needs ``pip install timm``.
"""

from __future__ import annotations

import argparse
import sys
import time

import torch
from torch import nn

from ..dynamic_conv import DynamicConv2d
from ..spec import AttnSpec
from .handwritten import CondConvWithRouter
from .timing import (
    add_allocator_option,
    allocator_line,
    interleaved_medians,
    machine_summary,
    no_grad_call,
    peak_allocated_mb,
)

VARIANTS = ("static", "dyconv:auto", "dyconv:kernel", "dyconv:blocked", "dyconv:output", "condconv:auto", "odconv:auto",
            "timm_condconv")


def make(variant: str, cin: int, cout: int, experts: int) -> nn.Module:
    if variant == "static":
        return nn.Conv2d(cin, cout, 3, padding=1)
    if variant == "timm_condconv":
        return CondConvWithRouter(cin, cout, experts)
    preset, strategy = variant.split(":")
    spec = getattr(AttnSpec, preset)(experts=experts)
    return DynamicConv2d(cin, cout, 3, padding=1, spec=spec, strategy=strategy)


def _step(module: nn.Module, x: torch.Tensor, train: bool):
    if not train:
        return no_grad_call(module, x)

    def train_step():
        module.zero_grad(set_to_none=True)
        module(x).sum().backward()
    return train_step


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--channels", type=int, default=64)
    p.add_argument("--size", type=int, default=28)
    p.add_argument("--experts", type=int, default=4)
    p.add_argument("--repeats", type=int, default=30)
    p.add_argument("--memory-batch", type=int, default=256)
    p.add_argument("--variants", default=",".join(VARIANTS))
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    p.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                   help="cpu: the process's CPU time (with --threads 1, steady on a machine shared with other jobs)")
    add_allocator_option(p)
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    clock = time.process_time if args.clock == "cpu" else time.perf_counter
    allocator = allocator_line(args)
    variants = args.variants.split(",")
    try:
        import timm  # noqa: F401
    except ImportError:
        variants = [v for v in variants if v != "timm_condconv"]
        print("timm is not installed: skipping timm_condconv", file=sys.stderr)

    torch.manual_seed(0)
    c, k = args.channels, args.experts
    x = torch.randn(args.batch, c, args.size, args.size)
    modules = {v: make(v, c, c, k) for v in variants}
    rows = {}
    for train in (False, True):
        for m in modules.values():
            m.train(train)
        xi = x.requires_grad_(False)
        rows[train] = interleaved_medians({v: _step(m, xi, train) for v, m in modules.items()},
                                          repeats=args.repeats, clock=clock)
    memory = {}
    big = torch.randn(args.memory_batch, c, args.size, args.size)
    for train in (False, True):
        for v, m in modules.items():
            m.train(train)
            memory[(v, train)] = peak_allocated_mb(_step(m, big, train))
    del big

    print(f"dynamic conv K={k}, B={args.batch}, {c}->{c}, 3x3, {args.size}x{args.size}; "
          f"medians of {args.repeats} interleaved runs ({args.clock} clock); {machine_summary()}; {allocator}")
    print(f"memory: peak tensor memory one step allocates at B={args.memory_batch} (input excluded)\n")
    print("| variant | inference ms | vs static | train step ms | vs static | peak MB infer | peak MB train |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    s_inf, s_train = rows[False]["static"], rows[True]["static"]
    for v in variants:
        inf, tr = rows[False][v], rows[True][v]
        print(f"| {v} | {inf * 1e3:.2f} | {inf / s_inf:.2f}x | {tr * 1e3:.2f} | {tr / s_train:.2f}x "
              f"| {memory[(v, False)]:.0f} | {memory[(v, True)]:.0f} |")


if __name__ == "__main__":
    main()
