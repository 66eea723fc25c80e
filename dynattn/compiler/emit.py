"""Emission: a :class:`~dynattn.compiler.lower.Plan` -> a ``torch.fx.Graph``.

The graph is built node by node (einops does not accept fx Proxies, so nothing is
traced). Nodes are named after their role (``squeeze``, ``excite``, ``gate``,
``scale``), prefixed by the stage they belong to, so ``print(module.code)`` reads like
the paper. The einops calls are :mod:`dynattn.einops_calls`'s: a host model that contains the
module traces through it, recording each einops call as one node.

The graph depends only on the plan and is cached; the modules it calls (fresh parameters
for every build) are made by :mod:`dynattn.compiler.instantiate`.
"""

from __future__ import annotations

import functools
import operator

import torch
import torch.fx as fx
import torch.nn.functional as F

from .. import einops_calls
from ..checks import check_input
from ..spec import AttnSpec
from ..vocab import AXES_BY_SPATIAL_DIMS, FUSE_NEUTRAL, MODULE_POOLS
from . import ops
from .graph_writer import BATCHABLE, GraphWriter, join
from .lower import BranchPlan, GroupPlan, Plan, StagePlan
from .optimize import optimize_graph

__all__ = ["emit_graph", "squeeze", "excite", "attr_path"]


def attr_path(branch: BranchPlan, name: str) -> str:
    return f"{branch.name}.{name}" if branch.name else name


# ---------------------------------------------------------------------------- squeeze
def _pool(w: GraphWriter, x: fx.Node, op: str, branch: BranchPlan, name: str) -> fx.Node:
    if op in MODULE_POOLS:  # attention / DCT pooling: a module of the branch, (B, C, H, W) -> (B, C)
        return w.module(attr_path(branch, f"pool_{op}"), x, name=name, role="squeeze")
    if branch.spec.extent:
        return _extent_pool(w, x, op, branch.spec.extent, len(branch.frame) - 2, name)
    target, frame = branch.spec.target, branch.frame
    layout = ops.descriptor_layout(target, frame)
    source, axes = ops.original(frame), ops.axes_of(frame)
    if op in ops.EINOPS_REDUCTION:
        canon = ops.canonical_layout(target, frame)
        if canon == layout:
            return w.einops(einops_calls.reduce, x, f"{source} -> {layout}", ops.EINOPS_REDUCTION[op],
                            name=name, role="squeeze")
        pooled = w.einops(einops_calls.reduce, x, f"{source} -> {canon}", ops.EINOPS_REDUCTION[op],
                          name=f"{name}_pooled")
        return w.einops(einops_calls.rearrange, pooled, f"{canon} -> {layout}", name=name, role="squeeze")
    fn, kwargs = ops.TORCH_REDUCTION[op]
    pooled = ops.pool_axes(target, frame)
    dims = tuple(axes.index(a) for a in pooled)
    keep = ops.keepdim_layout(pooled, axes)
    if keep == layout:
        return w.fn(fn, x, **kwargs, dim=dims, keepdim=True, name=name, role="squeeze")
    node = w.fn(fn, x, **kwargs, dim=dims, keepdim=True, name=f"{name}_keepdim")
    return w.einops(einops_calls.rearrange, node, f"{keep} -> {layout}", name=name, role="squeeze")


_AVG_POOLS = {1: F.avg_pool1d, 2: F.avg_pool2d}
_MAX_POOLS = {1: torch.max_pool1d, 2: torch.max_pool2d, 3: torch.max_pool3d}


def _extent_pool(w: GraphWriter, x: fx.Node, op: str, extent: int, spatial_dims: int, name: str) -> fx.Node:
    """Gather-excite's gather: windows of 2e - 1, stride e, padded by e - 1 (padding not counted),
    along every spatial axis."""
    window = dict(kernel_size=2 * extent - 1, stride=extent, padding=extent - 1)
    if op == "avg" and spatial_dims == 3:  # avg_pool3d refuses maps smaller than the window, padding or not
        return w.fn(ops.window_mean3d, x, **window, name=name, role="squeeze")
    if op == "avg":
        return w.fn(_AVG_POOLS[spatial_dims], x, **window, count_include_pad=False, name=name, role="squeeze")
    return w.fn(_MAX_POOLS[spatial_dims], x, **window, name=name, role="squeeze")


