"""Labels given a few photos at a time, and the suggestions for the others, least confident first: the same
scores `lookup` gives each photo."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from birder_index.errors import BirderIndexError
from birder_index.fewshot import assign_label
from birder_index.fewshot import label_sets
from birder_index.fewshot import label_summary
from birder_index.fewshot import labels_of_images
from birder_index.fewshot import lookup
from birder_index.fewshot import suggest_labels
from birder_index.fewshot import unassign_labels
from birder_index.indexer import BuildOptions
from birder_index.indexer import ModelSpec
from birder_index.indexer import build_index
from birder_index.indexer import open_index


@pytest.fixture
def index_dir(photos: Path, tiny_pt: Path) -> Path:
    build_index(photos, spec=ModelSpec(weights=tiny_pt), options=BuildOptions(workers=0))
    return photos / ".birder-index"


def ids(index_dir: Path, *names: str) -> list[int]:
    from birder_index.search import image_at

    with open_index(index_dir) as index:
        return [image_at(index, n).id for n in names]  # type: ignore[union-attr]


def test_assign_replaces_a_label_and_refuses_what_cannot_be_labelled(index_dir: Path) -> None:
    a, b, broken = ids(index_dir, "photo00.jpg", "photo01.jpg", "broken.jpg")
    with open_index(index_dir) as index:
        assert assign_label(index, " birds ", [a, b, a], " robin ") == 2  # names trimmed, ids once
        assert assign_label(index, "birds", [b], "finch") == 1  # b's label in the set is replaced
        assert label_summary(index) == [("birds", "finch", 1), ("birds", "robin", 1)]
        assert labels_of_images(index, "birds", [a, b, broken]) == {a: "robin", b: "finch"}
        assert label_sets(index) == ["birds"]
        for bad_ids, label, message in [([broken], "robin", "is not indexed"), ([999], "robin", "not in the index"),
                                        ([a], "unknown", "no class fits"), ([a], "  ", "1 to 200"),
                                        ([a], "x" * 201, "1 to 200"), ([], "robin", "no images")]:  # fmt: skip
            with pytest.raises(BirderIndexError, match=message):
                assign_label(index, "birds", bad_ids, label)
        assert unassign_labels(index, "birds", [a, broken]) == 1
        assert labels_of_images(index, "birds", [a, b]) == {b: "finch"}


def test_suggestions_are_lookups_least_confident_first(index_dir: Path, photos: Path) -> None:
    labelled = {"photo00.jpg": "robin", "photo01.jpg": "robin", "photo03.jpg": "finch", "photo04.jpg": "finch"}
    with open_index(index_dir) as index:
        for name, label in labelled.items():
            assign_label(index, "birds", ids(index_dir, name), label)
        sug = suggest_labels(index, "birds", k=2)
        assert len(sug) == 4 and sug.classes == ["finch", "robin"] and sug.top.shape == (4, 2)
        assert (np.diff(sug.scores[:, 0]) >= 0).all()  # least confident first
        assert not set(sug.ids.tolist()) & set(ids(index_dir, *labelled))
        from birder_index.search import image_details

        paths = {i: str(photos / r.path) for i, r in image_details(index, sug.ids.tolist()).items()}
        looked = lookup(index, [paths[i] for i in sug.ids.tolist()], "birds", k=2)
    for n, found in enumerate(looked):
        assert [p[0] for p in found.predictions] == [sug.classes[c] for c in sug.top[n]]
        assert [p[1] for p in found.predictions] == pytest.approx(sug.scores[n].tolist(), abs=1e-6)
        assert found.unknown == bool(sug.scores[n, 0] < sug.threshold)
