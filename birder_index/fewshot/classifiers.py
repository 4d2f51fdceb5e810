"""Few-shot lookup on frozen embeddings: which labelled class a photo shows, or `unknown`.

Methods, each a plain classifier over raw embeddings (xb: labelled, xq: queries):
- knn: cosine similarity to the labelled photos; the k nearest vote with softmax(similarity / 0.07) weights, as
  birder's own kNN evaluation does. Score: the class's share of the vote.
- prototype: SimpleShot. Subtract the labelled mean, L2-normalise, nearest class mean (Euclidean), as birder's
  evaluation. Score: 1 - |q - c|^2 / 2, which ranks as the distance does and reads as a cosine for unit means.
- probe: a linear probe fitted on the labelled set (probe.py). Score: its softmax probability.
- head: a fine-tuned model's own classifier, restricted to the set's classes. Score: softmax probability.
The open-set threshold (`min_score`), when not given, accepts 95 % of the labelled photos each looked up with
itself left out (kNN, prototype) or held out by 5-fold cross-validation (probe).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

from birder_index.errors import BirderIndexError

TEMPERATURE = 0.07  # birder's kNN evaluation
ACCEPT_KNOWN = 0.95  # the open-set threshold accepts this share of held-out labelled photos
METHODS = ("knn", "prototype", "probe", "head")


def l2(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


class Classifier(Protocol):
    classes: list[str]

    def scores(self, xq: np.ndarray) -> np.ndarray:
        """(nq, n_classes) scores, higher is more likely."""
        ...


@dataclass
class KnnClassifier:
    xb: np.ndarray  # L2-normalised labelled embeddings
    yb: np.ndarray  # class index per labelled embedding
    classes: list[str]
    k: int = 10

    @classmethod
    def fit(cls, xb: np.ndarray, yb: np.ndarray, classes: list[str], *, k: int = 10) -> KnnClassifier:
        return cls(l2(xb), yb, classes, k)

    def neighbours(self, xq: np.ndarray, *, exclude: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(similarities, labelled indices) of the k nearest, best first; `exclude[i]` is left out for query i."""
        sims = l2(xq) @ self.xb.T
        if exclude is not None:
            sims[np.arange(len(sims)), exclude] = -np.inf
        k = min(self.k, self.xb.shape[0] - (exclude is not None))
        top = np.argsort(-sims, axis=1, kind="stable")[:, :k]
        return np.take_along_axis(sims, top, 1), top

    def scores(self, xq: np.ndarray, *, exclude: np.ndarray | None = None) -> np.ndarray:
        sims, top = self.neighbours(xq, exclude=exclude)
        w = np.exp((sims - sims[:, :1]) / TEMPERATURE)
        w /= w.sum(axis=1, keepdims=True)
        out = np.zeros((len(xq), len(self.classes)), np.float32)
        np.add.at(out, (np.repeat(np.arange(len(xq)), top.shape[1]), self.yb[top].ravel()), w.ravel())
        return out


@dataclass
class PrototypeClassifier:
    mean: np.ndarray  # mean of the labelled embeddings
    centroids: np.ndarray  # (n_classes, d) class means of the centred, normalised labelled embeddings
    counts: np.ndarray
    classes: list[str]

    @classmethod
    def fit(cls, xb: np.ndarray, yb: np.ndarray, classes: list[str]) -> PrototypeClassifier:
        mean = np.asarray(xb, np.float32).mean(axis=0)
        z = l2(xb - mean)
        counts = np.bincount(yb, minlength=len(classes)).astype(np.float32)
        sums = np.zeros((len(classes), z.shape[1]), np.float32)
        np.add.at(sums, yb, z)
        return cls(mean, sums / np.maximum(counts, 1)[:, None], counts, classes)

    def scores(self, xq: np.ndarray) -> np.ndarray:
        z = l2(np.asarray(xq, np.float32) - self.mean)
        return 1 - 0.5 * _sq_dist(z, self.centroids)

    def loo_scores(self, xb: np.ndarray, yb: np.ndarray) -> np.ndarray:
        """Scores of each labelled embedding with itself removed from its class mean (the labelled mean is kept)."""
        z = l2(np.asarray(xb, np.float32) - self.mean)
        out = np.empty((len(z), len(self.classes)), np.float32)
        for i in range(len(z)):
            c = self.centroids.copy()
            n = self.counts[yb[i]]
            c[yb[i]] = (c[yb[i]] * n - z[i]) / max(n - 1, 1)
            out[i] = 1 - 0.5 * _sq_dist(z[i : i + 1], c)[0]
            if n <= 1:
                out[i, yb[i]] = -np.inf  # a class with one photo has nothing left to match
        return out


def _sq_dist(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.maximum((a**2).sum(1)[:, None] - 2 * a @ b.T + (b**2).sum(1)[None, :], 0)


def fit_classes(labels: list[str]) -> tuple[np.ndarray, list[str]]:
    classes = sorted(set(labels))
    index = {c: i for i, c in enumerate(classes)}
    return np.array([index[label] for label in labels], np.int64), classes


def open_set_threshold(held_out_scores: np.ndarray) -> float:
    """The score that accepts ACCEPT_KNOWN of the labelled photos when each is scored without itself."""
    best = held_out_scores.max(axis=1)
    best = best[np.isfinite(best)]
    if not len(best):
        raise BirderIndexError("too few labelled photos to calibrate --min-score; give it explicitly")
    return float(np.quantile(best, 1 - ACCEPT_KNOWN))


@dataclass(frozen=True)
class Prediction:
    label: str
    score: float
    support: list[int]  # labelled image ids closest to the query within this class


def top_predictions(
    scores: np.ndarray,
    support: KnnClassifier,
    xq: np.ndarray,
    ids: np.ndarray,
    *,
    k: int,
    per_class: int = 3,
    own: np.ndarray | None = None,
) -> list[list[Prediction]]:
    """The k best classes per query, each with the labelled photos of that class (`support`, the labelled set
    whose ids are `ids`) nearest to the query; `own[i]` (when >= 0) is query i's own labelled photo, never listed as
    support for it."""
    sims = l2(xq) @ support.xb.T
    if own is not None:
        rows = np.flatnonzero(own >= 0)
        sims[rows, own[rows]] = -np.inf
    out = []
    for row, qsims in zip(scores, sims, strict=True):
        best = np.argsort(-row, kind="stable")[:k]
        preds = []
        for c in best:
            members = np.flatnonzero(support.yb == c)
            nearest = members[np.argsort(-qsims[members], kind="stable")[:per_class]]
            preds.append(Prediction(support.classes[c], float(row[c]), ids[nearest].tolist()))
        out.append(preds)
    return out
