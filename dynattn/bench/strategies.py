"""Every mixing strategy of DynamicConv2d over a grid of real networks' layer shapes, and the regret
of ``strategy="auto"``: how much slower its choice is than the fastest strategy of each cell.

    python -m dynattn.bench.strategies                   # the grid below, eval and training
    python -m dynattn.bench.strategies --quick           # a few shapes, for a smoke run
    python -m dynattn.bench.strategies --threads 1 --clock cpu

The grid takes the conv layers of ResNet-18/50 (3x3 and 1x1, strided, projection shortcuts),
MobileNetV3 and EfficientNet (1x1 expansions and projections, 3x3 and 5x5 depthwise) at the map
sizes of 224 and 128 px inputs, at batch 1, 8 and 32, with K = 4 experts (and 8 on some shapes).
Each cell times every strategy round-robin (``interleaved_medians``) on one DyConv layer; training
cells time forward and backward, the input's gradient included (as for every layer of a network but the
first). ``--clock cpu`` reads the process's CPU time instead of the wall
clock (with ``--threads 1`` this ignores time the process spends waiting for a core a concurrent job
holds, which makes the comparison stable on a shared machine).
"""

from __future__ import annotations

import argparse
import itertools
import os
import sys
import time
from dataclasses import dataclass

import torch

from .. import mixing
from ..dynamic_conv import DynamicConv2d, clear_measured_strategies, cost_model, profile_cache
from ..dynamic_conv.measure import benchmark_key, measured_strategy
from ..spec import AttnSpec
from .timing import add_allocator_option, allocator_line, interleaved_medians, machine_summary

STRATEGIES = ("kernel", "blocked", "output")


@dataclass(frozen=True)
class Layer:
    """One conv layer shape: what networks use (``net``), in, out, kernel, stride, groups, input map size."""

    net: str
    cin: int
    cout: int
    k: int
    stride: int
    groups: int
    size: int

    def label(self) -> str:
        g = "dw" if self.groups == self.cin == self.cout and self.groups > 1 else (
            f"g{self.groups}" if self.groups > 1 else "")
        s = f" s{self.stride}" if self.stride > 1 else ""
        return f"{self.cin}->{self.cout} {self.k}x{self.k}{s}{' ' + g if g else ''} @{self.size}"


