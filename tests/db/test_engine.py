from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import text

from birder_index.db import queries as q
from birder_index.db.engine import open_database
from birder_index.db.engine import session_scope
from birder_index.db.engine import sqlite_url
from birder_index.db.models import SCHEMA_VERSION
from birder_index.errors import IndexMismatch


def test_new_database_has_schema_wal_and_foreign_keys(tmp_path: Path) -> None:
    engine = open_database(sqlite_url(tmp_path / "i.db"), create=True)
    with engine.connect() as conn:
        assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert conn.execute(text("PRAGMA foreign_keys")).scalar() == 1
        assert conn.execute(text("PRAGMA synchronous")).scalar() == 2  # FULL
    with session_scope(engine) as s:
        assert q.get_int(s, "schema_version") == SCHEMA_VERSION


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    url = sqlite_url(tmp_path / "i.db")
    engine = open_database(url, create=True)
    with session_scope(engine) as s:
        q.set_meta(s, "schema_version", SCHEMA_VERSION + 1)
    with pytest.raises(IndexMismatch, match=f"has schema {SCHEMA_VERSION + 1}; this birder-index reads up to"):
        open_database(url)


def test_foreign_database_is_refused(tmp_path: Path) -> None:
    with pytest.raises(IndexMismatch, match="is not a birder-index database"):
        open_database(sqlite_url(tmp_path / "other.db"))


def test_deleting_an_image_deletes_its_labels(tmp_path: Path) -> None:
    engine = open_database(sqlite_url(tmp_path / "i.db"), create=True)
    with session_scope(engine) as s:
        q.insert_pending(s, [("a.jpg", 1, 1), ("b.jpg", 1, 1)])
        ids = [k.id for k in q.known_files(s).values()]
        q.set_labels(s, "species", ids, ["robin", "wren"])
    with session_scope(engine) as s:
        q.delete_images(s, ids[:1])
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM labels")).scalar() == 1


def test_ids_are_never_reused(tmp_path: Path) -> None:
    engine = open_database(sqlite_url(tmp_path / "i.db"), create=True)
    with session_scope(engine) as s:
        q.insert_pending(s, [("a.jpg", 1, 1)])
        first = q.known_files(s)["a.jpg"].id
        q.delete_images(s, [first])
        q.insert_pending(s, [("b.jpg", 1, 1)])
        assert q.known_files(s)["b.jpg"].id > first  # a stale FAISS id can never name a new photo
