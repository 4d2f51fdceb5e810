"""Label audit: labelled photos whose label disagrees with their labelled neighbours and with the set's class
prototypes, most suspicious first.

Each labelled photo is judged without itself and without its own copies (`copies.py`: same bytes, or near copies
as dedup finds them), so neither it nor a copy of it can vote for its label:
- kNN: its k nearest labelled photos vote with softmax(similarity / T) weights (birder's kNN evaluation, as
  `lookup --method knn`, T = 0.07 there); the vote shares are a distribution over the classes.
- prototypes: SimpleShot, as `lookup --method prototype` (subtract the labelled mean, L2-normalise, class means),
  each class mean taken without the photo and its copies; scores 1 - |z - m|^2 / 2 become a distribution by a
  softmax.
The two are mixed, p = (1 - w) kNN + w prototypes. The prototype temperature, the kNN temperature (0.02 or 0.07)
and w (0 to 1 in quarters) are those under which the given labels are most likely, each photo held out (on a
sample of up to 20,000): most labels are right, so the set itself says how far to trust each signal.
Suspicion is 1 - p(given label) (cleanlab's self-confidence, on these held-out probabilities; below 0.001 ties
are broken by the confidence of the class the photo looks like); the photos listed are those another class
outvotes (`looks_like`, with `confidence` its probability), most suspicious first, each with the labelled photos
of `looks_like` nearest to it as the evidence.

Plain functions over arrays first, then `audit_labels` over an Index. Memory is linear in the labelled photos:
vectors are read a chunk at a time, neighbours come from the index's batch search (`neighbours.py`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from dataclasses import field

import numpy as np

from birder_index.curation.copies import copies_among
from birder_index.curation.copies import copy_threshold
from birder_index.curation.neighbours import neighbour_lists
from birder_index.db import queries as q
from birder_index.db.engine import session_scope
from birder_index.errors import BirderIndexError
from birder_index.fewshot.classifiers import TEMPERATURE
from birder_index.fewshot.classifiers import l2
from birder_index.fewshot.labels import labelled_ids
from birder_index.indexer.index import Index
from birder_index.indexer.index import absolute_path
from birder_index.progress import Progress
from birder_index.progress import silent
from birder_index.search.knn import nearest

logger = logging.getLogger(__name__)

CHUNK = 8192  # labelled photos read at once
SCORE_CELLS = 1 << 21  # (photo, class) prototype scores computed at once: 16 MB per float64 array
TEMPERATURES = (0.005, 0.01, 0.02, 0.03, 0.05, 0.07, 0.1, 0.15, 0.2, 0.3, 0.5)
KNN_TEMPERATURES = (0.02, TEMPERATURE)
WEIGHTS = (0.0, 0.25, 0.5, 0.75, 1.0)  # of the prototypes in the mixture
FLOOR = 1e-3  # probabilities below count as this in the likelihood: a kNN vote gives absent classes 0
CALIBRATION_SAMPLE = 20_000
SUPPORT = 3  # photos shown as the evidence for each suspect


# -- arrays --------------------------------------------------------------------------------------------------------


def knn_shares(D: np.ndarray, labels: np.ndarray, n_classes: int, *, temperature: float = TEMPERATURE) -> np.ndarray:
    """(n, C) vote shares of neighbours (D similarities (n, k), best first, -inf where none; labels (n, k) their
    class indices): softmax(similarity / temperature) weights. A row without neighbours gets zeros."""
    valid = np.isfinite(D) & (labels >= 0)
    top = np.where(valid[:, :1], D[:, :1], 0)
    w = np.where(valid, np.exp((np.where(valid, D, 0) - top) / temperature), 0).astype(np.float32)
    w /= np.maximum(w.sum(axis=1, keepdims=True), 1e-30)
    out = np.zeros((len(D), n_classes), np.float32)
    rows = np.repeat(np.arange(len(D)), D.shape[1])
    np.add.at(out, (rows[valid.ravel()], labels.ravel()[valid.ravel()]), w.ravel()[valid.ravel()])
    return out


def class_sums(z: np.ndarray, y: np.ndarray, n_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """(per-class sums (C, d), counts (C,)) of centred, normalised embeddings z (n, d) with classes y."""
    sums = np.zeros((n_classes, z.shape[1]), np.float64)
    np.add.at(sums, y, z)
    return sums, np.bincount(y, minlength=n_classes).astype(np.float64)


def loo_prototype_scores(
    z: np.ndarray, y: np.ndarray, sums: np.ndarray, counts: np.ndarray,
    *, left_out: dict[int, tuple[np.ndarray, np.ndarray]] | None = None,
) -> np.ndarray:  # fmt: skip
    """(n, C) scores 1 - |z - m_c|^2 / 2 of rows z (n, d) (classes y) against class means m_c = sums / counts taken
    without the row itself. `left_out[row]`: (vectors (m, d), classes (m,)) of other photos to take out of the
    means for that row too (its copies). -inf for a class left with no photo."""
    zs = z @ sums.T  # (n, C)
    s2 = (sums * sums).sum(1)  # (C,)
    z2 = (z * z).sum(1)
    rows = np.arange(len(z))
    own_dot = zs[rows, y] - z2  # z . (S_y - z)
    own_s2 = s2[y] - 2 * zs[rows, y] + z2
    dots = np.broadcast_to(zs, zs.shape).copy()
    sq = np.broadcast_to(s2, zs.shape).copy()
    n = np.broadcast_to(counts, zs.shape).copy()
    dots[rows, y], sq[rows, y], n[rows, y] = own_dot, own_s2, counts[y] - 1
    for row, (zo, yo) in (left_out or {}).items():
        # only the classes the row and its copies belong to change: O(copies x d) per row, not O(classes x d)
        # (a (classes, d) copy per row made the audit of 1M photos in 2,700 classes run for hours)
        cls, at = np.unique(np.append(yo, y[row]), return_inverse=True)
        r = np.zeros((len(cls), z.shape[1]), np.float64)
        np.add.at(r, at, np.vstack([zo, z[row : row + 1]]))
        s = sums[cls] - r
        dots[row, cls], sq[row, cls] = s @ z[row], (s * s).sum(1)
        n[row, cls] = counts[cls] - np.bincount(at, minlength=len(cls))
    with np.errstate(divide="ignore", invalid="ignore"):
        d2 = z2[:, None] - 2 * dots / n + sq / (n * n)
    return np.where(n > 0, 1 - 0.5 * np.maximum(d2, 0), -np.inf).astype(np.float32)


def softmax(scores: np.ndarray, temperature: float) -> np.ndarray:
    finite = np.isfinite(scores)
    top = np.max(np.where(finite, scores, -1e30), axis=1, keepdims=True)
    e = np.where(finite, np.exp((np.where(finite, scores, top) - top) / temperature), 0)
    return (e / np.maximum(e.sum(axis=1, keepdims=True), 1e-30)).astype(np.float32)


def fit_temperature(scores: np.ndarray, y: np.ndarray) -> float:
    """The softmax temperature whose probabilities of the given labels have the best held-out log-likelihood."""
    best = (np.inf, TEMPERATURES[0])
    for t in TEMPERATURES:
        p = softmax(scores, t)[np.arange(len(y)), y]
        nll = float(-np.log(np.maximum(p, 1e-12)).mean())
        best = min(best, (nll, t))
    return best[1]


def fit_mixture(knn: dict[float, np.ndarray], proto: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """(kNN temperature, prototype weight) under which the given labels y are most likely: `knn` maps each kNN
    temperature to its (n, C) vote shares, `proto` the prototype probabilities (n, C), all held out."""
    rows = np.arange(len(y))
    best = (-np.inf, KNN_TEMPERATURES[-1], 0.5)
    for t, p_knn in knn.items():
        for w in WEIGHTS:
            p = (1 - w) * p_knn[rows, y] + w * proto[rows, y]
            ll = float(np.log(np.maximum(p, FLOOR)).mean())
            if ll > best[0] + 1e-9:
                best = (ll, t, w)
    return best[1], best[2]


def looks_like(p: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(looks_like, its probability, margin over the given label's) per row of class probabilities p (n, C)."""
    rows = np.arange(len(y))
    given = p[rows, y]
    other = p.copy()
    other[rows, y] = -np.inf
    looks = other.argmax(1)
    confidence = other[rows, looks]
    return looks, confidence, confidence - given