def _grid() -> list[Layer]:
    layers = []
    for size224, size128, c in ((56, 32, 64), (28, 16, 128), (14, 8, 256), (7, 4, 512)):  # ResNet-18 stages
        for size in (size224, size128):
            layers.append(Layer("resnet18", c, c, 3, 1, 1, size))
            if c > 64:
                layers.append(Layer("resnet18", c // 2, c, 3, 2, 1, size * 2))
                layers.append(Layer("resnet18", c // 2, c, 1, 2, 1, size * 2))
    for size, w in ((56, 64), (28, 128), (14, 256), (7, 512)):  # ResNet-50 bottlenecks at 224
        layers.append(Layer("resnet50", 4 * w, w, 1, 1, 1, size))
        layers.append(Layer("resnet50", w, 4 * w, 1, 1, 1, size))
    for size, c, k in ((112, 32, 3), (56, 96, 3), (28, 144, 5), (14, 240, 3), (14, 480, 5), (7, 672, 5),
                       (7, 960, 5)):  # MobileNetV3 / EfficientNet depthwise
        layers.append(Layer("mobile", c, c, k, 1, c, size))
    for size, cin, cout in ((56, 24, 144), (28, 40, 240), (14, 80, 480), (14, 112, 672), (7, 160, 960),
                            (7, 960, 160), (14, 480, 112), (28, 240, 40)):  # expansions and projections
        layers.append(Layer("mobile", cin, cout, 1, 1, 1, size))
    return layers


GRID = _grid()
QUICK = [Layer("resnet18", 64, 64, 3, 1, 1, 32), Layer("resnet18", 512, 512, 3, 1, 1, 4),
         Layer("mobile", 96, 96, 3, 1, 96, 28), Layer("mobile", 80, 480, 1, 1, 1, 14)]


@dataclass
class Cell:
    layer: Layer
    batch: int
    experts: int
    train: bool
    times: dict[str, float]
    chosen: str

    @property
    def best(self) -> str:
        return min(STRATEGIES, key=self.times.__getitem__)  # ties (one block: blocked is kernel) go to kernel

    @property
    def regret(self) -> float:
        return self.times[self.chosen] / self.times[self.best] - 1


def _step(module: DynamicConv2d, x: torch.Tensor, grad: torch.Tensor | None, strategy: str):
    def run():
        module.strategy = strategy
        if grad is None:
            with torch.no_grad():
                return module(x)
        module.zero_grad(set_to_none=True)
        x.grad = None
        module(x).backward(grad)
    return run


def _cell(layer: Layer, b: int, k: int, train: bool, repeats: int, clock: str, chooser) -> Cell:
    """Every strategy timed on one DyConv layer of ``layer``'s shape at batch ``b`` with ``k`` experts, and the
    choice of ``strategy="auto"`` (or of ``chooser``)."""
    torch.manual_seed(0)
    m = DynamicConv2d(layer.cin, layer.cout, layer.k, layer.stride, padding=layer.k // 2,
                      groups=layer.groups, bias=False, spec=AttnSpec.dyconv(experts=k)).train(train)
    x = torch.randn(b, layer.cin, layer.size, layer.size)
    grad = None
    if train:  # a training step of an inner layer of a network: the input's gradient too
        with torch.no_grad():
            grad = torch.randn_like(m(x))
        x.requires_grad_()
    # one block is kernel mixing itself: time it once (a second timing would only add noise)
    single = mixing.block_channels(b, (k, layer.cout, layer.cin // layer.groups, layer.k, layer.k),
                                   layer.groups) >= layer.cout
    fns = {s: _step(m, x, grad, s) for s in STRATEGIES if not (single and s == "blocked")}
    times = interleaved_medians(fns, repeats=repeats, clock=time.process_time if clock == "cpu" else time.perf_counter)
    if single:
        times["blocked"] = times["kernel"]
    m.strategy = "auto"
    pick = chooser(m, x) if chooser is not None else m.chosen_strategy(x)
    if single and pick == "blocked":
        pick = "kernel"
    return Cell(layer, b, k, train, times, pick)


def measure(layers, batches, experts, modes, *, repeats=7, clock="wall", chooser=None, progress=True) -> list[Cell]:
    cells = []
    for layer, b, k, train in itertools.product(layers, batches, experts, modes):
        cell = _cell(layer, b, k, train, repeats, clock, chooser)
        cells.append(cell)
        if progress:
            print(f"... {layer.label()} B={b} K={k} {'train' if train else 'eval'}: "
                  + ", ".join(f"{s} {t * 1e3:.2f}" for s, t in cell.times.items()) + f" ms; auto {cell.chosen}",
                  file=sys.stderr, flush=True)
    return cells


def measured_choice(m: DynamicConv2d, x: torch.Tensor) -> str:
    """What benchmark mode picks for ``m`` on ``x`` (timed afresh, in m's mode)."""
    saved = DynamicConv2d.benchmark
    DynamicConv2d.benchmark = True
    clear_measured_strategies()
    try:
        key = benchmark_key(m, x)
        with torch.set_grad_enabled(m.training):
            out = m(x)
            if m.training:
                m.zero_grad(set_to_none=True)
                out.sum().backward()
        return measured_strategy(key)
    finally:
        clear_measured_strategies()
        DynamicConv2d.benchmark = saved


def table(cells: list[Cell]) -> str:
    lines = ["| layer | net | B | K | mode | kernel ms | blocked ms | output ms | best | auto | regret |",
             "|---|---|---:|---:|---|---:|---:|---:|---|---|---:|"]
    for c in cells:
        t = c.times
        lines.append(f"| {c.layer.label()} | {c.layer.net} | {c.batch} | {c.experts} | "
                     f"{'train' if c.train else 'eval'} | {t['kernel'] * 1e3:.2f} | {t['blocked'] * 1e3:.2f} | "
                     f"{t['output'] * 1e3:.2f} | {c.best} | {c.chosen} | {100 * c.regret:.0f}% |")
    return "\n".join(lines)


def summary(cells: list[Cell]) -> str:
    out = []
    for train in (False, True):
        sub = [c for c in cells if c.train == train]
        if not sub:
            continue
        worst = max(sub, key=lambda c: c.regret)
        mean = sum(c.regret for c in sub) / len(sub)
        within = sum(c.regret <= 0.10 for c in sub)
        out.append(f"{'train' if train else 'eval'}: worst regret {100 * worst.regret:.0f}% "
                   f"({worst.layer.label()}, B={worst.batch}, K={worst.experts}: {worst.chosen} vs {worst.best}), "
                   f"mean {100 * mean:.1f}%, {within}/{len(sub)} cells within 10%")
    return "\n".join(out)


def _ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v]


def resolve_cost_model() -> str:
    """Put the cost model ``DYNATTN_COST_MODEL`` names in force for this thread count (calibrating where that is
    what it asks for and nothing is cached) before any cell is timed; a line that says what it took."""
    source = os.environ.get("DYNATTN_COST_MODEL") or "cached"
    t0 = time.perf_counter()
    cost_model()
    where = "" if source == "fitted" else f", profile cache {profile_cache.cache_dir()}"
    return f"calibration: {time.perf_counter() - t0:.1f} s (DYNATTN_COST_MODEL={source}{where})"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m dynattn.bench.strategies", description=__doc__.split("\n\n")[0])
    p.add_argument("--batch", default="1,8,32")
    p.add_argument("--experts", default="4")
    p.add_argument("--modes", default="eval,train")
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    p.add_argument("--clock", choices=("wall", "cpu"), default="wall")
    p.add_argument("--quick", action="store_true", help="4 shapes")
    p.add_argument("--filter", default="", help="only layers whose label or net contains this text")
    p.add_argument("--measured", action="store_true",
                   help="report benchmark mode's choice (DynamicConv2d.benchmark = True), not the cost model's")
    add_allocator_option(p)
    args = p.parse_args(argv)
    allocator = allocator_line(args)
    if args.threads:
        torch.set_num_threads(args.threads)
    calibration = resolve_cost_model()
    layers = [lay for lay in (QUICK if args.quick else GRID) if args.filter in lay.label() or args.filter == lay.net]
    modes = [m == "train" for m in args.modes.split(",") if m]
    chooser = measured_choice if args.measured else None
    cells = measure(layers, _ints(args.batch), _ints(args.experts), modes, repeats=args.repeats, clock=args.clock,
                    chooser=chooser)
    print(f"DynamicConv2d strategies; auto = {'benchmark mode' if args.measured else 'the cost model'}; "
          f"medians of {args.repeats} interleaved runs ({args.clock} clock); "
          f"{machine_summary()}; {allocator}")
    print(calibration + "\n")
    print(table(cells))
    print()
    print(summary(cells))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
