"""Which attention, where? Search it on cluttered MNIST with dynattn.search (Optuna), then check the answer.

    python examples/search_attention.py            # full: 24 trials or 30 minutes, then 6 models x 3 seeds
    python examples/search_attention.py --quick    # a short real run (see --help for its time)
    python examples/search_attention.py --out DIR  # where results.md and the search's files go

Needs the search and examples extras (``pip install -e ".[search,examples]"``). Step 1 searches presets
(SE, ECA, CBAM, coordinate attention, DyConv, ODConv), their reduction and kernel size, and placements
(before each residual add, at stage outputs, at a subset of the stages, after every conv; dynamic convs
replace the convs) within a fixed budget of trials and seconds, scoring each trial by validation accuracy
on canvases made from train digits held out of its training set. Step 2 retrains the best spec found, at
the placement found, next to the hand-picked SE, ECA, CBAM (before each residual add) and DyConv (in place
of the blocks' 3x3 convs) and the plain network, each at several seeds, on the full train split, and tests
them on the test split that the search never saw. Whether the search beats the best hand-picked choice is
what the table says, either way.

Writes ``results.md`` (the table) under --out, and the search's ``results.md``, ``best_spec.txt``,
``results.png`` and ``study.db`` under --out/search; rerunning resumes the stored study (no trial reruns).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="an 8-trial search on 1,000 train digits, then 2 seeds on "
                   "1,000: measured 264 s of CPU time on one thread of an AMD EPYC, 18 minutes wall on 2 cores shared "
                   "with other jobs (load average about 5)")
    p.add_argument("--out", default="outputs/search_attention", help="folder for results.md and the search's files "
                   "(default outputs/search_attention)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1: the network is small)")
    return p.parse_args(argv)


if __name__ == "__main__":
    parse_args()  # --help and mistakes in the arguments answer now, before the imports below take seconds

import torch

import dynattn
from dynattn import AttnSpec
from dynattn.search import SearchSpace, Task, search
from dynattn.search.data import cluttered_mnist, cluttered_splits
from dynattn.search.models import SmallResNet
from dynattn.search.trainer import evaluate, fit
from graph_passes import insert_attention

SETTINGS = {  # search: train / validation digits, epochs, trials, seconds; retrain: train / test digits, epochs, seeds
    "full": dict(search=(3000, 1000, 3, 24, 1800), retrain=(None, None, 3, 3)),
    "quick": dict(search=(1000, 300, 3, 8, 600), retrain=(1000, 300, 3, 2)),
    "smoke": dict(search=(60, 40, 1, 2, 300), retrain=(60, 40, 1, 1)),
}


def block_3x3(node, module) -> bool:
    """Where the hand-picked DyConv goes: the blocks' 3x3 convs (not the stem, not the shortcuts)."""
    return module.kernel_size == (3, 3)


def space() -> SearchSpace:
    wanted = ("se", "eca", "cbam", "coord", "dyconv", "odconv")
    presets = tuple(p for p in wanted if p in dynattn.list_presets())
    return SearchSpace(presets=presets, fields={"reduction": (4, 8, 16), "kernel_size": (3, 5, 7)},
                       where=("residual", "stage", "stages", "conv"))


def hand_picked() -> dict[str, tuple[AttnSpec | None, object]]:
    return {"ResNet": (None, None),
            "+ SE": (AttnSpec.se(reduction=4), "residual"),
            "+ ECA": (AttnSpec.eca(), "residual"),
            "+ CBAM": (AttnSpec.cbam(reduction=4, kernel_size=3), "residual"),
            "+ DyConv (3x3 convs)": (AttnSpec.dyconv(), block_3x3)}


def retrain(spec: AttnSpec | None, where: object, data, epochs: int, seed: int) -> tuple[int, float, float]:
    """(parameters, test accuracy, CPU s per epoch) of the network with ``spec`` at ``where``, trained from scratch."""
    torch.manual_seed(seed)
    model = SmallResNet()
    if spec is not None:
        torch.manual_seed(seed + 1000)
        model = insert_attention(model, spec, where=where)
    cpu = fit(model, data, epochs, seed, anneal=True)
    return sum(p.numel() for p in model.parameters()), evaluate(model, data.x_test, data.y_test), cpu


def run_search(mode: str, out: Path):
    train_digits, val_digits, epochs, trials, budget = SETTINGS[mode]["search"]
    task = Task("cluttered-digits", cluttered_splits(train_digits, val_digits, test_digits=100), SmallResNet,
                epochs=epochs)
    result = search(task=task, space=space(), trials=trials, timeout=budget, study=f"search_attention-{mode}",
                    out=out / "search")
    done = [t for t in result.study.get_trials() if t.state.name == "COMPLETE"]
    seconds = sum((t.datetime_complete - t.datetime_start).total_seconds() for t in result.study.get_trials()
                  if t.datetime_complete is not None)
    return result, len(done), seconds


def table(rows: list[tuple[str, str, int, list[float], list[float]]], header: str) -> str:
    base = statistics.fmean(rows[0][3])
    lines = [header, "", "| model | where | parameters | test accuracy (mean +- std) | vs ResNet | seeds "
             "| CPU s / epoch |", "|---|---|---:|---:|---:|---|---:|"]
    for name, where, params, accs, cpus in rows:
        mean, std = statistics.fmean(accs), statistics.stdev(accs) if len(accs) > 1 else 0.0
        delta = "" if name == rows[0][0] else f"{100 * (mean - base):+.2f}"
        lines.append(f"| {name} | {where} | {params:,} | {100 * mean:.2f}% +- {100 * std:.2f} | {delta} | "
                     f"{', '.join(f'{100 * a:.2f}' for a in accs)} | {statistics.fmean(cpus):.1f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    mode = "smoke" if os.environ.get("DYNATTN_QUICK") else "quick" if args.quick else "full"
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    t0, cpu0 = time.perf_counter(), time.process_time()
    result, complete, search_seconds = run_search(mode, out)
    best = result.study.best_trial
    found = (dynattn.parse_spec(best.user_attrs["spec"]), best.user_attrs["selector"])
    candidates = {**hand_picked(), f"+ found: {best.user_attrs['spec']}": found}
    train_digits, test_digits, epochs, seeds = SETTINGS[mode]["retrain"]
    data = cluttered_mnist(train_digits, test_digits=test_digits)
    rows = []
    for name, (spec, where) in candidates.items():
        runs = [retrain(spec, where, data, epochs, seed) for seed in range(seeds)]
        shown = best.user_attrs["where"] if name.startswith("+ found") else \
            "3x3 convs" if callable(where) else where or ""
        rows.append((name, shown, runs[0][0], [r[1] for r in runs], [r[2] for r in runs]))
        print(f"{name:<40} {100 * statistics.fmean(r[1] for r in runs):6.2f}%", flush=True)
    header = (f"{data.describe()}; SmallResNet, {epochs} epochs, {seeds} seed(s), {mode} mode. Search: {complete} "
              f"complete trials of study {result.study.study_name!r} ({search_seconds:.0f} s of trials; validation "
              f"digits held out of its training set), best {best.user_attrs['spec']} at {best.user_attrs['where']} "
              f"(validation accuracy {best.value:.4f}). Whole run {time.perf_counter() - t0:.0f} s wall, "
              f"{time.process_time() - cpu0:.0f} s CPU, torch {torch.__version__.split('+')[0]}, "
              f"{torch.get_num_threads()} thread(s)")
    text = table(rows, header)
    print("\n" + text)
    (out / "results.md").write_text(text)
    print(f"wrote {out / 'results.md'} and the search's files under {out / 'search'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