def _strip_pool(w: GraphWriter, x: fx.Node, op: str, axis: str, axes: tuple[str, ...], name: str) -> fx.Node:
    """The strip along ``axis``: ``op`` over every other spatial axis (in 2-D, the H strip b c h 1 and
    the W strip b c 1 w; a 1-D map is its own strip)."""
    if len(axes) == 3:
        return x
    layout = " ".join(a if a in ("b", "c", axis) else "1" for a in axes)
    if op in ops.EINOPS_REDUCTION:
        return w.einops(einops_calls.reduce, x, f"{' '.join(axes)} -> {layout}", ops.EINOPS_REDUCTION[op], name=name,
                        role="squeeze")
    fn, kwargs = ops.TORCH_REDUCTION[op]
    dims = tuple(i for i, a in enumerate(axes) if i >= 2 and a != axis)
    return w.fn(fn, x, **kwargs, dim=dims, keepdim=True, name=name, role="squeeze")


def squeeze(w: GraphWriter, x: fx.Node, branch: BranchPlan) -> list[fx.Node]:
    """The pooled descriptors of ``branch`` (x itself, rotated if need be, where it pools nothing)."""
    spec, p = branch.spec, branch.name
    if spec.pool == ("none",):
        if not branch.rotated:
            return [x]
        return [w.einops(einops_calls.rearrange, x, f"{ops.original(branch.frame)} -> {' '.join(branch.frame)}",
                         name=join(p, "rotate"), role="squeeze")]
    single = len(spec.pool) == 1
    return [
        _pool(w, x, op, branch, join(p, "squeeze" if single else f"squeeze_{op}")) for op in spec.pool
    ]


# ---------------------------------------------------------------------------- excite
def excite(w: GraphWriter, descs: list[fx.Node], branch: BranchPlan) -> fx.Node:
    """Merge the pooled descriptors and run the branch's excitation on them."""
    spec, p = branch.spec, branch.name
    excite_mod = attr_path(branch, "excite")
    if len(descs) > 1 and spec.merge == "mean":
        total = w.add_all(descs, join(p, "squeeze_total"))
        descs = [w.fn(operator.truediv, total, len(spec.pool), name=join(p, "squeeze"), role="squeeze")]
    elif len(descs) > 1 and spec.merge == "concat":
        cat = torch.stack if spec.excite in ("conv1d", "conv1d_mlp", "channelwise") else torch.cat
        descs = [w.fn(cat, descs, dim=1, name=join(p, "squeeze"), role="squeeze")]
    if spec.excite == "none":
        return w.add_all(descs, join(p, "excite"), role="excite") if len(descs) > 1 else descs[0]
    if len(descs) == 1:
        return w.module(excite_mod, descs[0], name=join(p, "excite"), role="excite")
    outs = [
        w.module(excite_mod, d, name=join(p, f"excite_{op}"), role="excite")
        for d, op in zip(descs, spec.pool)
    ]
    for node in outs:  # a shared excitation without BatchNorm treats the rows of a batch alike
        node.meta[BATCHABLE] = spec.norm is None
    return w.add_all(outs, join(p, "excite"), role="excite")


# ---------------------------------------------------------------------------- gate
def _activate(w: GraphWriter, z: fx.Node, spec: AttnSpec, owner: str, prefix: str, suffix: str = "") -> fx.Node:
    """``gate(z / temperature)``, named ``<prefix>_gate<suffix>``; ``owner`` is the module path that holds
    the temperature buffer."""
    name = join(prefix, "gate" + suffix)
    if spec.temperature != 1.0:
        temperature = w.attr(f"{owner}.temperature" if owner else "temperature", join(prefix, "temperature"))
        z = w.fn(operator.truediv, z, temperature, name=join(prefix, "logits" + suffix))
    if spec.gate == "identity":
        return z
    if spec.gate == "softmax":
        if spec.target == "spatial":  # a distribution over the positions
            flat = w.method("flatten", z, 2, name=f"{name}_logits")
            soft = w.fn(torch.softmax, flat, -1, name=f"{name}_flat")
            return w.method("view_as", soft, z, name=name, role="gate")
        return w.fn(torch.softmax, z, 1, name=name, role="gate")  # over the channels
    return w.fn(ops.GATE_FNS[spec.gate], z, name=name, role="gate")


