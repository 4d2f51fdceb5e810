"""Looking through a collection a page at a time: its images in path or date order, one folder or one status
(failed files with their reason), the details of given images, and the folders that hold them. A page is read with
LIMIT/OFFSET, so a collection of millions is never read whole."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from birder_index.db import queries as q
from birder_index.db.engine import session_scope
from birder_index.db.models import FAILED
from birder_index.db.models import INDEXED
from birder_index.db.models import PENDING
from birder_index.db.queries import SORTS
from birder_index.db.queries import ImageRow
from birder_index.errors import BirderIndexError
from birder_index.indexer.index import Index
from birder_index.search.knn import folder_of

MAX_PAGE = 1000
STATUSES = (INDEXED, FAILED, PENDING)


@dataclass(frozen=True)
class Page:
    total: int  # images matching, on every page
    offset: int
    items: list[ImageRow]


def browse(
    index: Index, *, offset: int = 0, limit: int = 100, sort: str = "path", folder: str | None = None,
    status: str | None = None,
) -> Page:  # fmt: skip
    """One page of the collection: `sort` "path", "date" (file date, oldest first) or "-date"; `folder` relative
    to the photo folder (or absolute inside it); `status` "indexed", "failed" (with their reason) or "pending"."""
    if sort not in SORTS:
        raise BirderIndexError(f"sort must be one of {', '.join(SORTS)}, got {sort!r}")
    if status is not None and status not in STATUSES:
        raise BirderIndexError(f"status must be one of {', '.join(STATUSES)}, got {status!r}")
    if not 1 <= limit <= MAX_PAGE:
        raise BirderIndexError(f"a page holds 1 to {MAX_PAGE} images, not {limit}")
    if offset < 0:
        raise BirderIndexError(f"offset must be >= 0, got {offset}")
    where = folder_of(index, folder) if folder else None
    with session_scope(index.engine) as s:
        total = q.count_images(s, folder=where, status=status)
        items = q.browse_images(s, offset=offset, limit=limit, sort=sort, folder=where, status=status)
    return Page(total, offset, items)


def image_details(index: Index, ids: list[int]) -> dict[int, ImageRow]:
    """What the index records of these images (those it holds), by id."""
    with session_scope(index.engine) as s:
        return q.image_rows(s, ids)


def image_at(index: Index, path: str) -> ImageRow | None:
    """The image stored under a path: relative to the photo folder, or absolute and inside it. No file is read."""
    root = index.root
    rel = path
    if root is not None and os.path.isabs(path):
        try:
            rel = Path(os.path.abspath(path)).relative_to(root).as_posix()
        except ValueError:
            return None
    with session_scope(index.engine) as s:
        found = q.image_by_path(s, rel.removeprefix("./"))
        return q.image_rows(s, [found.id]).get(found.id) if found is not None else None


def folders(index: Index) -> dict[str, int]:
    """Every folder holding indexed images ("" for the photo folder itself), with how many are at or below it."""
    with session_scope(index.engine) as s:
        return q.folder_counts(s)
