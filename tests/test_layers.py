"""The house's rooms: imports point one way between packages, no import cycle between modules, and the package
and its CLI load neither torch nor FAISS until a command needs them.

Layers, top to bottom (each may import the ones listed for it):
    cli, web -> curation -> dedup, fewshot -> search -> indexer -> distributed -> backbone, db -> errors
Every import counts, wherever it stands: at the top, inside a function, or under TYPE_CHECKING.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "birder_index"
LEAVES = {"errors", "progress", "output"}  # leaf modules anyone may import
BELOW_CAPABILITIES = {"search", "indexer", "distributed", "backbone", "db"} | LEAVES
# layer -> the birder_index layers it may import (itself included)
ALLOWED = {
    **{leaf: {leaf, "errors"} for leaf in LEAVES},
    "backbone": {"backbone"} | LEAVES,
    "db": {"db"} | LEAVES,
    "distributed": {"distributed", "backbone", "db"} | LEAVES,
    "indexer": {"indexer", "distributed", "backbone", "db"} | LEAVES,
    "search": {"search", "indexer", "distributed", "backbone", "db"} | LEAVES,
    "dedup": {"dedup"} | BELOW_CAPABILITIES,
    "fewshot": {"fewshot"} | BELOW_CAPABILITIES,
    "curation": {"curation", "dedup", "fewshot"} | BELOW_CAPABILITIES,
    "web": {"web", "curation", "dedup", "fewshot"} | BELOW_CAPABILITIES,
    "cli": {"cli", "web", "curation", "dedup", "fewshot"} | BELOW_CAPABILITIES,
    "__init__": {"backbone", "indexer", "search", "dedup", "fewshot", "curation"} | LEAVES,
    "__main__": {"cli"},
}


def modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _layer(path: Path) -> str:
    rel = path.relative_to(PACKAGE)
    return rel.parts[0] if len(rel.parts) > 1 else rel.stem


def imported(path: Path) -> Iterator[tuple[str, str | None]]:
    """(module, name) of every birder_index import in a file: `from m import name` gives (m, name), `import m`
    gives (m, None). Relative imports are resolved against the file's package."""
    package = module_name(path) if path.name == "__init__.py" else module_name(path).rsplit(".", 1)[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            if base.startswith("birder_index"):
                yield from ((base, alias.name) for alias in node.names)
        elif isinstance(node, ast.Import):
            yield from ((a.name, None) for a in node.names if a.name.startswith("birder_index"))


def _stub_exports(package: str) -> dict[str, str]:
    """name -> the module it comes from, read from a lazily exporting package's __init__.pyi."""
    stub = PACKAGE.parent.joinpath(*package.split("."), "__init__.pyi")
    if not stub.exists():
        return {}
    out = {}
    for node in ast.parse(stub.read_text()).body:
        if isinstance(node, ast.ImportFrom) and node.level == 1 and node.module:
            for alias in node.names:
                out[alias.asname or alias.name] = f"{package}.{node.module}"
    return out


def resolve(module: str, name: str | None) -> str:
    """The module an import really loads: a submodule, or the module a package's lazy export comes from."""
    if name is None:
        return module
    as_module = PACKAGE.parent.joinpath(*module.split("."), name)
    if as_module.with_suffix(".py").exists() or (as_module / "__init__.py").exists():
        return f"{module}.{name}"
    source = _stub_exports(module).get(name)
    if source is None:
        return module
    return resolve(source, name) if name in _stub_exports(source) else source  # re-exported from a subpackage


def import_graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for path in modules():
        me = module_name(path)
        graph.setdefault(me, set())
        for module, name in imported(path):
            target = resolve(module, name)
            if target != me:
                graph[me].add(target)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of the graph as a path (first node repeated at the end), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt) :], nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


@pytest.mark.parametrize("path", modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_point_down(path: Path) -> None:
    layer = _layer(path)
    used = {m.split(".")[1] if m.count(".") else "__init__" for m, _ in imported(path)}
    bad = used - ALLOWED[layer]
    assert not bad, f"{path.relative_to(PACKAGE)} ({layer}) imports {sorted(bad)}"


def test_no_import_cycle_between_modules() -> None:
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_the_cycle_check_finds_a_planted_cycle(tmp_path: Path) -> None:
    graph = import_graph()
    graph["birder_index.indexer.pipeline"].add("birder_index.indexer.build")  # build imports pipeline
    assert find_cycle(graph) is not None


def test_lazy_exports_resolve_to_their_modules() -> None:
    assert resolve("birder_index", "build_index") == "birder_index.indexer.build"
    assert resolve("birder_index.dedup", "find_duplicates") == "birder_index.dedup.find"
    assert resolve("birder_index.indexer", "ann") == "birder_index.indexer.ann"


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


def test_cli_imports_package_level_names_only() -> None:
    for path in sorted((PACKAGE / "cli").glob("*.py")):
        for module, _ in imported(path):
            parts = module.split(".")
            assert len(parts) <= 2 or parts[1] == "cli", f"{path.name} imports from {module}"


def test_every_stub_name_exists() -> None:
    """The lazily exported names are importable, each from the module the stub names."""
    import importlib

    for stub in sorted(PACKAGE.rglob("__init__.pyi")):
        package = module_name(stub.with_suffix(".py"))
        for name, source in _stub_exports(package).items():
            assert hasattr(importlib.import_module(source), name), f"{package}: {name} from {source}"


HEAVY = ("torch", "faiss", "sqlalchemy", "numpy")


def test_importing_the_package_and_cli_loads_nothing_heavy() -> None:
    """`import birder_index`, `import birder_index.cli` and every `--help` load neither torch nor FAISS (nor the
    database layer or numpy): a help text must not wait seconds for them."""
    code = (
        "import sys\n"
        "import birder_index, birder_index.cli\n"
        "from birder_index.cli import cli\n"
        "names = [[]] + [[name] for name in cli.commands]\n"
        "for args in names:\n"
        "    try:\n"
        "        cli.main([*args, '--help'], standalone_mode=False, prog_name='birder-index')\n"
        "    except SystemExit:\n"
        "        pass\n"
        f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "[]", out.stdout[-500:]


# The subject of a call may keep a default and stay positional where that reads best: open_index("idx/"),
# load_backbone("vit_l16"), list_backbones("vit*"), model_catalogue("vit*").
POSITIONAL_SUBJECT = {"open_index", "load_backbone", "list_backbones", "model_catalogue"}
MAX_POSITIONAL = 5


@pytest.mark.parametrize("path", [p for p in modules() if _layer(p) != "cli"], ids=lambda p: p.name)
def test_options_are_keyword_only(path: Path) -> None:
    """Public functions take their options by keyword after the required arguments: swapping two options of the
    same type must be a type error, not a silent mistake."""
    for node in ast.walk(ast.parse(path.read_text())):
        if not isinstance(node, ast.FunctionDef) or (node.name.startswith("_") and node.name != "__init__"):
            continue
        args = node.args
        positional = [a.arg for a in args.posonlyargs + args.args if a.arg not in ("self", "cls")]
        defaulted = len(args.defaults) - (1 if node.name in POSITIONAL_SUBJECT else 0)
        where = f"{path.relative_to(PACKAGE)}:{node.lineno} {node.name}"
        assert defaulted <= 0, f"{where}: options {positional[-len(args.defaults) :]} should follow a `*`"
        assert len(positional) <= MAX_POSITIONAL, f"{where}: {len(positional)} positional parameters"
