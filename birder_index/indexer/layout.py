"""Where an index lives: the `.birder-index/` folder and the files in it, and how commands find it."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from birder_index.errors import BirderIndexError
from birder_index.errors import IndexNotFound

INDEX_DIRNAME = ".birder-index"
DB_FILE = "index.db"
LOCK_FILE = "lock"


def default_index_dir(photos: Path) -> Path:
    return photos / INDEX_DIRNAME


def find_index_dir(
    *, explicit: str | Path | None = None, paths: Sequence[str | Path] = (), start: Path | None = None,
    below: bool = False,
) -> Path:  # fmt: skip
    """Where the index is, in this order (docs/cli.md#which-index):

    1. `--index-dir` (`explicit`), 2. `$BIRDER_INDEX_DIR`, 3. the index of the photo folder that holds the command's
    path arguments (`paths`: query images, a label folder, or a path of the index itself), 4. the nearest
    `.birder-index/` in the current folder (`start`) or a parent, as git finds its repository, 5. with `below`
    (commands without path arguments, such as `serve`), the only index of a folder just below the current one:
    `birder-index build photos/` then `birder-index serve` from the same folder.
    Paths that belong to two different indexes are an error naming both."""
    if explicit:
        path = Path(explicit).expanduser()
        if not (path / DB_FILE).is_file():
            raise IndexNotFound(f"no birder-index index in {path} (run `birder-index build PHOTOS --index-dir {path}`)")
        return path
    env = os.environ.get("BIRDER_INDEX_DIR")
    if env:
        return find_index_dir(explicit=env)
    owners = {found for p in paths if (found := index_holding(Path(p))) is not None}
    if len(owners) > 1:
        first, second = sorted(owners)[:2]
        raise BirderIndexError(f"the paths given belong to two indexes, {first} and {second}: give one at a time")
    if owners:
        return owners.pop()
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        candidate = folder / INDEX_DIRNAME
        if (candidate / DB_FILE).is_file():
            return candidate
    below_here = indexes_below(here) if below else []
    if len(below_here) == 1:
        return below_here[0]
    if len(below_here) > 1:
        shown = ", ".join(str(f) for f in below_here[:3])
        raise BirderIndexError(f"several indexes in the folders here ({shown}): choose one with --index-dir")
    raise IndexNotFound(
        "no index found for these paths, here or in any parent folder: run `birder-index build PHOTOS` first, "
        "or pass --index-dir (or set BIRDER_INDEX_DIR)"
    )


def indexes_below(folder: Path) -> list[Path]:
    """The `.birder-index/` folders of the folders just inside `folder` (not hidden), sorted."""
    try:
        children = sorted(p for p in folder.iterdir() if not p.name.startswith(".") and p.is_dir())
    except OSError:
        return []
    return [c / INDEX_DIRNAME for c in children if (c / INDEX_DIRNAME / DB_FILE).is_file()]


def index_holding(path: Path) -> Path | None:
    """The index folder a path is inside of, or whose photo folder holds it (the nearest `.birder-index/` at or
    above it), or None. Only paths that exist count: a stored path given relative to the photo folder is found
    from the current folder instead."""
    if not os.path.lexists(path):
        return None
    folder = Path(os.path.abspath(path))
    for candidate in (folder, *folder.parents):
        if (candidate / DB_FILE).is_file():  # an index folder, or a file inside one
            return candidate
        inner = candidate / INDEX_DIRNAME
        if (inner / DB_FILE).is_file():
            return inner
    return None


def found_here(index_dir: Path, *, start: Path | None = None) -> bool:
    """Whether the index is the one the current folder or a parent holds (else a command says which it used)."""
    here = (start or Path.cwd()).resolve()
    folder = index_dir.resolve().parent
    return folder == here or folder in here.parents


def ensure_writable(index_dir: Path) -> None:
    try:
        index_dir.mkdir(parents=True, exist_ok=True)
        probe = index_dir / f".write-test-{os.getpid()}"
        probe.touch()
        probe.unlink()
    except OSError as e:
        raise BirderIndexError(
            f"cannot write the index to {index_dir} ({e.strerror}); choose a writable folder with --index-dir"
        ) from None


def fsync_dir(folder: Path) -> None:
    """Make a rename durable: fsync the directory entry (a no-op where directories cannot be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
