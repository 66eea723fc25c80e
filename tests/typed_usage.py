"""The public API as a user's typed code calls it: mypy checks this file (tests/test_packaging.py), so a public
signature that loses or breaks its type hints fails there. It is type-checked, not run by pytest.

The presets are reached through ``get_spec``: ``AttnSpec.<preset>`` methods are attached when dynattn.presets is
imported, so a type checker does not see them (``AttnSpec.cbam`` is an attr-defined error in typed code)."""

from __future__ import annotations

import torch
from torch import nn

import dynattn
import graph_passes
from dynattn import (
    AttnSpec,
    DynamicConv1d,
    DynamicConv2d,
    DynamicConv3d,
    DynattnError,
    GateMaps,
    SpecError,
    TemperatureSchedule,
    build,
    get_spec,
    list_presets,
    load_timm_weights,
    parse_spec,
    record_gates,
    set_temperature,
)
from graph_passes import (
    InsertionReport,
    LeafTracer,
    Site,
    TraceFailure,
    insert_attention,
    is_rewritten,
    list_sites,
    original_class,
    report,
    rewritten_code,
)


def specs() -> list[AttnSpec]:
    chained = AttnSpec.chain(get_spec("eca"), AttnSpec(target="spatial", pool=("max", "avg", "std"), kernel_size=5))
    names: tuple[str, ...] = list_presets()
    return [get_spec("cbam", init="identity"), get_spec("cbam", flavor="timm"), parse_spec("se(reduction=8)"), chained,
            *(get_spec(name) for name in names)]


def modules(x: torch.Tensor) -> torch.Tensor:
    cbam: nn.Module = build(get_spec("cbam"), channels=64)
    clip: nn.Module = build(get_spec("triplet"), channels=64, spatial_dims=3)
    conv: DynamicConv2d = DynamicConv2d(64, 64, 3, padding=1, spec=get_spec("dyconv", experts=4))
    wave = DynamicConv1d(1, 8, 9, stride=4, spec=get_spec("condconv"))
    volume = DynamicConv3d.from_conv(nn.Conv3d(16, 32, 3, padding=1), get_spec("dyconv"))
    schedule = TemperatureSchedule(conv, start=30, end=1, steps=1000)
    schedule.step()
    changed: int = set_temperature(nn.Sequential(conv, wave, volume), 1.0)
    assert changed and clip is not cbam
    return conv(cbam(x))


def passes(model: nn.Module) -> str:
    sites: list[Site] = list_sites(model, get_spec("se"), where="residual")
    out: nn.Module = insert_attention(model, [get_spec("se", init="identity"), "eca"], where=["layer*", "re:.*add"])
    rep: InsertionReport = report(out)
    with record_gates(out) as gates:
        out(torch.randn(1, 3, 64, 64))
    maps: GateMaps = gates
    rewritten: bool = is_rewritten(out)
    kind: type[nn.Module] = original_class(out)
    tracer = LeafTracer(rep.leaves)
    assert sites and maps and rewritten and kind and tracer
    return rewritten_code(out)


def timm_weights(ours: nn.Module, theirs: nn.Module) -> nn.Module:
    return load_timm_weights(ours, theirs)


def errors() -> str:
    try:
        AttnSpec(gate="sigmod")
    except SpecError as err:
        return str(err)
    except (DynattnError, TraceFailure) as err:
        return repr(err)
    return dynattn.__version__ + graph_passes.__name__
