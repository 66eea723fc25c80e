"""The ``dynattn`` command (also ``python -m dynattn``).

    dynattn --version
    dynattn list                                     presets, references, parameters per 64 channels
    dynattn list --fields                            every AttnSpec field and the values it takes
    dynattn show cbam                                the generated torch.fx code of a spec
    dynattn show "AttnSpec(pool=['avg', 'max'], target='spatial')"
    dynattn sites resnet50 --spec se --where residual    where it would go (graph_passes.list_sites)
    dynattn insert resnet50 --spec se --where residual   what inserting it adds (graph_passes.report)
    dynattn insert timm:efficientnet_b0 --spec dyconv
    dynattn bench --quick                            time every preset against hand-written modules
    dynattn bench --network resnet18 --spec dyconv   whole networks (python -m dynattn.bench.networks)

Models are built without weights on the meta device, so ``sites`` and ``insert`` cost no
memory and download nothing. A user mistake prints one line, ``dynattn: error: ...``, and exits with
status 2; tables use ``rich`` when it is installed.
"""

from __future__ import annotations

import argparse
import difflib
import platform
import re
import sys
import time
import warnings
from collections.abc import Sequence

import torch
from torch import nn

from . import __version__
from .errors import DynattnError

__all__ = ["main"]


class UsageError(Exception):
    """A mistake in the command line: reported in one line, exit status 2."""


# ------------------------------------------------------------------ output
def _table(title: str, header: Sequence[str], rows: list[Sequence[str]], right: Sequence[int] = ()) -> None:
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:
        from graph_passes.report import text_table

        print(title)
        print(text_table(header, rows, right))
        return
    table = Table(title=title)
    for i, name in enumerate(header):
        table.add_column(name, justify="right" if i in right else "left")
    for row in rows:
        table.add_row(*map(str, row))
    Console().print(table)


