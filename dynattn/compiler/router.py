"""The kernel target: ``(AttnSpec, conv geometry)`` -> a router ``x -> (gate per head, ...)``.

The router is compiled like a feature attention (the same pooling, merging and excitation
code), but its excitation ends in one linear layer whose outputs are every head's logits,
divided by the temperature, gated once per run of neighbouring heads with the same gate (ODConv's
in, out and spatial sigmoids are one call) and split by head:

- ``kernel``: K mixing weights over the expert kernels (the spec's gate: softmax or sigmoid);
- ``in`` / ``out``: sigmoid attentions over input / output channels (ODConv's alpha_c, alpha_f);
- ``spatial``: a sigmoid attention over the kernel positions (kh * kw; k or kd * kh * kw for a 1-D
  or 3-D conv: ODConv's alpha_s);
- ``latent``: DCD's dynamic channel fusion Phi, L * L values per sample (no gate), which the conv
  applies in its latent space of L channels (``spec.latent_dim``);
- ``cells``: KernelWarehouse's attention, for each of the conv's n mixtures (cell-sized pieces of its kernel)
  weights over the M cells of its warehouse (``ConvGeometry.warehouse``), normalised and blended toward each
  mixture's own cell by the temperature (:func:`~dynattn.compiler.ops.cell_attention`): (B * n, M).

The scaling heads ``in`` / ``out`` / ``spatial`` take ``spec.scale_gate`` (sigmoid; DCD's Lambda:
``hard_sigmoid_x2``). With ``spec.pool_grid`` g > 1 the router averages x over a g x g grid and
flattens the cells (DCD's basic block), so its input width is C * g ** spatial_dims.

The router pools over every spatial axis of its conv's input: (B, C, L), (B, C, H, W) or
(B, C, D, H, W), by the number of spatial dims of the conv's kernel.

Heads that cannot matter for the conv are dropped, as ODConv's code does: ``kernel`` with one
expert, ``spatial`` for a 1x1 kernel, ``out`` for a depthwise conv with as many outputs as
inputs.
"""

from __future__ import annotations

import copy
import functools
import math
import operator
from dataclasses import dataclass
from typing import Any

import torch
import torch.fx as fx
from torch import nn

from ..errors import SpecError
from ..spec import AttnSpec
from ..vocab import AXES_BY_SPATIAL_DIMS
from .emit import excite, squeeze
from .graph_writer import GraphWriter, join
from .instantiate import excite_module
from .lower import BranchPlan, hidden_width
from .module import SpecModule
from .ops import GATE_FNS, blend, cell_attention, grid_mean
from .optimize import optimize_graph

__all__ = ["ConvGeometry", "HeadPlan", "RouterPlan", "RouterModule", "lower_router", "build_router", "latent_dim",
           "router_width"]


@dataclass(frozen=True)
class ConvGeometry:
    """What a router needs to know about its conv (``kernel_size`` has one int per spatial dim)."""

    in_channels: int
    out_channels: int
    #: (kh, kw); (k,) or (kd, kh, kw) for a 1-D or 3-D conv.
    kernel_size: tuple[int, ...]
    groups: int
    #: KernelWarehouse (the ``cells`` head): (the conv's mixtures n, its warehouse's cells M); else (0, 0).
    warehouse: tuple[int, int] = (0, 0)


def router_width(spec: AttnSpec, geometry: ConvGeometry) -> int:
    """The width of a router's pooled descriptor: C_in, or C_in * g ** spatial_dims pooled over a grid."""
    return geometry.in_channels * spec.pool_grid ** len(geometry.kernel_size)


def latent_dim(spec: AttnSpec, geometry: ConvGeometry) -> int:
    """The size L of DCD's latent space: ``spec.latent_dim``, or the integer square root of the router's input
    width (DCD's ``int(sqrt(C))``; ``int(sqrt(4 C))`` with its basic block's 2 x 2 grid)."""
    return spec.latent_dim if spec.latent_dim is not None else max(1, math.isqrt(router_width(spec, geometry)))


@dataclass(frozen=True)
class HeadPlan:
    name: str
    size: int
    gate: str
    #: The value an identity-initialised head starts at (None: the head is not blended with it).
    neutral: float | None


@dataclass(frozen=True)
class RouterPlan:
    spec: AttnSpec
    geometry: ConvGeometry
    branch: BranchPlan
    heads: tuple[HeadPlan, ...]

    @property
    def total(self) -> int:
        return sum(h.size for h in self.heads)


