"""Engines and sessions. SQLite by default (WAL, foreign keys, full fsync); any SQLAlchemy URL works."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Engine
from sqlalchemy import create_engine
from sqlalchemy import event
from sqlalchemy import inspect
from sqlalchemy.exc import OperationalError
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session
from sqlalchemy.orm import sessionmaker

from birder_index.db.models import SCHEMA_VERSION
from birder_index.db.models import Base
from birder_index.db.models import Meta
from birder_index.db.models import MetaKey
from birder_index.errors import BirderIndexError
from birder_index.errors import IndexMismatch


def sqlite_url(path: Path) -> str:
    return f"sqlite:///{path}"


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    # FULL: a commit survives power loss, which the embedding store's committed length relies on.
    cur.execute("PRAGMA synchronous=FULL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()


def _sqlite_wal(dbapi_conn: Any, _record: Any) -> None:
    # WAL (stored in the file, so set once by its creator): readers (search, info) keep working while a build
    # writes. Only the creator sets it: switching modes is a write, and a reader that writes while the first
    # build creates the file can deadlock it ("database is locked").
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.close()


def connect(url: str, *, create: bool = False) -> Engine:
    try:
        engine = create_engine(url, connect_args={"timeout": 60} if url.startswith("sqlite") else {})
    except (SQLAlchemyError, ImportError, ValueError) as e:
        raise BirderIndexError(f"--db {url!r}: {e}") from None
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", _sqlite_pragmas)
        if create:
            event.listen(engine, "connect", _sqlite_wal)
    return engine


def open_database(url: str, *, create: bool = False) -> Engine:
    """Open (or with `create`, initialise) a birder-index database and check its schema version."""
    engine = connect(url, create=create)
    try:
        has_meta = inspect(engine).has_table("meta")
        if not has_meta and not create:
            raise IndexMismatch(f"{_display(url)} is not a birder-index database")
        with Session(engine) as s:
            row = s.get(Meta, MetaKey.SCHEMA_VERSION.value) if has_meta else None
            version = int(row.value) if row else None
        if version is None:
            if not create:
                # Its creator (a first build, running now) has not finished the tables: creating them here too
                # would make one of the two processes fail on "table already exists".
                raise IndexMismatch(f"{_display(url)} is still being created; try again in a moment")
            _create_tables(engine)  # also finishes a creation that a killed first build left half done
            with Session(engine) as s, s.begin():
                s.add(
                    Meta(key=MetaKey.SCHEMA_VERSION.value, value=str(SCHEMA_VERSION))
                )  # last: marks the schema complete
        elif version > SCHEMA_VERSION:
            raise IndexMismatch(f"{_display(url)} has schema {version}; this birder-index reads up to {SCHEMA_VERSION}")
        else:
            _create_tables(engine)  # tables added by later versions of the same schema line
    except SQLAlchemyError as e:
        raise BirderIndexError(f"cannot open database {_display(url)}: {str(e).splitlines()[0]}") from None
    return engine


def _create_tables(engine: Engine, attempts: int = 3) -> None:
    """Create missing tables; another process may create the same ones at the same moment, which is fine."""
    for attempt in range(attempts):
        try:
            Base.metadata.create_all(engine)
            return
        except OperationalError as e:
            if "already exists" not in str(e) or attempt == attempts - 1:
                raise


def integrity_problems(engine: Engine, *, limit: int = 10) -> list[str]:
    """What SQLite's own quick check finds wrong in the database file (pages, records, indexes); nothing for other
    databases, whose servers keep their files whole."""
    if engine.dialect.name != "sqlite":
        return []
    try:
        with engine.connect() as conn:
            rows = conn.exec_driver_sql(f"PRAGMA quick_check({int(limit)})").all()
    except SQLAlchemyError as e:
        return [str(e.orig if hasattr(e, "orig") else e).splitlines()[0]]
    problems = [str(r[0]) for r in rows]
    return [] if problems == ["ok"] else problems


@contextmanager
def session_scope(engine: Engine) -> Iterator[Session]:
    """One transaction: committed on success, rolled back on any error."""
    maker = sessionmaker(engine, expire_on_commit=False)
    try:
        with maker() as s, s.begin():
            yield s
    except OperationalError as e:
        # SQLite's SQLITE_FULL (PostgreSQL's DiskFull) is not an OSError; the transaction was rolled back, so, as
        # with a full disk anywhere else, nothing is half done and it is one line (docs/robustness.md).
        if "database or disk is full" in str(e) or "No space left on device" in str(e):
            raise BirderIndexError("cannot write the index database: the disk is full") from None
        raise


def _display(url: str) -> str:
    return url.removeprefix("sqlite:///")
