"""Label audit: its arrays against brute force, leave-one-out (a photo and its copies never vote for its label),
empty and one-class sets, and the JSON document."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from birder_index.curation import audit_labels
from birder_index.curation import knn_shares
from birder_index.curation import loo_prototype_scores
from birder_index.curation import looks_like
from birder_index.curation.audit import class_sums
from birder_index.errors import BirderIndexError
from birder_index.fewshot.classifiers import l2
from birder_index.indexer import open_index
from tests.curation.vectors import clusters
from tests.curation.vectors import imported


def test_knn_shares_are_softmax_weighted_votes() -> None:
    D = np.array([[0.9, 0.8, 0.5], [0.7, -np.inf, -np.inf], [-np.inf, -np.inf, -np.inf]], np.float32)
    labels = np.array([[0, 1, 1], [2, -1, -1], [-1, -1, -1]])
    shares = knn_shares(D, labels, 3, temperature=0.1)
    w = np.exp((np.array([0.9, 0.8, 0.5]) - 0.9) / 0.1)
    assert np.allclose(shares[0], [w[0] / w.sum(), (w[1] + w[2]) / w.sum(), 0], atol=1e-6)
    assert shares[1].tolist() == [0, 0, 1] and shares[2].tolist() == [0, 0, 0]


def test_prototype_scores_leave_the_photo_and_its_copies_out() -> None:
    x, y = clusters(per=6, d=8)
    z = l2(x - x.mean(0))
    sums, counts = class_sums(z, y, 3)
    left = {4: (z[[5, 7]], y[[5, 7]])}  # row 4's copies: one of its class, one of another
    got = loo_prototype_scores(z, y, sums, counts, left_out=left)
    for row in (0, 4, 9):
        out = {row, *((5, 7) if row == 4 else ())}
        keep = np.array([i not in out for i in range(len(z))])
        means = np.stack([z[keep & (y == c)].mean(0) for c in range(3)])
        assert np.allclose(got[row], 1 - 0.5 * ((z[row] - means) ** 2).sum(1), atol=1e-5)


def test_looks_like_ranks_by_margin_over_the_given_label() -> None:
    p = np.array([[0.8, 0.2], [0.3, 0.7], [0.45, 0.55]], np.float32)
    looks, confidence, margin = looks_like(p, np.array([0, 0, 0]))
    assert looks.tolist() == [1, 1, 1] and np.allclose(confidence, [0.2, 0.7, 0.55])
    assert np.allclose(margin, [-0.6, 0.4, 0.1])


def _mislabelled(tmp_path: Path, copies: int) -> tuple[Path, list[int]]:
    """3 classes of 30; photo 0 (class a) labelled b, and `copies` exact copies of it labelled b too."""
    x, y = clusters()
    labels = [["a", "b", "c"][c] for c in y]
    labels[0] = "b"
    x = np.concatenate([x, np.repeat(x[:1], copies, 0)])
    return imported(tmp_path, x, labels + ["b"] * copies), [0, *range(90, 90 + copies)]


def test_a_mislabelled_photo_is_found_without_voting_for_itself(tmp_path: Path) -> None:
    idx, _ = _mislabelled(tmp_path, 0)
    with open_index(idx) as index:
        audit = audit_labels(index, "labels")
    first = audit.suspects[0]
    assert (Path(first.path).name, first.label, first.looks_like) == ("p000.jpg", "b", "a")
    assert first.confidence > 0.9 and first.knn > 0.99 and first.copies == 0
    assert all(n.label == "a" and n.path != first.path for n in first.nearest) and len(first.nearest) == 3
    assert audit.flagged == 1  # nothing else is outvoted in well-separated classes
    assert len(audit.ids) == len(audit.suspicion) == 90 and audit.suspicion.argmax() == 0


def test_a_copied_mislabelled_photo_does_not_vote_for_itself(tmp_path: Path) -> None:
    idx, bad = _mislabelled(tmp_path, 2)
    with open_index(idx) as index:
        audit = audit_labels(index, "labels")
        # the same audit with copies not recognised (threshold above 1): the copies vote for each other's label
        blind = audit_labels(index, "labels", copy_min=1.01)
    found = {Path(s.path).name: s for s in audit.suspects}
    names = [f"p{i:03d}.jpg" for i in bad]
    assert {Path(s.path).name for s in audit.suspects[:3]} == set(names)
    for name in names:
        s = found[name]
        assert s.looks_like == "a" and s.copies == 2 and s.confidence > 0.95 and s.knn > 0.99
        assert not {Path(n.path).name for n in s.nearest} & set(names)
    # not recognised as copies, the two others vote for each one's wrong label: far less suspicious, if at all
    for name in names:
        i = found[name].id
        assert blind.suspicion[blind.ids == i][0] < audit.suspicion[audit.ids == i][0] - 0.3


def test_empty_and_one_class_sets_are_one_line_errors(tmp_path: Path) -> None:
    x, _ = clusters(per=5)
    idx = imported(tmp_path, x, ["only"] * len(x))
    with open_index(idx) as index:
        with pytest.raises(BirderIndexError, match="'nope' is empty or does not exist"):
            audit_labels(index, "nope")
        with pytest.raises(BirderIndexError, match=r"one class \(only\); an audit needs at least 2"):
            audit_labels(index, "labels")
        with pytest.raises(BirderIndexError, match="--top must be >= 1"):
            audit_labels(index, "labels", top=0)


def test_json_document(tmp_path: Path) -> None:
    idx, _ = _mislabelled(tmp_path, 1)
    with open_index(idx) as index:
        doc = json.loads(json.dumps(audit_labels(index, "labels", top=1).to_json()))
    assert set(doc) == {"set", "classes", "labelled", "flagged", "k", "copy_min", "temperature", "knn_temperature",
                        "prototype_weight", "suspects"}  # fmt: skip
    assert doc["labelled"] == 91 and doc["classes"] == 3 and len(doc["suspects"]) == 1 and doc["flagged"] >= 2
    (s,) = doc["suspects"]
    assert set(s) == {"id", "path", "label", "looks_like", "confidence", "label_score", "knn", "prototype", "copies",
                      "nearest"}  # fmt: skip
    assert set(s["nearest"][0]) == {"id", "path", "label", "similarity"}


def test_unlabelled_photos_never_vote(tmp_path: Path) -> None:
    """Only part of the index labelled: neighbours are searched among the labelled photos only."""
    from birder_index.fewshot import unassign_labels

    idx, _ = _mislabelled(tmp_path, 0)
    with open_index(idx) as index:
        ids, _ = index.id_rows()
        unlabelled = ids[60:90].tolist()  # class c, photos 60-89
        unassign_labels(index, "labels", unlabelled)
        audit = audit_labels(index, "labels")
    assert audit.labelled == 60 and audit.classes == ["a", "b"] and not set(audit.ids.tolist()) & set(unlabelled)
    first = audit.suspects[0]
    assert (Path(first.path).name, first.looks_like) == ("p000.jpg", "a")
    assert all(n.id not in unlabelled for s in audit.suspects for n in s.nearest)
