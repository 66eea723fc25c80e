"""The built-in trainer: a convenience objective that trains a model from scratch on a task's data and
scores it on the validation split. A search may use any objective instead (see :mod:`.runner`)."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from ..temperature import TemperatureSchedule, temperature_buffers
from .data import Data

__all__ = ["evaluate", "fit", "QuickTrainer"]


def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch: int = 500) -> float:
    """Accuracy of ``model`` (in eval mode) on ``x``, ``y``."""
    model.eval()
    with torch.no_grad():
        correct = sum(int((model(x[i:i + batch]).argmax(1) == y[i:i + batch]).sum()) for i in range(0, len(x), batch))
    return correct / len(x)


def fit(model: nn.Module, data: Data, epochs: int, seed: int, *, anneal: bool = False, lr: float = 4e-3,
        batch: int = 32, on_epoch: Callable[[int], None] | None = None) -> float:
    """AdamW with a one-cycle schedule; the batches depend on ``seed`` only. With ``anneal``, dynamic convs'
    temperatures fall from their start (DyConv: 30) to 1 over the first third of training (its paper: the
    first 10 of 100+ epochs). ``on_epoch(epoch)`` runs after each epoch (intermediate reports, pruning).
    Returns the process's CPU seconds per epoch (unlike wall time, not inflated by other jobs)."""
    steps = epochs * ((len(data.x_train) + batch - 1) // batch)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=5e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.2)
    start_t = max((float(b.max()) for b in temperature_buffers(model).values()), default=1.0)
    temperature = TemperatureSchedule(model, start=start_t, end=1, steps=max(1, steps // 3)) \
        if anneal and start_t > 1 else None
    gen = torch.Generator().manual_seed(seed)
    start = time.process_time()
    for epoch in range(epochs):
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
        if on_epoch is not None:
            on_epoch(epoch)
    return (time.process_time() - start) / epochs


class QuickTrainer:
    """The default objective: train the rewritten model from scratch for ``epochs`` and return its validation
    accuracy (``{"accuracy": ..., "train_cpu_s": ...}``). After each epoch but the last it reports the validation
    accuracy to the trial, so a pruner can stop a poor trial early (single-objective studies only: Optuna prunes
    nothing else). Picklable, so several worker processes can run it."""

    def __init__(self, data: Data, epochs: int = 3, seed: int = 0, lr: float = 4e-3, batch: int = 32):
        self.data, self.epochs, self.seed, self.lr, self.batch = data, epochs, seed, lr, batch

    def __call__(self, model: nn.Module, trial: Any = None) -> dict[str, float]:
        x_val, y_val = (self.data.x_val, self.data.y_val) if self.data.x_val is not None else \
            (self.data.x_test, self.data.y_test)
        last = self.epochs - 1  # the final score is the trial's value: reported and pruned before it only
        cpu = fit(model, self.data, self.epochs, self.seed, anneal=True, lr=self.lr, batch=self.batch,
                  on_epoch=None if trial is None else
                  lambda epoch: _report(trial, model, x_val, y_val, epoch) if epoch < last else None)
        return {"accuracy": evaluate(model, x_val, y_val), "train_cpu_s": cpu * self.epochs}


def _report(trial: Any, model: nn.Module, x: torch.Tensor, y: torch.Tensor, epoch: int) -> None:
    accuracy = evaluate(model, x, y)
    if not math.isfinite(accuracy):
        return
    try:
        trial.report(accuracy, epoch)
    except NotImplementedError:  # a multi-objective study: Optuna has no intermediate values there
        return
    if trial.should_prune():
        import optuna

        raise optuna.TrialPruned(f"validation accuracy {accuracy:.4f} after epoch {epoch + 1}")
