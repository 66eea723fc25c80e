"""Which cost model is in force, and the choices ``strategy="auto"`` makes with it.

    problem = layer.conv_problem(x)                 # what the model decides from
    choose_strategy(problem)                        # "kernel", "blocked" or "output"
    with use_cost_model(dataclasses.replace(cost_model(), im2col=0.0)):
        layer(x)                                    # this thread / context runs under other constants

The constants in force for a device, dtype and thread count come from ``DYNATTN_COST_MODEL``:

- unset (or ``cached``): this machine's calibration, read from the profile cache (:mod:`.profile_cache`);
  where none is cached, measured once (:func:`.calibration.calibrate`, in about ``DYNATTN_CALIBRATION_S``
  seconds, default 4, at the first call of a dynamic conv that needs it) and cached;
- ``calibrate``: measured afresh once per process, whatever is cached (and cached);
- ``fitted``: the fitted table (:data:`.costs.COST_MODELS`): deterministic, what the test suite uses.

Under torch.compile the constants are read when the graph is traced, as one constant: no graph break, and a
graph never depends on them changing.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import math
import os
import sys
import threading
import warnings
from collections.abc import Iterator

import torch

from . import profile_cache
from .calibration import BUDGET_S, calibrate
from .costs import COST_MODELS, ConvProblem, CostModel, cheapest, fitted_model, kernel_form, modelled_costs

__all__ = ["ConvProblem", "CostModel", "COST_MODELS", "COST_MODEL_SOURCES", "cost_model", "use_cost_model",
           "strategy_costs", "choose_strategy", "choose_columns", "calibrated_model"]

#: The values ``DYNATTN_COST_MODEL`` takes (unset: the first).
COST_MODEL_SOURCES = ("cached", "calibrate", "fitted")


def _assume_constant_result(fn):
    """``torch.compiler.assume_constant_result`` (torch.compile traces ``fn`` once and keeps its result as a
    constant) without importing torch._dynamo, which the public decorator imports only to set this flag and which
    took most of ``import dynattn``'s time; tests/test_user_door.py checks that the flag is what torch sets."""
    if "torch._dynamo" in sys.modules:
        return torch.compiler.assume_constant_result(fn)
    fn._dynamo_marked_constant = True
    return fn


# the model use_cost_model put in force for this thread / context (None: the one DYNATTN_COST_MODEL names)
_ACTIVE: contextvars.ContextVar[CostModel | None] = contextvars.ContextVar("dynattn_cost_model", default=None)


@_assume_constant_result
def _threads() -> int:
    # read once per compiled graph: torch.compile cannot put the int get_num_threads returns in a graph
    return torch.get_num_threads()


def cost_model(threads: int | None = None, device: str | torch.device = "cpu",
               dtype: torch.dtype = torch.float32) -> CostModel:
    """The constants in force for ``device`` and ``dtype``: those of an enclosing :func:`use_cost_model`, else
    those ``DYNATTN_COST_MODEL`` names (see the module's docstring) for ``threads`` (default: torch's)."""
    if threads is None:
        active = _ACTIVE.get()
        if active is not None:
            return active
        threads = _threads()
    return _MODELS[_model_name(_device_key(device), str(dtype), threads)]


# the constants resolved in this process, by _model_name; and a lock so that one thread calibrates while others wait
_MODELS: dict[str, CostModel] = {}
_CALIBRATING = threading.Lock()
_WARNED: set[str] = set()


def _device_key(device: str | torch.device) -> str:
    device = torch.device(device)
    return "cuda:0" if device.type == "cuda" and device.index is None else str(device)


#: what names a model besides device, dtype and threads: the environment variables the source and the cache
#: directory are read from
_ENVIRONMENT = ("DYNATTN_COST_MODEL", "DYNATTN_CACHE_DIR", "XDG_CACHE_HOME", "HOME", "LOCALAPPDATA")
# the name each (device, dtype, threads, environment) resolved to: the model is looked up on every call of a
# dynamic conv, and building the cache directory's path each time cost more than the rest of the lookup
_NAMES: dict[tuple, str] = {}


