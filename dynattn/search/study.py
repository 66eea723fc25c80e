"""The study: Optuna storage, samplers and pruners, resuming, worker processes, failed trials.

- Storage: an Optuna RDB storage; by default the SQLite file ``OUT/study.db``, so a study survives a crash.
  Any SQLAlchemy URL works (``postgresql://...``, ``mysql://...``: workers on several machines), and
  ``journal:PATH`` is Optuna's journal file storage (several processes on one file system).
- ``trials`` is the study's total of COMPLETE trials. Rerunning with the same study name resumes: completed
  trials are kept and never rerun; a trial left RUNNING by a process that died (SIGKILL, a crash) on this
  machine is marked FAIL first, with the reason, and is not counted.
- Trials are claimed under a file lock on the SQLite / journal file, so workers of one machine never start
  more trials than the total needs (with a server database the total can be overshot by a trial a worker).
- A trial whose objective raises, returns NaN or runs out of memory is FAIL with ``user_attrs["fail_reason"]``,
  and the study goes on; a pruned one is PRUNED; Ctrl-C marks the running trial FAIL ("interrupted") and stops.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import socket
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..errors import SpecError
from .runner import Objective, TrialFailed, TrialRunner

__all__ = ["StudyConfig", "open_study", "fail_dead_trials", "run_study", "storage_url"]

PRUNERS = ("median", "hyperband", "none")
_OUT_OF_MEMORY = (getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError), MemoryError)


@dataclass
class StudyConfig:
    """Where the study lives and how it runs; picklable (worker processes get a copy)."""

    storage: str
    name: str
    objectives: Sequence[Objective]
    trials: int
    timeout: float | None = None
    seed: int = 0
    pruner: str = "median"
    workers: int = 1
    #: A worker stops after this many failed trials in a row: a deterministic error would otherwise loop forever.
    max_failures: int = 10

    def __post_init__(self) -> None:
        if self.pruner not in PRUNERS:
            raise SpecError("pruner", self.pruner, "unknown pruner", PRUNERS)
        for name, value in (("trials", self.trials), ("workers", self.workers), ("max_failures", self.max_failures)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise SpecError(name, value, "must be an int >= 1")
        if self.timeout is not None and not self.timeout > 0:
            raise SpecError("timeout", self.timeout, "must be a number of seconds > 0")


def storage_url(out: str | Path, storage: str | None = None) -> str:
    """``storage``, or the default: the SQLite file ``study.db`` in ``out``."""
    return storage or f"sqlite:///{(Path(out) / 'study.db').resolve()}"


def _storage(url: str) -> Any:
    import optuna

    if url.startswith("journal:"):
        from optuna.storages.journal import JournalFileBackend

        return optuna.storages.JournalStorage(JournalFileBackend(url.removeprefix("journal:")))
    kwargs = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else None  # workers wait for the lock
    return optuna.storages.RDBStorage(url, engine_kwargs=kwargs)


def open_study(config: StudyConfig, rank: int = 0) -> Any:
    """Create the study, or load it to resume (same name, same storage)."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    seed = config.seed + rank  # workers draw different points
    multi = len(config.objectives) > 1
    sampler = optuna.samplers.NSGAIISampler(seed=seed) if multi else optuna.samplers.TPESampler(seed=seed)
    pruner = {"median": lambda: optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=1),
              "hyperband": lambda: optuna.pruners.HyperbandPruner(min_resource=1),
              "none": optuna.pruners.NopPruner}[config.pruner]()
    if config.storage.startswith("sqlite:///"):
        Path(config.storage.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    return optuna.create_study(storage=_storage(config.storage), study_name=config.name, sampler=sampler,
                               pruner=pruner, directions=[o.direction for o in config.objectives],
                               load_if_exists=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a killed child its parent has not reaped yet is a zombie: dead too
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def fail_dead_trials(study: Any) -> list[int]:
    """Mark FAIL each RUNNING trial whose worker process on this machine is gone; their numbers."""
    from optuna.trial import TrialState

    host, done = socket.gethostname(), []
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        worker_host, _, pid = str(t.user_attrs.get("worker", "")).rpartition(":")
        if worker_host != host or not pid.isdigit() or _alive(int(pid)):
            continue
        try:  # the study's own storage object, so its cache sees the change
            study._storage.set_trial_user_attr(t._trial_id, "fail_reason",
                                               f"its worker (pid {pid}) ended mid-trial (killed or crashed)")
            study._storage.set_trial_state_values(t._trial_id, TrialState.FAIL)
            done.append(t.number)
        except RuntimeError:  # another worker got there first
            continue
    return done


@contextlib.contextmanager
def _claim_lock(url: str) -> Iterator[None]:
    """An exclusive lock while a worker counts trials and claims one (flock: SQLite's own locks are fcntl)."""
    path = url.removeprefix("sqlite:///") if url.startswith("sqlite:///") else \
        url.removeprefix("journal:") if url.startswith("journal:") else None
    if path is None or not Path(path).exists():
        yield
        return
    import fcntl

    with open(path, "rb") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _claim(study: Any, config: StudyConfig) -> Any | None:
    """A new trial if the study still needs one (complete + running < total), else None."""
    from optuna.trial import TrialState

    with _claim_lock(config.storage):
        fail_dead_trials(study)
        states = [t.state for t in study.get_trials(deepcopy=False)]
        if states.count(TrialState.COMPLETE) + states.count(TrialState.RUNNING) >= config.trials:
            return None
        trial = study.ask()
        trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")
        return trial


def _fail(study: Any, trial: Any, reason: str) -> None:
    from optuna.trial import TrialState

    trial.set_user_attr("fail_reason", reason[:2000])
    study.tell(trial, state=TrialState.FAIL)


def _run_one(study: Any, trial: Any, runner: TrialRunner) -> None:
    import optuna
    from optuna.trial import TrialState

    start = time.perf_counter()
    try:
        values = runner(trial)
    except optuna.TrialPruned as exc:
        trial.set_user_attr("seconds", time.perf_counter() - start)
        trial.set_user_attr("fail_reason", f"pruned: {exc}" if str(exc) else "pruned")
        study.tell(trial, state=TrialState.PRUNED)
        return
    except KeyboardInterrupt:
        _fail(study, trial, "interrupted (Ctrl-C)")
        raise
    except _OUT_OF_MEMORY as exc:
        _fail(study, trial, f"out of memory: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}")
        return
    except TrialFailed as exc:
        _fail(study, trial, str(exc))
        return
    except Exception as exc:  # the user's objective failed: record why, go on with the next trial
        _fail(study, trial, f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")
        return
    trial.set_user_attr("seconds", time.perf_counter() - start)
    study.tell(trial, values)


def run_worker(config: StudyConfig, runner: TrialRunner, rank: int = 0,
               on_trial: Callable[[Any, Any], None] | None = None) -> Any:
    """Claim and run trials until the study has ``config.trials`` complete (or the timeout); the study."""
    study = open_study(config, rank)
    start, failures = time.monotonic(), 0
    while config.timeout is None or time.monotonic() - start < config.timeout:
        trial = _claim(study, config)
        if trial is None:
            break
        _run_one(study, trial, runner)
        frozen = _frozen(study, trial.number)
        if on_trial is not None:
            on_trial(study, frozen)
        failures = failures + 1 if frozen.state.name == "FAIL" else 0
        if failures >= config.max_failures:
            print(f"dynattn search: {failures} trials in a row failed (the last: "
                  f"{frozen.user_attrs.get('fail_reason', '?')}); this worker stops", file=sys.stderr, flush=True)
            break
    return study


def _frozen(study: Any, number: int) -> Any:
    return next(t for t in study.get_trials(deepcopy=False) if t.number == number)


def _worker_main(config: StudyConfig, make_runner: Callable[[], TrialRunner], rank: int,
                 make_progress: Callable[[int], Callable] | None, threads: int) -> None:
    torch.set_num_threads(threads)
    try:
        run_worker(config, make_runner(), rank, make_progress(rank) if make_progress else None)
    except KeyboardInterrupt:
        pass


def run_study(config: StudyConfig, make_runner: Callable[[], TrialRunner],
              make_progress: Callable[[int], Callable] | None = None) -> Any:
    """Run the study in this process (``workers=1``) or in ``workers`` spawned processes, then load it.
    ``make_runner`` and ``make_progress`` must be picklable for several workers (module-level functions,
    ``functools.partial`` of them)."""
    if config.workers == 1:
        return run_worker(config, make_runner(), 0, make_progress(0) if make_progress else None)
    open_study(config)  # created once, before the workers race to create it
    threads = max(1, torch.get_num_threads() // config.workers)  # a spawned worker starts with torch's default
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_worker_main, args=(config, make_runner, rank, make_progress, threads))
             for rank in range(config.workers)]
    for p in procs:
        p.start()
    try:
        for p in procs:
            p.join()
    except KeyboardInterrupt:  # the workers got the same Ctrl-C: they mark their trials and stop
        for p in procs:
            p.join()
        raise
    return open_study(config)
