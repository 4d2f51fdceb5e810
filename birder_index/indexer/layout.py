"""Where an index lives: the `.birder-index/` folder and the files in it, and how commands find it."""

from __future__ import annotations

import os
from pathlib import Path

from birder_index.errors import BirderIndexError
from birder_index.errors import IndexNotFound

INDEX_DIRNAME = ".birder-index"
DB_FILE = "index.db"
LOCK_FILE = "lock"


def default_index_dir(photos: Path) -> Path:
    return photos / INDEX_DIRNAME


def find_index_dir(*, explicit: str | Path | None = None, start: Path | None = None) -> Path:
    """`--index-dir`, else `$BIRDER_INDEX_DIR`, else the nearest `.birder-index/` here or in a parent (as git)."""
    if explicit:
        path = Path(explicit).expanduser()
        if not (path / DB_FILE).is_file():
            raise IndexNotFound(f"no birder-index index in {path} (run `birder-index build PHOTOS --index-dir {path}`)")
        return path
    env = os.environ.get("BIRDER_INDEX_DIR")
    if env:
        return find_index_dir(explicit=env)
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        candidate = folder / INDEX_DIRNAME
        if (candidate / DB_FILE).is_file():
            return candidate
    raise IndexNotFound(
        "no index found here or in any parent folder: run `birder-index build PHOTOS` first, "
        "or pass --index-dir (or set BIRDER_INDEX_DIR)"
    )


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
