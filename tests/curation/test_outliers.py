"""Outliers: planted foreign vectors rank first, copies of one do not hide it, the score is what it says."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from birder_index.curation import find_outliers
from birder_index.curation import isolation
from birder_index.errors import BirderIndexError
from birder_index.indexer import open_index
from tests.curation.vectors import clusters
from tests.curation.vectors import imported


def test_isolation_is_the_mean_of_the_neighbours_found() -> None:
    D = np.array([[0.9, 0.7, -np.inf], [-np.inf, -np.inf, -np.inf]], np.float32)
    assert np.allclose(isolation(D), [0.8, -1.0])


def test_planted_foreign_vectors_rank_first(tmp_path: Path) -> None:
    x, _ = clusters(classes=4, per=50)
    rng = np.random.default_rng(1)
    foreign = rng.standard_normal((4, x.shape[1])).astype(np.float32) * 3
    # the first foreign vector comes with two exact copies: they are left out of its neighbours
    x = np.concatenate([x, foreign, foreign[:1], foreign[:1]])
    with open_index(imported(tmp_path, x)) as index:
        result = find_outliers(index, top=6, k=5)
    planted = {f"p{i:03d}.jpg" for i in range(200, 206)}
    assert {Path(o.path).name for o in result.outliers} == planted
    assert result.photos == 206 and result.median > 0.8 and all(o.score < 0.5 for o in result.outliers)
    assert len(result.scores) == 206 and np.sort(result.scores)[5] == max(o.score for o in result.outliers)
    doc = json.loads(json.dumps(result.to_json()))
    assert set(doc) == {"photos", "k", "copy_min", "median", "outliers"}
    assert set(doc["outliers"][0]) == {"id", "path", "score", "nearest"}
    assert set(doc["outliers"][0]["nearest"][0]) == {"id", "path", "similarity"}


def test_copies_seen_as_neighbours_hide_an_outlier(tmp_path: Path) -> None:
    """The control of the test above: with copies counted (threshold above 1), the copied one is not isolated."""
    x, _ = clusters(classes=4, per=50)
    foreign = np.random.default_rng(1).standard_normal((1, x.shape[1])).astype(np.float32) * 3
    x = np.concatenate([x, foreign, foreign, foreign])
    with open_index(imported(tmp_path, x)) as index:
        seen = find_outliers(index, top=3, k=2)
        blind = find_outliers(index, top=3, k=2, copy_min=1.01)
    assert {Path(o.path).name for o in seen.outliers} == {"p200.jpg", "p201.jpg", "p202.jpg"}
    assert not {Path(o.path).name for o in blind.outliers} & {"p200.jpg", "p201.jpg", "p202.jpg"}


def test_tiny_collections_and_bad_options(tmp_path: Path) -> None:
    x, _ = clusters(classes=1, per=1)
    with open_index(imported(tmp_path, x)) as index:
        alone = find_outliers(index)
        assert alone.outliers == [] and json.loads(json.dumps(alone.to_json(), allow_nan=False))["median"] is None
        with pytest.raises(BirderIndexError, match="--top must be >= 1"):
            find_outliers(index, top=0)
