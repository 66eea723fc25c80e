"""Calibration: the cost model's constants measured on the device, dtype and thread count it runs on.

The rates (a dense conv's multiply-adds, a feature map's bytes, one op call) are timed directly. The mixing
constants (what kernel, blocked and output mixing cost beyond the conv) are then fitted to the measured times of
every strategy and form on a few probe layers, chosen like the layers of real networks (3x3 convs on large and
small maps, depthwise and pointwise convs, batch 1, 8 and 32, inference and a training step): the fit moves each
constant of the fitted table (:data:`~dynattn.dynamic_conv.costs.COST_MODELS`) by factors while that lowers the
probes' regret (the chosen strategy's time over the fastest one's), then their error in log time. It runs in
about :data:`BUDGET_S` seconds or less (probes past the budget are skipped), with torch ops alone, so the same
code calibrates a CPU or a GPU.

    model, seconds = calibrate("cpu", torch.float32, threads=2)
"""

from __future__ import annotations

import dataclasses
import functools
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .. import mixing
from .costs import ConvProblem, CostModel, cheapest, fitted_model, kernel_form, modelled_costs

__all__ = ["BUDGET_S", "PROBES", "Probe", "calibrate", "fit", "measure_probe"]

#: Seconds a calibration may take (its probes stop being timed past it).
BUDGET_S = 4.0
_CALLS = 3  # timed calls per candidate, after one warm-up; the fastest counts
_PROBING_SHARE = 0.8  # of the budget: the probes' timing (the rest is for the rates and the fit)
_EXPERTS = 4


@dataclass(frozen=True)
class Probe:
    """A conv layer timed by calibration: in, out, kernel, groups, map size, batch, a training step or not."""

    cin: int
    cout: int
    k: int
    groups: int
    size: int
    batch: int
    train: bool

    def problem(self, itemsize: int) -> ConvProblem:
        return ConvProblem(self.cin // self.groups, self.cout, self.k * self.k, _EXPERTS, self.size * self.size,
                           self.batch, groups=self.groups, training=self.train, itemsize=itemsize,
                           pointwise=self.k == 1 and self.groups == 1)


#: In the order they are timed (a calibration short of time skips the last): the small-map convs of a network's
#: last stages first, where the strategies differ most, a training step of one among them early.
PROBES = (
    Probe(256, 256, 3, 1, 4, 8, False), Probe(512, 512, 3, 1, 4, 8, False), Probe(64, 64, 3, 1, 16, 8, False),
    Probe(64, 256, 1, 1, 8, 8, False), Probe(96, 96, 3, 96, 14, 8, False), Probe(256, 256, 3, 1, 4, 8, True),
    Probe(64, 64, 3, 1, 16, 8, True), Probe(512, 512, 3, 1, 4, 1, False), Probe(256, 64, 1, 1, 8, 1, False),
    Probe(64, 256, 1, 1, 8, 8, True), Probe(96, 96, 3, 96, 14, 8, True), Probe(64, 256, 1, 1, 8, 32, False),
    Probe(512, 2048, 1, 1, 7, 8, False), Probe(2048, 512, 1, 1, 7, 1, True),  # pointwise convs of several blocks
    Probe(512, 512, 3, 1, 7, 1, True), Probe(512, 512, 3, 1, 4, 8, True),
    Probe(256, 256, 3, 1, 4, 32, False), Probe(32, 32, 3, 1, 32, 1, False), Probe(128, 128, 3, 1, 8, 1, False),
    Probe(128, 128, 3, 1, 8, 32, True), Probe(256, 256, 3, 1, 4, 32, True),
)


def _timer(device: torch.device) -> Callable[..., float]:
    """``timer(call, bound=inf, deadline=inf)``: the fastest of ``_CALLS`` timed calls after one warm-up, in seconds;
    the warm-up's time alone where it took over ``bound`` seconds (a clear loser) or where timing it again would
    pass ``deadline`` (on ``time.perf_counter``'s clock)."""
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    def timed(call: Callable[[], object]) -> float:
        t0 = time.perf_counter()
        call()
        sync()
        return time.perf_counter() - t0

    def best_of(call: Callable[[], object], bound: float = math.inf, deadline: float = math.inf) -> float:
        first = timed(call)
        if first > bound or time.perf_counter() + _CALLS * first > deadline:
            return first
        return min(timed(call) for _ in range(_CALLS))
    return best_of


def _rates(device: torch.device, dtype: torch.dtype, timer) -> dict[str, float]:
    """The directly timed rates: a dense conv's multiply-adds per second, a map's bytes read and written per second,
    the seconds of one small op call."""
    x = torch.randn(8, 128, 16, 16, device=device, dtype=dtype)
    w = torch.randn(128, 128, 3, 3, device=device, dtype=dtype)
    with torch.no_grad():
        conv_s = timer(lambda: F.conv2d(x, w, padding=1))
        maps = torch.randn(8, 64, 32, 32, device=device, dtype=dtype)
        add_s = timer(lambda: torch.add(maps, 1.0))
        one = torch.ones(1, device=device, dtype=dtype)
        call_s = timer(lambda: [torch.add(one, 1.0) for _ in range(20)]) / 20
    return {"macs_per_s": 8 * 256 * 128 * 128 * 9 / conv_s, "bytes_per_s": 2 * maps.numel() * maps.element_size()
            / add_s, "call_s": call_s, "fresh_bytes_per_s": _fresh_rate(device, dtype, timer)}


