"""Every pair of thumbnails that correlate >= a bar, straight or one of them mirrored, in one range join.

A copy flipped left to right has its original's thumbnail mirrored. Rather than join the thumbnails once as they
are and once mirrored against them (three times the work of the first join: the second is not a self-join), each
thumbnail is turned upright (backbone/thumbnail.py `upright`: mirrored if it leans left), which makes a picture
and its mirror image the same vector. Copies come out turned opposite ways only when both lean little, so those
that do (below `ambiguous_lean(bar)`) are added turned the other way too: the join finds every pair, exactly,
over a fifth to a third more vectors than the straight join alone (synthetic and real thumbnails), and faster
than two joins (docs/benchmarks.md#dedup).

Plain functions over arrays, as `pairs.py`: thumbnails come from `read(positions) -> uint8 (len, THUMB_DIM)`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from birder_index.backbone.thumbnail import ambiguous_lean
from birder_index.backbone.thumbnail import lean
from birder_index.backbone.thumbnail import mirrored
from birder_index.backbone.thumbnail import thumbnail_vectors
from birder_index.backbone.thumbnail import upright
from birder_index.dedup.pairs import Runner
from birder_index.dedup.pairs import similar_pairs

Read = Callable[[np.ndarray], np.ndarray]
CHUNK = 1 << 16  # thumbnails read at once to find those that lean little


def thumbnail_pairs(
    read_q: Read, nq: int, bar: float, *, read_b: Read | None = None, nb: int = 0, runner: Runner | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(query positions, database positions) of every pair whose thumbnails correlate >= bar as they are or with
    one mirrored. Without `read_b` a self-join: each pair once, smaller position first, no thumbnail with itself."""
    mine = Upright.of(read_q, nq, bar)
    theirs = mine if read_b is None else Upright.of(read_b, nb, bar)
    pa, pb, _ = similar_pairs(
        mine.fetch, len(mine), bar, fetch_b=None if read_b is None else theirs.fetch, nb=len(theirs), runner=runner
    )
    a, b = mine.image(pa), theirs.image(pb)
    if read_b is None:  # a near-symmetric picture meets itself turned; a pair can come up both ways
        a, b = np.minimum(a, b)[a != b], np.maximum(a, b)[a != b]
    key = np.int64(max(theirs.n, 1))
    found = np.unique(a * key + b)
    return found // key, found % key


@dataclass(frozen=True)
class Upright:
    """Thumbnails as the join sees them: positions 0..n-1 are the n thumbnails turned upright; the positions after
    them are those in `both` turned the other way (they lean so little that a copy may come out turned opposite)."""

    read: Read
    n: int
    both: np.ndarray  # positions (< n) of the thumbnails compared both ways

    @classmethod
    def of(cls, read: Read, n: int, bar: float) -> Upright:
        leans, flat = np.zeros(n, np.float32), np.zeros(n, bool)
        for start in range(0, n, CHUNK):
            v = thumbnail_vectors(read(np.arange(start, min(start + CHUNK, n))))
            leans[start : start + len(v)], flat[start : start + len(v)] = np.abs(lean(v)), ~v.any(axis=1)
        return cls(read, n, np.nonzero((leans < ambiguous_lean(bar)) & ~flat)[0])  # flat ones match nothing

    def __len__(self) -> int:
        return self.n + len(self.both)

    def image(self, positions: np.ndarray) -> np.ndarray:
        """The thumbnail (0..n-1) behind each join position."""
        out = positions.copy()
        out[positions >= self.n] = self.both[positions[positions >= self.n] - self.n]
        return out

    def fetch(self, positions: np.ndarray) -> np.ndarray:
        v = upright(thumbnail_vectors(self.read(self.image(positions))))
        turn = positions >= self.n
        v[turn] = mirrored(v[turn])
        return v