def _blend_identity_gate(w: GraphWriter, gate: fx.Node, spec: AttnSpec, owner: str, prefix: str) -> fx.Node:
    """An identity-initialised gate: ``n + mix * (gate - n)``, exactly the neutral value ``n`` of the
    spec's fuse (1 for x * w, 0 for x * (1 + w) and x + w) while ``mix == 0``. With n = 1 that is
    ``(1 - mix) + mix * gate``: one pass over the gate (``torch.addcmul``), the rest on the scalar mix."""
    mix = w.attr(f"{owner}.mix" if owner else "mix", join(prefix, "mix"))
    if FUSE_NEUTRAL[spec.fuse] == 0.0:
        return w.fn(operator.mul, mix, gate, name=join(prefix, "gate_mixed"), role="gate")
    keep = w.fn(operator.sub, 1, mix, name=join(prefix, "gate_keep"))
    return w.fn(torch.addcmul, keep, mix, gate, name=join(prefix, "gate_mixed"), role="gate")


def _gate(w: GraphWriter, z: fx.Node, branch: BranchPlan) -> fx.Node:
    spec, p = branch.spec, branch.name
    gate = _activate(w, z, spec, branch.name, p)
    if spec.init == "identity":
        gate = _blend_identity_gate(w, gate, spec, branch.name, p)
    pattern = ops.broadcast_pattern(spec.target, branch.frame)
    if pattern is not None:
        gate = w.einops(einops_calls.rearrange, gate, pattern, name=join(p, "gate_map"), role="gate_map")
    return gate


def _strip_gate(w: GraphWriter, x: fx.Node, branch: BranchPlan, factors: bool = False) -> fx.Node | list[fx.Node]:
    """A strip stage: one strip per spatial axis, x pooled over the other spatial axes (in 2-D: along W
    the H strip, along H the W strip), each excited, then merged: ``sum`` adds the excitations before
    one gate, ``prod`` multiplies the gates. With ``factors``, a ``prod`` stage without identity init
    returns the gates, for x to be scaled by one after the other (each gate is small; their product
    formed at x's size first would be one more tensor of x's size to write and read)."""
    spec, p = branch.spec, branch.name
    axes = ops.axes_of(branch.frame)
    spatial = axes[2:]
    strips = [_strip_pool(w, x, spec.pool[0], axis, axes, join(p, f"squeeze_{axis}")) for axis in spatial]
    if spec.excite == "none":
        zs = strips
    else:
        every = w.module(attr_path(branch, "excite"), *strips, name=join(p, "excite"), role="excite")
        zs = [w.fn(operator.getitem, every, i, name=join(p, f"excite_{axis}"), role="excite")
              for i, axis in enumerate(spatial)]
    if len(zs) == 1:  # a 1-D map: one strip, the map itself
        gate = _activate(w, zs[0], spec, branch.name, p)
    elif spec.merge == "sum":
        gate = _activate(w, w.add_all(zs, join(p, "excite_sum"), role="excite"), spec, branch.name, p)
    else:
        gates = [_activate(w, z, spec, branch.name, p, f"_{axis}") for z, axis in zip(zs, spatial)]
        if factors and spec.init == "default":
            return gates
        gate = gates[0]
        for i, g in enumerate(gates[1:], start=2):
            gate = w.fn(operator.mul, gate, g, name=join(p, "gate" if i == len(gates) else f"gate_{i}"),
                        role="gate" if i == len(gates) else None)
    return _blend_identity_gate(w, gate, spec, branch.name, p) if spec.init == "identity" else gate


def _extent_gate(w: GraphWriter, x: fx.Node, branch: BranchPlan) -> fx.Node:
    """A channel gate per window of a local extent, resized back to x's H x W (gather-excite)."""
    spec, p = branch.spec, branch.name
    gate = _activate(w, excite(w, squeeze(w, x, branch), branch), spec, branch.name, p)
    if spec.init == "identity":
        gate = _blend_identity_gate(w, gate, spec, branch.name, p)
    return w.fn(ops.resize_like, gate, x, name=join(p, "gate_map"), role="gate_map")


