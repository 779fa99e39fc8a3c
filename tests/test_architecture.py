"""The import graph follows the pipeline (STYLE P1): stages never import later stages."""

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).parents[1] / "src" / "monosemantic"
ORDER = ["data", "transformer", "activations", "sae", "eval", "interp", "browser"]
# The SAE learns from any Iterator[Tensor]; it must not know where activations come from ([TM] §3).
FORBIDDEN = {"sae": {"data", "transformer", "activations"}, "browser": {"torch"}}


def imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def stage_of(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if parts[0] == "monosemantic" and len(parts) > 1 else None


@pytest.mark.parametrize("path", sorted(SRC.rglob("*.py")), ids=lambda p: str(p.relative_to(SRC)))
def test_imports_point_down_the_pipeline(path):
    here = path.relative_to(SRC).parts[0]
    for module in imports(path):
        target = stage_of(module)
        assert target != "cli" or here == "cli" or path.name == "__main__.py", f"{path} imports the CLI"
        if here in ORDER and target in ORDER:
            assert ORDER.index(target) <= ORDER.index(here), f"{path} imports later stage {target}"
        for banned in FORBIDDEN.get(here, ()):
            assert target != banned and module.split(".")[0] != banned, f"{path} imports {module}"