# -- an index ------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Support:
    id: int
    path: str
    label: str
    similarity: float


@dataclass(frozen=True)
class Suspect:
    id: int
    path: str
    label: str  # the label given
    looks_like: str
    confidence: float  # combined probability of looks_like
    label_score: float  # ... of the label given
    knn: float  # share of the kNN vote for looks_like
    prototype: float  # prototype probability of looks_like
    copies: int  # copies of the photo left out of its evidence
    nearest: list[Support] = field(default_factory=list)

    def to_json(self) -> dict[str, object]:
        return {
            "id": self.id, "path": self.path, "label": self.label, "looks_like": self.looks_like,
            "confidence": round(self.confidence, 4), "label_score": round(self.label_score, 4),
            "knn": round(self.knn, 4), "prototype": round(self.prototype, 4), "copies": self.copies,
            "nearest": [{"id": s.id, "path": s.path, "label": s.label, "similarity": round(s.similarity, 4)}
                        for s in self.nearest],
        }  # fmt: skip


@dataclass
class Audit:
    set_name: str
    classes: list[str]
    labelled: int
    k: int
    copy_min: float
    temperature: float  # of the prototype softmax
    knn_temperature: float
    weight: float  # of the prototypes in the mixture
    suspects: list[Suspect]  # most suspicious first (all flagged, or the top asked for)
    flagged: int  # photos whose label is outvoted
    ids: np.ndarray  # every labelled photo ...
    suspicion: np.ndarray  # ... and its suspicion, 1 - p(given label) (ties below 0.001 by confidence): the ranking

    def to_json(self) -> dict[str, object]:
        return {
            "set": self.set_name, "classes": len(self.classes), "labelled": self.labelled, "flagged": self.flagged,
            "k": self.k, "copy_min": round(self.copy_min, 4), "temperature": self.temperature,
            "knn_temperature": self.knn_temperature, "prototype_weight": self.weight,
            "suspects": [s.to_json() for s in self.suspects],
        }  # fmt: skip


