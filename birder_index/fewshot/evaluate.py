"""How well the labelled set can be learned: cross-validated probe accuracy, per-class recall, a confusion-matrix
picture, and k-shot curves (1, 2, 5, 10 photos per class, several random draws) for kNN and prototypes."""

from __future__ import annotations

from dataclasses import dataclass
from dataclasses import field
from pathlib import Path

import numpy as np

from birder_index.errors import BirderIndexError
from birder_index.fewshot.classifiers import KnnClassifier
from birder_index.fewshot.classifiers import PrototypeClassifier
from birder_index.fewshot.labels import labelled_set
from birder_index.fewshot.probe import LinearProbe
from birder_index.fewshot.probe import cross_val_scores
from birder_index.fewshot.probe import fit_probe
from birder_index.indexer.index import Index

SHOTS = (1, 2, 5, 10)


@dataclass
class ProbeEval:
    top1: float
    top5: float
    per_class_recall: dict[str, float]
    confusion: np.ndarray  # (true, predicted) counts
    lam: float
    kshot: dict[str, dict[int, tuple[float, float]]]  # method -> shots -> (mean, std) accuracy over draws
    figures: list[Path] = field(default_factory=list)  # written by evaluate_set(plot_dir=...)


def sample_k_shot(y: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """k indices per class, in np.unique order (with replacement only where a class has fewer): birder's sampler."""
    out = []
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)
        out.append(rng.choice(idx, k, replace=len(idx) < k))
    return np.concatenate(out)


def kshot_curves(x: np.ndarray, y: np.ndarray, classes: list[str], *, draws: int = 5, neighbours: int = 10,
                 seed: int = 0) -> dict[str, dict[int, tuple[float, float]]]:  # fmt: skip
    """Accuracy on the photos not drawn, for k photos per class drawn at random (seeds seed + draw, as birder)."""
    curves: dict[str, dict[int, tuple[float, float]]] = {"knn": {}, "prototype": {}}
    smallest = int(np.bincount(y).min())
    for shots in (s for s in SHOTS if s < smallest):  # leave every class at least one photo to test on
        accs: dict[str, list[float]] = {"knn": [], "prototype": []}
        for draw in range(draws):
            train = sample_k_shot(y, shots, np.random.default_rng(seed + draw))
            test = np.setdiff1d(np.arange(len(y)), train)
            knn = KnnClassifier.fit(x[train], y[train], classes, k=neighbours)
            proto = PrototypeClassifier.fit(x[train], y[train], classes)
            for name, clf in (("knn", knn), ("prototype", proto)):
                accs[name].append(float((clf.scores(x[test]).argmax(1) == y[test]).mean()))
        for name in curves:
            curves[name][shots] = (float(np.mean(accs[name])), float(np.std(accs[name], ddof=1)) if draws > 1 else 0.0)
    return curves


def evaluate_probe(x: np.ndarray, y: np.ndarray, classes: list[str], *, folds: int = 5, balanced: bool = False,
                   draws: int = 5) -> ProbeEval:  # fmt: skip
    probe = fit_probe(x, y, classes, balanced=balanced)
    scores = cross_val_scores(x, y, classes, folds=folds, lam=probe.lam, balanced=balanced)
    pred = scores.argmax(1)
    top5 = np.argsort(-scores, 1)[:, :5]
    confusion = np.zeros((len(classes), len(classes)), np.int64)
    np.add.at(confusion, (y, pred), 1)
    recall = {c: float(confusion[i, i] / max(confusion[i].sum(), 1)) for i, c in enumerate(classes)}
    return ProbeEval(float((pred == y).mean()), float((top5 == y[:, None]).any(1).mean()), recall, confusion,
                     probe.lam, kshot_curves(x, y, classes, draws=draws))  # fmt: skip


def fit_set_probe(
    index: Index, set_name: str, *, balanced: bool = False, lam: float | None = None
) -> tuple[LinearProbe, float]:
    """A probe fitted on a label set of the index, bound to the index's model; returns (probe, seconds)."""
    import time

    ls = labelled_set(index, set_name)
    t0 = time.perf_counter()
    probe = fit_probe(ls.x, ls.y, ls.classes, lam=lam, balanced=balanced, model_sha256=index.model_row().sha256)
    return probe, time.perf_counter() - t0


def evaluate_set(
    index: Index, set_name: str, *, folds: int = 5, balanced: bool = False, plot_dir: Path | None = None
) -> ProbeEval:
    """`evaluate_probe` on a label set of the index; with `plot_dir`, its figures as PNG and SVG there (plots.py)."""
    ls = labelled_set(index, set_name)
    smallest = int(np.bincount(ls.y).min())
    if folds > smallest:
        raise BirderIndexError(
            f"--folds {folds} needs at least {folds} photos in every class; the smallest class of {set_name!r} has "
            f"{smallest} (use --folds {max(2, smallest)} or label more photos)"
        )
    ev = evaluate_probe(ls.x, ls.y, ls.classes, folds=folds, balanced=balanced)
    if plot_dir is not None:
        from birder_index.fewshot.plots import plot_evaluation

        ev.figures = plot_evaluation(ev.confusion, ev.kshot, ls.classes, plot_dir)
    return ev
