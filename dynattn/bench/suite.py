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

``python -m dynattn.bench`` is ``dynattn bench`` (:mod:`dynattn.bench.command` prints the table, every ratio
a speed-up of dynattn, and plots it); this module times the cells. Ratios are times over times
measured in the same interleaved run.
"""

from __future__ import annotations

import itertools
import sys
import time
from dataclasses import dataclass

import torch
from torch import nn

from ..builder import build
from ..dynamic_conv import DynamicConv2d
from ..presets import get_spec
from ..spec import AttnSpec
from . import handwritten
from .timing import interleaved_medians, no_grad_call

PRESETS = ("se", "eca", "cbam", "gam", "triplet", "dyconv", "ese", "ecam", "ceca", "ge", "gc", "gca", "lcbam",
           "coord", "scoord", "ela", "strip", "simam", "bam", "srm", "fca", "se1d", "se3d", "cbam3d")
#: Rows on 1-D and 3-D maps (``build(..., spatial_dims=)``) and their number of spatial dims. A row at size s
#: has as many positions as the 2-D row's s x s: a (B, C, s * s) signal, a (B, C, 4, s / 2, s / 2) clip.
NOT_2D = {"se1d": 1, "se3d": 3, "cbam3d": 3}
#: Presets timed against timm's module of the same name (``timm.layers.create_attn``), built with
#: ``flavor="timm"`` on our side so the arithmetic is the same.
TIMM_NAMED = ("ese", "ecam", "ceca", "ge", "gc", "gca", "lcbam", "coord", "scoord", "ela", "strip")
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def _reference(preset: str, channels: int, size: int) -> tuple[nn.Module, nn.Module] | None:
    """(dynattn module, reference module) of the same arithmetic, or None without timm."""
    if preset in ("se1d", "se3d"):  # MONAI's ChannelSELayer (r=16: int(C / 16) hidden units, biases)
        spatial_dims = NOT_2D[preset]
        return (build(AttnSpec.se(), channels=channels, spatial_dims=spatial_dims),
                handwritten.se_nd(spatial_dims, channels))
    if preset == "cbam3d":
        return build(AttnSpec.cbam(), channels=channels, spatial_dims=3), handwritten.CBAM3d(channels)
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


def input_sizes(preset: str, size: int) -> tuple[int, ...]:
    """The spatial sizes of a row's input: s x s, or as many positions on a 1-D signal / 3-D clip."""
    spatial_dims = NOT_2D.get(preset, 2)
    return {1: (size * size,), 2: (size, size), 3: (4, size // 2, size // 2)}[spatial_dims]


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
        x = torch.randn(b, c, *input_sizes(preset, s), device=device, dtype=dtype)
        if channels_last and x.dim() in (4, 5):
            fmt = torch.channels_last if x.dim() == 4 else torch.channels_last_3d
            x = x.contiguous(memory_format=fmt)
            ours, ref = ours.to(memory_format=fmt), ref.to(memory_format=fmt)
        fns = {"ours": no_grad_call(ours, x), "reference": no_grad_call(ref, x), "copy": x.clone}
        if compiled:
            fns["ours_compiled"] = no_grad_call(torch.compile(ours, fullgraph=True), x)
        rows.append(Row(preset, b, c, s, interleaved_medians(fns, repeats=repeats, quantile=quantile, clock=clock)))
        progress.step(f"{preset} B={b} C={c} {'x'.join(map(str, input_sizes(preset, s)))}")
    return rows