def _centred(index: Index, ids: np.ndarray, mean: np.ndarray) -> np.ndarray:
    return l2(index.vectors(ids) - mean)


def _prototype_pass(index: Index, ids: np.ndarray, y: np.ndarray, n_classes: int) -> tuple[np.ndarray, ...]:
    """(labelled mean, class sums, counts), two passes over the vectors a chunk at a time."""
    total = np.zeros(index.store().dim, np.float64)
    for start in range(0, len(ids), CHUNK):
        total += index.vectors(ids[start : start + CHUNK]).sum(0)
    mean = (total / len(ids)).astype(np.float32)
    sums = np.zeros((n_classes, len(mean)), np.float64)
    for start in range(0, len(ids), CHUNK):
        s, _ = class_sums(_centred(index, ids[start : start + CHUNK], mean), y[start : start + CHUNK], n_classes)
        sums += s
    return mean, sums, np.bincount(y, minlength=n_classes).astype(np.float64)


def audit_labels(
    index: Index, set_name: str, *, k: int = 10, top: int | None = None, copy_min: float | None = None,
    progress: Progress = silent,
) -> Audit:  # fmt: skip
    """Audit a label set: the photos whose label their neighbours and the prototypes outvote, most suspicious first
    (`top`: only that many listed; the whole ranking is in `ids`, `suspicion`)."""
    if top is not None and top < 1:
        raise BirderIndexError(f"--top must be >= 1, got {top}")
    ids, y, classes = labelled_ids(index, set_name, purpose="an audit")
    threshold = copy_threshold(index, copy_min=copy_min)
    progress("finding copies", 0, None)
    copies = copies_among(index, ids, threshold=threshold)
    everything = len(ids) == len(index.id_rows()[0])  # every indexed photo labelled: the plain (faster) search
    D, I = neighbour_lists(
        index, ids, k=k, among=None if everything else ids, copies=copies, progress=progress, what="neighbours"
    )
    D = np.where(threshold <= D, -np.inf, D)  # near copies the search found that the join did not (rounding)
    at = np.clip(np.searchsorted(ids, I), 0, len(ids) - 1)
    nbr_y = np.where((I >= 0) & (ids[at] == I), y[at], -1)  # a neighbour outside the set (none expected) votes not
    mean, sums, counts = _prototype_pass(index, ids, y, len(classes))
    proto = Prototypes(index, ids, y, mean, sums, counts, copies)
    sample = np.sort(np.random.default_rng(0).permutation(len(ids))[:CALIBRATION_SAMPLE])
    scores = proto.scores(sample)
    t = fit_temperature(scores, y[sample])
    shares = {tk: knn_shares(D[sample], nbr_y[sample], len(classes), temperature=tk) for tk in KNN_TEMPERATURES}
    tk, w = fit_mixture(shares, softmax(scores, t), y[sample])
    rows_out = Judged.empty(len(ids))
    for start in range(0, len(ids), CHUNK):  # (chunk, classes) arrays at a time: memory linear in N
        rows = np.arange(start, min(start + CHUNK, len(ids)))
        p_knn = knn_shares(D[rows], nbr_y[rows], len(classes), temperature=tk)
        p_proto = softmax(proto.scores(rows), t)
        p = np.where(p_knn.sum(1, keepdims=True) > 0, (1 - w) * p_knn + w * p_proto, p_proto)
        rows_out.fill(rows, y[rows], p, p_knn, p_proto)
    # below FLOOR the label's probability says no more (the likelihood counts it as FLOOR): ties are broken there by
    # the confidence of the class the photo looks like
    suspicion = 1 - np.maximum(rows_out.label_score, FLOOR) + FLOOR * rows_out.confidence
    outvoted = np.flatnonzero(rows_out.margin > 0)
    listed = outvoted[np.argsort(-suspicion[outvoted], kind="stable")][:top]
    suspects = _suspects(index, ids, y, classes, listed, rows_out, copies)
    return Audit(set_name, classes, len(ids), k, threshold, t, tk, w, suspects, len(outvoted), ids, suspicion)