def _branch_gate(w: GraphWriter, x: fx.Node, branch: BranchPlan, factors: bool = False) -> fx.Node | list[fx.Node]:
    """One branch's gate map, broadcastable against x (or its factors: see :func:`_strip_gate`)."""
    if branch.spec.target == "strip":
        return _strip_gate(w, x, branch, factors)
    if branch.spec.extent:
        return _extent_gate(w, x, branch)
    return _gate(w, excite(w, squeeze(w, x, branch), branch), branch)


def _stage_gate(w: GraphWriter, x: fx.Node, stage: StagePlan, factors: bool = False) -> fx.Node | list[fx.Node]:
    """A stage's gate map: its branches' gates, averaged."""
    if len(stage.branches) == 1:
        return _branch_gate(w, x, stage.branches[0], factors)
    gates = [_branch_gate(w, x, branch) for branch in stage.branches]
    total = w.add_all(gates, join(stage.name, "gate_total"))
    return w.fn(operator.truediv, total, len(gates), name=join(stage.name, "gate"), role="gate")


def _group_gate(w: GraphWriter, x: fx.Node, group: GroupPlan) -> fx.Node:
    """A parallel composite: its stages' gate maps from the same x, summed or multiplied, then its gate."""
    spec, p = group.spec, group.name
    combine = operator.add if spec.merge == "sum" else operator.mul
    combined = _stage_gate(w, x, group.stages[0])
    for i, stage in enumerate(group.stages[1:], start=2):
        last = i == len(group.stages)
        combined = w.fn(combine, combined, _stage_gate(w, x, stage),
                        name=join(p, "combined" if last else f"combined_{i}"), role="excite" if last else None)
    gate = _activate(w, combined, spec, p, p)
    return _blend_identity_gate(w, gate, spec, p, p) if spec.init == "identity" else gate


def _fuse(w: GraphWriter, x: fx.Node, gate: fx.Node | list[fx.Node], fuse: str, prefix: str, spatial_dims: int = 2
          ) -> fx.Node:
    """x * w, x * (1 + w) or x + w; x * w_1 * w_2 ... for a gate given as its factors (one per strip,
    in the order of the map's ``spatial_dims`` spatial axes)."""
    if isinstance(gate, list):
        axes = AXES_BY_SPATIAL_DIMS[spatial_dims][2:]
        for i, factor in enumerate(gate):
            last = i == len(gate) - 1
            x = w.fn(operator.mul, x, factor, name=join(prefix, "scale" if last else f"scale_{axes[i]}"),
                     role="scale")
        return x
    if fuse == "add":
        return w.fn(operator.add, x, gate, name=join(prefix, "add"), role="scale")
    if fuse == "mul_one_plus":
        gate = w.fn(operator.add, 1, gate, name=join(prefix, "gate_one_plus"), role="gate_map")
    return w.fn(operator.mul, x, gate, name=join(prefix, "scale"), role="scale")


# ---------------------------------------------------------------------------- graph
@functools.lru_cache(maxsize=512)
def emit_graph(plan: Plan, optimize: bool = True) -> fx.Graph:
    """The fx graph of ``plan``, optimised by :mod:`dynattn.compiler.optimize` unless
    ``optimize=False`` (cached; copy it before giving it to a module)."""
    w = GraphWriter()
    x = w.graph.placeholder("x")
    # 2-D code reads as it always has: the default number of spatial dims is not written out (check_input's
    # keyword for it stays ``dims``: generated code, saved graphs included, calls it by that name)
    shape_check = {} if plan.spatial_dims == 2 else {"dims": plan.spatial_dims}
    w.fn(check_input, x, channels=plan.channels, module=plan.class_name, **shape_check, name="check_input")
    y = x
    for stage in plan.stages:
        if isinstance(stage, GroupPlan):
            y = _fuse(w, y, _group_gate(w, y, stage), stage.spec.fuse, stage.name)
        else:
            fuse = stage.branches[0].spec.fuse
            y = _fuse(w, y, _stage_gate(w, y, stage, factors=fuse == "mul"), fuse, stage.name, plan.spatial_dims)
    w.graph.output(y)
    w.graph.lint()
    if optimize:
        optimize_graph(w.graph)
    return w.graph
