"""Representatives: one medoid per cluster, each the member most similar to the rest, outliers never chosen."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from birder_index.curation import find_representatives
from birder_index.curation import k_medoids
from birder_index.errors import BirderIndexError
from birder_index.fewshot.classifiers import l2
from birder_index.indexer import open_index
from tests.curation.vectors import clusters
from tests.curation.vectors import imported


def test_k_medoids_finds_each_clusters_medoid() -> None:
    x, y = clusters(classes=5, per=40, d=16)
    xb = l2(x)
    medoids, cluster, sims, rounds = k_medoids(lambda p: xb[p], len(xb), 5)
    assert len(medoids) == 5 and sorted(y[medoids].tolist()) == [0, 1, 2, 3, 4]  # one per class: a cover
    for m in medoids.tolist():
        members = np.flatnonzero(y == y[m])
        assert (cluster[members] == cluster[m]).all()
        total = (xb[members] @ xb[members].T).sum(1)  # brute force: the member most similar to the others
        assert members[total.argmax()] == m
    assert np.allclose(sims, (xb * xb[medoids[cluster]]).sum(1), atol=1e-5) and rounds >= 1


def test_representatives_cover_and_skip_outliers(tmp_path: Path) -> None:
    x, y = clusters(classes=4, per=50)
    foreign = np.random.default_rng(3).standard_normal((4, x.shape[1])).astype(np.float32) * 3
    x = np.concatenate([x, foreign])
    labels = [f"c{c}" for c in y] + ["c0"] * 4
    with open_index(imported(tmp_path, x, labels)) as index:
        result = find_representatives(index, top=4)  # 2 % of 204: the 4 foreign ones are skipped
        one = find_representatives(index, top=2, label="c1")
        with pytest.raises(BirderIndexError, match="no indexed photo is labelled 'zz'"):
            find_representatives(index, label="zz")
    chosen = [int(Path(r.path).stem[1:]) for r in result.representatives]
    assert result.skipped == 4 and sorted(y[chosen].tolist()) == [0, 1, 2, 3]
    assert sum(r.members for r in result.representatives) == 200 and all(
        r.members == 50 for r in result.representatives
    )
    assert one.photos == 50 and all(50 <= int(Path(r.path).stem[1:]) < 100 for r in one.representatives)
    doc = json.loads(json.dumps(result.to_json()))
    assert set(doc) == {"photos", "skipped", "iterations", "representatives"}
    assert set(doc["representatives"][0]) == {"id", "path", "members", "mean_similarity"}
