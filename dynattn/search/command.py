"""``dynattn search``: its options and its run (the CLI in :mod:`dynattn.cli` adds them as a subcommand)."""

from __future__ import annotations

import argparse
import ast
import sys
import time
from pathlib import Path
from typing import Any

from ..bench.usage import UsageError
from ..errors import SpecError
from .api import search
from .space import SearchSpace
from .study import PRUNERS

__all__ = ["DESCRIPTION", "add_arguments", "run"]

DESCRIPTION = ("Search presets, their fields and placements on a proxy task or your own, with Optuna: the study is "
               "stored (default OUT/study.db), so rerunning the same command resumes it. Writes results.md, "
               "best_spec.txt and results.png under --out. Needs the search extra: pip install \"dynattn[search]\".")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--task", default="digits", help="digits, cluttered-digits, or module:function returning a "
                   "dynattn.search.Task (default digits)")
    p.add_argument("--model", help="a torchvision name, timm:NAME or module:function (default: the task's small "
                   "ResNet)")
    p.add_argument("--presets", default="se,eca,cbam", help="comma-separated presets to search (default se,eca,cbam)")
    p.add_argument("--where", default="residual", help="comma-separated placements: residual, stage, conv, stages "
                   "(a subset of the stage sites), default, or globs (default residual)")
    p.add_argument("--vary", action="append", default=[], metavar="FIELD[=V1,V2]",
                   help="a spec field or preset keyword to search, with its values (default values from the spec "
                   "vocabulary); repeatable, e.g. --vary reduction --vary kernel_size=3,7")
    p.add_argument("--objectives", default="accuracy", help="comma-separated: accuracy, latency, params (several: "
                   "a Pareto search with NSGA-II; default accuracy)")
    p.add_argument("--trials", type=int, default=20, help="complete trials the study should hold (default 20)")
    p.add_argument("--timeout", type=float, help="stop starting trials after this many seconds")
    p.add_argument("--storage", help="an Optuna storage URL (default sqlite:///OUT/study.db; postgresql://... "
                   "or journal:PATH for workers on several machines)")
    p.add_argument("--study", default="dynattn-search", help="the study's name: the same name resumes it")
    p.add_argument("--workers", type=int, default=1, help="worker processes sharing the study (default 1)")
    p.add_argument("--seed", type=int, default=0, help="seed of the sampler, the model's weights and the batches")
    p.add_argument("--pruner", default="median", choices=PRUNERS, help="pruning from per-epoch reports (default "
                   "median; single objective only)")
    p.add_argument("--epochs", type=int, help="epochs of the built-in trainer (default: the task's)")
    p.add_argument("--threads", type=int, default=1, help="torch threads per worker (default 1: the proxy models "
                   "are small, and several threads on a busy machine slow them a lot)")
    p.add_argument("--out", default="outputs/search", help="folder for the results and study.db "
                   "(default outputs/search)")
    p.add_argument("--quick", action="store_true", help="smaller data and fewer epochs: digits trials take "
                   "seconds each")


def _fields(items: list[str]) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    for item in items:
        name, sep, values = item.partition("=")
        if not sep:
            fields[name.strip()] = None
            continue
        parsed = []
        for text in values.split(","):
            try:
                parsed.append(ast.literal_eval(text.strip()))
            except (ValueError, SyntaxError):
                parsed.append(text.strip())  # a bare word: a string
        fields[name.strip()] = parsed
    return fields


def run(args: argparse.Namespace) -> int:
    space = SearchSpace(presets=args.presets, fields=_fields(args.vary), where=args.where)
    try:
        import optuna  # noqa: F401
    except ImportError:
        raise SpecError("search", "optuna", 'needs Optuna: pip install "dynattn[search]" (or pip install optuna)'
                        ) from None
    if args.threads < 1:
        raise UsageError(f"--threads={args.threads}: must be >= 1")
    start = time.perf_counter()
    print(f"... {args.task}: {space.size} specs x placements {', '.join(space.where)}; study {args.study!r}, "
          f"{args.trials} complete trials", file=sys.stderr, flush=True)
    try:
        result = _search(args, space)
    except ImportError as exc:  # a task's or model's optional package
        raise UsageError(str(exc)) from None
    states = [t.state.name for t in result.study.get_trials(deepcopy=False)]
    print(f"study {args.study!r}: {states.count('COMPLETE')} complete, {states.count('FAIL')} failed, "
          f"{states.count('PRUNED')} pruned trials ({time.perf_counter() - start:.0f} s)")
    for line in Path(result.files["best_spec"]).read_text().splitlines():
        print(f"best: {line}")
    print("wrote " + ", ".join(str(p) for p in result.files.values()))
    return 0


def _search(args: argparse.Namespace, space: SearchSpace) -> Any:
    return search(task=args.task, model=args.model, space=space, objectives=args.objectives, trials=args.trials,
                  timeout=args.timeout, storage=args.storage, study=args.study, workers=args.workers,
                  seed=args.seed, out=args.out, quick=args.quick, pruner=args.pruner, epochs=args.epochs,
                  threads=args.threads)
