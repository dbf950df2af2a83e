"""Data flows one way (DESIGN.md section 1): read from the imports. The core never reaches back into
the methods or the pipeline from inside a function to dodge a cycle, the LP encodings (which every
layer rule imports) depend on no engine, and the layer rules on no engine or method."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "verikit"
# They defer imports to keep start-up fast (scale: Dask's client and workers import the engines when they start).
FRONT_ENDS = ("cli", "api.py", "suite.py", "__init__.py", "scale")


def _imports(path: Path, inside_functions: bool) -> list[tuple[int, str]]:
    """(line, module) of the verikit imports of a file, only those inside function bodies if asked."""
    tree = ast.parse(path.read_text())
    scopes = [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]
    nodes = [n for scope in scopes for n in ast.walk(scope)] if inside_functions else list(ast.walk(tree))
    found = []
    for node in nodes:
        if isinstance(node, ast.ImportFrom) and node.module:
            found += [(node.lineno, node.module)]
        elif isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
    return [(line, module) for line, module in found if module.startswith("verikit")]




def test_no_function_reaches_back_into_methods_or_the_pipeline():
    core = [p for p in PACKAGE.rglob("*.py") if p.relative_to(PACKAGE).parts[0] not in FRONT_ENDS]
    for path in core:
        late = [f"line {line}: {module}" for line, module in _imports(path, inside_functions=True)
                if module.startswith(("verikit.methods", "verikit.pipeline"))]
        assert not late, f"{path.relative_to(PACKAGE)} imports inside a function: {late}"


@pytest.mark.parametrize("part, forbidden", [
    ("lp", ("verikit.propagate", "verikit.methods", "verikit.pipeline")),
    ("layers", ("verikit.propagate", "verikit.methods", "verikit.pipeline")),
])
def test_lower_layers_import_no_engine(part, forbidden):
    for path in sorted((PACKAGE / part).rglob("*.py")):
        wrong = [module for _, module in _imports(path, inside_functions=False) if module.startswith(forbidden)]
        assert not wrong, f"{path.relative_to(PACKAGE)} imports {wrong}"
