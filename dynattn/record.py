"""Record what attention does: the gate maps of every dynattn module in a model, on demand.

    with dynattn.record_gates(model) as gates:
        model(images)
    gates.maps["layer4.1.bn2_cbam"]["spatial_gate"]      # (B, 1, H, W), in [0, 1]

While recording, each attention module runs its own graph through a ``torch.fx.Interpreter``
that keeps the value of every node whose role is a gate (``gate``, ``gate_map``); outside the
``with`` block the modules run as before. Values are detached copies, so recording does not
change gradients.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.fx as fx
from torch import nn

from .compiler import ROLE, AttentionModule

__all__ = ["record_gates", "GateMaps"]


@dataclass
class GateMaps:
    """``maps[module name][node name]``: the gates recorded by the last forward pass(es)."""

    maps: dict[str, dict[str, torch.Tensor]] = field(default_factory=dict)

    def spatial(self) -> dict[str, torch.Tensor]:
        """Every recorded gate of shape (B, 1, H, W) (or (B, 1, L), (B, 1, D, H, W) on 1-D / 3-D maps), by
        "module/node"."""
        return {f"{m}/{n}": t for m, nodes in self.maps.items() for n, t in nodes.items()
                if 3 <= t.dim() <= 5 and t.shape[1] == 1 and t[0, 0].numel() > 1}


class _GateRecorder(fx.Interpreter):
    def __init__(self, module: fx.GraphModule, sink: dict[str, torch.Tensor], roles: tuple[str, ...]) -> None:
        super().__init__(module)
        self.sink, self.roles = sink, roles

    def run_node(self, n: fx.Node) -> Any:
        value = super().run_node(n)
        if n.meta.get(ROLE) in self.roles and isinstance(value, torch.Tensor):
            self.sink[n.name] = value.detach().clone()
        return value


@contextlib.contextmanager
def record_gates(model: nn.Module, roles: tuple[str, ...] = ("gate", "gate_map")) -> Iterator[GateMaps]:
    """Record the gates of every dynattn attention module in ``model`` (``model`` itself included)
    while the ``with`` block runs."""
    result = GateMaps()
    patched = []
    for name, module in model.named_modules():
        if isinstance(module, AttentionModule):
            sink = result.maps.setdefault(name or type(module).__name__, {})

            def forward(*args, _module=module, _sink=sink):
                return _GateRecorder(_module, _sink, roles).run(*args)

            module.forward = forward  # an instance attribute: shadows the class's generated forward
            patched.append(module)
    try:
        yield result
    finally:
        for module in patched:
            del module.forward
