"""What loading a `.pt2` trusts: an exported program that runs ATen operators on tensors, and nothing else.

`torch.export.load` runs code from the archive in several ways: it unpickles weights and constants marked
`use_pickle` and custom objects (`torch.load(weights_only=False)`, `pickle.loads`), falls back to unpickling the
sample inputs when the safe load fails, evaluates shape expressions with sympy (which runs them as Python), and
turns guard text into a Python function when the program is called. So before torch sees the file, the archive is
read as plain zip and JSON (`check_archive`) and refused unless:

- it holds only the parts an exported program needs: the archive markers, `extra/` metadata, `models/*.json`,
  tensor weights and constants named in their configs, and sample inputs;
- no weight or constant is pickled, and no constant is a custom or opaque object;
- the sample inputs load with `torch.load(weights_only=True)`;
- every graph node calls an ATen or prims operator (or a small list of Python arithmetic and indexing functions
  shape code uses): no custom operator, no Python callable reached through `torch.`;
- every shape expression is arithmetic on shape symbols and numbers (checked on its syntax tree);
- guards, if any, compare an input's size to a number.

After loading, the graph's operators are checked again on the loaded program (`check_program`). The rules and their
reasons: docs/robustness.md#model-files.
"""

from __future__ import annotations

import ast
import io
import json
import re
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from birder_index.errors import CheckpointError

_ALLOWED_PARTS = [
    re.compile(p)
    for p in (
        r"archive_format",
        r"archive_version",
        r"byteorder",
        r"\.data/version",
        r"\.data/serialization_id",
        r"extra/[^/]+",
        r"models/[^/]+\.json",
        r"data/weights/[^/]+_weights_config\.json",
        r"data/weights/weight_\d+",
        r"data/constants/[^/]+_constants_config\.json",
        r"data/constants/(tensor|weight)_\d+",
        r"data/sample_inputs/[^/]+\.pt",
    )
]
_OPS = re.compile(r"torch\.ops\.(aten|prims)\.[A-Za-z_][A-Za-z0-9_]*\.[A-Za-z_][A-Za-z0-9_]*")
_PYTHON_OPS = {
    *(f"_operator.{name}" for name in ("getitem", "add", "sub", "mul", "floordiv", "truediv", "mod", "neg", "pow")),
    *(f"_operator.{name}" for name in ("eq", "ne", "lt", "le", "gt", "ge", "and_", "or_", "not_")),
    *(f"torch.{name}" for name in ("sym_max", "sym_min", "sym_int", "sym_float", "sym_not", "sym_sqrt", "sym_ite")),
    *(f"math.{name}" for name in ("ceil", "floor", "trunc", "sqrt")),
}
# sympy's and torch's shape functions that serialized expressions use; arithmetic on symbols and numbers only
_SYMPY_CALLS = {
    "Symbol", "Integer", "Rational", "Float", "Max", "Min", "FloorDiv", "CeilDiv", "Mod", "PythonMod",
    "ModularIndexing", "CleanDiv", "IntTrueDiv", "FloatTrueDiv", "ToFloat", "TruncToInt", "TruncToFloat",
    "RoundToInt", "RoundDecimal", "PowByNatural", "FloatPow", "Abs", "Eq", "Ne", "Lt", "Le", "Gt", "Ge", "And",
    "Or", "Not", "Identity", "Where",
}  # fmt: skip
_SYMBOL_FLAGS = {"positive", "negative", "nonnegative", "nonpositive", "integer", "real", "finite", "zero"}
_SYMBOL_NAME = re.compile(r"[a-z]+\d+")
_NAMES = {"oo", "zoo", "nan", "int_oo", "True", "False"}
_MAX_EXPR = 2000
_GUARD = re.compile(
    r"(?:\d+\s*(?:==|!=|<=|>=|<|>)\s*)?L\['[A-Za-z_][A-Za-z0-9_]*'\]\.size\(\)\[\d+\]\s*(?:==|!=|<=|>=|<|>)\s*\d+"
)


def refuse(path: Path, why: str) -> CheckpointError:
    return CheckpointError(f"{path} is refused: {why} (a .pt2 may hold only an exported program; docs/robustness.md)")


def check_archive(path: Path) -> None:
    """Refuse an archive that could run code when loaded or called (module docstring)."""
    try:
        with zipfile.ZipFile(path) as z:
            _check(path, z)
    except (zipfile.BadZipFile, OSError, ValueError, json.JSONDecodeError, UnicodeDecodeError) as e:
        raise refuse(path, f"unreadable archive ({type(e).__name__}: {str(e)[:100]})") from None


def _check(path: Path, z: zipfile.ZipFile) -> None:
    names = z.namelist()
    markers = [n for n in names if n.endswith("archive_format")]
    if len(markers) != 1:
        raise refuse(path, "not one exported-program archive")
    prefix = markers[0][: -len("archive_format")]
    for name in names:
        part = name[len(prefix) :] if name.startswith(prefix) else name
        if name.endswith("/") or not any(p.fullmatch(part) for p in _ALLOWED_PARTS):
            raise refuse(path, f"it holds {name!r}, which is not part of an exported program this tool loads")
    for name in names:
        part = name[len(prefix) :]
        if part.endswith(("_weights_config.json", "_constants_config.json")):
            _check_payloads(path, name, json.loads(z.read(name)))
        elif part.startswith("data/sample_inputs/"):
            _check_sample_inputs(path, name, z.read(name))
        elif part.startswith("models/"):
            _check_program_json(path, json.loads(z.read(name)))


