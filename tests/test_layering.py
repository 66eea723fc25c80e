"""The shape of the code, checked.

Layers: the import graph runs one way. Each module has a layer (``LAYERS``: errors and vocab at the bottom,
then validation, the spec, presets, layers and the compiler, dynamic convs, ``build``, the interop helpers,
the ``dynattn`` package, ``graph_passes``, the benchmarks and the search, and the CLI at the top); a module imports only
modules of its own layer or lower, and the imports form no cycle. No import of the project sits inside a
function, except the CLI's, which keep ``dynattn --help`` fast. graph_passes imports dynattn only through
the names ``dynattn`` exports (and the passes API), and the benchmarks never import the CLI above them.

Size: every function of dynattn and graph_passes is at most 60 lines, and each package exports at most 15
names. Every preset has one signature whether called as ``AttnSpec.<name>`` or through ``get_spec``."""

import ast
import inspect
from pathlib import Path

import pytest

import dynattn
import graph_passes
from dynattn import AttnSpec, get_spec
from dynattn.presets import _FLAVORS, PRESETS

ROOT = Path(__file__).resolve().parent.parent

#: Layer of each module (the longest matching prefix wins); a module may import its own layer or lower.
LAYERS = {
    "dynattn.errors": 0, "dynattn._deprecated": 0, "dynattn._version": 0, "dynattn.vocab": 0, "dynattn.einops_calls": 0,
    "dynattn.leaf_calls": 0, "dynattn.workspace": 0, "dynattn.checks": 1, "dynattn.registry": 1, "dynattn.validate": 1,
    "dynattn.spec": 2,
    "dynattn.presets": 3, "dynattn.conv_placement": 3, "dynattn.spec_parse": 3,
    "dynattn.layers": 4, "dynattn.mixing": 4, "dynattn.compiler": 4,
    "dynattn.dynamic_conv": 5, "dynattn.builder": 6,
    "dynattn.interop": 7, "dynattn.record": 7, "dynattn.temperature": 7, "dynattn.testing": 7,
    "dynattn": 8, "dynattn._passes_api": 8, "graph_passes": 9,
    "dynattn.bench": 10, "dynattn.search": 10, "dynattn.cli": 11, "dynattn.__main__": 11,
}
LAZY_IMPORTS_ALLOWED = ("dynattn.cli",)
#: what graph_passes may import of dynattn: the public API, the declared internal interface, the shim
GRAPH_PASSES_MAY_IMPORT = ("dynattn", "dynattn._passes_api", "dynattn._deprecated")


def _modules() -> dict[str, Path]:
    out = {}
    for pkg in ("dynattn", "graph_passes"):
        for path in (ROOT / pkg).rglob("*.py"):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join(parts)] = path
    return out


MODULES = _modules()


def _layer(module: str) -> int:
    best = max((p for p in LAYERS if module == p or module.startswith(p + ".")), key=len)
    return LAYERS[best]


def _imports(module: str, path: Path) -> list[tuple[str, bool, int]]:
    """(imported project module, inside a function?, line) for every import in ``path`` that runs: an import
    under ``if TYPE_CHECKING:`` only informs type checkers (spec.py declares the presets that way)."""
    tree = ast.parse(path.read_text())
    inside = {id(n) for f in ast.walk(tree) if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef))
              for n in ast.walk(f)}
    typing_only = {id(n) for f in ast.walk(tree) if isinstance(f, ast.If) and ast.unparse(f.test) == "TYPE_CHECKING"
                   for n in ast.walk(f)}
    out = []
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
                base = base[: len(base) - node.level + 1]
                prefix = ".".join(base + ([node.module] if node.module else []))
            else:
                prefix = node.module
            names = [f"{prefix}.{a.name}" if f"{prefix}.{a.name}" in MODULES else prefix for a in node.names]
        else:
            continue
        out.extend((n, id(node) in inside, node.lineno) for n in names if n in MODULES and n != module)
    return out


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_run_down_the_layers(module):
    for target, lazy, line in _imports(module, MODULES[module]):
        assert _layer(target) <= _layer(module), f"{module}:{line} imports {target} from a higher layer"
        if module.startswith("graph_passes"):
            assert target in GRAPH_PASSES_MAY_IMPORT or not target.startswith("dynattn"), \
                f"{module}:{line} imports {target}: graph_passes uses dynattn's exported names and its passes API only"
        if module.startswith(("dynattn.bench", "dynattn.search")):
            assert not target.startswith("dynattn.cli"), f"{module}:{line} imports {target}: the CLI sits above it"
        if module.startswith("dynattn.bench"):
            assert not target.startswith("dynattn.search"), f"{module}:{line} imports {target}: the search uses bench"
        if lazy:
            assert module.startswith(LAZY_IMPORTS_ALLOWED), f"{module}:{line} imports {target} inside a function"


def test_the_layer_table_covers_every_module():
    assert all(any(m == p or m.startswith(p + ".") for p in LAYERS) for m in MODULES)


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_each_preset_has_one_signature(name):
    method = getattr(AttnSpec, name)
    assert inspect.signature(method) == inspect.signature(PRESETS[name])
    assert method() == get_spec(name)
    if "flavor" in inspect.signature(method).parameters:  # the keywords that once drifted apart
        for flavor in _FLAVORS[name]:  # "official" where a paper's code exists; "timm" where timm is the origin
            assert method(flavor=flavor) == get_spec(name, flavor=flavor)


def test_the_registry_knows_dynattn_modules_by_role():
    from dynattn.compiler import AttentionModule
    from dynattn.registry import leaf_modules, register_leaf_module

    assert dynattn.DynamicConv2d in leaf_modules("conv")
    assert AttentionModule in leaf_modules("attention")
    with pytest.raises(dynattn.SpecError, match=r"role='gate'.*unknown leaf role.*'attention'"):
        register_leaf_module(AttentionModule, role="gate")


def test_the_imports_form_no_cycle():
    graph = {m: {t for t, _, _ in _imports(m, path)} for m, path in MODULES.items()}
    done: set[str] = set()

    def visit(module: str, path: tuple[str, ...]) -> None:
        if module in path:
            cycle = (*path[path.index(module):], module)
            raise AssertionError("import cycle: " + " -> ".join(cycle))
        if module in done:
            return
        for target in sorted(graph[module]):
            visit(target, (*path, module))
        done.add(module)

    for module in sorted(graph):
        visit(module, ())


MAX_FUNCTION_LINES = 60


def _long_functions() -> list[str]:
    """Functions longer than the limit, counted from the first decorator (or ``def``) to the last line."""
    out = []
    for module, path in sorted(MODULES.items()):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                first = min([node.lineno, *(d.lineno for d in node.decorator_list)])
                lines = node.end_lineno - first + 1
                if lines > MAX_FUNCTION_LINES:
                    out.append(f"{module}:{first} {node.name}: {lines} lines")
    return out


def test_every_function_is_at_most_60_lines():
    assert not _long_functions(), "\n".join(_long_functions())


@pytest.mark.parametrize("package", [dynattn, graph_passes], ids=lambda p: p.__name__)
def test_each_package_exports_at_most_15_names(package):
    assert len(package.__all__) <= 15, sorted(package.__all__)
