"""The benchmark command: ``dynattn bench`` and ``python -m dynattn.bench`` (the preset suite; with
``--network`` both hand over to :mod:`dynattn.bench.networks`, which times whole networks).

:func:`add_arguments` declares its options on a parser and :func:`run` runs them: :mod:`dynattn.cli` adds
them to its ``bench`` sub-command, :func:`main` to a parser of its own, so both print the same help and
the same table. The table reports every ratio as a speed-up of dynattn and is also written to
``results.md``, with a plot of it in ``results.png`` when matplotlib is installed.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from pathlib import Path

import torch

from . import suite
from .suite import input_sizes
from .timing import add_allocator_option, allocator_line, machine_summary
from .usage import CommandParser, UsageError, run_command

__all__ = ["DESCRIPTION", "add_arguments", "run", "main", "wants_networks", "bench_speedups",
           "bench_table", "bench_plot"]

SPEEDUP_NOTE = ("Ratios are speed-ups, 'A vs B' = B's time / A's time: higher is better, above 1.00x dynattn is "
                "faster. 'vs copy' compares with one x.clone(), the memory-traffic floor (an attention block reads "
                "x twice and writes it once, so about 0.67x is its best).")
DESCRIPTION = ("Each preset eager and compiled against the hand-written reference (timm's module where it has one) "
               "and x.clone(), interleaved, medians. Writes results.md and results.png to --out. " + SPEEDUP_NOTE)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The bench command's options, on ``parser``."""
    presets = suite.PRESETS
    parser.add_argument("--presets", default=",".join(presets),
                        help=f"comma-separated presets to time (default: all of {','.join(presets)})")
    parser.add_argument("--batch", default="1,32", help="comma-separated batch sizes (default 1,32)")
    parser.add_argument("--channels", default="64,256", help="comma-separated channel counts (default 64,256)")
    parser.add_argument("--size", default="56,28,7", help="comma-separated square map sizes (default 56,28,7)")
    parser.add_argument("--quick", action="store_true", help="only B=32, C=256, 28x28 (overrides the three above)")
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    parser.add_argument("--dtype", default="fp32", choices=("bf16", "fp16", "fp32"), help="default fp32")
    parser.add_argument("--channels-last", action="store_true", help="inputs and modules in channels_last")
    parser.add_argument("--eager-only", action="store_true", help="skip torch.compile (the compiled columns too)")
    parser.add_argument("--repeats", type=int, default=20, help="interleaved runs per variant (default 20)")
    parser.add_argument("--quantile", type=float, default=0.5,
                        help="the quantile of each variant's call times reported (default 0.5, the median)")
    parser.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                        help="cpu: the process's CPU time per call, which waiting for a core on a shared machine "
                             "does not inflate (use with --threads 1)")
    parser.add_argument("--threads", type=int, help="torch.set_num_threads for the run (default: torch's)")
    parser.add_argument("--out", default="outputs/bench",
                        help="folder for results.md and results.png (default outputs/bench)")
    add_allocator_option(parser)
    networks = parser.add_argument_group(
        "whole networks", "with --network, the bench times whole networks with a spec inserted, and takes "
        "python -m dynattn.bench.networks's options instead (dynattn bench --network resnet18 --help lists them)")
    networks.add_argument("--network", metavar="MODELS", help="comma-separated torchvision models, e.g. resnet18")


def wants_networks(argv: Sequence[str]) -> bool:
    """True when the bench arguments ask for whole networks (``--network``), which take that module's options."""
    return any(a == "--network" or a.startswith("--network=") for a in argv)


def main(argv: Sequence[str]) -> int:
    """``python -m dynattn.bench`` without ``--network``: the same command, options and output as
    ``dynattn bench``."""
    parser = CommandParser(prog="dynattn bench", description=DESCRIPTION)
    add_arguments(parser)
    return run_command(parser, run, list(argv))


def bench_speedups(rows, compiled: bool) -> dict[str, list[float]]:
    """Every ratio of the bench table, as a speed-up of dynattn: 'A vs B' = B's time / A's time."""
    pairs = [("eager vs reference", "ours", "reference")]
    if compiled:
        pairs += [("compiled vs reference", "ours_compiled", "reference"),
                  ("compiled vs eager", "ours_compiled", "ours"), ("compiled vs copy", "ours_compiled", "copy")]
    else:
        pairs.append(("eager vs copy", "ours", "copy"))
    return {name: [r.times[other] / r.times[ours] for r in rows] for name, ours, other in pairs}