def _fresh_rate(device: torch.device, dtype: torch.dtype, timer) -> float:
    """Bytes per second of the page faults on a large block allocated anew (filling a new 64 MiB tensor against
    filling a reused one); a caching allocator's fresh blocks cost nothing here, capped at 1e14."""
    numel = 64 * 2**20 // torch.empty(0, dtype=dtype).element_size()
    reused = torch.empty(numel, device=device, dtype=dtype)
    warm_s = timer(functools.partial(reused.fill_, 1.0))
    del reused  # freed before the fresh blocks are timed
    fresh_s = timer(lambda: torch.empty(numel, device=device, dtype=dtype).fill_(1.0))
    return min(1e14, 64 * 2**20 / max(fresh_s - warm_s, 1e-9))


def _candidates(p: ConvProblem, m: CostModel) -> list[tuple[str, bool]]:
    """(strategy, form) pairs worth timing: kernel and output mixing in each form a conv of one group has, blocked
    mixing where the model's block size makes more than one block."""
    forms = (False, True) if p.groups == 1 and not p.pointwise and p.kernel_area > 1 else (False,)
    strategies = ("kernel", "blocked", "output") if "blocked" in modelled_costs(p, m) else ("kernel", "output")
    return [(s, f) for s in strategies for f in forms]


