"""Where previews (backbone/preview.py) are kept once made: `thumbs-cache/` inside the index folder, or, when the
index folder cannot be written (a read-only disk, another user's index), a folder of the user's cache
(`$BIRDER_INDEX_HOME` or e.g. ~/.cache/birder-index) named after the index. A preview's name is a hash of the
file's real path, size, modification time and the preview's side: a changed file gets a new preview, and nothing
needs invalidating. Written to a temporary name and renamed, so a reader never sees half a file. Deleting the
folder is always safe: previews are made again when asked for."""

from __future__ import annotations

import hashlib
import logging
import os
import uuid
from pathlib import Path

from birder_index.backbone.download import cache_dir
from birder_index.backbone.preview import PREVIEW_SIDE
from birder_index.backbone.preview import render_preview

logger = logging.getLogger(__name__)

CACHE_DIRNAME = "thumbs-cache"


def preview_cache_dir(index_dir: Path) -> Path:
    """`thumbs-cache/` in the index folder when it can be written there, else one in the user's cache folder."""
    inside = index_dir / CACHE_DIRNAME
    if _writable(inside):
        return inside
    name = hashlib.sha256(str(index_dir.resolve()).encode()).hexdigest()[:16]
    elsewhere = cache_dir() / CACHE_DIRNAME / name
    logger.info("the index folder %s cannot be written: previews go to %s", index_dir, elsewhere)
    return elsewhere


def _writable(folder: Path) -> bool:
    try:
        folder.mkdir(exist_ok=True)
        probe = folder / f".write-test-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        probe.touch()
        probe.unlink()
        return True
    except OSError:
        return False


class PreviewCache:
    """Previews of photo files, made on first request and kept on disk."""

    def __init__(self, folder: Path, *, side: int = PREVIEW_SIDE) -> None:
        self.folder = folder
        self.side = side

    def key(self, real_path: str, st: os.stat_result) -> str:
        text = f"{real_path}\0{st.st_size}\0{st.st_mtime_ns}\0{self.side}"
        return hashlib.sha256(text.encode("utf-8", "surrogateescape")).hexdigest()

    def path(self, real_path: str, st: os.stat_result) -> Path:
        key = self.key(real_path, st)
        return self.folder / key[:2] / f"{key}.webp"

    def cached(self, real_path: str, st: os.stat_result) -> bytes | None:
        """The preview if it was made already, else None (nothing is decoded)."""
        try:
            return self.path(real_path, st).read_bytes()
        except OSError:
            return None

    def get(self, real_path: str, st: os.stat_result) -> bytes:
        """The preview of a file (`st`: its stat, taken by the caller with the checks it made). Raises ImageError
        for a file that cannot be decoded; a cache that cannot be written only costs the next request a decode."""
        path = self.path(real_path, st)
        found = self.cached(real_path, st)
        if found is not None:
            return found
        data = render_preview(Path(real_path), side=self.side)
        tmp = path.with_name(f".{path.stem}.{uuid.uuid4().hex[:8]}.tmp")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_bytes(data)
            os.replace(tmp, path)
        except OSError as e:
            tmp.unlink(missing_ok=True)
            logger.info("preview not cached (%s): %s", path, e)
        return data
