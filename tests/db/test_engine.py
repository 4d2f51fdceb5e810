from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import inspect
from sqlalchemy import text

from birder_index.db import queries as q
from birder_index.db.engine import open_database
from birder_index.db.engine import session_scope
from birder_index.db.engine import sqlite_url
from birder_index.db.models import SCHEMA_VERSION
from birder_index.db.models import MetaKey
from birder_index.errors import IndexMismatch


def test_new_database_has_schema_wal_and_foreign_keys(tmp_path: Path) -> None:
    engine = open_database(sqlite_url(tmp_path / "i.db"), create=True)
    with engine.connect() as conn:
        assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert conn.execute(text("PRAGMA foreign_keys")).scalar() == 1
        assert conn.execute(text("PRAGMA synchronous")).scalar() == 2  # FULL
    with session_scope(engine) as s:
        assert q.get_int(s, MetaKey.SCHEMA_VERSION) == SCHEMA_VERSION


def test_newer_schema_is_refused(db_url: str) -> None:
    url = db_url
    engine = open_database(url, create=True)
    with session_scope(engine) as s:
        q.set_meta(s, MetaKey.SCHEMA_VERSION, SCHEMA_VERSION + 1)
    with pytest.raises(IndexMismatch, match=f"has schema {SCHEMA_VERSION + 1}; this birder-index reads up to"):
        open_database(url)


def test_foreign_database_is_refused(db_url: str) -> None:
    with pytest.raises(IndexMismatch, match="is not a birder-index database"):
        open_database(db_url)


def test_deleting_an_image_deletes_its_labels(db_url: str) -> None:
    engine = open_database(db_url, create=True)
    with session_scope(engine) as s:
        q.insert_pending(s, [("a.jpg", 1, 1), ("b.jpg", 1, 1)])
        ids = [k.id for k in q.known_files(s).values()]
        q.set_labels(s, "species", ids, ["robin", "wren"])
    with session_scope(engine) as s:
        q.delete_images(s, ids[:1])
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM labels")).scalar() == 1


def test_ids_are_never_reused(db_url: str) -> None:
    engine = open_database(db_url, create=True)
    with session_scope(engine) as s:
        q.insert_pending(s, [("a.jpg", 1, 1)])
        first = q.known_files(s)["a.jpg"].id
        q.delete_images(s, [first])
        q.insert_pending(s, [("b.jpg", 1, 1)])
        assert q.known_files(s)["b.jpg"].id > first  # a stale FAISS id can never name a new photo


def test_a_half_created_database_is_left_to_its_creator(db_url: str) -> None:
    """A reader that opens a database while the first build creates it must not create tables too."""
    url = db_url
    engine = open_database(url, create=True)
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM meta"))
        conn.execute(text("DROP TABLE labels"))  # as if the creator had got this far
    with pytest.raises(IndexMismatch, match="is still being created; try again in a moment"):
        open_database(url)
    assert not inspect(engine).has_table("labels")
    open_database(url, create=True)  # a build that resumes a killed first build finishes the schema
    with session_scope(open_database(url)) as s:
        assert q.get_int(s, MetaKey.SCHEMA_VERSION) == SCHEMA_VERSION


def test_tables_created_by_another_process_at_the_same_moment_are_fine(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sqlalchemy.exc import OperationalError

    from birder_index.db import engine as engine_module

    url = sqlite_url(tmp_path / "i.db")
    engine = open_database(url, create=True)
    real = engine_module.Base.metadata.create_all
    calls = []

    def racing_create_all(bind: object) -> None:
        calls.append(1)
        if len(calls) == 1:  # the other process won the race for this table
            raise OperationalError("CREATE TABLE labels", {}, Exception("table labels already exists"))
        real(engine)

    monkeypatch.setattr(engine_module.Base.metadata, "create_all", racing_create_all)
    open_database(url)
    assert len(calls) == 2
