"""Emission: a :class:`~dynattn.compiler.lower.Plan` -> a ``torch.fx.Graph``.

The graph is built node by node (einops does not accept fx Proxies, so nothing is
traced). Nodes are named after their role (``squeeze``, ``excite``, ``gate``,
``scale``), prefixed by the stage they belong to, so ``print(module.code)`` reads like
the paper. einops calls carry ``meta["is_wrapped"]``: fx then writes ``wrap(...)`` into
the generated code, and a host model that contains the module traces through it,
recording each einops call as one node.

The graph depends only on the plan and is cached; the modules it calls (fresh parameters
for every build) are made by :mod:`dynattn.compiler.instantiate`.
"""

from __future__ import annotations

import functools
import operator

import einops
import torch
import torch.fx as fx

from ..checks import check_input
from ..vocab import AXES
from . import ops
from .graph_writer import BATCHABLE, GraphWriter, join
from .lower import BranchPlan, Plan
from .optimize import optimize_graph

__all__ = ["emit_graph", "squeeze", "excite", "attr_path"]


def attr_path(branch: BranchPlan, name: str) -> str:
    return f"{branch.name}.{name}" if branch.name else name


# ---------------------------------------------------------------------------- squeeze
def _pool(w: GraphWriter, x: fx.Node, op: str, branch: BranchPlan, name: str) -> fx.Node:
    target, frame = branch.spec.target, branch.frame
    layout = ops.descriptor_layout(target, frame)
    if op in ops.EINOPS_REDUCTION:
        canon = ops.canonical_layout(target, frame)
        if canon == layout:
            return w.einops(einops.reduce, x, f"{ops.ORIGINAL} -> {layout}", ops.EINOPS_REDUCTION[op],
                            name=name, role="squeeze")
        pooled = w.einops(einops.reduce, x, f"{ops.ORIGINAL} -> {canon}", ops.EINOPS_REDUCTION[op],
                          name=f"{name}_pooled")
        return w.einops(einops.rearrange, pooled, f"{canon} -> {layout}", name=name, role="squeeze")
    fn, kwargs = ops.TORCH_REDUCTION[op]
    pooled = ops.pool_axes(target, frame)
    dims = tuple(AXES.index(a) for a in pooled)
    keep = ops.keepdim_layout(pooled)
    if keep == layout:
        return w.fn(fn, x, **kwargs, dim=dims, keepdim=True, name=name, role="squeeze")
    node = w.fn(fn, x, **kwargs, dim=dims, keepdim=True, name=f"{name}_keepdim")
    return w.einops(einops.rearrange, node, f"{keep} -> {layout}", name=name, role="squeeze")


def squeeze(w: GraphWriter, x: fx.Node, branch: BranchPlan) -> list[fx.Node]:
    """The pooled descriptors of ``branch`` (x itself, rotated if need be, for element targets)."""
    spec, p = branch.spec, branch.name
    if spec.target == "element":
        if not branch.rotated:
            return [x]
        return [w.einops(einops.rearrange, x, f"{ops.ORIGINAL} -> {' '.join(branch.frame)}",
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
        cat = torch.stack if spec.excite == "conv1d" else torch.cat
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
def _gate(w: GraphWriter, z: fx.Node, branch: BranchPlan) -> fx.Node:
    spec, p = branch.spec, branch.name
    if spec.temperature != 1.0:
        temperature = w.attr(attr_path(branch, "temperature"), join(p, "temperature"))
        z = w.fn(operator.truediv, z, temperature, name=join(p, "logits"))
    name = join(p, "gate")
    if spec.gate == "identity":
        gate = z
    elif spec.gate == "softmax":
        if spec.target == "spatial":  # a distribution over the positions
            flat = w.method("flatten", z, 2, name=join(p, "gate_logits"))
            soft = w.fn(torch.softmax, flat, -1, name=join(p, "gate_flat"))
            gate = w.method("view_as", soft, z, name=name, role="gate")
        else:  # over the channels
            gate = w.fn(torch.softmax, z, 1, name=name, role="gate")
    else:
        gate = w.fn(ops.GATE_FNS[spec.gate], z, name=name, role="gate")
    if spec.init == "identity":  # 1 + mix * (gate - 1): exactly 1 while mix == 0
        mix = w.attr(attr_path(branch, "mix"), join(p, "mix"))
        delta = w.fn(operator.sub, gate, 1, name=join(p, "gate_delta"))
        scaled = w.fn(operator.mul, mix, delta, name=join(p, "gate_delta_mixed"))
        gate = w.fn(operator.add, 1, scaled, name=join(p, "gate_mixed"), role="gate")
    pattern = ops.broadcast_pattern(spec.target, branch.frame)
    if pattern is not None:
        gate = w.einops(einops.rearrange, gate, pattern, name=join(p, "gate_map"), role="gate_map")
    return gate


# ---------------------------------------------------------------------------- graph
@functools.lru_cache(maxsize=512)
def emit_graph(plan: Plan, optimize: bool = True) -> fx.Graph:
    """The fx graph of ``plan``, optimised by :mod:`dynattn.compiler.optimize` unless
    ``optimize=False`` (cached; copy it before giving it to a module)."""
    w = GraphWriter()
    x = w.graph.placeholder("x")
    check = w.fn(check_input, x, channels=plan.channels, module=plan.class_name, name="check_input")
    check.meta["is_wrapped"] = True  # one call when a host model is traced; evaluated away by torch.compile
    y = x
    for stage in plan.stages:
        gates = []
        for branch in stage.branches:
            descs = squeeze(w, y, branch)
            z = excite(w, descs, branch)
            gates.append(_gate(w, z, branch))
        if len(gates) > 1:
            total = w.add_all(gates, join(stage.name, "gate_total"))
            gate = w.fn(operator.truediv, total, len(gates), name=join(stage.name, "gate"), role="gate")
        else:
            gate = gates[0]
        y = w.fn(operator.mul, y, gate, name=join(stage.name, "scale"), role="scale")
    w.graph.output(y)
    w.graph.lint()
    if optimize:
        optimize_graph(w.graph)
    return w.graph
