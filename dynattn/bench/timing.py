"""Interleaved timing and peak-memory measurement shared by the benchmarks."""

from __future__ import annotations

import argparse
import random
import statistics
import time
from collections.abc import Callable

import torch

__all__ = ["interleaved_medians", "no_grad_call", "peak_allocated_mb", "machine_summary", "steady_allocator",
           "add_allocator_option", "allocator_line"]


def interleaved_medians(
    fns: dict[str, Callable[[], object]], repeats: int = 20, warmup: int = 3, seed: int = 0, quantile: float = 0.5,
    clock: Callable[[], float] = time.perf_counter,
) -> dict[str, float]:
    """Median seconds per call of each function, measured round-robin in a shuffled order (another
    ``quantile`` of the calls' times on request). ``clock=time.process_time`` measures the CPU time the
    process spends instead of wall time: on a machine that other jobs share, waiting for a core is then
    not counted."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    order = list(fns)
    rng = random.Random(seed)
    for _ in range(repeats):
        rng.shuffle(order)
        for name in order:
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            t0 = clock()
            fns[name]()
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            times[name].append(clock() - t0)
    if quantile == 0.5:
        return {name: statistics.median(ts) for name, ts in times.items()}
    return {name: sorted(ts)[min(len(ts) - 1, int(quantile * len(ts)))] for name, ts in times.items()}


def no_grad_call(module: Callable[[torch.Tensor], object], x: torch.Tensor) -> Callable[[], object]:
    """A zero-argument inference call of ``module`` on ``x``, for :func:`interleaved_medians`."""
    def run():
        with torch.no_grad():
            return module(x)
    return run


def peak_allocated_mb(fn: Callable[[], object]) -> float:
    """Peak tensor memory allocated while ``fn`` runs, above what was allocated before, in MiB.

    Read from the profiler's allocation events, so it counts every tensor the call creates
    (on CPU, where torch keeps no allocator statistics) and nothing else."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if torch.cuda.is_available() else [])
    with profile(activities=activities, profile_memory=True) as prof:
        fn()
    events = [e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"]
    current = peak = 0
    for e in sorted(events, key=lambda e: e.start_ns()):
        current += e.nbytes()
        peak = max(peak, current)
    return peak / 2**20


def add_allocator_option(parser: argparse.ArgumentParser) -> None:
    """``--steady-malloc``: run under :func:`steady_allocator` (read with ``allocator_line``). The default is
    the system allocator as it is, what a user's plain ``python`` process runs with."""
    parser.add_argument("--steady-malloc", action="store_true",
                        help="turn off glibc's mmap path and heap trimming (MALLOC_MMAP_MAX_=0 "
                             "MALLOC_TRIM_THRESHOLD_=2147483647 does the same for any process); default: the "
                             "system allocator as a plain python process has it")


def allocator_line(args: argparse.Namespace) -> str:
    """Apply the allocator the command line asked for; the line that names it in a header."""
    return steady_allocator() if args.steady_malloc else "system allocator"


def steady_allocator() -> str:
    """Keep freed CPU memory inside the process, so that timings measure kernels, not page faults.

    On CPU torch allocates with the system allocator. glibc serves a large block (one 28x28x256
    activation at B=32 is 25 MB) by ``mmap`` and returns it to the kernel when freed, so the next
    call of the same size page-faults its whole output again: about 6 ms here, more than the
    kernel itself, and it falls on whichever candidate happens to allocate after a release. In
    one run the same ``x.clone()`` measured 4.1 ms in one row and 10.2 ms in the next. Turning
    off glibc's ``mmap`` path and heap trimming (what a caching allocator such as jemalloc or
    tcmalloc gives, and what Intel's PyTorch CPU tuning guide recommends) removes that noise for
    every candidate alike. Returns a line for the benchmark header; a no-op off glibc."""
    import ctypes
    import sys

    if not sys.platform.startswith("linux"):
        return "system allocator"
    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return "system allocator"
    m_trim_threshold, m_mmap_max = -1, -4  # from glibc's malloc.h
    if mallopt(m_mmap_max, 0) and mallopt(m_trim_threshold, 2**31 - 1):
        return "glibc malloc with mmap and trimming off"
    return "system allocator"


def machine_summary() -> str:
    import os
    import platform

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
        cpu = names[0] if names else cpu
    except OSError:
        pass
    return (f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__}, "
            f"{torch.get_num_threads()} threads")
