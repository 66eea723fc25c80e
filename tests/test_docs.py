"""The README is executable documentation: every code block in it is checked here.

- ``bash``: the two set-up commands, which .ci/run runs;
- ``python``: executed;
- ``console``: each ``$ dynattn ...`` line runs and exits 0;
- the plain block of generated code: what ``print(module.code)`` prints, verbatim.
Every example runs too (quick settings).
"""

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
BLOCKS = re.findall(r"```(\w*)\n(.*?)```", README, flags=re.S)
PYTHON = [body for lang, body in BLOCKS if lang == "python"]
CONSOLE = [line[2:] for lang, body in BLOCKS if lang == "console" for line in body.splitlines()
           if line.startswith("$ ")]


def test_every_block_has_a_known_kind():
    assert {lang for lang, _ in BLOCKS} <= {"bash", "python", "console", ""}
    assert sum(1 for lang, _ in BLOCKS if lang == "bash") == 1 and sum(1 for lang, _ in BLOCKS if lang == "") == 1


def test_readme_starts_with_the_two_setup_commands():
    first = README.split("```bash\n", 1)[1].split("```", 1)[0].strip().splitlines()
    assert len(first) == 2
    assert first[0].endswith("examples/quickstart.py") and "pip install -e ." in first[0]
    assert first[1].endswith("python -m pytest -n 2") and '".[test]"' in first[1]
    assert README.index("```bash") < README.index("\n## ")  # before any section
    assert "README.md" in (ROOT / ".ci" / "run").read_text()


def test_generated_code_block_is_what_the_compiler_emits():
    from dynattn import AttnSpec, build

    shown = next(body for lang, body in BLOCKS if lang == "").strip()
    assert shown == build(AttnSpec.cbam(), channels=64).code.strip()  # exactly what print(cbam.code) shows


@pytest.mark.parametrize("index", range(len(PYTHON)))
def test_readme_python_block_runs(index):
    exec(compile(PYTHON[index], f"README.md[python block {index}]", "exec"), {"__name__": "readme"})


@pytest.mark.parametrize("command", CONSOLE)
def test_readme_console_line_runs(command, tmp_path, capsys, monkeypatch):
    from dynattn.cli import main

    argv = shlex.split(command)
    assert argv[0] == "dynattn"
    monkeypatch.chdir(tmp_path)  # the bench writes its results here
    assert main(argv[1:]) == 0, capsys.readouterr().err[-3000:]
    assert capsys.readouterr().out.strip()


# what each example writes, under its default --out folder outputs/<example>
EXAMPLE_FILES = {
    "attention_maps.py": ["attention_maps.png"],
    "cluttered_digits.py": ["results.md", "results.png"],
    "pretrained_attention.py": ["results.md", "results.png"],
}


@pytest.mark.parametrize("script", sorted(p.name for p in (ROOT / "examples").glob("*.py")))
def test_example_runs(script, tmp_path):
    """Each example runs (DYNATTN_QUICK=1: smoke settings, seconds) and writes only under
    outputs/<example> of the directory it runs in, which .gitignore lists, never elsewhere."""
    env = {**os.environ, "DYNATTN_QUICK": "1"}
    out = subprocess.run([sys.executable, str(ROOT / "examples" / script)], capture_output=True, text=True,
                         timeout=600, cwd=tmp_path, env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip()
    written = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file())
    folder = Path("outputs") / script.removesuffix(".py")
    assert written == sorted(str(folder / name) for name in EXAMPLE_FILES.get(script, [])), written
    for name in EXAMPLE_FILES.get(script, []):
        assert (tmp_path / folder / name).stat().st_size > (10_000 if name.endswith(".png") else 100)
    assert "outputs/" in (ROOT / ".gitignore").read_text().splitlines()


def test_ruff_clean():
    ruff = Path(sys.executable).with_name("ruff")
    if not ruff.exists():
        pytest.skip("ruff is not installed in this environment")
    out = subprocess.run([str(ruff), "check", "dynattn", "graph_passes", "tests", "examples"],
                         capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stdout[-3000:]
