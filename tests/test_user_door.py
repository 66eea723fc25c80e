"""The user's door: parse_spec, spec.layer (timm), record_gates, the CLI's output."""

import subprocess
import sys

import pytest
import torch
from torch import nn

import dynattn
from dynattn import AttnSpec, SpecError, build, parse_spec, record_gates
from dynattn.cli import main


@pytest.mark.parametrize("text,expected", [
    ("cbam", AttnSpec.cbam()),
    ("CBAM", AttnSpec.cbam()),
    ("cbam(reduction=8, flavor='timm')", AttnSpec.cbam(8, flavor="timm")),
    ("AttnSpec(pool=['avg', 'max'], target='kernel')", AttnSpec(pool=["avg", "max"], target="kernel")),
    ("AttnSpec.se(init='identity')", AttnSpec.se(init="identity")),
    ("AttnSpec.chain(AttnSpec.eca(), AttnSpec(target='spatial'), name='X')",
     AttnSpec.chain(AttnSpec.eca(), AttnSpec(target="spatial"), name="X")),
    ("AttnSpec(target='spatial', branches=('b c h w -> b h c w',), kernel_size=3)",
     AttnSpec(target="spatial", branches=["b c h w -> b h c w"], kernel_size=3)),
])
def test_parse_spec(text, expected):
    assert parse_spec(text) == expected
    assert parse_spec(repr(expected)) == expected  # a spec's repr parses back


@pytest.mark.parametrize("text", ["", "1 + 2", "exec('x')", "AttnSpec(**{'gate': 'tanh'})", "cbam(reduction=x)",
                                  "AttnSpec('channel')"])
def test_parse_spec_rejects_anything_but_specs_and_literals(text):
    with pytest.raises(SpecError, match=r"spec=|preset="):
        parse_spec(text)


def test_spec_layer_for_timm():
    timm = pytest.importorskip("timm")
    model = timm.create_model("resnet18", block_args=dict(attn_layer=AttnSpec.cbam(init="identity").layer))
    assert all(type(b.se).__name__ == "CBAM" for b in model.modules() if hasattr(b, "se"))
    plain = timm.create_model("resnet18")
    plain.load_state_dict(model.state_dict(), strict=False)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():  # identity-initialised CBAM inside timm's blocks: same outputs
        torch.testing.assert_close(model.eval()(x), plain.eval()(x), atol=1e-5, rtol=1e-5)
    layer = AttnSpec.se().layer
    assert layer(64, rd_ratio=0.25).excite.fc1.out_features == 16
    assert layer(64, rd_channels=5).excite.fc1.out_features == 5
    assert layer(64, act_layer=nn.SiLU).spec.act == "silu"
    with pytest.raises(SpecError, match="keyword not understood"):
        layer(64, mode="fast")
    with pytest.raises(SpecError, match="act_layer='Softsign'"):
        layer(64, act_layer=nn.Softsign)


def test_record_gates_records_and_restores():
    model = nn.Sequential(nn.Conv2d(3, 16, 3), build(AttnSpec.cbam(reduction=4), channels=16),
                          build(AttnSpec.triplet(), channels=16)).eval()
    x = torch.randn(2, 3, 12, 10)
    expected = model(x)
    with record_gates(model) as gates:
        out = model(x)
    torch.testing.assert_close(out, expected)
    assert set(gates.maps) == {"1", "2"}
    assert gates.maps["1"]["spatial_gate"].shape == (2, 1, 10, 8)
    assert gates.maps["2"]["gate"].shape == (2, 16, 10, 8)  # Triplet's averaged gate
    # Triplet's branch gates are maps too, over (C, W), (H, C) and (H, W)
    assert set(gates.spatial()) == {"1/spatial_gate", "2/cw_gate", "2/hc_gate", "2/hw_gate"}
    g = gates.maps["1"]["spatial_gate"]
    assert bool(((g > 0) & (g < 1)).all())
    assert all("forward" not in m.__dict__ for m in model)  # the modules run as before again
    assert dynattn.GateMaps is type(gates)


def test_cli_list_show_insert(capsys):
    assert main(["list"]) == 0
    listed = capsys.readouterr().out
    for name in ("se", "eca", "cbam", "gam", "triplet", "condconv", "dyconv", "odconv"):
        assert name in listed
    assert main(["show", "se", "--channels", "32"]) == 0
    shown = capsys.readouterr().out
    assert "squeeze = einops_einops_reduce(x, 'b c h w -> b c', 'mean')" in shown and "class SE" in shown
    assert main(["show", "odconv"]) == 0
    assert "kernel_gate = torch.softmax" in capsys.readouterr().out
    assert main(["insert", "resnet18", "--spec", "se", "--where", "residual", "--input-size", "128"]) == 0
    table = capsys.readouterr().out
    assert "layer1.0.bn2_se" in table and "8 sites" in table and "overhead" in table
    assert main(["insert", "mobilenet_v3_small", "--spec", "cbam", "--spec", "eca", "--where", "stage"]) == 0
    assert "_eca" in capsys.readouterr().out


def test_python_dash_m_dynattn():
    out = subprocess.run([sys.executable, "-m", "dynattn", "show", "eca"], capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0 and "class ECA" in out.stdout


def test_bench_steady_allocator_keeps_large_blocks_in_the_process():
    """The benchmark turns glibc's mmap path off so that a freed 25 MB activation is reused, not
    page-faulted in again on the next call; large allocations still work afterwards."""
    code = (
        "import platform, torch\n"
        "from dynattn.bench.timing import steady_allocator\n"
        "line = steady_allocator()\n"
        "for _ in range(3):\n"
        "    t = torch.ones(3 * 2**24); assert float(t.sum()) == 3 * 2**24; del t\n"
        "glibc = platform.libc_ver()[0] == 'glibc'\n"
        "assert line == ('glibc malloc with mmap and trimming off' if glibc else 'system allocator'), line\n"
        "print(line)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "allocator" in out.stdout or "malloc" in out.stdout


def test_strategy_and_network_benchmarks_run_on_a_tiny_config(tmp_path, capsys):
    """Smoke runs of the two dynamic-conv benchmarks (timings are never asserted)."""
    from dynattn.bench import networks, strategies

    assert strategies.main(["--quick", "--batch", "2", "--repeats", "1", "--filter", "@4", "--system-malloc"]) == 0
    out = capsys.readouterr().out
    assert "| 512->512 3x3 @4 | resnet18 | 2 | 4 | eval |" in out and "worst regret" in out
    assert networks.main(["--layers", "--models", "resnet18", "--specs", "odconv", "--batch", "2", "--size", "32",
                          "--repeats", "1", "--modes", "eval", "--out", str(tmp_path), "--system-malloc"]) == 0
    layers = (tmp_path / "layers.md").read_text()
    assert "| layer1.0.conv1 | 64->64 3x3 @8x8 |" in layers and "| all |" in layers and "downsample" not in layers
