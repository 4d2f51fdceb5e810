"""`lookup`: what a photo shows, from a label set of the index (see fewshot.py for the methods)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from birder_index.db import queries as q
from birder_index.db.engine import session_scope
from birder_index.errors import BirderIndexError
from birder_index.fewshot.classifiers import METHODS
from birder_index.fewshot.classifiers import Classifier
from birder_index.fewshot.classifiers import KnnClassifier
from birder_index.fewshot.classifiers import PrototypeClassifier
from birder_index.fewshot.classifiers import open_set_threshold
from birder_index.fewshot.classifiers import top_predictions
from birder_index.fewshot.labels import LabelledSet
from birder_index.fewshot.labels import labelled_set
from birder_index.indexer.index import Index
from birder_index.indexer.index import absolute_path
from birder_index.output import csv_text
from birder_index.output import write_text
from birder_index.progress import Progress
from birder_index.progress import silent
from birder_index.search.queries import expand_queries
from birder_index.search.queries import query_vectors
from birder_index.search.queries import stored_ids

if TYPE_CHECKING:
    from birder_index.backbone.encoder import Encoder


@dataclass(frozen=True)
class Lookup:
    query: str
    predictions: list[tuple[str, float, list[str]]]  # (label, score, support paths)
    unknown: bool

    def to_json(self) -> dict[str, object]:
        return {
            "query": self.query,
            "predictions": [{"label": lab, "score": round(sc, 6), "support": sup} for lab, sc, sup in self.predictions],
            "unknown": self.unknown,
        }


def classifier(
    index: Index, ls: LabelledSet, method: str, *, neighbours: int = 10, probe_file: Path | None = None
) -> tuple[Classifier, np.ndarray]:
    """The fitted classifier and held-out scores of the labelled photos (for the open-set threshold)."""
    if method not in METHODS:
        raise BirderIndexError(f"--method must be one of {', '.join(METHODS)}, got {method!r}")
    if method == "knn":
        knn = KnnClassifier.fit(ls.x, ls.y, ls.classes, k=neighbours)
        return knn, knn.scores(ls.x, exclude=np.arange(len(ls.x)))
    if method == "prototype":
        proto = PrototypeClassifier.fit(ls.x, ls.y, ls.classes)
        return proto, proto.loo_scores(ls.x, ls.y)
    if method == "probe":
        return _probe(index, ls, probe_file)
    return _head(index, ls)


def _probe(index: Index, ls: LabelledSet, probe_file: Path | None) -> tuple[Classifier, np.ndarray]:
    from birder_index.fewshot.probe import LinearProbe
    from birder_index.fewshot.probe import cross_val_scores
    from birder_index.fewshot.probe import fit_probe

    row = index.model_row()
    if probe_file is not None:
        probe = LinearProbe.load(probe_file, row.sha256, row.embedding_dim)
        if sorted(probe.classes) != ls.classes:
            raise BirderIndexError(f"{probe_file} was fitted on other classes than label set's")
    else:
        probe = fit_probe(ls.x, ls.y, ls.classes, model_sha256=row.sha256)
    held_out = cross_val_scores(ls.x, ls.y, ls.classes, lam=probe.lam)
    return probe, held_out


@dataclass
class _Head:
    classes: list[str]
    columns: np.ndarray  # the head's outputs for the set's classes
    encoder: Encoder

    def scores(self, xq: np.ndarray) -> np.ndarray:
        """Softmax over the set's classes of the model's own head, applied to the stored embeddings."""
        import torch

        logits = self.encoder.head_logits(torch.from_numpy(np.asarray(xq, np.float32)))[:, self.columns]
        return torch.softmax(logits, 1).numpy()


def _head(index: Index, ls: LabelledSet) -> tuple[Classifier, np.ndarray]:
    enc = index.load_encoder()
    if not enc.has_head:
        raise BirderIndexError(f"{enc.info.name} has no classifier head; use --method knn, prototype or probe")
    position = {c: i for i, c in enumerate(enc.info.classes)}
    missing = [c for c in ls.classes if c not in position]
    if missing:
        raise BirderIndexError(f"the model's head has no class {missing[0]!r} (of {len(missing)} set classes)")
    head = _Head(ls.classes, np.array([position[c] for c in ls.classes]), enc)
    return head, head.scores(ls.x)


def lookup(
    index: Index, queries: list[str], set_name: str, *, method: str = "knn", k: int = 5, neighbours: int = 10,
    min_score: float | None = None, probe_file: Path | None = None, exact: bool = False, progress: Progress = silent,
) -> list[Lookup]:  # fmt: skip
    """Top-k classes per query image, with supporting labelled photos; `unknown` below the open-set threshold."""
    ls = labelled_set(index, set_name)
    clf, held_out = classifier(index, ls, method, neighbours=neighbours, probe_file=probe_file)
    threshold = open_set_threshold(held_out) if min_score is None else min_score
    files = expand_queries(list(queries))
    stored = stored_ids(index, files)
    xq = query_vectors(index, files, exact=exact, stored=stored, progress=progress)
    position = {int(i): n for n, i in enumerate(ls.ids)}
    own = np.array([-1 if i is None else position.get(i, -1) for i in stored], np.int64)
    return _lookups(index, files, xq, ls, clf, k, threshold, own)


def _lookups(index: Index, names: list[str], xq: np.ndarray, ls: LabelledSet, clf: Classifier, k: int,
             threshold: float, own: np.ndarray) -> list[Lookup]:  # fmt: skip
    """`own[i]`: the labelled set's position of query i when it is itself a labelled photo, else -1. Such a query
    is scored without itself (kNN and prototypes), as the open-set threshold was: a photo is not evidence for its
    own label. A probe (fitted on the whole set) and the model's head score it as it is."""
    scores = clf.scores(xq)
    mine = np.flatnonzero(own >= 0)
    if len(mine) and isinstance(clf, KnnClassifier):
        scores[mine] = clf.scores(xq[mine], exclude=own[mine])
    elif len(mine) and isinstance(clf, PrototypeClassifier):
        # -inf where the photo is its class's only one; -1 is the lowest score a prototype gives
        scores[mine] = np.maximum(clf.loo_scores(ls.x[own[mine]], ls.y[own[mine]]), -1.0)
    preds = top_predictions(scores, KnnClassifier.fit(ls.x, ls.y, ls.classes), xq, ls.ids, k=k, own=own)
    with session_scope(index.engine) as s:
        paths = q.paths_of(s, ls.ids)
    root = index.root
    out = []
    for name, row in zip(names, preds, strict=True):
        named = [(p.label, p.score, [absolute_path(root, paths[i]) for i in p.support]) for p in row]
        out.append(Lookup(name, named, unknown=row[0].score < threshold))
    return out


