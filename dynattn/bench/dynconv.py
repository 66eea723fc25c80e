"""Dynamic convolution against a static conv and timm's CondConv2d.

    python -m dynattn.bench.dynconv                       # K=4, B=32, 64->64, 3x3, 28x28
    python -m dynattn.bench.dynconv --batch 8 --size 56 --memory-batch 256
    python -m dynattn.bench.dynconv --rank 3 --batch 4 --depth 8 --size 28 --variants static,dyconv:auto --compiled
    python -m dynattn.bench.dynconv --rank 1 --size 784   # DynamicConv1d against nn.Conv1d

Prints a markdown table: median time of inference and of a training step (forward +
backward) as a ratio to the static conv (``nn.Conv1d`` / ``nn.Conv2d`` / ``nn.Conv3d`` by
``--rank``) of the same shape, and the peak tensor memory one step allocates at ``--memory-batch``
(the input itself not counted). ``--compiled`` adds each variant under ``torch.compile(fullgraph=True)``
to the same interleaved run (a ``+compiled`` row, its ratio to the compiled static conv; memory not
measured). timm's CondConv2d runs with its usual router (sigmoid of a linear layer on the
average-pooled input, as in timm's CondConvResidual); it needs ``pip install timm`` and ``--rank 2``.
"""

from __future__ import annotations

import argparse
import sys
import time

import torch
from torch import nn

from ..dynamic_conv.module import DYNAMIC_CONVS
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
            "dcd:auto", "timm_condconv")


#: The static conv and the dynamic conv of each ``--rank`` (dynamic_conv's table of the convs it upcycles).
_CONV_PAIRS = {dynamic.spatial_dims: (static, dynamic) for static, dynamic in DYNAMIC_CONVS.items()}
COMPILED = "+compiled"


def make(variant: str, cin: int, cout: int, experts: int, rank: int = 2) -> nn.Module:
    static, dynamic = _CONV_PAIRS[rank]
    if variant == "static":
        return static(cin, cout, 3, padding=1)
    if variant == "timm_condconv":
        return CondConvWithRouter(cin, cout, experts)
    preset, strategy = variant.split(":")
    spec = AttnSpec.dcd() if preset == "dcd" else getattr(AttnSpec, preset)(experts=experts)  # DCD: no experts
    return dynamic(cin, cout, 3, padding=1, spec=spec, strategy=strategy)


def _step(module: nn.Module, x: torch.Tensor, train: bool):
    if not train:
        return no_grad_call(module, x)

    def train_step():
        module.zero_grad(set_to_none=True)
        module(x).sum().backward()
    return train_step


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--channels", type=int, default=64)
    p.add_argument("--size", type=int, default=28, help="H = W (rank 2, 3), or L (rank 1)")
    p.add_argument("--rank", type=int, choices=(1, 2, 3), default=2, help="spatial dims: Conv1d, Conv2d or Conv3d")
    p.add_argument("--depth", type=int, default=8, help="D of a --rank 3 input (B, C, D, size, size)")
    p.add_argument("--compiled", action="store_true",
                   help="also time every variant under torch.compile(fullgraph=True), in the same run")
    p.add_argument("--experts", type=int, default=4)
    p.add_argument("--repeats", type=int, default=30)
    p.add_argument("--memory-batch", type=int, default=None, help="default 256 (rank 1, 2), 16 (rank 3); 0: skip")
    p.add_argument("--variants", default=",".join(VARIANTS))
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    p.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                   help="cpu: the process's CPU time (with --threads 1, steady on a machine shared with other jobs)")
    add_allocator_option(p)
    return p