@_assume_constant_result
def _model_name(device: str, dtype: str, threads: int) -> str:
    # one constant per compiled graph: torch.compile runs this once while tracing, never inside the graph
    key = (device, dtype, threads, *(os.environ.get(v) for v in _ENVIRONMENT))
    name = _NAMES.get(key)
    if name is None:
        name = _NAMES[key] = _resolve(device, dtype, threads)
    return name


def _resolve(device: str, dtype: str, threads: int) -> str:
    """The name of the model ``DYNATTN_COST_MODEL`` names for ``device``, ``dtype`` and ``threads``, the model
    resolved (read from the cache, calibrated or the fitted table) and kept under it."""
    source = os.environ.get("DYNATTN_COST_MODEL", "") or "cached"
    if source not in COST_MODEL_SOURCES:
        if source not in _WARNED:
            _WARNED.add(source)
            warnings.warn(f"DYNATTN_COST_MODEL={source!r} is not one of {COST_MODEL_SOURCES}; using 'cached'",
                          RuntimeWarning, stacklevel=3)
        source = "cached"
    name = f"{source}:{device}:{dtype}:{threads}" + ("" if source == "fitted" else f":{profile_cache.cache_dir()}")
    if name not in _MODELS:
        with _CALIBRATING:
            if name not in _MODELS:
                _MODELS[name] = (fitted_model(threads) if source == "fitted" else
                                 calibrated_model(device, getattr(torch, dtype.removeprefix("torch.")), threads,
                                                  fresh=source == "calibrate"))
    return name


def _profile(cached: object) -> CostModel | None:
    """The CostModel a cached profile holds; None for anything else (none cached, another version's fields, a
    value that is not a finite positive number)."""
    try:
        constants = dict(cached["constants"])
        for pair in ("kernel_mix", "pointwise_mix"):
            constants[pair] = tuple(constants[pair])
        model = CostModel(**constants)
    except (TypeError, KeyError, ValueError):
        return None
    values = [getattr(model, f.name) for f in dataclasses.fields(model)]
    flat = [v for value in values for v in (value if isinstance(value, tuple) else (value,))]
    ok = all(type(v) in (int, float) and math.isfinite(v) and v > 0 for v in flat)
    pairs = all(len(getattr(model, n)) == 2 for n in ("kernel_mix", "pointwise_mix"))
    return model if ok and pairs else None


def _budget() -> float:
    """``DYNATTN_CALIBRATION_S``: the seconds a calibration may take (default ``BUDGET_S``)."""
    try:
        return max(0.0, float(os.environ.get("DYNATTN_CALIBRATION_S", BUDGET_S)))
    except ValueError:
        return BUDGET_S


def calibrated_model(device: str = "cpu", dtype: torch.dtype = torch.float32, threads: int | None = None, *,
                     fresh: bool = False) -> CostModel:
    """This machine's calibrated constants for ``device``, ``dtype`` and ``threads``: from the profile cache, or
    (``fresh``, or none cached) measured now and written to it. A cached profile that does not load is measured
    again; nothing here raises for the cache's sake."""
    threads = torch.get_num_threads() if threads is None else threads
    key = profile_cache.machine_key(device, dtype, threads)
    if not fresh:
        model = _profile(profile_cache.load("cost-model", key))
        if model is not None:
            return model
    try:
        model, seconds = calibrate(device, dtype, threads, budget_s=_budget())
    except Exception as err:  # a device that cannot run the probes (out of memory, say): the fitted table
        warnings.warn(f"dynattn could not calibrate the cost model on {device} ({type(err).__name__}: {err}); "
                      "using the fitted constants", RuntimeWarning, stacklevel=2)
        return fitted_model(threads)
    profile_cache.store("cost-model", key, {"constants": dataclasses.asdict(model), "seconds": round(seconds, 3)})
    return model


