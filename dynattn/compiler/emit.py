"""Emission: a :class:`~dynattn.compiler.lower.Plan` -> a ``torch.fx.Graph`` and its modules.

The graph is built node by node (einops does not accept fx Proxies, so nothing is
traced). Nodes are named after their role (``squeeze``, ``excite``, ``gate``,
``scale``), prefixed by the stage they belong to, so ``print(module.code)`` reads like
the paper. einops calls carry ``meta["is_wrapped"]``: fx then writes ``wrap(...)`` into
the generated code, and a host model that contains the module traces through it,
recording each einops call as one node.

The graph depends only on the plan and is cached; modules (fresh parameters) are made
for every build.
"""

from __future__ import annotations

import functools
import operator
from typing import Any

import einops
import torch
import torch.fx as fx
from torch import nn

from .. import layers
from ..vocab import AXES
from . import ops
from .lower import Plan, StagePlan

__all__ = ["emit_graph", "make_modules", "ROLE"]

#: ``node.meta[ROLE]`` marks each node's role: squeeze, excite, gate, scale.
ROLE = "dynattn_role"
#: ``node.meta[BATCHABLE]``: a call of a shared excitation that may run batched with its siblings.
BATCHABLE = "dynattn_batchable"


class GraphWriter:
    """Appends named, role-tagged nodes to a fresh ``fx.Graph``."""

    def __init__(self) -> None:
        self.graph = fx.Graph()

    def _node(self, op: str, target: Any, args: tuple, kwargs: dict | None, name: str, role: str | None) -> fx.Node:
        node = self.graph.create_node(op, target, args, kwargs or {}, name=name)
        if role:
            node.meta[ROLE] = role
        return node

    def fn(self, target: Any, *args: Any, name: str, role: str | None = None, **kwargs: Any) -> fx.Node:
        return self._node("call_function", target, args, kwargs, name, role)

    def einops(self, target: Any, *args: Any, name: str, role: str | None = None) -> fx.Node:
        node = self._node("call_function", target, args, None, name, role)
        node.meta["is_wrapped"] = True  # recorded as a leaf call when a host model is traced
        return node

    def module(self, target: str, *args: Any, name: str, role: str | None = None) -> fx.Node:
        return self._node("call_module", target, args, None, name, role)

    def attr(self, target: str, name: str) -> fx.Node:
        return self._node("get_attr", target, (), None, name, None)

    def method(self, target: str, *args: Any, name: str, role: str | None = None, **kwargs: Any) -> fx.Node:
        return self._node("call_method", target, args, kwargs, name, role)

    def add_all(self, nodes: list[fx.Node], name: str, role: str | None = None) -> fx.Node:
        total = nodes[0]
        for i, node in enumerate(nodes[1:], start=2):
            total = self.fn(operator.add, total, node, name=name if i == len(nodes) else f"{name}_sum",
                            role=role if i == len(nodes) else None)
        return total


def join(prefix: str, name: str) -> str:
    return f"{prefix}_{name}" if prefix else name


def _attr(stage: StagePlan, name: str) -> str:
    return f"{stage.name}.{name}" if stage.name else name


# ---------------------------------------------------------------------------- squeeze
def _pool(w: GraphWriter, x: fx.Node, op: str, stage: StagePlan, name: str) -> fx.Node:
    target, frame = stage.spec.target, stage.frame
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


def squeeze(w: GraphWriter, x: fx.Node, stage: StagePlan) -> list[fx.Node]:
    """The pooled descriptors of ``stage`` (x itself, rotated if need be, for element targets)."""
    spec, p = stage.spec, stage.name
    if spec.target == "element":
        if not stage.rotated:
            return [x]
        return [w.einops(einops.rearrange, x, f"{ops.ORIGINAL} -> {' '.join(stage.frame)}",
                         name=join(p, "rotate"), role="squeeze")]
    single = len(spec.pool) == 1
    return [
        _pool(w, x, op, stage, join(p, "squeeze" if single else f"squeeze_{op}")) for op in spec.pool
    ]


# ---------------------------------------------------------------------------- excite
def excite(w: GraphWriter, descs: list[fx.Node], stage: StagePlan) -> fx.Node:
    """Merge the pooled descriptors and run the stage's excitation on them."""
    spec, p = stage.spec, stage.name
    excite_mod = _attr(stage, "excite")
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
def _gate(w: GraphWriter, z: fx.Node, stage: StagePlan) -> fx.Node:
    spec, p = stage.spec, stage.name
    if spec.temperature != 1.0:
        temperature = w.attr(_attr(stage, "temperature"), join(p, "temperature"))
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
        mix = w.attr(_attr(stage, "mix"), join(p, "mix"))
        delta = w.fn(operator.sub, gate, 1, name=join(p, "gate_delta"))
        scaled = w.fn(operator.mul, mix, delta, name=join(p, "gate_delta_mixed"))
        gate = w.fn(operator.add, 1, scaled, name=join(p, "gate_mixed"), role="gate")
    pattern = ops.broadcast_pattern(spec.target, stage.frame)
    if pattern is not None:
        gate = w.einops(einops.rearrange, gate, pattern, name=join(p, "gate_map"), role="gate_map")
    return gate