@dataclass(frozen=True)
class Suggestions:
    """The likeliest classes of every unlabelled photo of a set, least confident first: what a person should
    look at first when labelling (`birder-index serve`'s labels view)."""

    set_name: str
    method: str
    classes: list[str]
    threshold: float  # the open-set threshold: a best score below it reads "unknown"
    ids: np.ndarray  # (n,) unlabelled image ids, least confident first
    top: np.ndarray  # (n, k) class indices, best first
    scores: np.ndarray  # (n, k) their scores

    def __len__(self) -> int:
        return len(self.ids)


def suggest_labels(
    index: Index, set_name: str, *, method: str = "knn", k: int = 3, neighbours: int = 10,
    min_score: float | None = None, probe_file: Path | None = None, block: int = 4096, progress: Progress = silent,
) -> Suggestions:  # fmt: skip
    """Score every unlabelled indexed photo against a label set (the classifier and open-set threshold of
    `lookup`), keeping its k best classes; ordered by best score, lowest first, ties by id."""
    ls = labelled_set(index, set_name)
    clf, held_out = classifier(index, ls, method, neighbours=neighbours, probe_file=probe_file)
    threshold = open_set_threshold(held_out) if min_score is None else min_score
    with session_scope(index.engine) as s:
        todo = q.unlabelled_ids(s, set_name)
    k = max(1, min(k, len(ls.classes)))
    top, best = np.zeros((len(todo), k), np.int64), np.zeros((len(todo), k), np.float32)
    for start in range(0, len(todo), block):
        progress("scoring unlabelled photos", start, len(todo))
        scores = clf.scores(index.vectors(todo[start : start + block]))
        order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
        top[start : start + len(order)], best[start : start + len(order)] = order, np.take_along_axis(scores, order, 1)
    progress("scoring unlabelled photos", len(todo), len(todo))
    rank = np.lexsort((todo, best[:, 0]))
    return Suggestions(set_name, method, ls.classes, threshold, todo[rank], top[rank], best[rank])


def lookup_all(
    index: Index, set_name: str, *, method: str = "knn", neighbours: int = 10, min_score: float | None = None,
    csv_file: Path | None = None, probe_file: Path | None = None, block: int = 4096,
) -> tuple[int, int, float]:  # fmt: skip
    """Label every unlabelled indexed photo; predictions go to the store (and `csv_file`). Returns
    (predicted, unknown, threshold)."""
    sug = suggest_labels(index, set_name, method=method, k=1, neighbours=neighbours, min_score=min_score,
                         probe_file=probe_file, block=block)  # fmt: skip
    threshold = sug.threshold
    by_id = np.argsort(sug.ids, kind="stable")
    rows: list[tuple[int, str, float, str]] = [
        (i, sug.classes[c] if sc >= threshold else "unknown", float(sc), method)
        for i, c, sc in zip(sug.ids[by_id].tolist(), sug.top[by_id, 0].tolist(), sug.scores[by_id, 0].tolist(),
                            strict=True)
    ]  # fmt: skip
    with session_scope(index.engine) as s:
        q.set_predictions(s, set_name, rows)
        paths = q.paths_of(s, [r[0] for r in rows]) if csv_file else {}
    if csv_file is not None:
        root = index.root
        table = ((absolute_path(root, paths[i]), lab, f"{sc:.6f}", m) for i, lab, sc, m in rows)
        write_text(csv_file, csv_text(("path", "label", "score", "method"), table))
    return len(rows), sum(r[1] == "unknown" for r in rows), threshold
