"""Proxy tasks: a task is data plus a small default model and a training budget.

Built in: ``digits`` (scikit-learn's 8x8 digits, seconds a trial) and ``cluttered-digits`` (cluttered
MNIST, 40x40, where the README measured that attention's payoff depends on the task). A user's task is
``module:function``: a function returning a :class:`Task` (or a :class:`~dynattn.search.data.Data`, whose
model then comes from ``model=``)."""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from ..errors import SpecError
from .data import Data, cluttered_splits, digits
from .models import SmallResNet, load_callable, model_factory

__all__ = ["Task", "TASKS", "get_task"]


@dataclass
class Task:
    """What a trial trains and scores: ``data``, a ``model`` factory (a fresh network each call), and the
    built-in trainer's budget."""

    name: str
    data: Data
    model: Callable[[], nn.Module]
    epochs: int = 3
    batch: int = 32
    lr: float = 4e-3

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.data.x_train.shape[1:])


def _digits(quick: bool) -> Task:
    model = functools.partial(SmallResNet, stem_kernel=3, stem_stride=1)
    return Task("digits", digits(), model, epochs=3 if quick else 8, batch=64, lr=4e-3)


def _cluttered(quick: bool) -> Task:
    data = cluttered_splits(400, 200, test_digits=200) if quick else cluttered_splits(3000, 1000)
    return Task("cluttered-digits", data, SmallResNet, epochs=2 if quick else 3)


#: The built-in tasks by name: ``make(quick)`` -> Task.
TASKS: dict[str, Callable[[bool], Task]] = {"digits": _digits, "cluttered-digits": _cluttered}


def get_task(task: str | Task, quick: bool = False, model: str | Callable | None = None) -> Task:
    """The task ``task`` names (built in, or ``module:function``), with ``model`` (a name or a callable, see
    :func:`~dynattn.search.models.model_factory`) in place of its default model when given."""
    if isinstance(task, Task):
        found = task
    elif task in TASKS:
        found = TASKS[task](quick)
    elif ":" in str(task):
        made = load_callable(task, "task")()
        if isinstance(made, Data):
            if model is None:
                raise SpecError("model", None, f"task {task!r} returns data only: name a model too")
            made = Task(task, made, SmallResNet)  # replaced by ``model`` below
        if not isinstance(made, Task):
            raise SpecError("task", task, f"returned {type(made).__name__}, not a Task or Data")
        found = made
    else:
        raise SpecError("task", task, "unknown task", (*TASKS, "module:function"))
    if model is not None:
        channels, classes = found.data.x_train.shape[1], found.data.classes
        found = Task(found.name, found.data, model_factory(model, classes, channels), found.epochs, found.batch,
                     found.lr)
    return found