def _check_payloads(path: Path, name: str, config: dict[str, Any]) -> None:
    for fqn, meta in (config.get("config") or {}).items():
        if meta.get("use_pickle"):
            raise refuse(path, f"{fqn} in {name} is pickled; pickles can run code")
        if meta.get("tensor_meta") is None or not re.fullmatch(r"(tensor|weight)_\d+", str(meta.get("path_name"))):
            raise refuse(path, f"{fqn} in {name} is not a plain tensor")


def _check_sample_inputs(path: Path, name: str, data: bytes) -> None:
    import torch

    try:
        torch.load(io.BytesIO(data), weights_only=True)
    except Exception as e:  # torch raises UnpicklingError, RuntimeError, ... for what weights_only refuses
        raise refuse(path, f"{name} is not plain tensors ({type(e).__name__})") from None


def _check_program_json(path: Path, program: dict[str, Any]) -> None:
    for target in _values(program, "target"):
        if isinstance(target, str) and not (_OPS.fullmatch(target) or target in _PYTHON_OPS):
            raise refuse(path, f"its graph calls {target!r}, not an ATen operator")
    for expr in _values(program, "expr_str"):
        check_expression(path, expr)
    for symbol in program.get("range_constraints") or {}:
        check_expression(path, symbol)
    for guard in program.get("guards_code") or []:
        if not isinstance(guard, str) or not _GUARD.fullmatch(guard.strip()):
            raise refuse(path, f"it carries guard code {str(guard)[:80]!r}, which would run as Python")


def _values(tree: Any, key: str) -> Iterator[Any]:
    """Every value of `key` anywhere in a JSON tree."""
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            for k, v in node.items():
                if k == key:
                    yield v
                stack.append(v)
        elif isinstance(node, list):
            stack.extend(node)


def check_expression(path: Path, text: object) -> None:
    """A shape expression is arithmetic on symbols and numbers: sympy evaluates it as Python, so anything else
    (attributes, strings outside Symbol(), other calls, lambdas, comprehensions) is refused."""
    if not isinstance(text, str) or len(text) > _MAX_EXPR:
        raise refuse(path, "a shape expression is not a short string")
    try:
        tree = ast.parse(text, mode="eval")
    except SyntaxError:
        raise refuse(path, f"a shape expression does not parse: {text[:80]!r}") from None
    for node in ast.walk(tree):
        if not _safe_node(node):
            raise refuse(path, f"a shape expression is not plain arithmetic: {text[:80]!r}")


def _safe_node(node: ast.AST) -> bool:
    if isinstance(node, ast.Call):
        if not (isinstance(node.func, ast.Name) and node.func.id in _SYMPY_CALLS):
            return False
        if node.func.id == "Symbol":
            first = node.args[0] if node.args else None
            if not (isinstance(first, ast.Constant) and isinstance(first.value, str)):
                return False
        return all(k.arg in _SYMBOL_FLAGS and isinstance(k.value, ast.Constant) for k in node.keywords)
    if isinstance(node, ast.Constant):
        value = node.value
        if isinstance(value, str):
            return bool(_SYMBOL_NAME.fullmatch(value))
        return isinstance(value, (bool, float)) or (isinstance(value, int) and abs(value) < 2**63)
    if isinstance(node, ast.Name):
        return node.id in _NAMES or bool(_SYMBOL_NAME.fullmatch(node.id)) or node.id in _SYMPY_CALLS
    arithmetic = (ast.Add, ast.Sub, ast.Mult, ast.Div, ast.FloorDiv, ast.Mod, ast.USub, ast.UAdd, ast.Not)
    comparisons = (ast.Eq, ast.NotEq, ast.Lt, ast.LtE, ast.Gt, ast.GtE, ast.And, ast.Or)
    structure = (ast.Expression, ast.BinOp, ast.UnaryOp, ast.Compare, ast.BoolOp, ast.Load, ast.keyword)
    return isinstance(node, (*arithmetic, *comparisons, *structure))


def check_program(path: Path, program: Any) -> None:
    """The loaded program's graph calls only ATen and prims operators (or the Python shape functions above)."""
    import math
    import operator

    import torch

    modules = {"_operator": operator, "torch": torch, "math": math}
    python_ops = {getattr(modules[n.split(".", 1)[0]], n.split(".", 1)[1], None) for n in _PYTHON_OPS} - {None}
    for node in program.graph.nodes:
        if node.op in ("placeholder", "output", "get_attr"):
            continue
        target = node.target
        namespace = getattr(target, "namespace", None)
        if node.op != "call_function" or (namespace not in ("aten", "prims") and target not in python_ops):
            raise refuse(path, f"its graph calls {target!r}, not an ATen operator")
