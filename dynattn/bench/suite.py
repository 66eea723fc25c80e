"""The benchmark suite: every preset, eager and compiled, against the hand-written reference and
against one copy of x, interleaved in one run, medians.

    python -m dynattn.bench                     # the full grid (takes a while: one compile per cell)
    python -m dynattn.bench --quick             # B=32, C=256, 28x28: the shape the goals name
    python -m dynattn.bench --device cuda --dtype bf16 --channels-last

For each preset and shape, the variants timed round-robin are: dynattn eager, dynattn
compiled (``torch.compile(fullgraph=True)``), the reference (timm's module of the same name for
SE, ECA, CBAM and every other name of ``timm.layers.create_attn``, built with ``flavor="timm"`` on
our side so the arithmetic is the same; the hand-written Triplet, GAM, SimAM, BAM, SRM and FcaNet
of :mod:`dynattn.bench.handwritten`; timm's CondConv2d for the dynamic conv), and ``x.clone()``:
one read and one write of x, the memory-traffic floor (SE's lower bound is about 1.5 copies:
read x to pool it, read and write it to scale it).

Prints a markdown table (and writes it, with a PNG plot if matplotlib is installed, to
``--out``). Ratios are times over times measured in the same interleaved run.
"""

from __future__ import annotations

import argparse
import itertools
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ..builder import build
from ..dynamic_conv import DynamicConv2d
from ..presets import get_spec
from ..spec import AttnSpec
from . import handwritten
from .timing import add_allocator_option, allocator_line, interleaved_medians, machine_summary, no_grad_call

PRESETS = ("se", "eca", "cbam", "gam", "triplet", "dyconv", "ese", "ecam", "ceca", "ge", "gc", "gca", "lcbam",
           "coord", "scoord", "ela", "strip", "simam", "bam", "srm", "fca")
#: Presets timed against timm's module of the same name (``timm.layers.create_attn``), built with
#: ``flavor="timm"`` on our side so the arithmetic is the same.
TIMM_NAMED = ("ese", "ecam", "ceca", "ge", "gc", "gca", "lcbam", "coord", "scoord", "ela", "strip")
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def _reference(preset: str, channels: int, size: int) -> tuple[nn.Module, nn.Module] | None:
    """(dynattn module, reference module) of the same arithmetic, or None without timm."""
    if preset == "gam":
        return build(AttnSpec.gam(), channels=channels), handwritten.GAMAttention(channels)
    if preset == "triplet":
        return build(AttnSpec.triplet(), channels=channels), handwritten.TripletAttention()
    if preset == "simam":
        return build(AttnSpec.simam(), channels=channels), handwritten.SimAM()
    if preset == "bam":
        return build(AttnSpec.bam(), channels=channels), handwritten.BAM(channels)
    if preset == "srm":
        return build(AttnSpec.srm(), channels=channels), handwritten.SRM(channels)
    if preset == "fca":
        return build(AttnSpec.fca(), channels=channels), handwritten.FcaNet(channels, size)
    try:
        import timm.layers as tl
        from timm.layers.cbam import CbamModule
    except ImportError:
        return None
    if preset == "se":
        return build(AttnSpec.se(flavor="timm"), channels=channels), tl.SEModule(channels)
    if preset == "eca":
        return build(AttnSpec.eca(flavor="timm"), channels=channels), tl.EcaModule(channels=channels)
    if preset == "cbam":
        return build(AttnSpec.cbam(flavor="timm"), channels=channels), CbamModule(channels)
    if preset == "dyconv":
        ours = DynamicConv2d(channels, channels, 3, padding=1, spec=AttnSpec.condconv())
        return ours, handwritten.CondConvWithRouter(channels, channels)
    if preset in TIMM_NAMED:
        return build(get_spec(preset, flavor="timm"), channels=channels), handwritten.timm_attention(preset, channels)
    raise ValueError(preset)


@dataclass
class Row:
    preset: str
    batch: int
    channels: int
    size: int
    times: dict[str, float]

    def ratio(self, a: str, b: str) -> float:
        return self.times[a] / self.times[b] if a in self.times and b in self.times else float("nan")


class _Progress:
    def __init__(self, total: int) -> None:
        self.total, self.done, self.start = total, 0, time.perf_counter()

    def step(self, label: str) -> None:
        self.done += 1
        width = 30
        filled = width * self.done // self.total
        elapsed = time.perf_counter() - self.start
        sys.stderr.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {self.done}/{self.total} {elapsed:5.0f}s "
                         f"{label:<32}")
        sys.stderr.flush()
        if self.done == self.total:
            sys.stderr.write("\n")


