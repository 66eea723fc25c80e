"""Benchmark mode (``DynamicConv2d.benchmark = True``): time the strategies the cost model does not rule out,
once per layer geometry, input shape and mode, and keep the fastest for every layer of that geometry, in this
process and in the profile cache (:mod:`.profile_cache`), so that the next process does not time it again."""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import torch

from .. import mixing
from . import profile_cache
from .cost_model import cost_model, strategy_costs

__all__ = ["BENCHMARK_PRUNE", "BENCHMARK_CALLS", "benchmark_key", "measured_strategy", "measure_strategy",
           "clear_measured_strategies"]

#: Benchmark mode times the strategies whose modelled cost is within this factor of the cheapest.
BENCHMARK_PRUNE = 3.0
#: Benchmark mode: calls timed per strategy (after one warm-up); the fastest call counts.
BENCHMARK_CALLS = 3
# benchmark mode's choices, by benchmark_key
_MEASURED: dict[tuple, str] = {}


def clear_measured_strategies() -> None:
    """Forget benchmark mode's choices, in this process and in the profile cache (they are timed again on the next
    call of each shape)."""
    _MEASURED.clear()
    profile_cache.remove_all(_KIND)


_KIND = "strategies"  # the profile cache's files of measured choices


def _disk_key(key: tuple) -> dict:
    """The profile cache's key of the file that holds ``key`` (a :func:`benchmark_key`): its machine."""
    *_, dtype, device, _training, threads, _model = key
    return profile_cache.machine_key(str(device), dtype, threads)


def benchmark_key(layer, x: torch.Tensor) -> tuple:
    """What a measured choice holds for: the layer's geometry, the input's shape, layout, dtype and device, the
    mode, the thread count and the cost model in force (which prunes the candidates and sizes the blocks)."""
    return (layer.in_channels, layer.out_channels, layer.kernel_size, layer.stride, layer.padding, layer.dilation,
            layer.groups, layer.padding_mode, layer.experts, layer.router.heads, tuple(x.shape), x.stride(),
            x.dtype, x.device, layer.training and torch.is_grad_enabled(), torch.get_num_threads(),
            cost_model(device=x.device, dtype=x.dtype))


def measured_strategy(key: tuple) -> str | None:
    """The strategy benchmark mode chose for ``key`` (in this process, or in an earlier one that cached it), None
    where it has yet to time it."""
    choice = _MEASURED.get(key)
    if choice is None:
        choice = _cached_choices(key).get(repr(key))
        if choice not in ("kernel", "blocked", "output"):
            return None
        _MEASURED[key] = choice
    return choice


def _cached_choices(key: tuple) -> dict:
    """The choices the profile cache holds for ``key``'s machine and cost model (a file holds one model's: choices
    made under an earlier calibration are dropped with it, so the file does not grow past one model's shapes)."""
    cached = profile_cache.load(_KIND, _disk_key(key))
    if not isinstance(cached, dict) or cached.get("model") != repr(key[-1]) or not isinstance(
            cached.get("choices"), dict):
        return {}
    return cached["choices"]


def measure_strategy(layer, key: tuple, x: torch.Tensor, mixed: tuple, conv: mixing.ConvArgs,
                     pad_amounts: tuple[int, ...], columns: bool = False) -> str:
    """Time ``layer``'s strategies that the cost model does not rule out on ``x``, keep the fastest for ``key``
    (rank 0's under torch.distributed)."""
    problem = layer.conv_problem(x)
    costs = strategy_costs(problem, cost_model(device=x.device, dtype=x.dtype))
    best = min(costs.values())
    timings = {}
    for strategy in (s for s, c in costs.items() if c <= BENCHMARK_PRUNE * best):
        timings[strategy] = _time_strategy(lambda s=strategy: _timed_call(layer, s, x, mixed, conv, pad_amounts,
                                                                          problem.training, columns))
    choice = _same_on_every_rank(min(timings, key=timings.__getitem__))
    _MEASURED[key] = choice
    _remember(key, choice)
    return choice


def _remember(key: tuple, choice: str) -> None:
    """Add a measured choice to the profile cache's file of this machine (what another process added meanwhile is
    kept where it was written first; a lost update is only timed again)."""
    choices = dict(_cached_choices(key))
    choices[repr(key)] = choice
    profile_cache.store(_KIND, _disk_key(key), {"model": repr(key[-1]), "choices": choices})


def _timed_call(layer, strategy: str, x: torch.Tensor, mixed: tuple, conv: mixing.ConvArgs,
                pad_amounts: tuple[int, ...], train: bool, columns: bool = False) -> None:
    """One call of ``strategy``, with its backward when ``train`` (gradients of detached copies, so the
    layer's parameters keep none)."""
    if not train:
        with torch.no_grad():
            layer._run_strategy(strategy, x, mixed, conv, pad_amounts, columns)
        return
    leaves = [t.detach().requires_grad_(t.requires_grad) if isinstance(t, torch.Tensor) else t
              for t in (x, *mixed)]
    with torch.enable_grad():
        y = layer._run_strategy(strategy, leaves[0], tuple(leaves[1:]), conv, pad_amounts, columns)
        wrt = [t for t in leaves if isinstance(t, torch.Tensor) and t.requires_grad]
        if wrt:
            torch.autograd.grad(y, wrt, torch.ones_like(y))


def _time_strategy(call: Callable[[], None]) -> float:
    """The fastest of ``BENCHMARK_CALLS`` calls after one warm-up, in seconds."""
    call()
    best = math.inf
    for _ in range(BENCHMARK_CALLS):
        t0 = time.perf_counter()
        call()
        best = min(best, time.perf_counter() - t0)
    return best


def _same_on_every_rank(choice: str) -> str:
    """Rank 0's choice on every rank of an initialised torch.distributed group (timings differ by rank)."""
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        box = [choice]
        dist.broadcast_object_list(box, src=0)
        return box[0]
    return choice
