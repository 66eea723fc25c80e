"""The README is executable documentation: its python blocks run, its set-up commands are CI's."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
BLOCKS = re.findall(r"```python\n(.*?)```", README, flags=re.S)


def test_readme_starts_with_the_two_setup_commands():
    first = README.split("```bash\n", 1)[1].split("```", 1)[0].strip().splitlines()
    assert len(first) == 2
    assert first[0].endswith("examples/quickstart.py") and "pip install -e ." in first[0]
    assert first[1].endswith("python -m pytest") and '".[test]"' in first[1]
    assert README.index("```bash") < README.index("\n## ")  # before any section
    assert "README.md" in (ROOT / ".ci" / "run").read_text()


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_python_block_runs(index):
    exec(compile(BLOCKS[index], f"README.md[python block {index}]", "exec"), {"__name__": "readme"})


@pytest.mark.parametrize("script", sorted(p.name for p in (ROOT / "examples").glob("*.py")))
def test_example_runs(script):
    out = subprocess.run([sys.executable, str(ROOT / "examples" / script)], capture_output=True, text=True,
                         timeout=300, cwd=ROOT, env={"DYNATTN_QUICK": "1", "PATH": ""})
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip()


def test_ruff_clean():
    ruff = Path(sys.executable).with_name("ruff")
    if not ruff.exists():
        pytest.skip("ruff is not installed in this environment")
    out = subprocess.run([str(ruff), "check", "dynattn", "graph_passes", "tests", "examples"],
                         capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stdout[-3000:]