# ---------------------------------------------------------------------------- graph
@functools.lru_cache(maxsize=512)
def emit_graph(plan: Plan, optimize: bool = True) -> fx.Graph:
    """The fx graph of ``plan``, optimised by :mod:`dynattn.compiler.passes` unless
    ``optimize=False`` (cached; copy it before giving it to a module)."""
    w = GraphWriter()
    x = w.graph.placeholder("x")
    y = x
    for step in plan.steps:
        gates = []
        for stage in step.stages:
            descs = squeeze(w, y, stage)
            z = excite(w, descs, stage)
            gates.append(_gate(w, z, stage))
        if len(gates) > 1:
            total = w.add_all(gates, join(step.name, "gate_total"))
            gate = w.fn(operator.truediv, total, len(gates), name=join(step.name, "gate"), role="gate")
        else:
            gate = gates[0]
        y = w.fn(operator.mul, y, gate, name=join(step.name, "scale"), role="scale")
    w.graph.output(y)
    w.graph.lint()
    if optimize:
        from .passes import optimize_graph

        optimize_graph(w.graph)
    return w.graph


def copy_graph(graph: fx.Graph) -> fx.Graph:
    """A copy of ``graph`` (node metadata included) that no module owns yet."""
    new = fx.Graph()
    out = new.graph_copy(graph, {})
    new.output(out)
    return new


# ---------------------------------------------------------------------------- modules
def excite_module(stage: StagePlan, dd: dict) -> nn.Module | None:
    """The excitation layer of ``stage`` (None for ``excite="none"``)."""
    spec = stage.spec
    bn = dict(norm=spec.norm, bn_momentum=spec.bn_momentum, bn_eps=spec.bn_eps)
    if spec.excite == "none":
        return None
    if spec.excite == "mlp":
        return layers.MLP(stage.excite_in, stage.hidden, stage.excite_out, bias=spec.bias, act=spec.act, **bn, **dd)
    if spec.excite == "linear":
        return nn.Linear(stage.excite_in, stage.excite_out, bias=spec.bias, **dd)
    if spec.excite == "conv1d":
        return layers.ChannelConv1d(stage.kernel_size, in_descriptors=stage.excite_in, bias=spec.bias, **dd)
    if spec.excite == "pixel_mlp":
        return layers.PixelMLP(stage.channels, stage.hidden, bias=spec.bias, act=spec.act, **dd)
    if spec.excite == "conv" and spec.target == "spatial":
        return layers.SpatialConv(stage.excite_in, stage.kernel_size, bias=spec.bias, **bn, **dd)
    if spec.excite == "conv":
        return layers.ConvMLP(stage.channels, stage.hidden, stage.kernel_size, bias=spec.bias, act=spec.act,
                              **bn, **dd)
    raise AssertionError(f"unhandled excite {spec.excite!r}")  # the spec validated it


def _stage_modules(stage: StagePlan, dd: dict) -> dict[str, nn.Module | torch.Tensor]:
    spec = stage.spec
    out: dict[str, Any] = {}
    excite = excite_module(stage, dd)
    if excite is not None:
        out["excite"] = excite
    if spec.temperature != 1.0:
        out["temperature"] = torch.tensor(spec.temperature, device=dd["device"], dtype=dd["dtype"])
    if spec.init == "identity":
        out["mix"] = nn.Parameter(torch.zeros((), device=dd["device"], dtype=dd["dtype"]))
    return out


def make_modules(plan: Plan, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> nn.Module:
    """A fresh root module holding every stage's submodules, buffers and parameters."""
    dd = {"device": device, "dtype": dtype if dtype is not None else torch.get_default_dtype()}
    root = nn.Module()
    for step in plan.steps:
        for stage in step.stages:
            owner = root
            if stage.name:
                owner = nn.Module()
                root.add_module(stage.name, owner)
            for key, value in _stage_modules(stage, dd).items():
                if isinstance(value, nn.Parameter):
                    owner.register_parameter(key, value)
                elif isinstance(value, torch.Tensor):
                    owner.register_buffer(key, value)
                else:
                    owner.add_module(key, value)
    return root
