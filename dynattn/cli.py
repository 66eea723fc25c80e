"""The ``dynattn`` command (also ``python -m dynattn``).

    dynattn list                                     presets, references, parameters per 64 channels
    dynattn show cbam                                the generated torch.fx code of a spec
    dynattn show "AttnSpec(pool=['avg', 'max'], target='spatial')"
    dynattn insert resnet50 --spec se --where residual
    dynattn insert timm:efficientnet_b0 --spec dyconv
    dynattn bench --quick                            the benchmark suite (python -m dynattn.bench)
    dynattn bench --network resnet18 --spec dyconv   whole networks (python -m dynattn.bench.networks)

Models are built without weights on the meta device, so ``insert`` costs no memory and
downloads nothing. A user mistake prints one line, ``dynattn: error: ...``, and exits with
status 2; tables use ``rich`` when it is installed.
"""

from __future__ import annotations

import argparse
import difflib
import sys
import warnings
from collections.abc import Sequence

import torch
from torch import nn

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
def cmd_list(args: argparse.Namespace) -> int:
    from . import presets
    from .builder import build
    from .dynamic_conv import DynamicConv2d

    rows = []
    for name, make in presets.PRESETS.items():
        spec = make()
        if spec.kind == "kernel":
            module = DynamicConv2d(64, 64, 3, padding=1, spec=spec)
            params = sum(p.numel() for p in module.parameters()) - 64 * 64 * 9 - 64
            targets = "kernel (" + ", ".join(module.router.heads) + ")"
        else:
            params = sum(p.numel() for p in build(spec, channels=64).parameters())
            targets = ", ".join(dict.fromkeys(leaf.target for leaf in spec.leaves()))
        flavors = ", ".join(presets._FLAVORS[name])
        rows.append((name, targets, f"{params:,}", flavors, spec.reference or ""))
    _table("dynattn presets (parameters added at 64 channels; for kernel presets, to a 64->64 3x3 conv)",
           ("preset", "targets", "params@64", "flavors", "reference"), rows, right=(2,))
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    from .builder import build
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


def cmd_insert(args: argparse.Namespace) -> int:
    from graph_passes import insert_attention, report

    from .spec_parse import parse_spec

    specs = [parse_spec(s) for s in args.spec]
    where = args.where if args.where is None or len(args.where) > 1 else args.where[0]
    _step(f"building {args.model} on the meta device (no weights)")
    model = _load_model(args.model)
    inputs = None
    if args.input_size:
        first = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
        if first is None:
            raise UsageError("--input-size: the model has no conv to take the input channels from")
        inputs = (torch.empty(2, first.in_channels, args.input_size, args.input_size, device="meta"),)
    _step("tracing, finding sites, inserting")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = insert_attention(model, specs if len(specs) > 1 else specs[0], where=where, example_inputs=inputs,
                               leaf_modules=args.leaf or ())
    rep = report(out)
    _table(f"{args.model}: {len(rep.records)} sites", rep.HEADER, rep.rows(), right=(3, 4))
    print(f"total: +{rep.params_added:,} parameters on {rep.params_before:,} "
          f"({100 * rep.overhead:.2f}% overhead)")
    return 0


def cmd_bench(args: argparse.Namespace, rest: list[str]) -> int:
    if any(a == "--network" or a.startswith("--network=") for a in rest):  # whole networks
        from .bench.networks import main as networks_main

        return networks_main(rest)
    from .bench.suite import main as bench_main

    return bench_main(rest)


# ------------------------------------------------------------------ entry point
class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, status 2 (argparse's own usage dump is noise)
        raise UsageError(f"{message} (see: {self.prog} --help)")


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="dynattn", description="Attention for CNNs from a declarative spec.")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)
    sub.add_parser("list", help="presets with their references and sizes")
    show = sub.add_parser("show", help="the generated code of a spec")
    show.add_argument("spec", help="a preset name, a preset call such as cbam(reduction=8), or AttnSpec(...)")
    show.add_argument("--channels", type=int, default=64)
    show.add_argument("--no-optimize", action="store_true", help="the graph before the compiler's passes")
    ins = sub.add_parser("insert", help="the sites and cost of inserting a spec into a model")
    ins.add_argument("model", help="a torchvision model name (resnet18) or timm:NAME")
    ins.add_argument("--spec", action="append", required=True, help="repeat to chain several specs")
    ins.add_argument("--where", action="append", help="residual, conv, stage, a glob, re:<regex>; repeatable")
    ins.add_argument("--input-size", type=int, help="square input size for shape propagation (default 224)")
    ins.add_argument("--leaf", action="append", help="a submodule (qualified name or glob) not to trace into")
    sub.add_parser("bench", help="the benchmark suite; arguments as python -m dynattn.bench (with --network: "
                   "as python -m dynattn.bench.networks)", add_help=False)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        if argv and argv[0] == "bench":
            return cmd_bench(argparse.Namespace(), argv[1:])
        args = _parser().parse_args(argv)
        return {"list": cmd_list, "show": cmd_show, "insert": cmd_insert}[args.command](args)
    except (UsageError, DynattnError, TypeError) as exc:
        print(f"dynattn: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("dynattn: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