def _heads(spec: AttnSpec, g: ConvGeometry) -> tuple[HeadPlan, ...]:
    positions = math.prod(g.kernel_size)
    identity = spec.init == "identity"
    scale = spec.scale_gate
    out: list[HeadPlan] = []
    for name in spec.heads:
        if name == "kernel" and spec.experts > 1:
            neutral = 1.0 / spec.experts if identity and spec.gate != "softmax" else None
            out.append(HeadPlan("kernel", spec.experts, spec.gate, neutral))
        elif name == "in":
            out.append(HeadPlan("in", g.in_channels, scale, 1.0 if identity else None))
        elif name == "out" and not (g.groups == g.in_channels == g.out_channels):
            out.append(HeadPlan("out", g.out_channels, scale, 1.0 if identity else None))
        elif name == "spatial" and positions > 1:
            out.append(HeadPlan("spatial", positions, scale, 1.0 if identity else None))
        elif name == "latent":  # the latent path starts at 0 instead (its last 1x1 conv at zero)
            out.append(HeadPlan("latent", latent_dim(spec, g) ** 2, "identity", None))
        elif name == "cells":  # starts at each mixture's own cell through the temperature instead
            mixtures, cells = g.warehouse
            if mixtures < 1 or cells < 1:
                raise SpecError("ConvGeometry.warehouse", g.warehouse, "the 'cells' head needs the conv's mixtures "
                                "and its warehouse's cells",
                                hint="build it through DynamicConv2d(..., spec=AttnSpec.kw())")
            out.append(HeadPlan("cells", mixtures * (cells + 1), "cells", None))
    if not out:
        raise SpecError(
            "AttnSpec.heads", spec.heads,
            f"leave nothing dynamic for this conv (experts={spec.experts}, kernel "
            f"{'x'.join(map(str, g.kernel_size))}, "
            f"groups={g.groups})", hint="use experts > 1 or add an 'in' head",
        )
    return tuple(out)


@functools.lru_cache(maxsize=512)
def lower_router(spec: AttnSpec, geometry: ConvGeometry) -> RouterPlan:
    if spec.kind != "kernel":
        raise SpecError("AttnSpec.target", spec.target, "a router needs a kernel-target spec", ("kernel",))
    c = router_width(spec, geometry)
    merged = len(spec.pool) if spec.merge == "concat" else 1
    hidden = hidden_width(spec, c) if spec.excite == "mlp" else None
    heads = _heads(spec, geometry)
    frame = AXES_BY_SPATIAL_DIMS[len(geometry.kernel_size)]  # the conv's: (B, C, L), (B, C, H, W) or (B, C, D, H, W)
    branch = BranchPlan("", spec, frame, c, merged * c, hidden, None, sum(h.size for h in heads))
    return RouterPlan(spec, geometry, branch, heads)


def _runs(heads: tuple[HeadPlan, ...]) -> list[tuple[HeadPlan, ...]]:
    """The heads in runs that share one gate call: neighbours with the same elementwise gate and the
    same neutral value (ODConv's in, out and spatial sigmoids); a softmax head stands alone."""
    runs: list[list[HeadPlan]] = []
    for head in heads:
        last = runs[-1][-1] if runs else None
        if (last is not None and head.gate not in ("softmax", "identity") and head.gate == last.gate
                and head.neutral == last.neutral):
            runs[-1].append(head)
        else:
            runs.append([head])
    return [tuple(run) for run in runs]


def _run_name(run: tuple[HeadPlan, ...]) -> str:
    """A run of heads' name in the graph: its heads' names joined (``in_out_spatial``)."""
    return "_".join(h.name for h in run)


def _neutral_buffer(run: tuple[HeadPlan, ...]) -> str:
    """The buffer holding the neutral value of a run of identity-initialised heads (``torch.lerp`` takes it
    as a tensor)."""
    return f"{_run_name(run)}_neutral"


def _pooled(w: GraphWriter, x: fx.Node, plan: RouterPlan) -> list[fx.Node]:
    """The router's descriptors: x pooled globally, or averaged over a grid of ``pool_grid`` cells per axis and
    flattened channel-major (c, cell), as DCD's ``avg_pool(x).view(b, 4 c)``."""
    grid = plan.spec.pool_grid
    if grid == 1:
        return squeeze(w, x, plan.branch)
    cells = w.fn(grid_mean, x, grid, name="squeeze_grid")
    return [w.method("flatten", cells, 1, name="squeeze", role="squeeze")]


