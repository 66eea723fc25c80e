"""The ``dynattn`` command (also ``python -m dynattn``).

    dynattn --version
    dynattn list                                     presets, references, parameters per 64 channels
    dynattn list --fields                            every AttnSpec field and the values it takes
    dynattn show cbam                                the generated torch.fx code of a spec
    dynattn show "AttnSpec(pool=['avg', 'max'], target='spatial')"
    dynattn show cbam --gates photo.jpg              its spatial gates over an image, as a PNG (matplotlib)
    dynattn sites resnet50 --spec se --where residual    where it would go (graph_passes.list_sites)
    dynattn insert resnet50 --spec se --where residual   what inserting it adds (graph_passes.report)
    dynattn insert timm:efficientnet_b0 --spec dyconv
    dynattn bench --quick                            time every preset against hand-written modules
    dynattn bench --network resnet18 --spec dyconv   whole networks (python -m dynattn.bench.networks)
    dynattn search --task digits --presets se,eca,cbam --trials 8    which attention, where (Optuna)

Models are built without weights on the meta device, so ``sites`` and ``insert`` cost no
memory and download nothing. A user mistake prints one message, ``dynattn: error: ...`` (wrapped to 80
columns, later lines indented), and exits with status 2; tables are plain text that fits 80 columns
(``--wide``: unwrapped).
"""

from __future__ import annotations

import argparse
import contextlib
import difflib
import importlib.util
import platform
import re
import shlex
import sys
import warnings
from collections.abc import Collection, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from . import __version__
from .bench.usage import CommandParser, UsageError, run_command
from .errors import DynattnError

if TYPE_CHECKING:
    from torch import nn

__all__ = ["main"]


# ------------------------------------------------------------------ output
WIDTH = 80  # every table and message fits a terminal of this many columns (``--wide``: the tables in full)

def _table(title: str, header: Sequence[str], rows: list[Sequence[str]], right: Sequence[int] = (),
           wide: bool = False) -> None:
    """Print ``title`` and a plain-text table (the same text wherever it runs: no optional renderer), its last
    column wrapped onto continuation lines so that it fits ``WIDTH`` columns unless ``wide``."""
    from graph_passes.report import text_table

    print(title)
    print(text_table(header, rows if wide else _wrap_last(header, rows), right))


def _wrap_last(header: Sequence[str], rows: list[Sequence[str]], width: int = WIDTH) -> list[Sequence[str]]:
    """``rows`` with each last cell too long for ``width`` split at spaces over several rows (the others blank)."""
    import textwrap

    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header) - 1)]
    room = max(width - sum(widths) - 2 * (len(header) - 1), len(header[-1]), 12)
    out: list[Sequence[str]] = []
    for row in rows:
        lines = textwrap.wrap(str(row[-1]), room, break_on_hyphens=False) or [""]
        out.append((*row[:-1], lines[0]))
        out.extend((*[""] * (len(row) - 1), line) for line in lines[1:])
    return out


