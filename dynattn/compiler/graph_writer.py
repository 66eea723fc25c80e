"""``GraphWriter``: appends named, role-tagged nodes to a fresh ``torch.fx.Graph``; the node
metadata keys the compiler writes (``ROLE``, ``BATCHABLE``) and its optimisation passes read.
"""

from __future__ import annotations

import operator
from typing import Any

import torch.fx as fx

__all__ = ["GraphWriter", "ROLE", "BATCHABLE", "join"]

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
        # dynattn.einops_calls's functions: recorded as one call each when a host model is traced
        return self._node("call_function", target, args, None, name, role)

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