def _step(message: str) -> None:
    print(f"... {message}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------ commands
WIDTH = 80  # ``dynattn list`` fits a terminal of this many columns


def _paper(reference: str) -> str:
    """'Hu et al. 2018, Squeeze-and-Excitation Networks (arXiv:1709.01507)' -> 'Hu 2018, arXiv:1709.01507'."""
    year = re.search(r"\b(?:19|20)\d\d\b", reference)
    arxiv = re.search(r"arXiv:\s*([\d.]+\d)", reference)
    if not (reference and year and arxiv):
        return reference
    return f"{reference.split()[0]} {year.group()}, arXiv:{arxiv.group(1)}"


def _fit(header: Sequence[str], rows: list[tuple[str, ...]], width: int = WIDTH) -> list[tuple[str, ...]]:
    """Shorten the last column (with '...') so that the plain table fits ``width`` columns."""
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    room = width - (sum(widths[:-1]) + 2 * (len(header) - 1))
    if widths[-1] <= room:
        return rows
    room = max(room, len(header[-1]), 4)
    return [(*r[:-1], r[-1] if len(r[-1]) <= room else r[-1][:room - 3] + "...") for r in rows]


def cmd_list(args: argparse.Namespace) -> int:
    from . import build, presets
    from .dynamic_conv import DynamicConv2d

    if args.fields:
        return _list_fields()
    rows = []
    for name, make in presets.PRESETS.items():
        spec = make()
        if spec.kind == "kernel":
            module = DynamicConv2d(64, 64, 3, padding=1, spec=spec)
            params = sum(p.numel() for p in module.parameters()) - 64 * 64 * 9 - 64
            targets = "+".join(module.router.heads)  # the router's heads: kernel, in, out, spatial
        else:
            params = sum(p.numel() for p in build(spec, channels=64).parameters())
            targets = ", ".join(dict.fromkeys(leaf.target for leaf in spec.leaves()))
        timm = "yes" if "timm" in presets._FLAVORS.get(name, ()) else ""
        rows.append((name, targets, f"{params:,}", timm, _paper(spec.reference or "")))
    header = ("preset", "targets", "params@64", "timm", "paper")
    _table("dynattn presets", header, _fit(header, rows), right=(2,))
    print("params@64: parameters added at 64 channels (kernel ones: to a 64->64 3x3 conv)\n"
          "targets: where the weights go (kernel presets: the router's heads)\n"
          "timm: flavor='timm' reproduces timm's module: get_spec(name, flavor='timm')")
    return 0


def _list_fields() -> int:
    import dataclasses

    from .spec import AttnSpec
    from .vocab import FIELD_VALUES

    rows = []
    for f in dataclasses.fields(AttnSpec):
        values = FIELD_VALUES[f.name]
        shown = values if isinstance(values, str) else ", ".join(map(repr, values))
        default = "(by target)" if f.default is None and f.name in ("pool", "target", "merge", "excite", "gate") \
            else repr(f.default)
        rows.append((f.name, shown, default))
    _table("AttnSpec fields (a field set where it has no effect is an error)", ("field", "values", "default"), rows)
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    from . import build
    from .dynamic_conv import DynamicConv2d
    from .spec_parse import parse_spec

    spec = parse_spec(args.spec)
    if args.channels <= 0:
        raise UsageError(f"--channels={args.channels}: must be > 0")
    print(f"# {spec!r}")
    if spec.kind == "kernel":
        module = DynamicConv2d(args.channels, args.channels, 3, padding=1, spec=spec)
        print(f"# the router of a {args.channels} -> {args.channels} 3x3 DynamicConv2d")
        print(module.router.code.strip())
    else:
        module = build(spec, channels=args.channels, optimize=not args.no_optimize)
        print(f"# class {type(module).__name__}, {args.channels} channels, "
              f"{sum(p.numel() for p in module.parameters()):,} parameters")
        print(module.code.strip())
    return 0


def _load_model(name: str) -> nn.Module:
    if name.startswith("timm:"):
        try:
            import timm
        except ImportError:
            raise UsageError("timm models need timm: pip install timm") from None
        model_name = name[5:]
        if model_name not in timm.list_models():
            close = difflib.get_close_matches(model_name, timm.list_models(), n=3)
            raise UsageError(f"timm has no model {model_name!r}" + (f"; did you mean {close}?" if close else ""))
        with torch.device("meta"), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return timm.create_model(model_name, pretrained=False)
    try:
        import torchvision
    except ImportError:
        raise UsageError("torchvision models need torchvision: pip install torchvision") from None
    names = torchvision.models.list_models(module=torchvision.models)
    if name not in names:
        close = difflib.get_close_matches(name, names, n=3)
        raise UsageError(f"torchvision has no classification model {name!r}"
                         + (f"; did you mean {', '.join(close)}?" if close else "")
                         + " (timm models: timm:NAME)")
    with torch.device("meta"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torchvision.models.get_model(name, weights=None)


def _prepare(args: argparse.Namespace):
    """The specs, selector, model (on the meta device) and example inputs that insert and sites share."""
    from .spec_parse import parse_spec

    specs = [parse_spec(s) for s in args.spec]
    where = args.where if args.where is None or len(args.where) > 1 else args.where[0]
    _step(f"building {args.model} on the meta device (no weights)")
    model = _load_model(args.model)
    inputs = None
    if args.input_size:
        if args.input_size <= 0:
            raise UsageError(f"--input-size={args.input_size}: must be > 0")
        first = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
        if first is None:
            raise UsageError("--input-size: the model has no conv to take the input channels from")
        inputs = (torch.empty(2, first.in_channels, args.input_size, args.input_size, device="meta"),)
    return (specs if len(specs) > 1 else specs[0]), where, model, inputs


def cmd_insert(args: argparse.Namespace) -> int:
    from graph_passes import insert_attention, report

    spec, where, model, inputs = _prepare(args)
    _step("tracing, finding sites, inserting")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = insert_attention(model, spec, where=where, example_inputs=inputs, leaf_modules=args.leaf or ())
    rep = report(out)
    _table(f"{args.model}: {len(rep.records)} sites", rep.HEADER, rep.rows(), right=(3, 4))
    print(f"total: +{rep.params_added:,} parameters on {rep.params_before:,} "
          f"({100 * rep.overhead:.2f}% overhead)")
    return 0


def cmd_sites(args: argparse.Namespace) -> int:
    from graph_passes import list_sites

    spec, where, model, inputs = _prepare(args)
    _step("tracing, finding sites")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sites = list_sites(model, spec, where=where, example_inputs=inputs, leaf_modules=args.leaf or ())
    rows = []
    for site in sites:
        # graph_passes.Site: how it was selected and what produces it (``rule`` / ``producer``,
        # ``kind`` / ``module`` in earlier versions)
        how = getattr(site, "rule", None) or getattr(site, "kind", "")
        producer = getattr(site, "producer", None) or getattr(site, "module", "")
        if how == "conv" and len(site.shape) == 2:  # a conv a kernel-target spec would replace: (in, out)
            shape = f"{site.shape[0]} -> {site.shape[1]} channels"
        else:
            shape = f"{site.shape[2]}x{site.shape[3]}" if len(site.shape) == 4 else str(tuple(site.shape))
        rows.append((site.name, how, str(site.channels), shape, producer))
    where_text = " ".join(f"--where {w}" for w in args.where) if args.where else "the default placement"
    _table(f"{args.model}: {len(sites)} sites ({where_text})", ("site", "selected as", "channels", "map", "from"),
           rows, right=(2,))
    print("dynattn insert with the same arguments shows the modules and parameters each site would get.")
    return 0


# ------------------------------------------------------------------ bench
_SPEEDUP_NOTE = ("Ratios are speed-ups, 'A vs B' = B's time / A's time: higher is better, above 1.00x dynattn is "
                 "faster. 'vs copy' compares with one x.clone(), the memory-traffic floor (an attention block reads "
                 "x twice and writes it once, so about 0.67x is its best).")


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
    from .bench.suite import input_sizes

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
    from .bench.suite import input_sizes

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


def cmd_bench(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .bench import suite
    from .bench.timing import allocator_line, machine_summary

    def ints(option: str, text: str) -> list[int]:
        try:
            values = [int(v) for v in text.split(",") if v]
        except ValueError:
            raise UsageError(f"{option}={text!r}: give comma-separated positive integers") from None
        if not values or min(values) <= 0:
            raise UsageError(f"{option}={text!r}: give comma-separated positive integers")
        return values

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
    batches, channels, sizes = ((32,), (256,), (28,)) if args.quick else (
        ints("--batch", args.batch), ints("--channels", args.channels), ints("--size", args.size))
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
    text = f"{header}\n\n{_SPEEDUP_NOTE}\n\n{bench_table(rows, compiled)}\n"
    print(text)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.md").write_text(text)
    if bench_plot(rows, compiled, out / "results.png") is not None:
        print(f"wrote {out / 'results.md'} and {out / 'results.png'}")
    else:
        print(f"wrote {out / 'results.md'} (pip install matplotlib for the plot)")
    return 0


# ------------------------------------------------------------------ entry point
class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, status 2 (argparse's own usage dump is noise)
        raise UsageError(f"{message} (see: {self.prog} --help)")


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="dynattn", description="Attention for CNNs from a declarative spec.")
    p.add_argument("--version", action="version", help="print the versions of dynattn, torch and Python, and exit",
                   version=f"dynattn {__version__} (torch {torch.__version__}, Python {platform.python_version()})")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser, metavar="COMMAND")
    lst = sub.add_parser("list", help="presets with their targets, sizes and papers",
                         description="Every preset: where its weights go, its parameters at 64 channels, its paper.")
    lst.add_argument("--fields", action="store_true", help="the spec's fields and the values each takes")

    show = sub.add_parser("show", help="the generated code of a spec",
                          description="Print the torch.fx code a spec compiles to (a kernel spec: its router's).")
    show.add_argument("spec", help="a preset name, a preset call such as cbam(reduction=8), or AttnSpec(...)")
    show.add_argument("--channels", type=int, default=64, help="the channel count to build for (default 64)")
    show.add_argument("--no-optimize", action="store_true", help="the graph before the compiler's passes")

    for name, text in (("sites", "where a spec would go in a model (graph_passes.list_sites); nothing is built"),
                       ("insert", "the modules and parameters inserting a spec into a model adds")):
        cmd = sub.add_parser(name, help=text, description=text[0].upper() + text[1:] + ". The model is built on "
                             "the meta device: no weights, no downloads.")
        cmd.add_argument("model", help="a torchvision model name (resnet18) or timm:NAME (timm:efficientnet_b0)")
        cmd.add_argument("--spec", action="append", required=True,
                         help="a preset name, a preset call such as cbam(reduction=8), or AttnSpec(...); "
                              "repeat to chain several specs at each site")
        cmd.add_argument("--where", action="append",
                         help="residual, conv, stage, a glob such as 'layer*', re:<regex>; repeat for the union "
                              "(default: residual when the model has residual adds, else stage; the preset's own "
                              "conversion sites for a kernel spec, see dynattn.conv_placement)")
        cmd.add_argument("--input-size", type=int, help="square input size for shape propagation (default 224)")
        cmd.add_argument("--leaf", action="append",
                         help="a submodule (qualified name or glob) not to trace into; repeatable")

    bench = sub.add_parser("bench", help="time every preset against hand-written modules and one copy of x",
                           description="Each preset eager and compiled against the hand-written reference "
                                       "(timm's module where it has one) and x.clone(), interleaved, medians. "
                                       "Writes results.md and results.png to --out. " + _SPEEDUP_NOTE)
    from .bench.suite import PRESETS
    from .bench.timing import add_allocator_option

    bench.add_argument("--presets", default=",".join(PRESETS),
                       help=f"comma-separated presets to time (default: all of {','.join(PRESETS)})")
    bench.add_argument("--batch", default="1,32", help="comma-separated batch sizes (default 1,32)")
    bench.add_argument("--channels", default="64,256", help="comma-separated channel counts (default 64,256)")
    bench.add_argument("--size", default="56,28,7", help="comma-separated square map sizes (default 56,28,7)")
    bench.add_argument("--quick", action="store_true", help="only B=32, C=256, 28x28 (overrides the three above)")
    bench.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    bench.add_argument("--dtype", default="fp32", choices=("bf16", "fp16", "fp32"), help="default fp32")
    bench.add_argument("--channels-last", action="store_true", help="inputs and modules in channels_last")
    bench.add_argument("--eager-only", action="store_true", help="skip torch.compile (the compiled columns too)")
    bench.add_argument("--repeats", type=int, default=20, help="interleaved runs per variant (default 20)")
    bench.add_argument("--quantile", type=float, default=0.5,
                       help="the quantile of each variant's call times reported (default 0.5, the median)")
    bench.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                       help="cpu: the process's CPU time per call, which waiting for a core on a shared machine "
                            "does not inflate (use with --threads 1)")
    bench.add_argument("--threads", type=int, help="torch.set_num_threads for the run (default: torch's)")
    bench.add_argument("--out", default="outputs/bench",
                       help="folder for results.md and results.png (default outputs/bench)")
    add_allocator_option(bench)
    return p


COMMANDS = {"list": cmd_list, "show": cmd_show, "sites": cmd_sites, "insert": cmd_insert, "bench": cmd_bench}


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["bench"] and any(a == "--network" or a.startswith("--network=") for a in argv[1:]):
        from .bench.networks import main as networks_main  # whole networks: that module's own options

        return networks_main(argv[1:])
    try:
        try:
            args = _parser().parse_args(argv)
        except SystemExit as done:  # --help and --version: printed, return their status
            return int(done.code or 0)
        return COMMANDS[args.command](args)
    except (UsageError, DynattnError, TypeError) as exc:
        print(f"dynattn: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("dynattn: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
