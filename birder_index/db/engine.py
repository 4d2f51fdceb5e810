"""Engines and sessions. SQLite by default (WAL, foreign keys, full fsync); PostgreSQL (psycopg 3) for a shared
store (docs/scale.md); any other SQLAlchemy URL may work but is not tested."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import URL
from sqlalchemy import Engine
from sqlalchemy import create_engine
from sqlalchemy import event
from sqlalchemy import inspect
from sqlalchemy import make_url
from sqlalchemy import text
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

# Advisory lock keys (PostgreSQL), arbitrary but fixed: schema creation, and the one writer (db/lock.py).
SCHEMA_LOCK_KEY = 0x62697264_00000001


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
    """An engine for a SQLAlchemy URL (no connection is made yet). `postgresql://` means psycopg 3, the driver of
    the `postgres` extra."""
    try:
        parsed = make_url(url)
    except (SQLAlchemyError, ValueError) as e:
        raise BirderIndexError(f"--db {url!r}: {e}") from None
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    if parsed.drivername.startswith("postgresql"):
        return _connect_postgresql(parsed)
    try:
        engine = create_engine(parsed, connect_args={"timeout": 60} if parsed.drivername.startswith("sqlite") else {})
    except (SQLAlchemyError, ImportError, ValueError) as e:
        raise BirderIndexError(f"--db {display_url(url)!r}: {e}") from None
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", _sqlite_pragmas)
        if create:
            event.listen(engine, "connect", _sqlite_wal)
    return engine


def _connect_postgresql(url: URL) -> Engine:
    # The application name says who holds the writer lock (db/lock.py) when another writer is refused.
    name = f"birder-index pid {os.getpid()} on {socket.gethostname()}"[:63]
    try:
        return create_engine(url, pool_pre_ping=True, connect_args={"application_name": name})
    except ImportError:
        raise BirderIndexError('a PostgreSQL database needs psycopg: pip install "birder-index[postgres]"') from None
    except (SQLAlchemyError, ValueError) as e:
        raise BirderIndexError(f"--db {display_url(url)!r}: {e}") from None


def open_database(url: str, *, create: bool = False) -> Engine:
    """Open (or with `create`, initialise) a birder-index database and check its schema version."""
    engine = connect(url, create=create)
    check_schema(engine, create=create)
    return engine


def check_schema(engine: Engine, *, create: bool = False) -> None:
    """Check (or with `create`, create or finish) the schema of the database an engine opens."""
    name = display_url(engine.url)
    try:
        has_meta = inspect(engine).has_table("meta")
        if not has_meta and not create:
            raise IndexMismatch(f"{name} is not a birder-index database")
        with Session(engine) as s:
            row = s.get(Meta, MetaKey.SCHEMA_VERSION.value) if has_meta else None
            version = int(row.value) if row else None
        if version is None:
            if not create:
                # Its creator (a first build, running now) has not finished the tables: creating them here too
                # would make one of the two processes fail on "table already exists".
                raise IndexMismatch(f"{name} is still being created; try again in a moment")
            _create_tables(engine)  # also finishes a creation that a killed first build left half done
            with Session(engine) as s, s.begin():
                s.add(
                    Meta(key=MetaKey.SCHEMA_VERSION.value, value=str(SCHEMA_VERSION))
                )  # last: marks the schema complete
        elif version > SCHEMA_VERSION:
            raise IndexMismatch(f"{name} has schema {version}; this birder-index reads up to {SCHEMA_VERSION}")
        else:
            _create_tables(engine)  # tables added by later versions of the same schema line
    except SQLAlchemyError as e:
        engine.dispose()
        raise BirderIndexError(f"cannot open database {name}: {first_line(e)}") from None


def _create_tables(engine: Engine, attempts: int = 3) -> None:
    """Create missing tables; another process may create the same ones at the same moment, which is fine."""
    if engine.dialect.name == "postgresql":
        # DDL is transactional there: creators take turns under a transaction-scoped advisory lock.
        with engine.begin() as conn:
            conn.execute(text("SELECT pg_advisory_xact_lock(CAST(:k AS bigint))"), {"k": SCHEMA_LOCK_KEY})
            Base.metadata.create_all(conn)
        return
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


def display_url(url: str | URL) -> str:
    """A database as messages name it: a SQLite file's path, any other URL without its password."""
    try:
        parsed = make_url(url)
    except (SQLAlchemyError, ValueError):
        return str(url)
    if parsed.drivername.startswith("sqlite"):
        return parsed.database or ":memory:"
    return parsed.render_as_string(hide_password=True)


def first_line(e: SQLAlchemyError) -> str:
    """A database error's own message, first line (no SQL, no parameters)."""
    orig = getattr(e, "orig", None)
    return (str(orig if orig is not None else e).strip().splitlines() or [type(e).__name__])[0]
