"""Upcycling a group of convs into KernelWarehouse convs that share one warehouse (``insert_attention`` with
``AttnSpec.kw(sharing="stage")`` calls it once per stage)."""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from ..presets import as_spec
from ..spec import AttnSpec
from .module import _DynamicConvNd, dynamic_conv_class
from .warehouse import Warehouse, plan_warehouse

__all__ = ["upcycle_shared"]


def upcycle_shared(spec: AttnSpec | str, convs: Sequence[nn.Module]) -> list[_DynamicConvNd]:
    """One upcycled dynamic conv per conv of ``convs`` (plain convs of one rank), all taking their kernels from one
    warehouse planned for them in the order given (the official ``Warehouse_Manager`` assigns cells in module
    order). Each conv's own cells take its kernel, so at temperature 1 each output is its conv's (budget >= 1)."""
    spec = as_spec(spec)
    shapes = [(c.out_channels, c.in_channels // c.groups, *c.kernel_size) for c in convs]
    weight = convs[0].weight
    warehouse = Warehouse(plan_warehouse(spec, shapes), device=weight.device, dtype=weight.dtype)
    return [dynamic_conv_class(c).from_conv(c, spec, warehouse=(warehouse, i)) for i, c in enumerate(convs)]
