"""``search()``: the Python entry point of a search (the ``dynattn search`` command calls it too)."""

from __future__ import annotations

import contextlib
import functools
import pickle
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..errors import SpecError
from ..spec import AttnSpec
from ..spec_parse import parse_spec
from .progress import Progress
from .results import best_spec_lines, trial_rows, write_results
from .runner import Objective, TrialRunner, parse_objectives
from .space import SearchSpace, stage_subsets
from .study import StudyConfig, open_study, run_study, storage_url
from .tasks import Task, get_task
from .trainer import QuickTrainer

__all__ = ["search", "SearchResult"]


@dataclass
class SearchResult:
    """The Optuna study (``optuna.Study``), its objectives, and the files written under ``out``."""

    study: Any
    objectives: tuple[Objective, ...]
    files: dict[str, Path]

    @property
    def best_specs(self) -> list[AttnSpec]:
        """The best spec (several objectives: the Pareto set's specs), parsed back from their text."""
        return [parse_spec(line) for line in best_spec_lines(trial_rows(self.study), self.objectives)]

    @property
    def best_spec(self) -> AttnSpec | None:
        """The best spec (several objectives: the Pareto set's first); None before any trial completes."""
        specs = self.best_specs
        return specs[0] if specs else None


def _make_runner(space: SearchSpace, task: str | Task, model: Any, objective: Callable | None,
                 objectives: tuple[Objective, ...], quick: bool, seed: int, epochs: int | None,
                 reuse: bool = True) -> TrialRunner:
    """The trial runner, built where it runs (in each worker process)."""
    found = get_task(task, quick=quick, model=model)
    if objective is None:
        objective = QuickTrainer(found.data, epochs or found.epochs, seed, found.lr, found.batch)
    return TrialRunner(space, found.model, objective, objectives, found.data.x_train[:32], seed, reuse)


def search(
    objective: Callable[..., float | Mapping[str, float]] | None = None,
    *,
    task: str | Task = "digits",
    model: str | Callable | None = None,
    space: SearchSpace | None = None,
    objectives: Sequence[str] | str = ("accuracy",),
    trials: int = 20,
    timeout: float | None = None,
    storage: str | None = None,
    study: str = "dynattn-search",
    workers: int = 1,
    seed: int = 0,
    out: str | Path = "outputs/search",
    quick: bool = False,
    pruner: str = "median",
    epochs: int | None = None,
    progress: bool = True,
    max_failures: int = 10,
    reuse: bool = True,
    threads: int | None = None,
) -> SearchResult:
    """Search ``space`` (default: SE, ECA, CBAM before each residual add) on ``task`` until the study named
    ``study`` has ``trials`` complete trials; write results.md, best_spec.txt and a PNG under ``out``.

    ``objective(model, trial)`` scores a rewritten model (a number, or a dict of metrics); by default the
    built-in trainer trains it from scratch for the task's epochs (``epochs``) and returns its validation
    accuracy. ``objectives`` names what to optimise: ``accuracy`` (max), ``latency`` (ms, min), ``params``
    (added parameters, min), or any metric the objective returns as ``name:max`` / ``name:min``; several
    make it a multi-objective study (NSGA-II; else TPE). With ``workers > 1`` the objective, task and model
    must be picklable (module-level functions), and a script must guard its entry with
    ``if __name__ == "__main__":`` (worker processes are spawned). A worker stops after ``max_failures``
    failed trials in a row. A trial drawing a point a complete trial measured takes its values unless
    ``reuse=False`` (for a noisy objective). ``threads``: torch threads while the search runs (a small model
    on a busy CPU trains much faster on one), restored after. On Ctrl-C the running trial is marked failed,
    the results so far are written, and ``KeyboardInterrupt`` propagates."""
    space = space if space is not None else SearchSpace()
    parsed = parse_objectives(objectives)
    config = StudyConfig(storage_url(out, storage), study, parsed, trials, timeout, seed, pruner, workers,
                         max_failures)
    make_runner = functools.partial(_make_runner, space, task, model, objective, parsed, quick, seed, epochs, reuse)
    runner = make_runner()  # a bad task or model fails here, before the study is touched
    if "stages" in space.where:
        stage_subsets(runner.stage_sites())  # the model has stage sites, and few enough
    show = Progress(trials, parsed)
    if workers > 1:
        _check_picklable(make_runner)
    try:
        with _torch_threads(threads):
            run_study(config, make_runner if workers > 1 else lambda: runner,
                      (show.for_worker if workers > 1 else lambda rank: show) if progress else None)
    except KeyboardInterrupt:
        write_results(open_study(config), parsed, out)
        raise
    done = open_study(config)
    return SearchResult(done, parsed, write_results(done, parsed, out))


@contextlib.contextmanager
def _torch_threads(threads: int | None) -> Iterator[None]:
    if threads is None:
        yield
        return
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise SpecError("threads", threads, "must be None or an int >= 1")
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _check_picklable(make_runner: Callable) -> None:
    try:
        pickle.dumps(make_runner)
    except (pickle.PicklingError, AttributeError, TypeError) as exc:
        raise SpecError("workers", "> 1", f"worker processes need a picklable objective, task and model ({exc})",
                        hint="use module-level functions, or workers=1") from None