@functools.lru_cache(maxsize=512)
def emit_router(plan: RouterPlan) -> fx.Graph:
    w = GraphWriter()
    x = w.graph.placeholder("x")
    z = excite(w, _pooled(w, x, plan), plan.branch)  # pooled over every spatial axis of the conv's input
    temperature = w.attr("temperature", "temperature")
    if plan.heads[0].gate == "cells":  # KernelWarehouse: the temperature blends instead of dividing
        gate = w.fn(cell_attention, z, temperature, w.attr("cell_one_hot", "cell_one_hot"), plan.geometry.warehouse[1],
                    name="cells_gate", role="gate")
        w.graph.output((gate,))
        w.graph.lint()
        return optimize_graph(w.graph)
    logits = w.fn(operator.truediv, z, temperature, name="logits")
    # one gate call per run of heads with the same gate: fewer ops per layer (what a batch of 1 pays for)
    runs = _runs(plan.heads)
    names = [_run_name(run) for run in runs]
    if len(runs) > 1:
        parts = w.fn(torch.split_with_sizes, logits, [sum(h.size for h in run) for run in runs], 1, name="head_logits")
        per_run = [w.fn(operator.getitem, parts, i, name=f"{name}_logits") for i, name in enumerate(names)]
    else:
        per_run = [logits]
    gates = []
    for run, name, node in zip(runs, names, per_run):
        head = run[0]
        single = len(run) == 1  # the run's gate is the head's gate
        identity_init = head.neutral is not None
        role = "gate" if single and not identity_init else None
        if head.gate == "softmax":
            gate = w.fn(torch.softmax, node, -1, name=join(name, "gate"), role=role)
        elif head.gate == "identity":
            gate = node
        else:
            gate = w.fn(GATE_FNS[head.gate], node, name=join(name, "gate"), role=role)
        if single:
            per_head = [gate]
        else:
            split = w.fn(torch.split_with_sizes, gate, [h.size for h in run], 1, name=f"{name}_gates")
            per_head = [w.fn(operator.getitem, split, i, name=join(h.name, "unmixed" if identity_init else "gate"),
                             role=None if identity_init else "gate") for i, h in enumerate(run)]
        if identity_init:  # neutral + mix * (gate - neutral), one mix per head: one lerp each
            neutral = w.attr(_neutral_buffer(run), _neutral_buffer(run))
            per_head = [w.fn(blend, g, w.attr(f"{h.name}_mix", f"{h.name}_mix"), neutral,
                             name=join(h.name, "gate"), role="gate") for g, h in zip(per_head, run)]
        gates.extend(per_head)
    w.graph.output(tuple(gates))
    w.graph.lint()
    return optimize_graph(w.graph)


class RouterModule(SpecModule):
    """A dynamic convolution's router: ``x -> (gate of each head, ...)``."""

    _SIZE_ATTRS = ("geometry",)
    _EXTRA_ATTRS = ("heads", "latent_dim")

    @classmethod
    def rebuild(cls, spec: AttnSpec, *sizes: Any) -> RouterModule:
        (geometry,) = sizes
        return build_router(spec, geometry)


def _router_modules(plan: RouterPlan, dd: dict) -> nn.Module:
    spec = plan.spec
    root = nn.Module()
    root.excite = excite_module(plan.branch, dd)
    root.register_buffer("temperature", torch.tensor(spec.temperature, **dd))
    if plan.heads[0].gate == "cells":  # each mixture's own cell, set by the conv that owns the router
        root.register_buffer("cell_one_hot", torch.zeros(plan.heads[0].size, **dd))
    for head in plan.heads:
        if head.neutral is not None:
            root.register_parameter(f"{head.name}_mix", nn.Parameter(torch.zeros((), **dd)))
    for run in _runs(plan.heads):
        if run[0].neutral is not None:  # a constant, not state: kept out of the state_dict
            root.register_buffer(_neutral_buffer(run), torch.tensor(run[0].neutral, **dd), persistent=False)
    return root


def build_router(
    spec: AttnSpec,
    geometry: ConvGeometry,
    *,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> RouterModule:
    """The router of a dynamic conv with ``geometry`` (fresh parameters; plan and graph cached)."""
    plan = lower_router(spec, geometry)
    dd = {"device": device, "dtype": dtype if dtype is not None else torch.get_default_dtype()}
    module = RouterModule(_router_modules(plan, dd), copy.deepcopy(emit_router(plan)),
                          class_name=f"{spec.name or 'Kernel'}Router")
    module.spec = spec
    module.geometry = geometry
    module.heads = tuple(h.name for h in plan.heads)
    module.latent_dim = latent_dim(spec, geometry) if "latent" in module.heads else None
    module.meta["dynattn_code"] = module.code
    return module