def measure_probe(probe: Probe, device: torch.device, dtype: torch.dtype, m: CostModel,
                  timer, deadline: float = math.inf) -> dict[tuple[str, bool], float] | None:
    """Seconds of each candidate (strategy, form) on ``probe``: random experts and mix weights, forward only or a
    forward and backward with the gradients of the input, experts and mix weights. None where the clock
    (``time.perf_counter``) passes ``deadline`` before every candidate is timed."""
    g = torch.Generator().manual_seed(0)
    shape = (_EXPERTS, probe.cout, probe.cin // probe.groups, probe.k, probe.k)
    x = torch.randn(probe.batch, probe.cin, probe.size, probe.size, generator=g).to(device, dtype)
    weight = (torch.randn(shape, generator=g) * 0.1).to(device, dtype)
    a = torch.softmax(torch.randn(probe.batch, _EXPERTS, generator=g), 1).to(device, dtype)
    conv = mixing.ConvArgs((1, 1), (probe.k // 2,) * 2, (1, 1), probe.groups)
    pads = mixing.pad_amounts_of(conv, (probe.k, probe.k))
    leaves = (x, weight, a)
    if probe.train:
        leaves = tuple(t.requires_grad_() for t in leaves)

    def run(strategy: str, form: bool) -> Callable[[], object]:
        def call():
            xs, ws, as_ = leaves
            with torch.set_grad_enabled(probe.train):
                if strategy == "output":
                    y = mixing.output_mixing(xs, shape, ws, None, as_, None, None, conv, pads, columns=form)
                elif strategy == "kernel":
                    y = mixing.kernel_mixing(xs, shape, ws, None, as_, None, None, conv, columns=form,
                                             pad_amounts=pads)
                else:
                    y = mixing.blocked_kernel_mixing(xs, shape, ws, None, as_, None, None, conv, columns=form,
                                                     pad_amounts=pads, block_bytes=m.block_bytes,
                                                     min_block_channels=m.min_block_channels)
                if probe.train:
                    torch.autograd.grad(y, leaves, torch.ones_like(y))
        return call

    problem = probe.problem(x.element_size())
    times: dict[tuple[str, bool], float] = {}
    # the modelled cheapest first, so that a candidate 2x slower than the best so far is timed once, not 1 + _CALLS
    candidates = sorted(_candidates(problem, m), key=lambda c: modelled_costs(problem, m, columns=c[1])[c[0]])
    for candidate in candidates:
        if time.perf_counter() > deadline:
            return None
        times[candidate] = timer(run(*candidate), 2 * min(times.values(), default=math.inf), deadline)
    return times


# the constants the fit moves, with the range each may take
_FITTED = {"kernel_mix": (1e-3, 1e6), "pointwise_mix": (1e-3, 1e6), "im2col": (1e-3, 1e6),
           "blocked_share": (0.05, 1.0), "block_conv": (1.0, 20.0), "pointwise_block": (1.0, 20.0),
           "expert_bytes_per_s": (1e6, 1e14), "train_mix": (1.0, 50.0), "train_columns": (0.2, 20.0),
           "macs_per_s": (1e6, 1e16), "bytes_per_s": (1e6, 1e14), "fresh_bytes_per_s": (1e6, 1e14)}
_FACTORS = (0.25, 0.5, 0.7, 0.85, 1.2, 1.4, 2.0, 4.0)


def _regret(m: CostModel, p: ConvProblem, times: dict) -> float:
    choice = cheapest(modelled_costs(p, m))
    form = kernel_form(p, m)[1] if (choice, True) in times else False
    return times.get((choice, form), max(times.values())) / min(times.values()) - 1


def _log_error(m: CostModel, p: ConvProblem, times: dict) -> float:
    err = 0.0
    for (strategy, form), seconds in times.items():
        modelled = modelled_costs(p, m, columns=form)[strategy] / 1e15
        err += math.log(max(modelled, 1e-12) / seconds) ** 2
    return err / len(times)


def _objective(m: CostModel, cells: list) -> tuple[float, float]:
    return (round(sum(_regret(m, p, t) for p, t in cells), 3), sum(_log_error(m, p, t) for p, t in cells))


def _moved(m: CostModel, name: str, index: int | None, factor: float) -> CostModel:
    lo, hi = _FITTED[name]
    value = getattr(m, name)
    if index is None:
        return dataclasses.replace(m, **{name: min(hi, max(lo, value * factor))})
    pair = list(value)
    pair[index] = min(hi, max(lo, pair[index] * factor))
    return dataclasses.replace(m, **{name: tuple(pair)})


def fit(start: CostModel, cells: list[tuple[ConvProblem, dict]], passes: int = 8) -> CostModel:
    """``start``'s constants moved, one at a time by the factors in ``_FACTORS``, while that lowers the cells'
    total regret, then (at equal regret) their squared error in log time; from ``start`` itself and from the
    constants that first fit the times alone (a model of the times generalises to layers no probe timed, where
    the regret alone, a step function of the constants, can stop anywhere that ranks the probes right): the fit
    of the lower total regret and error."""
    by_times = _descend(start, cells, lambda m: (0.0, sum(_log_error(m, p, t) for p, t in cells)), passes)
    fits = [_descend(m, cells, lambda m: _objective(m, cells), passes) for m in (start, by_times)]
    return min(fits, key=lambda m: _objective(m, cells))


def _descend(start: CostModel, cells: list, objective: Callable[[CostModel], tuple[float, float]],
             passes: int) -> CostModel:
    """Coordinate descent: each fitted constant moved by the factors in ``_FACTORS`` while ``objective`` drops."""
    best, score = start, objective(start)
    knobs = [(n, i) for n in _FITTED for i in ((0, 1) if isinstance(getattr(start, n), tuple) else (None,))]
    for _ in range(passes):
        improved = False
        for name, index in knobs:
            for factor in _FACTORS:
                candidate = _moved(best, name, index, factor)
                candidate_score = objective(candidate)
                if candidate_score < score:
                    best, score, improved = candidate, candidate_score, True
        if not improved:
            break
    return best


def _measure_and_fit(device: torch.device, dtype: torch.dtype, threads: int, deadline: float) -> CostModel:
    """The rates timed, the fitted table's constants rescaled to them, the probes timed until ``deadline``, the fit."""
    timer = _timer(device)
    start = fitted_model(threads)
    rates = _rates(device, dtype, timer)
    scale = rates["macs_per_s"] / start.macs_per_s  # keeps the constants counted in multiply-adds as timed
    start = dataclasses.replace(
        start, macs_per_s=rates["macs_per_s"], bytes_per_s=rates["bytes_per_s"], call_s=rates["call_s"],
        fresh_bytes_per_s=rates["fresh_bytes_per_s"],
        kernel_mix=tuple(v * scale for v in start.kernel_mix),
        pointwise_mix=tuple(v * scale for v in start.pointwise_mix), im2col=start.im2col * scale)
    cells, itemsize = [], torch.empty(0, dtype=dtype).element_size()
    for probe in PROBES:
        times = measure_probe(probe, device, dtype, start, timer, deadline=deadline)
        if times is None:
            break
        cells.append((probe.problem(itemsize), times))
    return fit(start, cells)


def calibrate(device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32, threads: int | None = None,
              budget_s: float = BUDGET_S) -> tuple[CostModel, float]:
    """The cost model measured on ``device`` for ``dtype`` at ``threads`` (default: torch's), and the seconds it
    took. The thread count is set for the calibration and restored after; it runs with autograd on and autocast
    off whatever the caller's context (the first forward of a dynamic conv under ``inference_mode``, say)."""
    device = torch.device(device)
    start_time = time.perf_counter()
    saved = torch.get_num_threads()
    threads = saved if threads is None else threads
    torch.set_num_threads(threads)
    try:
        with torch.inference_mode(False), torch.enable_grad(), torch.autocast(device.type, enabled=False):
            model = _measure_and_fit(device, dtype, threads, start_time + _PROBING_SHARE * budget_s)
    finally:
        torch.set_num_threads(saved)
    return model, time.perf_counter() - start_time
