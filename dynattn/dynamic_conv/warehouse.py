"""KernelWarehouse: kernels assembled per sample from a warehouse of kernel cells.

Li and Yao, "KernelWarehouse: Rethinking the Design of Dynamic Convolution", ICML 2024 (arXiv:2406.07879),
as OSVAI/KernelWarehouse's ``Warehouse_Manager`` and ``KWconvNd`` compute it. A warehouse serves a group of
convs (one conv, or a stage's): its cells are (c_out, c_in, 1, ..., 1), c_out / c_in ``cell_out_ratio`` /
``cell_in_ratio`` times the greatest common divisor of the group's output / input channels (per group). Each conv's
kernel (O, I/g, *k) is split into n = (O / c_out) (I/g / c_in) prod(k) cell-sized pieces, its *mixtures*; the
warehouse holds M = max(int(budget * sum of the group's n), 1) cells. Per sample, the conv's router gives each
mixture weights over the M cells (:func:`~dynattn.compiler.ops.cell_attention`), and each piece is the weighted sum
of the cells.

The temperature initialisation (the official ``init_temperature``): the convs of a group, in order, take
consecutive ranges of cells, and at temperature 1 each mixture sees exactly one cell: with budget r >= 1 the
first of its own r cells; with budget 1/k, one mixture in k (where ``i % k == (i // k) % k``) gets a cell of its
own and the others the zero cell. The cells of each conv's range start as that conv's kaiming-normal kernel
(``fan_out``: its cells' output channels). So an upcycled conv (:meth:`fill_from_conv`) gives the conv's output
exactly at temperature 1 when the budget is >= 1; with a budget below 1 the pieces on the zero cell start at zero.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from ..errors import SpecError
from ..spec import AttnSpec

__all__ = ["WarehousePlan", "Warehouse", "plan_warehouse", "assemble_kernels"]

#: A conv's kernel shape: (out, in/groups, *kernel_size).
Shape = tuple[int, ...]


@dataclass(frozen=True)
class WarehousePlan:
    """Where each conv of a warehouse's group takes its cells from."""

    #: (c_out, c_in, 1, ...): one cell.
    cell_shape: tuple[int, ...]
    #: M, the number of cells.
    cells: int
    #: Each conv's kernel shape, in the group's order.
    shapes: tuple[Shape, ...]
    #: Each conv's first cell.
    starts: tuple[int, ...]
    budget: float

    def grid(self, index: int) -> tuple[int, int, int]:
        """(spatial pieces, output-channel pieces, input-channel pieces) of conv ``index``'s kernel."""
        out, in_g, *kernel = self.shapes[index]
        return math.prod(kernel), out // self.cell_shape[0], in_g // self.cell_shape[1]

    def mixtures(self, index: int) -> int:
        return math.prod(self.grid(index))

    def one_hot(self, index: int) -> torch.Tensor:
        """Conv ``index``'s ``(n * (M + 1),)`` blend target: each mixture's own cell, or the zero cell (index M)."""
        n, width, start = self.mixtures(index), self.cells + 1, self.starts[index]
        target = torch.zeros(n, width)
        for i, cell in enumerate(_own_cells(n, start, self.budget)):
            target[i, self.cells if cell is None else cell] = 1.0
        return target.reshape(-1)

    def own_cells(self, index: int) -> list[int | None]:
        """Each mixture of conv ``index``'s own cell (None: the zero cell)."""
        return _own_cells(self.mixtures(index), self.starts[index], self.budget)


