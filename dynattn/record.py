"""Record what attention does: the gate maps of every dynattn module in a model, on demand.

    with dynattn.record_gates(model) as gates:
        model(images)
    gates.maps["layer4.1.bn2_cbam"]["spatial_gate"]      # (B, 1, H, W), in [0, 1]

While recording, each attention module runs its own graph through a ``torch.fx.Interpreter``
that keeps the value of every node whose role is a gate (``gate``, ``gate_map``); outside the
``with`` block the modules run as before. Values are detached copies, so recording does not
change gradients.

``gates.plot("gates.png", images)`` draws every 2-D spatial gate of one sample over its input image
(matplotlib, an optional extra: ``pip install matplotlib``; imported only when drawing).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.fx as fx
from torch import nn

from .compiler import ROLE, AttentionModule
from .errors import InputError

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

    def plot(self, path: str | Path | None = None, images: torch.Tensor | None = None, *, index: int = 0,
             ax: Any = None, alpha: float = 0.55) -> Any:
        """Draw the 2-D spatial gates of sample ``index``, one panel each, labelled "module/node" with a colour
        bar of the gate's values; with ``images`` (B, C, H, W, as given to the model), each gate is resized to
        the image and drawn over it. Saved to ``path`` (a PNG) when given; with ``ax`` (a matplotlib Axes),
        only the first gate is drawn there. Returns the matplotlib Figure. Needs matplotlib."""
        plt = _pyplot()
        gates = {name: t for name, t in self.spatial().items() if t.dim() == 4}
        if not gates:
            raise InputError("GateMaps", sorted(self.spatial()) or sorted(self.maps),
                             "no 2-D spatial gate (B, 1, H, W) was recorded: run the model inside "
                             "record_gates(model) with a spec whose target is spatial")
        if ax is not None:
            gates = dict(list(gates.items())[:1])
            figure, axes = ax.figure, [ax]
        else:
            cols = min(len(gates), 4)
            rows = -(-len(gates) // cols)
            figure, grid = plt.subplots(rows, cols, figsize=(3.6 * cols, 3.2 * rows), squeeze=False,
                                        layout="constrained")
            axes = list(grid.flat)
            for unused in axes[len(gates):]:
                unused.axis("off")
        for panel, (name, gate) in zip(axes, gates.items()):
            _draw_gate(figure, panel, name, gate[index, 0].float(), images, index, alpha)
        if path is not None:
            figure.savefig(path, dpi=100)
        return figure


def _pyplot() -> Any:
    """matplotlib.pyplot, or an ImportError that says what to install (an optional extra)."""
    try:
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise ImportError("GateMaps.plot draws with matplotlib, an optional extra: pip install matplotlib") from exc
    return plt


def _draw_gate(figure: Any, ax: Any, name: str, gate: torch.Tensor, images: torch.Tensor | None, index: int,
               alpha: float) -> None:
    """One gate on ``ax``: over its image (resized to it) when ``images`` is given, with a colour bar."""
    if images is not None:
        image = images[index].detach().float().cpu()
        gate = torch.nn.functional.interpolate(gate[None, None], size=image.shape[-2:], mode="bilinear",
                                               align_corners=False)[0, 0]
        shown = image.permute(1, 2, 0) if image.shape[0] == 3 else image[0]
        lo, hi = shown.min(), shown.max()
        ax.imshow(((shown - lo) / (hi - lo + 1e-12)).numpy(), cmap=None if image.shape[0] == 3 else "gray")
    drawn = ax.imshow(gate.cpu().numpy(), cmap="magma", alpha=alpha if images is not None else 1.0)
    figure.colorbar(drawn, ax=ax, shrink=0.8, label="gate value")
    ax.set_title(name, fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])


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