def _step(message: str) -> None:
    print(f"... {message}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------ commands

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
        return _list_fields(args.wide)
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
    _table("dynattn presets", header, rows if args.wide else _fit(header, rows), right=(2,), wide=True)
    print("params@64: parameters added at 64 channels (kernel ones: to a 64->64 3x3 conv)\n"
          "targets: where the weights go (kernel presets: the router's heads)\n"
          "timm: flavor='timm' reproduces timm's module: get_spec(name, flavor='timm')")
    return 0


def _list_fields(wide: bool) -> int:
    import dataclasses

    from .spec import AttnSpec
    from .vocab import FIELD_VALUES

    rows = []
    for f in dataclasses.fields(AttnSpec):
        values = FIELD_VALUES[f.name]
        shown = values if isinstance(values, str) else ", ".join(map(repr, values))
        default = "(by target)" if f.default is None and f.name in ("pool", "target", "merge", "excite", "gate") \
            else repr(f.default)
        rows.append((f.name, default, shown))
    _table("AttnSpec fields (a field set where it has no effect is an error)", ("field", "default", "values"), rows,
           wide=wide)
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    from . import build
    from .dynamic_conv import DynamicConv2d
    from .spec_parse import parse_spec

    spec = parse_spec(args.spec)
    if args.channels <= 0:
        raise UsageError(f"--channels={args.channels}: must be > 0")
    if args.gates is None and args.out is not None:
        raise UsageError(f"--out {args.out}: the file --gates IMAGE writes; without --gates, show writes nothing")
    image = None
    if args.gates is not None:  # a mistake in the spec or the image: reported before any output
        _check_gates_spec(spec)
        image = _read_image(args.gates)
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
    if image is not None:
        _draw_gates(spec, image, args)
    return 0


# ------------------------------------------------------------------ show --gates IMAGE
GATES_SIZE = 512  # --gates downsizes a larger image to this many pixels on its longer side
GATES_PAD = 16  # pixels of edge replication around the image, cut from the gates (zero padding draws a frame)


def _has_spatial_gate(spec) -> bool:
    return any(leaf.target == "spatial" and leaf.gate != "identity" for leaf in spec.leaves())


def _check_gates_spec(spec) -> None:
    """A UsageError, before any work, for a spec whose gates are not maps over the image."""
    from .presets import PRESETS

    drawn = ", ".join(name for name, make in PRESETS.items() if _has_spatial_gate(make()))
    name = spec.name or "this spec"
    if spec.kind == "kernel":
        raise UsageError(f"--gates: {name} is a kernel spec, which weighs conv kernels per sample: no map over the "
                         f"image to draw (specs with a spatial gate: {drawn})")
    if not _has_spatial_gate(spec):
        targets = ", ".join(dict.fromkeys(leaf.target for leaf in spec.leaves()))
        raise UsageError(f"--gates: {name} has no spatial gate to draw, no stage with target='spatial' and a gate "
                         f"other than 'identity' (its targets: {targets}); specs with one: {drawn}")


def _read_image(path: str):
    """IMAGE as a (1, C, H, W) float tensor in [0, 1] (an alpha channel dropped, downsized to GATES_SIZE)."""
    import numpy as np
    import torch

    try:
        from matplotlib import image as mpimg
    except ImportError:
        raise UsageError("--gates draws with matplotlib, an optional extra: pip install matplotlib") from None
    if not Path(path).is_file():
        raise UsageError(f"--gates {path}: no such file")
    try:
        pixels = np.asarray(mpimg.imread(path))
    except (OSError, ValueError, SyntaxError) as exc:
        raise UsageError(f"--gates {path}: not an image matplotlib reads ({exc})") from None
    if pixels.dtype.kind in "ui":
        pixels = pixels / np.iinfo(pixels.dtype).max
    image = torch.tensor(pixels, dtype=torch.float32)
    image = image[None] if image.dim() == 2 else image.permute(2, 0, 1)
    if image.shape[0] in (2, 4):  # grey or RGB with alpha: the alpha channel is no content
        image = image[:-1]
    scale = GATES_SIZE / max(image.shape[-2:])
    if scale < 1:
        size = [max(1, round(n * scale)) for n in image.shape[-2:]]
        image = torch.nn.functional.interpolate(image[None], size=size, mode="area")[0]
    return image[None]


def _record_spatial_gates(spec, image, channels: int, optimize: bool):
    """The spatial gates (B, 1, H, W) of the spec over ``image`` in a seeded, untrained model (see --gates)."""
    import torch
    from torch import nn

    from . import GateMaps, build, record_gates

    torch.manual_seed(0)
    stem = nn.Sequential(nn.Conv2d(image.shape[1], channels, 5, padding=2, padding_mode="replicate"), nn.ReLU())
    attention = build(spec.with_init("default"), channels=channels, optimize=optimize).eval()
    x = (image - image.mean((2, 3), keepdim=True)) / image.std((2, 3), keepdim=True).clamp_min(1e-3)
    x = nn.functional.pad(x, [GATES_PAD] * 4, mode="replicate")
    with torch.no_grad(), record_gates(attention) as gates:
        attention(stem(x))
    cut = slice(GATES_PAD, -GATES_PAD)
    maps = {module: {node: t[:, :, cut, cut] for node, t in nodes.items()
                     if t.dim() == 4 and t.shape[1:] == (1, *x.shape[2:])} for module, nodes in gates.maps.items()}
    return GateMaps({module: nodes for module, nodes in maps.items() if nodes})


def _draw_gates(spec, image, args: argparse.Namespace) -> None:
    """--gates IMAGE: record the spec's spatial gates over the image and draw them with GateMaps.plot."""
    gates = _record_spatial_gates(spec, image, args.channels, not args.no_optimize)
    if not gates.maps:
        raise UsageError(f"--gates: {spec.name or 'this spec'} records no gate over the whole map to draw")
    name = re.sub(r"\W+", "_", (spec.name or "spec").lower())
    out = Path(args.out or f"outputs/show/{name}_gates.png")
    import matplotlib.pyplot as plt

    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        figure = gates.plot(out, image)
    except OSError as exc:
        raise UsageError(f"--out {out}: cannot write it ({exc})") from None
    plt.close(figure)
    print(f"# gates drawn: {', '.join(gates.spatial())} ({image.shape[-1]}x{image.shape[-2]} pixels, "
          f"{args.channels} feature maps)\n# wrote {out}")


def _load_model(name: str) -> nn.Module:
    import torch

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
    import torch
    from torch import nn

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


#: Python calls that library messages suggest, and the command that does the same here
_PYTHON_TO_CLI = {"graph_passes.list_sites(model, spec, where='re:.*')": "dynattn sites {model} {spec} --where 're:.*'"}


@contextlib.contextmanager
def _cli_hints(args: argparse.Namespace) -> Iterator[None]:
    """A library error raised inside, reported with the command a CLI user runs instead of the Python call."""
    try:
        yield
    except DynattnError as exc:
        text = str(exc)
        spec = " ".join(f"--spec {shlex.quote(s)}" for s in args.spec)
        for python, command in _PYTHON_TO_CLI.items():
            text = text.replace(python, command.format(model=shlex.quote(args.model), spec=spec))
        raise UsageError(text) from None


def cmd_insert(args: argparse.Namespace) -> int:
    from graph_passes import insert_attention, report

    spec, where, model, inputs = _prepare(args)
    _step("tracing, finding sites, inserting")
    with warnings.catch_warnings(), _cli_hints(args):
        warnings.simplefilter("ignore")
        out = insert_attention(model, spec, where=where, example_inputs=inputs, leaf_modules=args.leaf or ())
    rep = report(out)
    _table(f"{args.model}: {len(rep.records)} sites", rep.HEADER, rep.rows(), right=(3, 4), wide=args.wide)
    print(f"total: +{rep.params_added:,} parameters on {rep.params_before:,} "
          f"({100 * rep.overhead:.2f}% overhead)")
    return 0


def cmd_sites(args: argparse.Namespace) -> int:
    from graph_passes import list_sites

    spec, where, model, inputs = _prepare(args)
    _step("tracing, finding sites")
    with warnings.catch_warnings(), _cli_hints(args):
        warnings.simplefilter("ignore")
        sites = list_sites(model, spec, where=where, example_inputs=inputs, leaf_modules=args.leaf or ())
    rows = []
    for site in sites:
        # graph_passes.Site: how it was selected and what produces it (``rule`` / ``producer``,
        # ``kind`` / ``module`` in earlier versions)
        how = getattr(site, "rule", None) or getattr(site, "kind", "")
        producer = getattr(site, "producer", None) or getattr(site, "module", "")
        if how == "conv" and len(site.shape) == 2:  # a conv a kernel-target spec would replace: (in, out)
            shape = f"{site.shape[0]} -> {site.shape[1]}"
        else:
            shape = f"{site.shape[2]}x{site.shape[3]}" if len(site.shape) == 4 else str(tuple(site.shape))
        rows.append((site.name, how, str(site.channels), shape, producer))
    where_text = " ".join(f"--where {w}" for w in args.where) if args.where else "the default placement"
    convs = [" -> " in row[3] for row in rows]
    shape_head = "conv in -> out" if convs and all(convs) else "map" if not any(convs) else "map / conv"
    _table(f"{args.model}: {len(sites)} sites ({where_text})", ("site", "selected as", "channels", shape_head,
                                                                   "from"), rows, right=(2,), wide=args.wide)
    print("dynattn insert with the same arguments shows the modules and parameters\neach site would get.")
    return 0


# ------------------------------------------------------------------ entry point
def _torch_version() -> str:
    """torch's version as ``torch.__version__`` has it (with the build, e.g. 2.5.1+cpu), read from its
    ``torch/version.py`` without importing torch (seconds); else the installed distribution's version."""
    if "torch" in sys.modules:
        return str(sys.modules["torch"].__version__)
    found = importlib.util.find_spec("torch")
    if found is not None and found.origin:
        with contextlib.suppress(OSError):
            text = Path(found.origin).with_name("version.py").read_text()
            match = re.search(r"^__version__\s*=\s*['\"]([^'\"]+)['\"]", text, flags=re.M)
            if match:
                return match.group(1)
    from importlib import metadata

    try:
        return metadata.version("torch")
    except metadata.PackageNotFoundError:
        return "not installed"


def _list_options(cmd: argparse.ArgumentParser) -> None:
    cmd.description = "Every preset: where its weights go, its parameters at 64 channels, its paper."
    cmd.add_argument("--fields", action="store_true", help="the spec's fields and the values each takes")
    cmd.add_argument("--wide", action="store_true", help=f"the full table, wider than {WIDTH} columns")


def _show_options(cmd: argparse.ArgumentParser) -> None:
    cmd.description = ("Print the torch.fx code a spec compiles to (a kernel spec: its router's); with --gates, "
                       "draw its spatial gates over an image.")
    cmd.add_argument("spec", help="a preset name, a preset call such as cbam(reduction=8), or AttnSpec(...)")
    cmd.add_argument("--channels", type=int, default=64, help="the channel count to build for (default 64)")
    cmd.add_argument("--no-optimize", action="store_true", help="the graph before the compiler's passes")
    cmd.add_argument("--gates", metavar="IMAGE",
                     help="also draw the spec's spatial gates over IMAGE (PNG, or what Pillow reads; needs "
                          "matplotlib) to --out. The model is untrained and seeded: a 5x5 conv from the image's "
                          "channels to --channels feature maps, ReLU, then the spec with its default init (an "
                          "identity init would draw a constant gate), recorded by dynattn.record_gates and drawn by "
                          f"GateMaps.plot; an image over {GATES_SIZE} pixels is downsized. A spec without a "
                          "spatial gate (se, a kernel spec) is an error")
    cmd.add_argument("--out", metavar="PNG", help="the picture --gates writes (default outputs/show/NAME_gates.png, "
                                                  "NAME: the spec's name in lower case)")


def _model_options(cmd: argparse.ArgumentParser) -> None:
    """sites' and insert's options (the same: insert shows what sites previews)."""
    cmd.description += " The model is built on the meta device: no weights, no downloads."
    cmd.add_argument("model", help="a torchvision model name (resnet18) or timm:NAME (timm:efficientnet_b0)")
    cmd.add_argument("--spec", action="append", required=True,
                     help="a preset name, a preset call such as cbam(reduction=8), or AttnSpec(...); "
                          "repeat to chain several specs at each site")
    cmd.add_argument("--where", action="append",
                     help="residual, conv, stage, decoder, skip, encoder, a glob such as 'layer*', "
                          "re:<regex>; repeat for the union (default: residual, with skip and decoder where the "
                          "model has them; without residual adds encoder, skip and decoder; else stage; the "
                          "preset's own conversion sites for a kernel spec, see dynattn.conv_placement)")
    cmd.add_argument("--input-size", type=int, help="square input size for shape propagation (default 224)")
    cmd.add_argument("--leaf", action="append",
                     help="a submodule (qualified name or glob) not to trace into; repeatable")
    cmd.add_argument("--wide", action="store_true", help=f"the table unwrapped, wider than {WIDTH} columns")


def _bench_options(cmd: argparse.ArgumentParser) -> None:
    from .bench import command as bench  # the bench command's own module: its options and its run

    cmd.description = bench.DESCRIPTION
    bench.add_arguments(cmd)


def _search_options(cmd: argparse.ArgumentParser) -> None:
    from .search import command as search  # Optuna is imported only when a search runs

    cmd.description = search.DESCRIPTION
    search.add_arguments(cmd)


#: Each command's line in ``dynattn --help``, and what adds its options (bench's and search's import torch).
COMMAND_HELP = {
    "list": "presets with their targets, sizes and papers",
    "show": "the generated code of a spec (--gates: its gates over an image)",
    "sites": "where a spec would go in a model (graph_passes.list_sites); nothing is built",
    "insert": "the modules and parameters inserting a spec into a model adds",
    "bench": "time every preset against hand-written modules and one copy of x",
    "search": "search which attention, where, pays off on a task (Optuna)",
}
_OPTIONS = {"list": _list_options, "show": _show_options, "sites": _model_options, "insert": _model_options,
            "bench": _bench_options, "search": _search_options}


def _parser(commands: Collection[str] = tuple(COMMAND_HELP)) -> argparse.ArgumentParser:
    """The command line. Only the commands in ``commands`` get their options; the others are a name and a help
    line, which is all ``dynattn --help`` prints: :func:`main` builds the options of the command it runs only,
    so that ``--help`` and ``--version`` answer without importing torch."""
    p = CommandParser(prog="dynattn", description="Attention for CNNs from a declarative spec.")
    p.add_argument("--version", action="version", help="print the versions of dynattn, torch and Python, and exit",
                   version=f"dynattn {__version__} (torch {_torch_version()}, Python {platform.python_version()})")
    sub = p.add_subparsers(dest="command", required=True, parser_class=CommandParser, metavar="COMMAND")
    for name, text in COMMAND_HELP.items():
        cmd = sub.add_parser(name, help=text, description=text[0].upper() + text[1:] + ".")
        if name in commands:
            _OPTIONS[name](cmd)
    return p


#: The commands this module runs; ``bench`` runs in :mod:`dynattn.bench.command`, ``search`` in
#: :mod:`dynattn.search.command`.
COMMANDS = {"list": cmd_list, "show": cmd_show, "sites": cmd_sites, "insert": cmd_insert}


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["bench"]:
        from .bench import command as bench

        if bench.wants_networks(argv[1:]):  # whole networks: that module's own options
            from .bench.networks import main as networks_main

            return networks_main(argv[1:])
    command = next((a for a in argv if not a.startswith("-")), None)  # dynattn's own options take no value
    return run_command(_parser(commands=[command] if command else []), _run, argv)


def _run(args: argparse.Namespace) -> int:
    if args.command == "bench":
        from .bench import command as bench

        return bench.run(args)
    if args.command == "search":
        from .search import command as search

        return search.run(args)
    return COMMANDS[args.command](args)


if __name__ == "__main__":
    raise SystemExit(main())