@contextlib.contextmanager
def use_cost_model(model: CostModel) -> Iterator[CostModel]:
    """Run the dynamic convs of this thread (this context: other threads keep theirs) under ``model``: the choice
    of strategy and form and blocked mixing's block size. A layer keeps its choices per model, so a choice made
    under one model is never reused under another."""
    if not isinstance(model, CostModel):
        raise TypeError(f"use_cost_model takes a CostModel, not {type(model).__name__}")
    token = _ACTIVE.set(model)
    try:
        yield model
    finally:
        _ACTIVE.reset(token)


def strategy_costs(problem: ConvProblem, model: CostModel | None = None) -> dict[str, float]:
    """Modelled seconds of each strategy for one call (forward, or forward and backward when
    ``problem.training``); ``strategy="auto"`` runs the cheapest (:func:`choose_strategy`).

    With W = out * in/groups * kernel area weights per expert, C = B * out positions * W the conv's
    multiply-adds and A the bytes of its input and output maps:

    - ``kernel``: C and A, plus ``kernel_mix`` multiply-adds per mixed weight (B * W of them):
      writing the B kernels and the grouped conv reading them back (a conv of B groups runs slower
      than a dense one) dominate on small maps, where each weight serves only H_out * W_out positions;
      a ``pointwise`` conv (1 x 1, one group, no padding) runs as a batched matmul instead, whose
      extra cost per mixed weight is ``pointwise_mix`` (and blocked mixing's narrow blocks cost
      ``pointwise_block``, not ``block_conv``);
    - ``blocked``: ``block_conv`` x C (narrow convs) and A, plus ``blocked_share`` of kernel mixing's
      extra cost when a block's B kernels stay in cache (all of it when not), plus three calls per
      block; with one block it is kernel mixing and not listed;
    - ``output``: K * C and A, plus writing and re-reading the K outputs and reading the K expert
      banks (K * W weights); with a spatial head (ODConv) plus writing and reading an im2col copy of
      the input (B * in * kernel area * out positions values); in the columns form (where kernel mixing
      takes it) one matmul with the batch's im2col columns, ``im2col`` per column value.

    Each adds the page faults on the blocks over ``fresh_above`` bytes it allocates per call (a training step's
    B mixed kernels and their gradient, large columns, the K outputs), at ``fresh_bytes_per_s``.
    Training triples the conv arithmetic and doubles the rest (kernel mixing's extra cost: ``train_mix`` times).
    ``model`` defaults to :func:`cost_model`.
    """
    return {name: fs / 1e15 for name, fs in modelled_costs(problem, cost_model() if model is None else model).items()}


def choose_columns(problem: ConvProblem, model: CostModel | None = None) -> bool:
    """Whether kernel and blocked mixing run a conv of one group as a batched matmul with the input's im2col
    columns (``columns=True`` in :func:`mixing.kernel_mixing`) rather than as a conv of B groups: when the columns
    (B * in * kernel area * out positions values, ``im2col`` each) cost less than the conv of B groups reading and
    reordering the B kernels (``kernel_mix`` against ``pointwise_mix`` per mixed weight), that is on small maps;
    with a spatial head the columns also take the kernel-position scaling. A pointwise or grouped conv: False."""
    return kernel_form(problem, cost_model() if model is None else model)[1]


def choose_strategy(problem: ConvProblem, model: CostModel | None = None, *, tracing: bool = False,
                    compiling: bool = False) -> str:
    """The rule behind ``strategy="auto"``: ``output`` when exporting or fx ``tracing`` (no group count
    tied to the batch size), else the cheapest strategy under :func:`strategy_costs` (ties go to
    ``kernel``, then ``blocked``). ``compiling`` (under torch.compile) leaves out ``blocked``, whose
    block count depends on the batch size: with dynamic shapes the graph then holds for every batch
    size with the same choice.

    Where the model misjudges a machine, ``DynamicConv2d.benchmark = True`` times the candidates
    once per shape instead (see :class:`~dynattn.dynamic_conv.module._DynamicConvNd`).
    """
    if tracing:
        return "output"
    return cheapest(modelled_costs(problem, cost_model() if model is None else model, blocked=not compiling))
