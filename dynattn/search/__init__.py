"""Which attention, where: a search over specs and placements, on Optuna (``pip install -e ".[search]"``).

    from dynattn.search import SearchSpace, search
    result = search(task="digits", space=SearchSpace(presets=("se", "eca", "cbam"), where=("residual", "stage")),
                    trials=8, out="outputs/search")
    result.study          # the optuna.Study (its storage: outputs/search/study.db)
    result.best_spec      # the best AttnSpec found

The spec language is the search space (:mod:`.space`); the objective is the caller's (:mod:`.runner`), with
a built-in trainer for quick use (:mod:`.trainer`) and proxy tasks (:mod:`.tasks`); Optuna does the rest
(samplers, pruners, storage, workers: :mod:`.study`). Optuna is imported only when a search runs.
This package sits above graph_passes, like ``dynattn.bench``; nothing below imports it.
"""

from __future__ import annotations

from .api import SearchResult, search
from .runner import Objective, TrialRunner
from .space import SearchSpace
from .study import StudyConfig, fail_dead_trials, open_study
from .tasks import Task, get_task
from .trainer import QuickTrainer

__all__ = ["search", "SearchResult", "SearchSpace", "Task", "get_task", "QuickTrainer", "Objective",
           "TrialRunner", "StudyConfig", "open_study", "fail_dead_trials"]
