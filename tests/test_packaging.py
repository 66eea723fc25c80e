"""The package as it ships: its version, the wheel ``python -m build`` makes (checked by ``twine check``,
holding both packages and their ``py.typed`` markers, no tests), and the public API type-checked by mypy as
a user's typed code sees it (tests/typed_usage.py)."""

import importlib.metadata
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import dynattn

ROOT = Path(__file__).resolve().parents[1]


def test_the_version_is_the_package_metadata():
    assert re.fullmatch(r"\d+\.\d+\.\d+(\.dev\d+|rc\d+)?", dynattn.__version__)
    assert importlib.metadata.version("dynattn") == dynattn.__version__
    assert f"## {dynattn.__version__}" in (ROOT / "CHANGELOG.md").read_text()


def _run(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", *args], cwd=cwd, capture_output=True, text=True, timeout=300)


def test_the_wheel_builds_passes_twine_and_holds_both_packages(tmp_path):
    """Built without an isolated environment (no network): hatchling comes from the test extras."""
    pytest.importorskip("build")
    pytest.importorskip("twine")
    out = _run("build", "--wheel", "--no-isolation", "--outdir", str(tmp_path))
    assert out.returncode == 0, out.stderr[-3000:]
    (wheel,) = tmp_path.glob("*.whl")
    assert wheel.name.startswith(f"dynattn-{dynattn.__version__}-py3-none-any")
    check = _run("twine", "check", "--strict", str(wheel))
    assert check.returncode == 0 and "PASSED" in check.stdout, check.stdout + check.stderr
    names = set(zipfile.ZipFile(wheel).namelist())
    for package in ("dynattn", "graph_passes"):
        assert {f"{package}/__init__.py", f"{package}/py.typed"} <= names
        sources = {str(p.relative_to(ROOT)) for p in (ROOT / package).rglob("*.py")}
        assert sources <= names, sorted(sources - names)
    assert not [n for n in names if n.startswith(("tests/", "docs/", "tools/", "examples/"))]
    metadata = zipfile.ZipFile(wheel).read(f"dynattn-{dynattn.__version__}.dist-info/METADATA").decode()
    assert "Requires-Dist: torch>=2.4" in metadata and "Provides-Extra: docs" in metadata


def test_mypy_checks_the_public_api(request, tmp_path):
    """The two packages' ``__init__`` and a user's typed calls of every public name (tests/typed_usage.py),
    with pyproject's [tool.mypy]: the implementation modules' own errors are not reported and torch is taken as
    untyped, so what fails here is the public API's typing (a name, an argument, a return type of ours)."""
    pytest.importorskip("mypy")
    # pytest's cache keeps mypy's between runs (seconds saved); without it (-p no:cacheprovider), a fresh one
    cache = request.config.cache.mkdir("mypy") if hasattr(request.config, "cache") else tmp_path / "mypy"
    out = _run("mypy", "--cache-dir", str(cache), "--no-error-summary", "dynattn/__init__.py",
               "graph_passes/__init__.py", "tests/typed_usage.py")
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-2000:]


def test_every_preset_is_declared_for_type_checkers():
    """spec.py's TYPE_CHECKING block lists each preset, so ``AttnSpec.<preset>`` type-checks with its signature."""
    from dynattn.presets import PRESETS

    source = (ROOT / "dynattn" / "spec.py").read_text()
    assert set(re.findall(r"(\w+) = staticmethod\(_presets\.(\w+)\)", source)) == {(n, n) for n in PRESETS}
