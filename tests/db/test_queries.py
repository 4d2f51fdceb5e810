"""The query functions on every store kind (SQLite, PostgreSQL): the same answers from the same rows."""

from __future__ import annotations

import numpy as np
import pytest

from birder_index.db import queries as q
from birder_index.db.engine import open_database
from birder_index.db.engine import session_scope
from birder_index.db.models import MetaKey


def test_rows_folders_and_pages(db_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(q, "ATTRIBUTE_ROWS", 2)  # indexed_attributes reads its five rows in three parts
    engine = open_database(db_url, create=True)
    paths = ["a/x.jpg", "a/y.jpg", "a_b/z.jpg", "A/w.jpg", "b/a/v.jpg", "top.jpg"]
    with session_scope(engine) as s:
        q.insert_pending(s, [(p, 10 + i, 100 - i) for i, p in enumerate(paths)])
    with session_scope(engine) as s:
        known = q.known_files(s)
        ids = {p: known[p].id for p in paths}
        q.mark_indexed(
            s,
            [
                {
                    "id": ids[p],
                    "vector_row": r,
                    "sha256": f"{r:064x}",
                    "width": 4,
                    "height": 3,
                    "size": 1,
                    "mtime_ns": 100 - r,
                }
                for r, p in enumerate(paths[:5])
            ],
        )
        q.mark_failed(s, [{"id": ids["top.jpg"], "error": "truncated", "sha256": None}])
        q.set_meta(s, MetaKey.STORE_ROWS, 5)
        q.set_meta(s, MetaKey.STORE_ROWS, 6)  # an update of the same key
    with session_scope(engine) as s:
        assert q.counts(s) == {"pending": 0, "indexed": 5, "failed": 1}
        assert q.get_int(s, MetaKey.STORE_ROWS) == 6
        assert q.failures(s) == [("top.jpg", "truncated")]
        # A folder is an exact prefix: not "a_b" (LIKE's wildcard), not "A" (case).
        assert [r.path for r in q.browse_images(s, folder="a")] == ["a/x.jpg", "a/y.jpg"]
        assert q.count_images(s, folder="a", status="indexed") == 2
        assert [r.path for r in q.browse_images(s, sort="-date", limit=2)] == ["a/x.jpg", "a/y.jpg"]
        assert q.folder_counts(s) == {"": 5, "a": 2, "a_b": 1, "A": 1, "b": 1, "b/a": 1}
        assert list(q.indexed_ids_under(s, "b")) == [ids["b/a/v.jpg"]]
        ids_arr, rows = q.indexed_rows(s)
        assert list(rows) == [0, 1, 2, 3, 4] and list(ids_arr) == sorted(ids_arr)
        assert q.vector_rows_by_sha(s)[f"{3:064x}"] == 3
        attrs = q.indexed_attributes(s)  # in path order, the failed photo left out
        in_order = sorted(paths[:5])
        assert attrs["id"].tolist() == [ids[p] for p in in_order]
        assert attrs["sha256"].tolist() == [f"{paths.index(p):064x}".encode() for p in in_order]
        assert attrs["mtime_ns"].tolist() == [100 - paths.index(p) for p in in_order]
        assert attrs["width"].tolist() == [4] * 5 and attrs["size"].dtype == np.int64


def test_imports_labels_predictions_and_marks(db_url: str) -> None:
    engine = open_database(db_url, create=True)
    with session_scope(engine) as s:
        q.insert_pending(s, [("old.jpg", 1, 1)])
    with session_scope(engine) as s:
        got = q.upsert_indexed(s, ["new1.jpg", "old.jpg", "new2.jpg"], np.array([7, 8, 9]))
        assert got[1] == q.known_files(s)["old.jpg"].id and len(set(got)) == 3
    with session_scope(engine) as s:
        assert q.ids_by_path(s, ["new1.jpg", "new2.jpg"]) == {"new1.jpg": got[0], "new2.jpg": got[2]}
        q.set_labels(s, "species", got[:2], ["robin", "wren"])
        q.set_labels(s, "species", got[:1], ["jay"])  # replaces
        q.set_predictions(s, "species", [(got[2], "wren", 0.9, "knn")])
        assert q.mark_not_duplicates(s, [(got[2], got[0]), (got[0], got[2]), (got[1], got[1])]) == 1
        assert q.mark_not_duplicates(s, [(got[0], got[2]), (got[0], got[1])]) == 1
    with session_scope(engine) as s:
        ids, labels = q.labels_of(s, "species")
        assert dict(zip(ids.tolist(), labels, strict=True)) == {got[0]: "jay", got[1]: "wren"}
        assert q.label_summary(s) == [("species", "jay", 1), ("species", "wren", 1)]
        assert q.remove_labels(s, "species", label="jay") == 1
        a, b = q.not_duplicate_pairs(s)
        assert list(zip(a.tolist(), b.tolist(), strict=True)) == sorted(
            tuple(sorted(p)) for p in [(got[0], got[2]), (got[0], got[1])]
        )  # smaller id first
        assert q.unmark_not_duplicates(s, [(got[2], got[0])]) == 1
        q.delete_images(s, [got[0]])  # its remaining mark goes with it (ON DELETE CASCADE)
    with session_scope(engine) as s:
        assert len(q.not_duplicate_pairs(s)[0]) == 0