def _own_cells(n: int, start: int, budget: float) -> list[int | None]:
    """The official ``init_temperature``: each of n mixtures' own cell from ``start`` on (None: the zero cell)."""
    if budget >= 1:
        return [start + i * int(budget) for i in range(n)]
    k, out = round(1 / budget), []
    for i in range(n):
        if i % k == (i // k) % k:
            out.append(start)
            start += 1
        else:
            out.append(None)
    return out


def _used_cells(n: int, budget: float) -> int:
    return n * int(budget) if budget >= 1 else sum(c is not None for c in _own_cells(n, 0, budget))


def plan_warehouse(spec: AttnSpec, shapes: Sequence[Shape]) -> WarehousePlan:
    """The warehouse of a group of convs with kernel ``shapes`` (out, in/groups, *kernel), as the official
    ``Warehouse_Manager.store`` sizes it; a clear SpecError where the official code would fail an assert or a
    reshape (a cell ratio whose cell does not divide every conv's channels, a budget below 1 whose cells the
    temperature initialisation cannot all assign)."""
    shapes = tuple(tuple(int(v) for v in s) for s in shapes)
    dims = {len(s) for s in shapes}
    if not shapes or len(dims) != 1:
        raise SpecError("convs", shapes, "a warehouse serves one or more convs of one rank")
    out_gcd, in_gcd = math.gcd(*(s[0] for s in shapes)), math.gcd(*(s[1] for s in shapes))
    cell_out = max(int(out_gcd * spec.cell_out_ratio), 1)
    cell_in = max(int(in_gcd * spec.cell_in_ratio), 1)
    for name, axis, cell in (("cell_out_ratio", 0, cell_out), ("cell_in_ratio", 1, cell_in)):
        bad = [s[axis] for s in shapes if s[axis] % cell]
        if bad:
            raise SpecError(name, getattr(spec, name), f"gives cells of {cell} channels, which do not divide "
                            f"{bad[0]} (the convs' {'output' if axis == 0 else 'input per group'} channels)",
                            hint="use a ratio of 1, 1/2, 1/4 ... whose cells divide every conv's channels")
    mixtures = [math.prod(s[2:]) * (s[0] // cell_out) * (s[1] // cell_in) for s in shapes]
    cells = max(int(sum(mixtures) * spec.budget), 1)
    starts, end = [], 0
    for n in mixtures:
        starts.append(end)
        end += _used_cells(n, spec.budget)
    if end != cells:
        raise SpecError("budget", spec.budget, f"the temperature initialisation assigns {end} cells of the "
                        f"warehouse's {cells} (its convs' {sum(mixtures)} kernel cells times the budget)",
                        hint="a budget below 1 needs each conv's kernel cells in multiples of 1/budget squared: "
                             "lower cell_ratio, or use a budget >= 1")
    return WarehousePlan((cell_out, cell_in, *(1,) * (len(shapes[0]) - 2)), cells, shapes, tuple(starts), spec.budget)


class Warehouse(nn.Module):
    """The cells (M, c_out, c_in, 1, ...) that a group of KernelWarehouse convs mixes their kernels from: one
    module, a submodule of each conv of the group (so a deepcopy, a pickle or ``load_state_dict`` keeps the
    sharing; ``model.parameters()`` lists its cells once)."""

    def __init__(self, plan: WarehousePlan, *, device: torch.device | str | None = None,
                 dtype: torch.dtype | None = None) -> None:
        super().__init__()
        self.plan = plan
        self.cells = nn.Parameter(torch.empty(plan.cells, *plan.cell_shape, device=device, dtype=dtype))
        for index in range(len(plan.shapes)):
            self.reset_cells(index)

    @torch.no_grad()
    def reset_cells(self, index: int) -> None:
        """Conv ``index``'s cells, kaiming-normal (``fan_out``) over their output channels, as ``allocate`` does."""
        start = self.plan.starts[index]
        end = self.plan.starts[index + 1] if index + 1 < len(self.plan.starts) else self.plan.cells
        block = self.cells[start:end]
        nn.init.kaiming_normal_(block.view(-1, *block.shape[2:]), mode="fan_out", nonlinearity="relu")

    @torch.no_grad()
    def fill_from_conv(self, index: int, weight: torch.Tensor) -> None:
        """Conv ``index``'s own cells take the pieces of ``weight`` (out, in/groups, *kernel), so that at
        temperature 1 the assembled kernel is ``weight`` (the pieces of mixtures on the zero cell excepted)."""
        spatial, go, gi = self.plan.grid(index)
        co, ci = self.plan.cell_shape[:2]
        pieces = weight.reshape(go, co, gi, ci, spatial).permute(4, 0, 2, 1, 3).reshape(-1, *self.plan.cell_shape)
        own = self.plan.own_cells(index)
        kept = torch.tensor([i for i, cell in enumerate(own) if cell is not None], device=weight.device)
        cells = torch.tensor([cell for cell in own if cell is not None], device=weight.device)
        if len(kept) < len(own):  # below 1x: the pieces on the zero cell have no cell to go to
            pieces = pieces[kept]
        self.cells.index_copy_(0, cells, pieces.to(self.cells.dtype))

    def extra_repr(self) -> str:
        return f"cells={self.plan.cells}, cell_shape={self.plan.cell_shape}, convs={len(self.plan.shapes)}"


def assemble_kernels(attention: torch.Tensor, cells: torch.Tensor, grid: tuple[int, int, int],
                     kernel_size: tuple[int, ...]) -> torch.Tensor:
    """The B per-sample kernels (B, O, I/g, *kernel) from the mixtures' attention (B * n, M) over ``cells``
    (M, c_out, c_in, 1, ...): ``KWconvNd.forward``'s ``mm``, reshape and permute."""
    spatial, go, gi = grid
    co, ci = cells.shape[1], cells.shape[2]
    mixed = torch.mm(attention, cells.reshape(cells.shape[0], -1))
    mixed = mixed.reshape(-1, spatial, go, gi, co, ci)  # (B, spatial, go, gi, co, ci): the cells are 1 x 1
    return mixed.permute(0, 2, 4, 3, 5, 1).reshape(-1, go * co, gi * ci, *kernel_size)
