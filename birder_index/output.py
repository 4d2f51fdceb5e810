"""How results leave the program: files written whole or not at all, with a one-line error when they cannot be;
file names as data, never markup or commands, in CSV files and on a terminal.

- CSV: a cell beginning with `=`, `+`, `-`, `@`, a tab or a carriage return is read as a formula by spreadsheet
  software; such a cell gets a leading apostrophe, as OWASP's guidance on CSV injection advises. Numbers that
  merely start with a minus sign are left alone.
- Terminal: control characters (escape sequences, carriage returns, newlines inside a name) are shown as Python
  escapes, so a crafted file name cannot rewrite the screen or forge an output line.
"""

from __future__ import annotations

import csv
import os
import re
from collections.abc import Iterable
from collections.abc import Sequence
from pathlib import Path

from birder_index.errors import BirderIndexError

_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
_NUMBER = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def csv_cell(value: object) -> str:
    """The text of a CSV cell that spreadsheet software shows as text, never runs as a formula."""
    text = str(value)
    if text.startswith(_FORMULA_START) and not _NUMBER.match(text):
        return "'" + text
    return text


def printable(text: str) -> str:
    """`text` with control characters escaped (\\x1b, \\n, ...), safe to print on a terminal on one line."""
    return _CONTROL.sub(lambda m: m.group(0).encode("unicode_escape").decode("ascii"), text)


def write_text(path: Path, text: str) -> None:
    """Write a file atomically (a temporary name, then rename): a reader never sees half of it, and a failure (a
    missing folder, a folder in the way, a full disk) is one line naming the file, leaving nothing behind."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        if path.is_dir():
            raise IsADirectoryError(21, "Is a directory")
        with open(tmp, "w", encoding="utf-8", newline="") as f:
            f.write(text)
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise BirderIndexError(f"cannot write {path}: {(e.strerror or str(e)).lower()}") from None


def csv_text(header: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    """CSV text with every cell made safe for spreadsheet software (`csv_cell`)."""
    import io

    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(header)
    writer.writerows([csv_cell(v) for v in row] for row in rows)
    return buf.getvalue()
