"""The documentation is executable: README.md and every page of the site (docs/*.md) are checked here.

- ``bash``: the two set-up commands, which .ci/run runs (only README.md's; a page may repeat them);
- ``python``: executed (a block that appears on two pages runs once);
- ``console``: each ``$ dynattn ...`` line runs and exits 0;
- the plain block of generated code: what ``print(module.code)`` prints, verbatim;
- ``text``: output shown, not run.
The site builds with ``mkdocs build --strict`` (no broken link or anchor, no missing reference), and its
generated parts (tools/gen_docs.py) cover every spec field, preset, command and exported name.
Every example runs too (quick settings).
"""

import dataclasses
import importlib.util
import os
import re
import runpy
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
#: README.md and every page of the site, by path relative to the repository
PAGES = {"README.md": README} | {str(p.relative_to(ROOT)): p.read_text() for p in sorted((ROOT / "docs").rglob("*.md"))}
BLOCKS = {page: re.findall(r"```(\w*)\n(.*?)```", text, flags=re.S) for page, text in PAGES.items()}


def _unique(kind: str) -> dict[str, str]:
    """Each distinct block of ``kind`` once, keyed by where it first appears (``page[n]``)."""
    out: dict[str, str] = {}
    for page, blocks in BLOCKS.items():
        for n, body in enumerate(body for lang, body in blocks if lang == kind):
            if body not in out.values():
                out[f"{page}[{n}]"] = body
    return out


PYTHON = _unique("python")
CONSOLE = sorted({line[2:] for body in _unique("console").values() for line in body.splitlines()
                  if line.startswith("$ ")})


def _gen_docs():
    spec = importlib.util.spec_from_file_location("gen_docs", ROOT / "tools" / "gen_docs.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_block_has_a_known_kind():
    kinds = {lang for blocks in BLOCKS.values() for lang, _ in blocks}
    assert kinds <= {"bash", "python", "console", "", "text"}, kinds
    readme_bash = [body for lang, body in BLOCKS["README.md"] if lang == "bash"]
    assert len(readme_bash) == 1
    assert all(body == readme_bash[0] for blocks in BLOCKS.values() for lang, body in blocks if lang == "bash")
    assert sum(1 for blocks in BLOCKS.values() for lang, _ in blocks if lang == "") == 1


def test_readme_starts_with_the_two_setup_commands():
    first = README.split("```bash\n", 1)[1].split("```", 1)[0].strip().splitlines()
    assert len(first) == 2
    assert first[0].endswith("examples/quickstart.py") and "pip install -e ." in first[0]
    assert first[1].endswith("python -m pytest -n 2") and '".[test]"' in first[1]
    assert README.index("```bash") < README.index("\n## ")  # before any section
    assert "README.md" in (ROOT / ".ci" / "run").read_text()


def test_readme_is_a_front_page_that_links_every_page():
    assert len(README.splitlines()) <= 250
    linked = set(re.findall(r"\]\((docs/[\w./-]+?\.md)(?:#[\w-]+)?\)", README))
    assert all((ROOT / page).exists() for page in linked), linked
    pages = {p for p in PAGES if p.startswith("docs/")} - {"docs/index.md", "docs/changelog.md"}
    assert pages <= linked, sorted(pages - linked)
    assert "](CHANGELOG.md)" in README


def test_generated_code_block_is_what_the_compiler_emits():
    from dynattn import AttnSpec, build

    shown = next(body for blocks in BLOCKS.values() for lang, body in blocks if lang == "").strip()
    assert shown == build(AttnSpec.cbam(), channels=64).code.strip()  # exactly what print(cbam.code) shows


@pytest.mark.parametrize("where", [pytest.param(w, marks=pytest.mark.heavy) if PYTHON[w].startswith("# heavy")
                                   else w for w in PYTHON])
def test_python_block_runs(where):
    """A block whose first line is ``# heavy: why`` runs with the heavy tests (tens of seconds)."""
    exec(compile(PYTHON[where], f"{where} (python block)", "exec"), {"__name__": "docs"})


@pytest.mark.parametrize("command", CONSOLE)
def test_console_line_runs(command, tmp_path, capsys, monkeypatch):
    from dynattn.cli import main

    argv = shlex.split(command)
    assert argv[0] == "dynattn"
    monkeypatch.chdir(tmp_path)  # the bench writes its results here
    assert main(argv[1:]) == 0, capsys.readouterr().err[-3000:]
    assert capsys.readouterr().out.strip()


def test_generated_parts_cover_the_code():
    """The spec's fields, the commands and the exported names, each in its generated page."""
    import dynattn
    import graph_passes
    from dynattn import AttnSpec
    from dynattn.cli import COMMANDS
    from dynattn.vocab import FIELD_VALUES

    gen = _gen_docs()
    fields = gen.spec_fields()
    for field in dataclasses.fields(AttnSpec):
        row = next(line for line in fields.splitlines() if line.startswith(f"| `{field.name}` |"))
        meaning = row.split(" | ")[1]
        assert meaning.strip(), f"{field.name} has no #: comment in dynattn/spec.py"
        values = FIELD_VALUES[field.name]
        assert all(f"`{v!r}`" in row for v in values) if not isinstance(values, str) else values in row
    cli = gen.cli()
    assert all(f"## `dynattn {name}`" in cli for name in [*COMMANDS, "bench"])
    api = gen.api()
    assert all(f"heading: {pkg.__name__}.{name}\n" in api for pkg in (dynattn, graph_passes) for name in pkg.__all__)
    assert gen.MARKER.search(gen.expand((ROOT / "docs" / "spec.md").read_text())) is None


def test_the_hand_written_field_notes_name_real_fields():
    from dynattn import AttnSpec

    notes = (ROOT / "docs" / "spec.md").read_text().split("<!-- gen:spec-fields -->", 1)[1]
    named = {name for row in re.findall(r"^\| (`.*?) \|", notes, flags=re.M) for name in re.findall(r"`(\w+)`", row)}
    assert named and named <= {f.name for f in dataclasses.fields(AttnSpec)}, named


def test_site_builds_strictly(tmp_path):
    """``mkdocs build --strict`` (the hook in tools/gen_docs.py generates its parts), and what the site must hold."""
    pytest.importorskip("mkdocs")
    site = tmp_path / "site"
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    out = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
                         cwd=ROOT, capture_output=True, text=True, timeout=300, env=env)
    assert out.returncode == 0, out.stderr[-5000:]
    text = " ".join(p.read_text() for p in site.rglob("*.html"))
    from dynattn import AttnSpec, get_spec, list_presets

    wanted = [*list_presets(), *(f.name for f in dataclasses.fields(AttnSpec)), "insert_attention", "AttnSpec",
              "build", "DynamicConv2d", "list_sites", "report", "parse_spec"]
    assert not [name for name in wanted if name not in text]
    assert (site / "api" / "index.html").read_text().count('class="doc doc-heading"') >= 25  # one per exported name
    pictures = {p.stem for p in (site / "img" / "gallery").glob("*.png")}
    assert pictures == {name for name in list_presets() if get_spec(name).kind != "kernel"}


