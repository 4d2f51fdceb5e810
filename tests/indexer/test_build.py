"""build_index: a photo folder to rows, vectors and FAISS ids that agree, incrementally."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from birder_index.cli import cli
from birder_index.db import queries as q
from birder_index.db.engine import session_scope
from birder_index.db.models import INDEXED
from birder_index.db.models import PENDING
from birder_index.db.queries import Known
from birder_index.errors import BirderIndexError
from birder_index.errors import IndexMismatch
from birder_index.indexer import BuildOptions
from birder_index.indexer import ModelSpec
from birder_index.indexer import build_index
from birder_index.indexer import describe
from birder_index.indexer import open_index
from birder_index.indexer.ann import ids_in
from birder_index.indexer.plan import make_plan
from birder_index.indexer.scan import FileStat
from birder_index.indexer.scan import ScanResult
from birder_index.search import nearest
from tests.helpers import photo
from tests.helpers import save_vit

OPTS = BuildOptions(workers=0, batch_size=4)


def _state(index_dir: Path) -> tuple[dict[str, int], np.ndarray, dict[str, str]]:
    with open_index(index_dir) as index, session_scope(index.engine) as s:
        ids = {k: v.id for k, v in q.known_files(s).items() if v.status == "indexed"}
        status = {k: v.status for k, v in q.known_files(s).items()}
        return ids, ids_in(index.ann().index), status


def test_build_indexes_every_photo_once(photos: Path, tiny_pt: Path) -> None:
    report = build_index(photos, spec=ModelSpec(weights=tiny_pt), options=OPTS)
    assert (report.indexed, report.failed) == (8, 1)
    assert report.failures == [("broken.jpg", "image file is truncated (10 bytes not processed)")] or (
        report.failures[0][0] == "broken.jpg" and "truncated" in report.failures[0][1]
    )
    ids, faiss_ids, status = _state(photos / ".birder-index")
    assert sorted(ids.values()) == faiss_ids.tolist()
    assert "sub/photo07.jpg" in ids and status["broken.jpg"] == "failed"
    info = describe(open_index(photos / ".birder-index"))
    assert (info["images"], info["indexed"], info["failed"], info["vectors"]) == (9, 8, 1, 8)
    assert info["model"]["name"] == "vit_reg4_b16_tiny" and info["index"]["type"] == "Flat"


def test_rerun_is_incremental(photos: Path, tiny_pt: Path) -> None:
    build_index(photos, spec=ModelSpec(weights=tiny_pt), options=OPTS)
    before, _, _ = _state(photos / ".birder-index")
    again = build_index(photos, options=OPTS)  # the model is the index's own
    assert (again.indexed, again.unchanged, again.failed) == (0, 9, 0)

    photo(99).save(photos / "photo03.jpg", quality=90)  # changed content
    os.utime(photos / "photo04.jpg", ns=(1, 1))  # touched, same content
    os.remove(photos / "photo05.png")  # gone
    (photos / "albums").mkdir()
    shutil.move(photos / "photo06.jpg", photos / "albums" / "renamed.jpg")  # moved
    shutil.copy(photos / "photo01.jpg", photos / "copy_of_01.jpg")  # same content, new path
    photo(100).save(photos / "new.png")
    r = build_index(photos, options=OPTS)
    assert (r.indexed, r.reused, r.moved, r.touched, r.removed) == (3, 1, 1, 1, 1)
    after, faiss_ids, _ = _state(photos / ".birder-index")
    assert after["albums/renamed.jpg"] == before["photo06.jpg"]  # a move keeps its id (and labels)
    assert after["photo03.jpg"] == before["photo03.jpg"]  # a changed file keeps its id
    assert "photo05.png" not in after
    assert sorted(after.values()) == faiss_ids.tolist()
    with open_index(photos / ".birder-index") as index:
        v = index.vectors(np.array([after["copy_of_01.jpg"], after["photo01.jpg"]]))
        assert np.array_equal(v[0], v[1])  # identical content, one embedding


def test_changed_file_gets_a_new_vector(photos: Path, tiny_pt: Path) -> None:
    build_index(photos, spec=ModelSpec(weights=tiny_pt), options=OPTS)
    ids, _, _ = _state(photos / ".birder-index")
    with open_index(photos / ".birder-index") as index:
        old = index.vectors(np.array([ids["photo03.jpg"]]))
    photo(55).save(photos / "photo03.jpg", quality=90)
    build_index(photos, options=OPTS)
    with open_index(photos / ".birder-index") as index:
        new = index.vectors(np.array([ids["photo03.jpg"]]))
        D, I = nearest(index, new, k=1)  # FAISS holds the new vector under the same id, not the old one
        assert I[0, 0] == ids["photo03.jpg"] and D[0, 0] > 0.999
        assert nearest(index, old, k=1)[0][0, 0] < 0.999
    assert not np.allclose(old, new)


def test_another_model_is_refused(photos: Path, tiny_pt: Path, tmp_path: Path) -> None:
    build_index(photos, spec=ModelSpec(weights=tiny_pt), options=OPTS)
    other = save_vit(tmp_path, "vit_reg4_b16", "pt", seed=7, name="other")
    with pytest.raises(IndexMismatch, match="was built with vit_reg4_b16_tiny at 32x32.*not other.pt"):
        build_index(photos, spec=ModelSpec(weights=other), options=OPTS)
    for spec in (ModelSpec(weights=tiny_pt, size=64), ModelSpec(size=64)):  # the size is named, with or without
        with pytest.raises(IndexMismatch, match=r"embeds at 32x32 px, not --size 64"):
            build_index(photos, spec=spec, options=OPTS)


def test_index_belongs_to_one_folder(photos: Path, tiny_pt: Path, tmp_path: Path) -> None:
    index_dir = tmp_path / "idx"
    build_index(photos, index_dir=index_dir, spec=ModelSpec(weights=tiny_pt), options=OPTS)
    other = tmp_path / "other"
    other.mkdir()
    with pytest.raises(IndexMismatch, match="is for .*photos, not .*other"):
        build_index(other, index_dir=index_dir, options=OPTS)


def test_index_inside_a_folder_moves_with_it(photos: Path, tiny_pt: Path, tmp_path: Path) -> None:
    build_index(photos, spec=ModelSpec(weights=tiny_pt), options=OPTS)
    moved = tmp_path / "moved"
    shutil.move(photos, moved)
    r = build_index(moved, options=OPTS)
    assert (r.indexed, r.removed, r.unchanged) == (0, 0, 9)
    with open_index(moved / ".birder-index") as index:
        assert index.root == moved.resolve()


def test_rows_left_pending_are_not_reported_unchanged(tmp_path: Path) -> None:
    # a build that failed before embedding (the default model could not be downloaded) leaves its rows pending
    known = {"a.jpg": Known(1, 10, 5, PENDING, None), "b.jpg": Known(2, 10, 5, INDEXED, "x")}
    scanned = ScanResult([FileStat("a.jpg", 10, 5), FileStat("b.jpg", 10, 5)])
    assert make_plan(tmp_path, scanned, known).unchanged == 1


def test_missing_folder_and_first_build_without_model(tmp_path: Path, photos: Path) -> None:
    with pytest.raises(BirderIndexError, match="photo folder not found"):
        build_index(tmp_path / "nope")
    # The default model cannot be downloaded here (the tests run the hub's client offline): one message that says
    # how to work offline, and no half-made index folder left behind.
    with pytest.raises(BirderIndexError, match=r"cannot download .* pass --weights FILE"):
        build_index(photos)
    assert not (photos / ".birder-index").exists()


def test_workers_and_batches_give_the_same_vectors(photos: Path, tiny_pt: Path, tmp_path: Path) -> None:
    spec = ModelSpec(weights=tiny_pt, precision="float32")
    readers = {
        "a": BuildOptions(workers=0, batch_size=1),  # in this process
        "b": BuildOptions(workers=2, batch_size=3),  # worker processes beside the model
        "c": BuildOptions(batch_size=4),  # the CPU default: threads between the model's batches
    }
    reports = {
        name: build_index(photos, index_dir=tmp_path / name, spec=spec, options=options)
        for name, options in readers.items()
    }
    assert {(r.indexed, r.failed) for r in reports.values()} == {(8, 1)}  # the truncated JPEG, whatever the reader
    with open_index(tmp_path / "a") as a:
        ids_a, _ = a.id_rows()
        vectors_a = a.vectors(ids_a)
    for name in "bc":
        with open_index(tmp_path / name) as other:
            ids, _ = other.id_rows()
            assert np.array_equal(ids_a, ids)
            assert np.allclose(vectors_a, other.vectors(ids), atol=2e-3)
    assert [path for path, _ in reports["c"].failures] == ["broken.jpg"]


def test_an_empty_folder_builds_an_empty_index(tmp_path: Path, tiny_pt: Path) -> None:
    (tmp_path / "empty").mkdir()
    result = CliRunner().invoke(cli, ["build", str(tmp_path / "empty"), "--weights", str(tiny_pt)])
    assert result.exit_code == 0, result.output
    assert "0 indexed, 0 unchanged" in result.output and "Warning: no images found" in result.output