def run_suite(presets, batches, channels, sizes, *, device="cpu", dtype=torch.float32, channels_last=False,
              compiled=True, repeats=20, quantile=0.5, clock=time.perf_counter) -> list[Row]:
    torch._dynamo.config.cache_size_limit = max(torch._dynamo.config.cache_size_limit, 256)
    cells = list(itertools.product(presets, batches, channels, sizes))
    progress = _Progress(len(cells))
    rows = []
    for preset, b, c, s in cells:
        pair = _reference(preset, c, s)
        if pair is None:
            progress.step(f"{preset}: skipped (no timm)")
            continue
        ours, ref = (m.to(device=device, dtype=dtype).eval() for m in pair)
        x = torch.randn(b, c, s, s, device=device, dtype=dtype)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
            ours, ref = ours.to(memory_format=torch.channels_last), ref.to(memory_format=torch.channels_last)
        fns = {"ours": no_grad_call(ours, x), "reference": no_grad_call(ref, x), "copy": x.clone}
        if compiled:
            fns["ours_compiled"] = no_grad_call(torch.compile(ours, fullgraph=True), x)
        rows.append(Row(preset, b, c, s, interleaved_medians(fns, repeats=repeats, quantile=quantile, clock=clock)))
        progress.step(f"{preset} B={b} C={c} {s}x{s}")
    return rows


def table(rows: list[Row]) -> str:
    lines = [
        "| preset | B | C | HxW | eager ms | reference ms | eager / reference | compiled ms "
        "| reference / compiled | compiled / copy | copy ms |",
        "|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        t = r.times
        comp = t.get("ours_compiled", float("nan"))
        lines.append(
            f"| {r.preset} | {r.batch} | {r.channels} | {r.size}x{r.size} | {t['ours'] * 1e3:.3f} "
            f"| {t['reference'] * 1e3:.3f} | {r.ratio('ours', 'reference'):.2f}x | {comp * 1e3:.3f} "
            f"| {r.ratio('reference', 'ours_compiled'):.2f}x | {r.ratio('ours_compiled', 'copy'):.2f}x "
            f"| {t['copy'] * 1e3:.3f} |"
        )
    return "\n".join(lines)


def plot(rows: list[Row], path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    labels = [f"{r.preset}\nB{r.batch} C{r.channels} {r.size}" for r in rows]
    fig, ax = plt.subplots(figsize=(max(8, 0.6 * len(rows)), 4.5))
    idx = range(len(rows))
    ax.bar([i - 0.2 for i in idx], [r.ratio("reference", "ours") for r in rows], 0.4, label="eager")
    ax.bar([i + 0.2 for i in idx], [r.ratio("reference", "ours_compiled") for r in rows], 0.4, label="compiled")
    ax.axhline(1.0, color="black", linewidth=0.8)
    ax.set_xticks(list(idx), labels, fontsize=7)
    ax.set_ylabel("speed-up over the hand-written reference (x)")
    ax.set_title("dynattn vs hand-written attention (higher is faster)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def _ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m dynattn.bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--presets", default=",".join(PRESETS), help="comma-separated: " + ",".join(PRESETS))
    p.add_argument("--batch", default="1,32")
    p.add_argument("--channels", default="64,256")
    p.add_argument("--size", default="56,28,7")
    p.add_argument("--quick", action="store_true", help="only B=32, C=256, 28x28")
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="fp32", choices=sorted(DTYPES))
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--eager-only", action="store_true", help="skip torch.compile")
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--quantile", type=float, default=0.5,
                   help="the quantile of each variant's call times reported (0.5: the median)")
    p.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                   help="cpu: the process's CPU time per call, which time spent waiting for a core on a shared "
                        "machine does not inflate (use with --threads 1)")
    p.add_argument("--threads", type=int, help="torch.set_num_threads for the run")
    p.add_argument("--out", default="bench-results", help="folder for results.md and results.png")
    add_allocator_option(p)
    args = p.parse_args(argv)
    presets = [x for x in args.presets.split(",") if x]
    unknown = [x for x in presets if x not in PRESETS]
    if unknown:
        p.error(f"unknown preset(s) {unknown}; choose from {', '.join(PRESETS)}")
    if not 0 < args.quantile < 1:
        p.error(f"--quantile={args.quantile}: must be in (0, 1)")
    if args.threads is not None:
        if args.threads < 1:
            p.error(f"--threads={args.threads}: must be >= 1")
        torch.set_num_threads(args.threads)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        p.error("--device cuda: no CUDA device is available here")
    batches, channels, sizes = ((32,), (256,), (28,)) if args.quick else (
        _ints(args.batch), _ints(args.channels), _ints(args.size))
    allocator = allocator_line(args)
    rows = run_suite(presets, batches, channels, sizes, device=args.device, dtype=DTYPES[args.dtype],
                     channels_last=args.channels_last, compiled=not args.eager_only, repeats=args.repeats,
                     quantile=args.quantile, clock=time.process_time if args.clock == "cpu" else time.perf_counter)
    stat = "medians" if args.quantile == 0.5 else f"{args.quantile:g} quantiles"
    stat += " of CPU time" if args.clock == "cpu" else ""
    header = (f"dynattn benchmark; {args.device}, {args.dtype}{', channels_last' if args.channels_last else ''}; "
              f"{stat} of {args.repeats} interleaved runs; {machine_summary()}; {allocator}")
    text = f"{header}\n\n{table(rows)}\n"
    print(text)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.md").write_text(text)
    if plot(rows, out / "results.png"):
        print(f"wrote {out / 'results.md'} and {out / 'results.png'}")
    else:
        print(f"wrote {out / 'results.md'} (pip install matplotlib for the plot)")
    return 0