# what each example writes, under its default --out folder outputs/<example>
EXAMPLE_FILES = {
    "quickstart.py": ["ECASpatial.py"],
    "insert_resnet18.py": ["report.md"],
    "train_digits.py": ["results.md"],
    "attention_maps.py": ["attention_maps.png"],
    "cluttered_digits.py": ["results.md", "results.png"],
    "pretrained_attention.py": ["results.md", "results.png"],
    "quantize_int8.py": ["results.md"],
    "search_attention.py": ["results.md", "search/best_spec.txt", "search/results.md", "search/results.png",
                            "search/study.db"],
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
    assert written == sorted(str(folder / name) for name in EXAMPLE_FILES[script]), written
    for name in EXAMPLE_FILES[script]:
        assert (tmp_path / folder / name).stat().st_size > (10_000 if name.endswith(".png") else 100 if
                                                            name.endswith(".md") else 0)
    assert "outputs/" in (ROOT / ".gitignore").read_text().splitlines()


@pytest.mark.parametrize("script", sorted(p.name for p in (ROOT / "examples").glob("*.py")))
def test_example_help_runs_nothing(script, tmp_path, monkeypatch, capsys):
    """``--help`` prints the usage, with --out and --quick, and exits 0 before any work: nothing is written.
    In this process (torch is already imported), so the check costs no interpreter start-up."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", [script, "--help"])
    monkeypatch.syspath_prepend(str(ROOT / "examples"))  # as ``python examples/X.py`` has it: they share code
    with pytest.raises(SystemExit) as stop:
        runpy.run_path(str(ROOT / "examples" / script), run_name="__main__")
    assert stop.value.code == 0
    shown = capsys.readouterr().out
    assert shown.startswith("usage:") and "--out" in shown and "--quick" in shown, shown
    assert not list(tmp_path.iterdir())


def test_ruff_clean():
    ruff = Path(sys.executable).with_name("ruff")
    if not ruff.exists():
        pytest.skip("ruff is not installed in this environment")
    out = subprocess.run([str(ruff), "check", "dynattn", "graph_passes", "tests", "examples", "tools"],
                         capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stdout[-3000:]
