"""A photo's own copies, found the way dedup finds them: identical files by content (sha256, `dedup.find.twins_of`)
and near copies by the exact range join of `dedup.pairs` (every pair at cosine >= the duplicate threshold), in
memory linear in N. The curation signals leave a photo's copies out of its own evidence: a copy of a photo is not
a second opinion about it.
"""

from __future__ import annotations

import numpy as np

from birder_index.db import queries as q
from birder_index.db.engine import session_scope
from birder_index.dedup.calibrate import last_calibration
from birder_index.dedup.find import twins_of
from birder_index.dedup.pairs import similar_pairs
from birder_index.indexer.index import Index

# Near-copy threshold when the index holds no dedup calibration (`birder-index dedup` stores one): re-encoded and
# resized copies score above it; crops may not. Lower, the photos of a tight class count as copies of one another
# and are left out of each other's votes: at 0.95, 1,579 of the 1,797 digits had such "copies" under the ImageNet
# encoder (docs/curation.md).
COPY_MIN = 0.99


def copy_threshold(index: Index, *, copy_min: float | None = None) -> float:
    """The near-copy threshold: the one given, else dedup's stored calibration for this model, else COPY_MIN."""
    if copy_min is not None:
        return copy_min
    cal = last_calibration(index)
    if cal is not None and cal.model_sha256 == index.model_row().sha256:
        return cal.threshold
    return COPY_MIN


def copies_among(index: Index, ids: np.ndarray, *, threshold: float) -> dict[int, set[int]]:
    """id -> the other ids (of `ids`) that are its copies: same bytes, or embeddings at cosine >= threshold."""
    ids = np.asarray(ids, np.int64)
    out: dict[int, set[int]] = {}

    def fetch(positions: np.ndarray) -> np.ndarray:
        return index.fetch_normalized(ids[positions])[0]

    a, b, _ = similar_pairs(fetch, len(ids), threshold)
    for x, y in zip(ids[a].tolist(), ids[b].tolist(), strict=True):
        out.setdefault(x, set()).add(y)
        out.setdefault(y, set()).add(x)
    with session_scope(index.engine) as s:
        attrs = q.indexed_attributes(s)
    mine = np.isin(attrs["id"], ids)
    for i, others in twins_of({key: v[mine] for key, v in attrs.items()}).items():
        out.setdefault(i, set()).update(others)
    return out
