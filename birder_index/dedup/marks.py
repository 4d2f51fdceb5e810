"""Pairs of images a person said are not duplicates, kept in the index's `not_duplicates` table.

`find_duplicates` (and so `birder-index dedup`) never puts a marked pair in one group; the calibration can read
them as known negatives (`not_duplicate_pairs`). Marking a group marks every pair in it. A mark names two image ids,
which are never reused and which a renamed or moved file keeps; when either image leaves the index, its marks go.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import combinations

import numpy as np

from birder_index.db import queries as q
from birder_index.db.engine import session_scope
from birder_index.errors import BirderIndexError
from birder_index.indexer.index import Index

MAX_MARKED = 500  # images marked at once: a group that large is a threshold far too low, not a review


def _pairs(ids: Sequence[int]) -> list[tuple[int, int]]:
    distinct = sorted({int(i) for i in ids})
    if len(distinct) < 2:
        raise BirderIndexError("marking needs at least two different images")
    if len(distinct) > MAX_MARKED:
        raise BirderIndexError(
            f"{len(distinct)} images at once is more than {MAX_MARKED}: mark smaller groups, or raise the threshold"
        )
    return list(combinations(distinct, 2))


def mark_not_duplicates(index: Index, ids: Sequence[int]) -> int:
    """Mark every pair of these images (a pair, or a whole group) as not duplicates; returns how many pairs are new.
    Every id must name an image of the index."""
    pairs = _pairs(ids)
    with session_scope(index.engine) as s:
        known = q.image_rows(s, ids)
        missing = sorted({int(i) for i in ids} - set(known))
        if missing:
            raise BirderIndexError(f"no image with id {missing[0]} in the index in {index.dir}")
        return q.mark_not_duplicates(s, pairs)


def unmark_not_duplicates(index: Index, ids: Sequence[int]) -> int:
    """Forget the marks between every pair of these images; returns how many went."""
    pairs = _pairs(ids)
    with session_scope(index.engine) as s:
        return q.unmark_not_duplicates(s, pairs)


def not_duplicate_pairs(index: Index) -> tuple[np.ndarray, np.ndarray]:
    """(a ids, b ids), a < b, of every pair marked not duplicates: known negatives for a calibration."""
    with session_scope(index.engine) as s:
        return q.not_duplicate_pairs(s)


def marked_pairs(index: Index) -> frozenset[tuple[int, int]]:
    """The marked pairs as a set of (smaller id, larger id), for grouping."""
    a, b = not_duplicate_pairs(index)
    return frozenset(zip(a.tolist(), b.tolist(), strict=True))