def _variants(text: str, rank: int) -> list[str]:
    """The variants asked for that this run can build (timm's CondConv2d: 2-D, timm installed), static first."""
    variants = text.split(",")
    if rank != 2 and "timm_condconv" in variants:
        variants = [v for v in variants if v != "timm_condconv"]
        print("timm's CondConv2d is 2-D: skipping timm_condconv", file=sys.stderr)
    try:
        import timm  # noqa: F401
    except ImportError:
        variants = [v for v in variants if v != "timm_condconv"]
        print("timm is not installed: skipping timm_condconv", file=sys.stderr)
    if "static" not in variants:
        variants.insert(0, "static")  # the ratios' denominator
    return variants


def _time(modules: dict[str, nn.Module], x: torch.Tensor, compiled: bool, repeats: int, clock) -> dict:
    """Median seconds of each variant (and, with ``compiled``, of each compiled variant), by mode (True: training)."""
    timed: dict[str, nn.Module] = dict(modules)
    if compiled:
        torch._dynamo.config.cache_size_limit = max(torch._dynamo.config.cache_size_limit, 64)
        timed.update({v + COMPILED: torch.compile(m, fullgraph=True) for v, m in modules.items()})
    rows = {}
    for train in (False, True):
        for m in modules.values():
            m.train(train)
        xi = x.requires_grad_(False)
        rows[train] = interleaved_medians({v: _step(m, xi, train) for v, m in timed.items()},
                                          repeats=repeats, clock=clock)
    return rows


def _peak_memory(modules: dict[str, nn.Module], big: torch.Tensor) -> dict:
    """Peak tensor memory of one step of each variant on ``big``, by (variant, training)."""
    memory = {}
    for train in (False, True):
        for v, m in modules.items():
            m.train(train)
            memory[(v, train)] = peak_allocated_mb(_step(m, big, train))
    return memory


def _print_table(args, rows: dict, memory: dict, memory_batch: int, spatial: tuple[int, ...], allocator: str) -> None:
    shape = "x".join(map(str, spatial))
    kernel = "x".join(["3"] * args.rank)
    c, k = args.channels, args.experts
    print(f"dynamic conv ({_CONV_PAIRS[args.rank][1].__name__}) K={k}, B={args.batch}, {c}->{c}, {kernel}, {shape}; "
          f"medians of {args.repeats} interleaved runs ({args.clock} clock); {machine_summary()}; {allocator}")
    print(f"memory: peak tensor memory one step allocates at B={memory_batch} (input excluded)"
          + ("; a +compiled row's ratio is to the compiled static conv" if args.compiled else "") + "\n")
    print("| variant | inference ms | vs static | train step ms | vs static | peak MB infer | peak MB train |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for v in rows[False]:
        base = "static" + COMPILED if v.endswith(COMPILED) else "static"
        inf, tr = rows[False][v], rows[True][v]
        s_inf, s_train = rows[False][base], rows[True][base]
        mem = [f"{memory[(v, t)]:.0f}" if (v, t) in memory else "-" for t in (False, True)]
        print(f"| {v} | {inf * 1e3:.2f} | {inf / s_inf:.2f}x | {tr * 1e3:.2f} | {tr / s_train:.2f}x "
              f"| {mem[0]} | {mem[1]} |")


def main(argv: list[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    clock = time.process_time if args.clock == "cpu" else time.perf_counter
    allocator = allocator_line(args)
    variants = _variants(args.variants, args.rank)
    memory_batch = args.memory_batch if args.memory_batch is not None else 16 if args.rank == 3 else 256

    torch.manual_seed(0)
    c, k = args.channels, args.experts
    spatial = {1: (args.size,), 2: (args.size, args.size), 3: (args.depth, args.size, args.size)}[args.rank]
    x = torch.randn(args.batch, c, *spatial)
    modules = {v: make(v, c, c, k, args.rank) for v in variants}
    rows = _time(modules, x, args.compiled, args.repeats, clock)
    memory = _peak_memory(modules, torch.randn(memory_batch, c, *spatial)) if memory_batch else {}
    _print_table(args, rows, memory, memory_batch, spatial, allocator)


if __name__ == "__main__":
    main()
