"""Few-shot and probe benchmark on real labelled data (scikit-learn's handwritten digits, ../shared/datasets/
digits.py) embedded with the shared ImageNet encoder, and a probe at scale on synthetic embeddings.

    pip install scikit-learn   # the reference implementations only; not a birder-index dependency
    python benchmarks/fewshot.py --digits /tmp/digits [--scale-rows 1000000]

Side by side, on the same embeddings and splits:
- the linear probe against scikit-learn's LogisticRegression (StandardScaler + lbfgs, C=1): 5-fold accuracy and
  fit time;
- kNN and prototype lookups against a direct reimplementation of birder's evaluate_knn and evaluate_simpleshot
  (docs/models.md §6.3): accuracy at 1 and 5 shots per class, mean over 5 draws with the same samples;
- scale: a probe on a memory-mapped float16 store of N x 1024 synthetic embeddings, 1,000 classes, streamed.
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from realdata import SHARED_PT2

from birder_index.db import queries as q
from birder_index.db.engine import session_scope
from birder_index.fewshot.classifiers import KnnClassifier
from birder_index.fewshot.classifiers import PrototypeClassifier
from birder_index.fewshot.classifiers import fit_classes
from birder_index.fewshot.evaluate import sample_k_shot
from birder_index.fewshot.labels import label_folder_or_csv
from birder_index.fewshot.probe import fit_probe
from birder_index.fewshot.probe import fit_probe_streaming
from birder_index.fewshot.probe import stratified_folds
from birder_index.indexer import ModelSpec
from birder_index.indexer import open_index

DIGITS_SCRIPT = SHARED_PT2.parents[1] / "datasets" / "digits.py"


def digits_embeddings(folder: Path) -> tuple[np.ndarray, np.ndarray, list[str]]:
    if not folder.exists():
        subprocess.run([sys.executable, str(DIGITS_SCRIPT), str(folder)], check=True)
    t0 = time.perf_counter()
    _, index_dir = label_folder_or_csv(folder, "digits", spec=ModelSpec(weights=SHARED_PT2))
    print(f"digits indexed and labelled in {time.perf_counter() - t0:.0f}s (index {index_dir})")
    with open_index(index_dir) as index, session_scope(index.engine) as s:
        ids, labels = q.labels_of(s, "digits")
        x = index.vectors(ids)
    y, classes = fit_classes(labels)
    return x, y, classes


# -- reference implementations of birder's evaluation methods ------------------------------------------------------


def birder_knn(
    train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, k: int, temperature: float = 0.07
) -> np.ndarray:
    """evaluate_knn: L2-normalise, cosine top-k, softmax(sims / T) weights summed per class, argmax."""
    tx = torch.nn.functional.normalize(torch.from_numpy(train_x).float(), dim=1, eps=1e-12)
    qx = torch.nn.functional.normalize(torch.from_numpy(test_x).float(), dim=1, eps=1e-12)
    sims, idx = (qx @ tx.T).topk(min(k, len(tx)), dim=1)
    weights = torch.softmax(sims / temperature, dim=1)
    votes = torch.zeros(len(qx), int(train_y.max()) + 1)
    votes.scatter_add_(1, torch.from_numpy(train_y)[idx], weights)
    return votes.argmax(1).numpy()


def birder_simpleshot(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray) -> np.ndarray:
    """evaluate_simpleshot: subtract the train mean, L2-normalise, sklearn NearestCentroid."""
    from sklearn.neighbors import NearestCentroid

    mean = train_x.mean(0)

    def norm(v: np.ndarray) -> np.ndarray:
        v = v - mean
        return v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)

    with warnings.catch_warnings():  # one shot per class: its unused within-class variance is 0 and it says so
        warnings.simplefilter("ignore")
        return NearestCentroid().fit(norm(train_x), train_y).predict(norm(test_x))


# -- the three tables ----------------------------------------------------------------------------------------------


def probe_table(x: np.ndarray, y: np.ndarray, classes: list[str]) -> None:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    rows: dict[str, list[tuple[float, float]]] = {"birder-index probe (lambda by 5-fold CV)": [],
                                                  "birder-index probe (lambda fixed)": [],
                                                  "scikit-learn LogisticRegression": []}  # fmt: skip
    lam = None
    for part in stratified_folds(y, 5, seed=0):
        train = np.setdiff1d(np.arange(len(y)), part)
        t0 = time.perf_counter()
        probe = fit_probe(x[train], y[train], classes)
        rows["birder-index probe (lambda by 5-fold CV)"].append(
            (time.perf_counter() - t0, _acc(probe.scores(x[part]), y[part]))
        )
        lam = probe.lam
        t0 = time.perf_counter()
        fixed = fit_probe(x[train], y[train], classes, lam=lam)
        rows["birder-index probe (lambda fixed)"].append(
            (time.perf_counter() - t0, _acc(fixed.scores(x[part]), y[part]))
        )
        t0 = time.perf_counter()
        sk = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)).fit(x[train], y[train])
        rows["scikit-learn LogisticRegression"].append(
            (time.perf_counter() - t0, float((sk.predict(x[part]) == y[part]).mean()))
        )
    print(f"\nLinear probe, digits ({len(y)} x {x.shape[1]}, {len(classes)} classes), 5-fold cross-validation:")
    print(f"  {'':<42} {'accuracy':>9} {'fit s (median)':>15}")
    sk_time = np.median([t for t, _ in rows["scikit-learn LogisticRegression"]])
    for name, vals in rows.items():
        t = np.median([v[0] for v in vals])
        print(
            f"  {name:<42} {np.mean([v[1] for v in vals]):9.4f} {t:15.3f}   ({sk_time / t:.1f}x scikit-learn's speed)"
        )
    print(f"  (last lambda chosen: {lam})")


def _acc(scores: np.ndarray, y: np.ndarray) -> float:
    return float((scores.argmax(1) == y).mean())


def kshot_table(x: np.ndarray, y: np.ndarray, classes: list[str], draws: int = 5, k: int = 10) -> None:
    print(
        f"\nFew-shot lookup, digits, mean accuracy over {draws} draws (rng seed 0 + draw, the same samples for both):"
    )
    head = f"{'knn (ours)':>10} {'knn (birder ref)':>17}  {'prototype (ours)':>17} {'SimpleShot (birder ref)':>24}"
    print(f"  {'shots':>5}  {head}")
    for shots in (1, 5):
        res: dict[str, list[float]] = {"ours_knn": [], "ref_knn": [], "ours_proto": [], "ref_proto": []}
        for draw in range(draws):
            train = sample_k_shot(y, shots, np.random.default_rng(draw))
            test = np.setdiff1d(np.arange(len(y)), train)
            res["ours_knn"].append(_acc(KnnClassifier.fit(x[train], y[train], classes, k=k).scores(x[test]), y[test]))
            res["ref_knn"].append(float((birder_knn(x[train], y[train], x[test], k) == y[test]).mean()))
            res["ours_proto"].append(
                _acc(PrototypeClassifier.fit(x[train], y[train], classes).scores(x[test]), y[test])
            )
            res["ref_proto"].append(float((birder_simpleshot(x[train], y[train], x[test]) == y[test]).mean()))
        m = {key: 100 * np.mean(v) for key, v in res.items()}
        knn = f"{m['ours_knn']:9.2f}% {m['ref_knn']:16.2f}%"
        print(f"  {shots:>5}  {knn}  {m['ours_proto']:16.2f}% {m['ref_proto']:23.2f}%")


def scale_table(rows: int, dim: int = 1024, n_classes: int = 1000) -> None:
    work = Path(tempfile.mkdtemp())
    path = work / "store.f16"
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((n_classes, dim)).astype(np.float32)
    labels = rng.integers(0, n_classes, rows)
    store = np.lib.format.open_memmap(path, mode="w+", dtype=np.float16, shape=(rows, dim))
    for start in range(0, rows, 50_000):
        lab = labels[start : start + 50_000]
        store[start : start + len(lab)] = centres[lab] + 1.5 * rng.standard_normal((len(lab), dim)).astype(np.float32)
    store.flush()
    del store
    mapped = np.load(path, mmap_mode="r")
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    probe = fit_probe_streaming(lambda r: mapped[r], rows, labels, [str(c) for c in range(n_classes)])
    seconds = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    held = rng.choice(rows, 20_000, replace=False)
    acc = _acc(probe.scores(np.asarray(mapped[np.sort(held)], np.float32)), labels[np.sort(held)])
    size = f"{rows * dim * 2 / 1e9:.1f} GB"
    print(f"\nProbe at scale: {rows} x {dim} float16 memory-mapped store ({size}), {n_classes} classes")
    print(f"  fitted in {seconds:.0f}s (lambda {probe.lam:g}), training accuracy on 20k rows {acc:.3f}")
    print(f"  peak resident memory {peak / 1e6:.2f} GB (before fitting {before / 1e6:.2f} GB; ru_maxrss counts the "
          f"store's pages read)")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--digits", type=Path, default=Path(tempfile.gettempdir()) / "birder-index-digits")
    parser.add_argument("--scale-rows", type=int, default=1_000_000)
    args = parser.parse_args()
    torch.set_num_threads(2)
    x, y, classes = digits_embeddings(args.digits)
    probe_table(x, y, classes)
    kshot_table(x, y, classes)
    if args.scale_rows:
        scale_table(args.scale_rows)


if __name__ == "__main__":
    main()
