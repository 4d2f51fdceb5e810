"""Imports point one way: cli -> search -> indexer -> backbone, db (errors anywhere).

search may use the indexer's reading side (the open index); nothing below imports what is above it.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "birder_index"
# layer -> the birder_index layers it may import
ALLOWED = {
    "backbone": {"backbone", "errors"},
    "db": {"db", "errors"},
    "indexer": {"indexer", "backbone", "db", "errors"},
    "search": {"search", "indexer", "backbone", "db", "errors"},
    "cli": {"cli", "search", "indexer", "backbone", "db", "errors"},
    "errors": {"errors"},
    "__init__": {"backbone", "indexer", "search", "errors"},
    "__main__": {"cli"},
}


def _layer(path: Path) -> str:
    rel = path.relative_to(PACKAGE)
    return rel.parts[0] if len(rel.parts) > 1 else rel.stem


def _imports(path: Path) -> set[str]:
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("birder_index"):
            parts = node.module.split(".")
            out.add(parts[1] if len(parts) > 1 else "__init__")
        elif isinstance(node, ast.Import):
            out |= {a.name.split(".")[1] for a in node.names if a.name.startswith("birder_index.")}
    return out


@pytest.mark.parametrize("path", sorted(PACKAGE.rglob("*.py")), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_point_down(path: Path) -> None:
    layer = _layer(path)
    bad = _imports(path) - ALLOWED[layer]
    assert not bad, f"{path.relative_to(PACKAGE)} ({layer}) imports {sorted(bad)}"


def test_backbone_knows_nothing_of_faiss_or_the_database() -> None:
    for path in (PACKAGE / "backbone").rglob("*.py"):
        text = path.read_text()
        assert "import faiss" not in text and "sqlalchemy" not in text, path


def test_cli_has_no_torch_faiss_or_sql() -> None:
    files = sorted((PACKAGE / "cli").glob("*.py"))
    assert len(files) > 1
    for path in files:
        text = path.read_text()
        for word in ("import torch", "import faiss", "sqlalchemy", "select("):
            assert word not in text, f"{path.name}: {word}"
