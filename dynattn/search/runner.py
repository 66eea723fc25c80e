"""One trial: draw a point of the space, rewrite a fresh model there, measure it, call the objective.

The objective is the user's: ``objective(model, trial)`` gets the rewritten model (a fresh copy each trial,
attention inserted by ``graph_passes.insert_attention``) and the Optuna trial (for ``trial.report`` and
pruning), and returns a number or a dict of metrics. The library adds what it measures itself:
``params_added`` (from ``graph_passes.report``) and, when an objective names it, ``latency_ms`` (the median
of interleaved inference calls, :func:`dynattn.bench.timing.interleaved_medians`, in this process).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from graph_passes import insert_attention, list_sites, report

from ..bench.timing import interleaved_medians, no_grad_call
from ..errors import SpecError
from .space import SearchSpace

__all__ = ["Objective", "parse_objectives", "TrialFailed", "TrialRunner"]

#: Metrics the library knows the direction of; any other is ``name:max`` or ``name:min``.
KNOWN = {"accuracy": "maximize", "latency_ms": "minimize", "params_added": "minimize"}
ALIASES = {"latency": "latency_ms", "params": "params_added", "acc": "accuracy"}


@dataclass(frozen=True)
class Objective:
    name: str
    direction: str  # "maximize" or "minimize"


def parse_objectives(items: Sequence[str] | str) -> tuple[Objective, ...]:
    """``"accuracy,latency"`` or ``["accuracy", "loss:min"]`` -> objectives with their directions."""
    items = [s.strip() for s in items.split(",")] if isinstance(items, str) else list(items)
    if not items:
        raise SpecError("objectives", (), "name at least one metric", tuple(KNOWN))
    out = []
    for item in items:
        name, _, way = item.partition(":")
        name = ALIASES.get(name, name)
        if way:
            if way not in ("max", "min"):
                raise SpecError("objectives", item, "the direction after ':' is max or min", ("max", "min"))
            out.append(Objective(name, "maximize" if way == "max" else "minimize"))
        elif name in KNOWN:
            out.append(Objective(name, KNOWN[name]))
        else:
            raise SpecError("objectives", item, "unknown metric: give its direction as name:max or name:min",
                            tuple(KNOWN))
    if len({o.name for o in out}) != len(out):
        raise SpecError("objectives", items, "names a metric twice")
    return tuple(out)


class TrialFailed(Exception):
    """A trial that produced no usable value (NaN, a missing metric): recorded as failed with this reason."""


class TrialRunner:
    """Runs trials of one study: picklable when its objective and model factory are (worker processes).

    Every trial starts from the same weights (``seed``). With ``reuse``, a trial that draws a point a complete
    trial has measured takes that trial's values (``user_attrs["same_as"]``) instead of training again: for a
    deterministic objective the result would be the same. Pass ``reuse=False`` for a noisy one."""

    def __init__(self, space: SearchSpace, make_model: Callable[[], nn.Module], objective: Callable,
                 objectives: Sequence[Objective], example_input: torch.Tensor, seed: int = 0, reuse: bool = True):
        self.space, self.make_model, self.objective, self.reuse = space, make_model, objective, reuse
        self.objectives, self.example_input, self.seed = tuple(objectives), example_input, seed
        self._stage_sites: list[str] | None = None

    @staticmethod
    def _same_draw(trial: Any) -> Any:
        from optuna.trial import TrialState

        for t in trial.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
            if t.params == trial.params:
                return t
        return None

    def stage_sites(self) -> list[str]:
        """The model's stage sites (for ``where="stages"``), found once."""
        if self._stage_sites is None:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                sites = list_sites(self.fresh_model(), "se", where="stage", example_inputs=(self.example_input[:2],))
            self._stage_sites = [s.name for s in sites]
        return self._stage_sites

    def fresh_model(self) -> nn.Module:
        torch.manual_seed(self.seed)  # every trial starts from the same weights
        return self.make_model()

    def __call__(self, trial: Any) -> list[float]:
        stages = self.stage_sites() if "stages" in self.space.where else ()
        draw = self.space.suggest(trial, stages)
        trial.set_user_attr("spec", draw.text)
        trial.set_user_attr("where", draw.where)
        trial.set_user_attr("selector", draw.selector)  # what insert_attention(where=...) took: None, str or list
        same = self._same_draw(trial) if self.reuse else None
        if same is not None:  # a point measured already: its values, not a second training run
            trial.set_user_attr("same_as", same.number)
            for key, value in same.user_attrs.items():
                if key.startswith("metric:") or key == "sites":
                    trial.set_user_attr(key, value)
            return list(same.values)
        base = self.fresh_model()
        torch.manual_seed(self.seed + 1000)  # the inserted modules' own initialisation
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = insert_attention(base, draw.spec, where=draw.selector,
                                     example_inputs=(self.example_input[:2],))
        rep = report(model)
        trial.set_user_attr("sites", [r.site for r in rep.records])
        metrics: dict[str, float] = {"params_added": float(rep.params_added)}
        if any(o.name == "latency_ms" for o in self.objectives):
            metrics["latency_ms"] = self.latency_ms(model)
        metrics.update(self._call_objective(model, trial))
        for key, value in metrics.items():
            trial.set_user_attr(f"metric:{key}", value)
        return self._values(metrics)

    def latency_ms(self, model: nn.Module) -> float:
        """Median wall time of one inference call on the example batch, in ms (the model is left in train mode)."""
        model.eval()
        seconds = interleaved_medians({"model": no_grad_call(model, self.example_input)}, repeats=10, warmup=2)
        model.train()
        return 1000 * seconds["model"]

    def _call_objective(self, model: nn.Module, trial: Any) -> dict[str, float]:
        out = self.objective(model, trial)
        if isinstance(out, dict):
            return {str(k): float(v) for k, v in out.items()}
        if isinstance(out, (int, float)) or (isinstance(out, torch.Tensor) and out.numel() == 1):
            return {self.objectives[0].name: float(out)}
        raise TrialFailed(f"the objective returned {type(out).__name__}, not a number or a dict of metrics")

    def _values(self, metrics: dict[str, float]) -> list[float]:
        values = []
        for o in self.objectives:
            if o.name not in metrics:
                raise TrialFailed(f"the objective returned no {o.name!r} (it returned {sorted(metrics)})")
            if not math.isfinite(metrics[o.name]):
                raise TrialFailed(f"{o.name} is {metrics[o.name]} (not finite)")
            values.append(metrics[o.name])
        return values