@dataclass
class Prototypes:
    """Leave-one-out prototype scores of rows of a label set, read a chunk at a time."""

    index: Index
    ids: np.ndarray
    y: np.ndarray
    mean: np.ndarray
    sums: np.ndarray
    counts: np.ndarray
    copies: dict[int, set[int]]

    def scores(self, rows: np.ndarray) -> np.ndarray:
        """(len(rows), classes) leave-one-out scores, computed SCORE_CELLS (row, class) cells at a time: 8,192 rows
        of 2,700 classes made six float64 arrays of 177 MB each."""
        step = max(64, SCORE_CELLS // len(self.counts))
        return np.concatenate([self._scores(rows[start : start + step]) for start in range(0, max(len(rows), 1), step)])

    def _scores(self, rows: np.ndarray) -> np.ndarray:
        # row -> positions of its copies (ids are sorted: a position is a searchsorted); their vectors are read in
        # one call for the whole chunk
        own = {
            r: np.searchsorted(self.ids, np.array(sorted(self.copies[i]), np.int64))
            for r, i in enumerate(self.ids[rows].tolist())
            if i in self.copies
        }
        z = _centred(self.index, self.ids[rows], self.mean)
        left = {}
        if own:
            wanted = np.unique(np.concatenate(list(own.values())))
            zw = _centred(self.index, self.ids[wanted], self.mean)
            left = {r: (zw[np.searchsorted(wanted, at)], self.y[at]) for r, at in own.items()}
        return loo_prototype_scores(z, self.y[rows], self.sums, self.counts, left_out=left)


@dataclass
class Judged:
    """Per labelled photo: the class it looks like most after its own, that class's probability (combined, kNN,
    prototype), its label's, and the margin between them."""

    looks: np.ndarray
    confidence: np.ndarray
    label_score: np.ndarray
    knn: np.ndarray
    prototype: np.ndarray
    margin: np.ndarray

    @classmethod
    def empty(cls, n: int) -> Judged:
        return cls(np.zeros(n, np.int64), *(np.zeros(n, np.float32) for _ in range(5)))

    def fill(self, rows: np.ndarray, y: np.ndarray, p: np.ndarray, p_knn: np.ndarray, p_proto: np.ndarray) -> None:
        looks, confidence, margin = looks_like(p, y)
        at = np.arange(len(rows))
        self.looks[rows], self.confidence[rows], self.margin[rows] = looks, confidence, margin
        self.label_score[rows] = p[at, y]
        self.knn[rows], self.prototype[rows] = p_knn[at, looks], p_proto[at, looks]


def _suspects(
    index: Index, ids: np.ndarray, y: np.ndarray, classes: list[str], listed: np.ndarray, judged: Judged,
    copies: dict[int, set[int]],
) -> list[Suspect]:  # fmt: skip
    """The listed rows as Suspects, each with the labelled photos of the class it looks like nearest to it (not
    itself, not its copies)."""
    support: dict[int, list[tuple[int, float]]] = {}
    looks = judged.looks
    for c in np.unique(looks[listed]).tolist():
        rows = listed[looks[listed] == c]
        members = ids[y == c]
        xq, _ = index.fetch_normalized(ids[rows])
        extra = max(len(copies.get(int(i), ())) for i in ids[rows])
        D, I = nearest(index, xq, k=min(len(members), SUPPORT + extra), among=members)
        for row, drow, irow in zip(rows.tolist(), D, I, strict=True):
            mine = copies.get(int(ids[row]), set())
            support[row] = [
                (int(i), float(d)) for d, i in zip(drow, irow, strict=True) if i >= 0 and int(i) not in mine
            ]
            support[row] = support[row][:SUPPORT]
    with session_scope(index.engine) as s:
        paths = q.paths_of(s, [*ids[listed].tolist(), *(i for v in support.values() for i, _ in v)])
    root = index.root
    label_of = dict(zip(ids.tolist(), y.tolist(), strict=True))
    out = []
    for row in listed.tolist():
        i, c = int(ids[row]), int(looks[row])
        near = [Support(j, absolute_path(root, paths[j]), classes[label_of[j]], sim) for j, sim in support[row]]
        out.append(Suspect(
            i, absolute_path(root, paths[i]), classes[y[row]], classes[c], float(judged.confidence[row]),
            float(judged.label_score[row]), float(judged.knn[row]), float(judged.prototype[row]),
            len(copies.get(i, ())), near,
        ))  # fmt: skip
    return out
