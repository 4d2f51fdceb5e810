"""Walk a photo folder: every image file with its size and mtime, sorted by relative path. Stat only, no reads.

Hidden files and folders (a leading dot) and the index folder are skipped; symlinked folders are not followed
(no loops), symlinked files are. Files that cannot be indexed by name alone (broken links, names that are not
UTF-8, SVG) come back as problems, to be recorded as failed with their reason.
"""

from __future__ import annotations

import errno
import logging
import os
from dataclasses import dataclass
from dataclasses import field
from pathlib import Path

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff", ".heic", ".heif", ".avif"}
)
# Named as images but not raster images: listed as failures so the user sees why they are not searchable.
UNSUPPORTED_EXTENSIONS = {".svg": "vector image (SVG) is not supported; export it as PNG to index it"}


@dataclass(frozen=True)
class FileStat:
    path: str  # relative to the root, "/"-separated
    size: int
    mtime_ns: int


@dataclass
class ScanResult:
    files: list[FileStat] = field(default_factory=list)
    problems: list[tuple[str, str]] = field(default_factory=list)  # (relative path, reason)
    skipped_dirs: list[tuple[str, str]] = field(default_factory=list)  # folders that could not be listed


def scan(root: Path, *, exclude: Path | None = None) -> ScanResult:
    result = ScanResult()
    exclude_real = os.path.realpath(exclude) if exclude is not None else None
    stack = [""]
    while stack:
        rel_dir = stack.pop()
        try:
            with os.scandir(root / rel_dir if rel_dir else root) as it:
                entries = list(it)
        except OSError as e:
            result.skipped_dirs.append((rel_dir or ".", (e.strerror or str(e)).lower()))
            continue
        for entry in entries:
            if entry.name.startswith("."):
                continue
            rel = f"{rel_dir}/{entry.name}" if rel_dir else entry.name
            if entry.is_dir(follow_symlinks=False):
                if exclude_real is None or os.path.realpath(entry.path) != exclude_real:
                    stack.append(rel)
                continue
            _add_file(entry, rel, result)
    result.files.sort(key=lambda f: f.path)
    result.problems.sort()
    return result


def _add_file(entry: os.DirEntry[str], rel: str, result: ScanResult) -> None:
    ext = os.path.splitext(entry.name)[1].lower()
    if ext not in IMAGE_EXTENSIONS and ext not in UNSUPPORTED_EXTENSIONS:
        return
    try:
        rel.encode("utf-8")
    except UnicodeEncodeError:
        shown = rel.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
        result.problems.append((shown, "file name is not valid UTF-8; rename the file to index it"))
        return
    if ext in UNSUPPORTED_EXTENSIONS:
        result.problems.append((rel, UNSUPPORTED_EXTENSIONS[ext]))
        return
    try:
        st = entry.stat()  # follows symlinks
    except OSError as e:
        reason = "symlink loop" if e.errno == errno.ELOOP else (e.strerror or str(e)).lower()
        if e.errno == errno.ENOENT and entry.is_symlink():
            reason = "broken symlink"
        result.problems.append((rel, reason))
        return
    if not entry.is_file():  # a symlink to a folder, a fifo, a socket...
        return
    result.files.append(FileStat(rel, st.st_size, st.st_mtime_ns))