def bench_table(rows, compiled: bool) -> str:
    """The benchmark as a markdown table: times in ms, then every ratio as a speed-up of dynattn."""
    times = [("eager ms", "ours")] + ([("compiled ms", "ours_compiled")] if compiled else []) + [
        ("reference ms", "reference"), ("copy ms", "copy")]
    speedups = bench_speedups(rows, compiled)
    header = ["preset", "B", "C", "map", *(h for h, _ in times), *speedups]
    lines = ["| " + " | ".join(header) + " |", "|---|---:|---:|---|" + "---:|" * (len(header) - 4)]
    for i, r in enumerate(rows):
        cells = [r.preset, str(r.batch), str(r.channels), "x".join(map(str, input_sizes(r.preset, r.size)))]
        cells += [f"{r.times[key] * 1e3:.3f}" for _, key in times]
        cells += [f"{values[i]:.2f}x" for values in speedups.values()]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def bench_plot(rows, compiled: bool, path) -> dict[str, list[float]] | None:
    """Bars of the table's 'vs reference' columns, each labelled with the table's value; returns
    what it drew (None without matplotlib)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    series = {k: v for k, v in bench_speedups(rows, compiled).items() if k.endswith("vs reference")}
    labels = [f"{r.preset}\nB{r.batch} C{r.channels} {'x'.join(map(str, input_sizes(r.preset, r.size)))}"
              for r in rows]
    fig, ax = plt.subplots(figsize=(max(7.0, 0.9 * len(rows) + 2), 4.5))
    width = 0.8 / len(series)
    for k, (name, values) in enumerate(series.items()):
        bars = ax.bar([i - 0.4 + width * (k + 0.5) for i in range(len(rows))], values, width, label=name)
        ax.bar_label(bars, [f"{v:.2f}x" for v in values], fontsize=7, padding=2)
    ax.axhline(1.0, color="black", linewidth=0.8)
    ax.set_xticks(range(len(rows)), labels, fontsize=7)
    ax.set_ylabel("reference time / dynattn time")
    ax.set_title("dynattn vs the hand-written reference, as in results.md\n"
                 "speed-up = reference time / dynattn time: higher is better, above 1 dynattn is faster", fontsize=9)
    ax.margins(y=0.15)
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return series


def _ints(option: str, text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v]
    except ValueError:
        raise UsageError(f"{option}={text!r}: give comma-separated positive integers") from None
    if not values or min(values) <= 0:
        raise UsageError(f"{option}={text!r}: give comma-separated positive integers")
    return values


def _checked_presets(args: argparse.Namespace) -> list[str]:
    """The presets to time, after checking every option (``--threads`` is applied here)."""
    presets = [x for x in args.presets.split(",") if x]
    unknown = [x for x in presets if x not in suite.PRESETS]
    if unknown or not presets:
        raise UsageError(f"--presets: unknown preset(s) {unknown}; choose from {', '.join(suite.PRESETS)}")
    if args.repeats <= 0:
        raise UsageError(f"--repeats={args.repeats}: must be > 0")
    if not 0 < args.quantile < 1:
        raise UsageError(f"--quantile={args.quantile}: must be in (0, 1)")
    if args.threads is not None:
        if args.threads < 1:
            raise UsageError(f"--threads={args.threads}: must be >= 1")
        torch.set_num_threads(args.threads)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise UsageError("--device cuda: no CUDA device is available here")
    return presets


def run(args: argparse.Namespace) -> int:
    """Time the suite the options ask for, print the table and write it (and its plot) to ``--out``."""
    presets = _checked_presets(args)
    batches, channels, sizes = ((32,), (256,), (28,)) if args.quick else (
        _ints("--batch", args.batch), _ints("--channels", args.channels), _ints("--size", args.size))
    allocator = allocator_line(args)
    compiled = not args.eager_only
    rows = suite.run_suite(presets, batches, channels, sizes, device=args.device, dtype=suite.DTYPES[args.dtype],
                           channels_last=args.channels_last, compiled=compiled, repeats=args.repeats,
                           quantile=args.quantile,
                           clock=time.process_time if args.clock == "cpu" else time.perf_counter)
    stat = "medians" if args.quantile == 0.5 else f"{args.quantile:g} quantiles"
    stat += " of CPU time" if args.clock == "cpu" else ""
    header = (f"dynattn benchmark; {args.device}, {args.dtype}{', channels_last' if args.channels_last else ''}"
              f"{'' if compiled else ', eager only'}; {stat} of {args.repeats} interleaved runs; "
              f"{machine_summary()}; {allocator}")
    text = f"{header}\n\n{SPEEDUP_NOTE}\n\n{bench_table(rows, compiled)}\n"
    print(text)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.md").write_text(text)
    if bench_plot(rows, compiled, out / "results.png") is not None:
        print(f"wrote {out / 'results.md'} and {out / 'results.png'}")
    else:
        print(f"wrote {out / 'results.md'} (pip install matplotlib for the plot)")
    return 0
