"""Softmax temperature: set it across a model, or anneal it as DyConv and ODConv train.

Every dynattn module whose gates divide by a temperature keeps it as a buffer named
``temperature`` (a dynamic conv's router always does; a feature attention does when its
spec sets ``temperature != 1``), so it is saved in checkpoints and moves with the model.

KernelWarehouse's temperature blends instead of dividing (``(1 - t) a + t one_hot``) and anneals from 1 to 0
(``TemperatureSchedule(model, start=1, end=0, steps=20 * len(loader))``, the official schedule): 0 is accepted
where every temperature in the model is such a blend, and values above 1 are not.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .compiler import SpecModule
from .errors import SpecError

__all__ = ["temperature_buffers", "set_temperature", "TemperatureSchedule"]


def _check(value: float, field: str = "temperature", blends: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise SpecError(field, value, "must be a finite number")
    if blends and not 0 <= value <= 1:
        raise SpecError(field, value, "is KernelWarehouse's blend (every temperature here is): a number in [0, 1]")
    if not blends and value <= 0:
        raise SpecError(field, value, "must be a finite number > 0")
    return float(value)


def _all_blends(model: nn.Module) -> bool:
    """Whether every dynattn temperature in ``model`` is KernelWarehouse's blend (its routers' ``cells`` head)."""
    heads = [getattr(m, "heads", None) for m in model.modules()
             if isinstance(m, SpecModule) and isinstance(getattr(m, "temperature", None), torch.Tensor)]
    return bool(heads) and all(h == ("cells",) for h in heads)


def temperature_buffers(model: nn.Module) -> dict[str, torch.Tensor]:
    """The temperature buffers of every dynattn module in ``model``, by qualified name."""
    out = {}
    for name, module in model.named_modules():
        if isinstance(module, SpecModule) and isinstance(getattr(module, "temperature", None), torch.Tensor):
            out[f"{name}.temperature" if name else "temperature"] = module.temperature
    return out


@torch.no_grad()
def set_temperature(model: nn.Module, value: float) -> int:
    """Set every dynattn temperature in ``model`` to ``value``; returns how many were set."""
    value = _check(value, blends=_all_blends(model))
    buffers = temperature_buffers(model)
    for buf in buffers.values():
        buf.fill_(value)
    return len(buffers)


class TemperatureSchedule:
    """Anneal the temperature linearly from ``start`` to ``end`` over ``steps`` calls of
    :meth:`step`, then hold it (DyConv: 30 -> 1 over the first 10 epochs).

        schedule = TemperatureSchedule(model, start=30, end=1, steps=10 * len(loader))
        for batch in loader:
            ...; optimizer.step(); schedule.step()

    ``state_dict`` / ``load_state_dict`` resume it with a checkpoint.
    """

    def __init__(self, model: nn.Module, start: float = 30.0, end: float = 1.0, steps: int = 1) -> None:
        blends = _all_blends(model)
        self.start, self.end = _check(start, "start", blends), _check(end, "end", blends)
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
            raise SpecError("steps", steps, "must be an int >= 1")
        self.model, self.steps, self.count = model, steps, 0
        if set_temperature(model, self.start) == 0:
            raise SpecError("model", type(model).__name__, "has no dynattn module with a temperature",
                            hint="DynamicConv2d routers always have one")

    @property
    def value(self) -> float:
        t = min(self.count, self.steps) / self.steps
        return self.start + (self.end - self.start) * t

    def step(self) -> float:
        """Advance one step and apply the new temperature; returns it."""
        self.count += 1
        set_temperature(self.model, self.value)
        return self.value

    def state_dict(self) -> dict[str, float]:
        return {"start": self.start, "end": self.end, "steps": self.steps, "count": self.count}

    def load_state_dict(self, state: dict[str, float]) -> None:
        self.start, self.end = float(state["start"]), float(state["end"])
        self.steps, self.count = int(state["steps"]), int(state["count"])
        set_temperature(self.model, self.value)
