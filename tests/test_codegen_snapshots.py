"""The generated code is a user-facing artifact: each preset's ``module.code`` is snapshotted.

Regenerate after an intended change with ``python -m pytest tests/test_codegen_snapshots.py
--update-snapshots`` and review the diff. Without the flag a missing or changed snapshot fails.
"""

from pathlib import Path

import pytest

from dynattn import AttnSpec, DynamicConv1d, DynamicConv2d, DynamicConv3d, build

SNAPSHOTS = Path(__file__).parent / "snapshots"

CASES = {
    "se": AttnSpec.se(),
    "se_timm": AttnSpec.se(flavor="timm"),
    "eca": AttnSpec.eca(),
    "cbam": AttnSpec.cbam(),
    "cbam_timm": AttnSpec.cbam(flavor="timm"),
    "cbam_identity": AttnSpec.cbam(init="identity"),
    "gam": AttnSpec.gam(),
    "triplet": AttnSpec.triplet(),
    "triplet_no_spatial": AttnSpec.triplet(no_spatial=True),
    "lse_softmax_spatial": AttnSpec(target="spatial", pool=["lse", "std"], gate="softmax", temperature=2.0),
    # the gating-attention zoo: every other feature preset, and the flavors whose graphs differ
    "ese": AttnSpec.ese(),
    "ecam": AttnSpec.ecam(),
    "ceca": AttnSpec.ceca(),
    "ge": AttnSpec.ge(),
    "ge_timm_extent2": AttnSpec.ge(2, flavor="timm"),
    "gc": AttnSpec.gc(),
    "gc_timm": AttnSpec.gc(flavor="timm"),
    "gca_timm": AttnSpec.gca(flavor="timm"),
    "lcbam": AttnSpec.lcbam(),
    "coord": AttnSpec.coord(),
    "coord_identity": AttnSpec.coord(init="identity"),
    "scoord": AttnSpec.scoord(),
    "ela": AttnSpec.ela(),
    "strip": AttnSpec.strip(),
    "simam": AttnSpec.simam(),
    "bam": AttnSpec.bam(),
    "bam_identity": AttnSpec.bam(init="identity"),
    "srm": AttnSpec.srm(),
    "fca": AttnSpec.fca(),
    "scse": AttnSpec.scse(),
    "scse_identity": AttnSpec.scse(init="identity"),
}


#: The same specs on 1-D (B, C, L) and 3-D (B, C, D, H, W) maps: (spec, spatial_dims).
RANKS = {
    f"{name}_{dims}d": (spec, dims)
    for name, spec in {"se": AttnSpec.se(), "cbam": AttnSpec.cbam(), "triplet": AttnSpec.triplet(),
                       "coord": AttnSpec.coord(), "gam": AttnSpec.gam(),
                       "ge_timm_extent2": AttnSpec.ge(2, flavor="timm"), "ela": AttnSpec.ela()}.items()
    for dims in (1, 3)
}

ROUTERS = {
    "router_condconv": AttnSpec.condconv(),
    "router_dyconv": AttnSpec.dyconv(),
    "router_odconv": AttnSpec.odconv(),
    "router_odconv_upcycled": AttnSpec.odconv(init="identity"),
    "router_avg_max": AttnSpec(pool=["avg", "max"], target="kernel"),
    "router_dcd": AttnSpec.dcd(),
    "router_dcd_basic": AttnSpec.dcd(pool_grid=2),
}
CASES.update(ROUTERS)
CASES.update(RANKS)
CASES.update({"router_odconv_1d": (AttnSpec.odconv(), 1), "router_dyconv_3d": (AttnSpec.dyconv(), 3)})


def render(case: AttnSpec | tuple[AttnSpec, int]) -> str:
    spec, dims = case if isinstance(case, tuple) else (case, 2)
    if spec.kind == "kernel":  # the router of a 64 -> 64, 3x3 dynamic conv (3 or 3x3x3 on other ranks)
        module = {1: DynamicConv1d, 2: DynamicConv2d, 3: DynamicConv3d}[dims](64, 64, 3, padding=1, spec=spec).router
    else:
        module = build(spec, channels=64, spatial_dims=dims)
    return f"# {type(module).__name__}: {spec!r}\n{module.code.strip()}\n"


@pytest.mark.parametrize("name", list(CASES))
def test_code_snapshot(name, request):
    text = render(CASES[name])
    path = SNAPSHOTS / f"{name}.py.txt"
    if request.config.getoption("--update-snapshots"):
        path.write_text(text)
    if not path.exists():
        pytest.fail(f"missing snapshot {path.name}: run with --update-snapshots, review it and commit it")
    assert text == path.read_text(), f"generated code for {name} changed; see {path} (--update-snapshots)"


def test_code_reads_like_the_paper():
    code = build(AttnSpec.cbam(), channels=64).code
    for role in ("channel_squeeze_avg", "channel_excite_batched", "channel_gate", "channel_scale",
                 "spatial_squeeze", "spatial_excite", "spatial_gate", "spatial_scale"):
        assert f"{role} =" in code
    plain = build(AttnSpec.cbam(), channels=64, optimize=False).code  # before the compiler's passes
    assert "channel_excite_avg = self.channel.excite(channel_squeeze_avg)" in plain
    assert "'b c h w -> b c', 'mean'" in code and "'b c h w -> b 1 h w', 'max'" in code
    assert type(build(AttnSpec.cbam(), channels=32)).__name__ == "CBAM"
