"""The import graph follows the pipeline (STYLE P1): stages never import later stages, nothing imports
the CLI, the package has no import cycle, and the browser never loads torch.

Every `import` counts, deferred ones inside functions included: a deferred import hides a cycle from
the interpreter, not from the design. Imports under `if TYPE_CHECKING:` never run and are left out.
"""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).parents[1] / "src" / "monosemantic"
LAYERS = ["data", "transformer", "activations", "sae", "eval", "features", "analyses", "browser"]
# The SAE learns from any Iterator[Tensor]; it must not know where activations come from (paper.md §3).
FORBIDDEN = {"sae": {"data", "transformer", "activations"}, "browser": {"torch"}}
BROWSER_MAY_IMPORT = {"monosemantic.features.db", "monosemantic.analyses.bands"}
"""The only modules of earlier stages the browser reads: the database schema and torch-free summaries."""


def module_name(path: Path) -> str:
    parts = ("monosemantic", *path.relative_to(SRC).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(SRC.rglob("*.py"))}


def _runtime_nodes(tree: ast.AST):
    """Every node but those under `if TYPE_CHECKING:`."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            yield from (n for child in node.orelse for n in [child, *_runtime_nodes(child)])
            continue
        yield node
        yield from _runtime_nodes(node)


def imports(path: Path) -> set[str]:
    """The modules `path` imports; `from pkg import mod` counts as `pkg.mod` where that is a module."""
    here = module_name(path)
    names = set()
    for node in _runtime_nodes(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative import
                pkg = here.split(".")[: len(here.split(".")) - node.level + (path.name == "__init__.py")]
                base = ".".join([*pkg, base] if base else pkg)
            for a in node.names:
                names.add(f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base)
    return names


def stage_of(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if parts[0] == "monosemantic" and len(parts) > 1 else None


GRAPH = {m: {i for i in imports(p) if i in MODULES and i != m} for m, p in MODULES.items()}


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_point_down_the_pipeline(module):
    here = stage_of(module)
    for target_module in imports(MODULES[module]):
        target = stage_of(target_module)
        assert target != "cli" or here == "cli" or module == "monosemantic.__main__", f"{module} imports the CLI"
        if here in LAYERS and target in LAYERS:
            assert LAYERS.index(target) <= LAYERS.index(here), f"{module} imports later stage {target_module}"
        for banned in FORBIDDEN.get(here or "", ()):
            assert target != banned and target_module.split(".")[0] != banned, f"{module} imports {target_module}"
        if here == "browser" and target in LAYERS and target != "browser":
            assert target_module in BROWSER_MAY_IMPORT, f"{module} imports {target_module}"


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_no_import_cycle_inside_the_package():
    assert _cycles(GRAPH) == []


def test_the_cycle_finder_finds_a_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _cycles(graph) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_the_browser_loads_without_torch():
    code = "import sys, monosemantic.browser.app, monosemantic.browser.export; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_loading_a_saved_sae_does_not_import_the_trainer():
    code = "import sys, monosemantic.sae.model; print('monosemantic.sae.train' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_no_source_file_is_over_450_lines():
    long = {m: n for m, p in MODULES.items() if (n := len(p.read_text().splitlines())) > 450}
    assert long == {}
