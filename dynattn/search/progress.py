"""The progress display of a running search: one line a trial (rich's colours where rich is installed)."""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from typing import Any

from .runner import Objective

__all__ = ["Progress"]


class Progress:
    """Prints, after each trial: complete n of N, the trial's spec, placement and metrics (or why it failed),
    the best so far and the elapsed time. Picklable: worker processes each print their own lines."""

    def __init__(self, total: int, objectives: Sequence[Objective], worker: int | None = None):
        self.total, self.objectives, self.worker = total, tuple(objectives), worker
        self.start = time.monotonic()

    def for_worker(self, rank: int) -> Progress:
        return Progress(self.total, self.objectives, rank)

    def __call__(self, study: Any, trial: Any) -> None:
        complete = sum(t.state.name == "COMPLETE" for t in study.get_trials(deepcopy=False))
        spec, where = trial.user_attrs.get("spec", "?"), trial.user_attrs.get("where", "?")
        if trial.state.name == "COMPLETE":
            what = ", ".join(f"{o.name}={v:.4g}" for o, v in zip(self.objectives, trial.values))
        else:
            what = f"{trial.state.name}: {trial.user_attrs.get('fail_reason', '')}"[:160]
        head = f"[worker {self.worker}] " if self.worker is not None else ""
        line = (f"{head}complete {complete}/{self.total} | trial {trial.number} {spec} @ {where}: {what} | "
                f"best {self._best(study)} | {time.monotonic() - self.start:.0f} s")
        self._print(line, ok=trial.state.name == "COMPLETE")

    def _best(self, study: Any) -> str:
        try:
            best = study.best_trials
        except (RuntimeError, ValueError):
            return "-"
        if not best:
            return "-"
        if len(self.objectives) > 1:
            return f"{len(best)} on the Pareto front"
        t = best[0]
        return f"{self.objectives[0].name}={t.values[0]:.4g} (trial {t.number}, {t.user_attrs.get('spec', '?')})"

    def _print(self, line: str, ok: bool) -> None:
        try:
            from rich.console import Console
            from rich.markup import escape
        except ImportError:
            print(line, file=sys.stderr, flush=True)
            return
        Console(stderr=True, highlight=False, soft_wrap=True).print(escape(line), style=None if ok else "yellow")
