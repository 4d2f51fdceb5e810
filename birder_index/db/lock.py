"""The one-writer rule inside the database, for a store that several machines reach (PostgreSQL).

A file lock (indexer/lock.py) protects an index folder on a local disk; it cannot be trusted on a shared
filesystem (NFS, SMB, cloud mounts often ignore or fake flock), and it protects nothing when two machines keep the
same remote database with index folders of their own. So for PostgreSQL the writer also holds a session-level
advisory lock on a connection of its own for the whole write. The server releases it when that session ends: at
exit, on a crash, and on SIGKILL (the kernel closes the socket; the server sees it at once on the same host, and
after TCP keepalive across a network). Readers take no lock.

The key is fixed and per schema: one database (or one schema) per index, and two writers of the same index
always meet on the same lock.
"""

from __future__ import annotations

import time
from types import TracebackType

from sqlalchemy import Connection
from sqlalchemy import Engine
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from birder_index.db.engine import display_url
from birder_index.db.engine import first_line
from birder_index.errors import BirderIndexError
from birder_index.errors import IndexBusy

WRITER_LOCK_CLASS = 0x62690001  # the lock's first key (int4); the second is a hash of the schema's name

_TRY = text("SELECT pg_try_advisory_lock(CAST(:k AS integer), hashtext(current_schema()))")
_UNLOCK = text("SELECT pg_advisory_unlock(CAST(:k AS integer), hashtext(current_schema()))")
_HOLDER = text(
    "SELECT a.application_name, a.client_addr FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
    "WHERE l.locktype = 'advisory' AND l.granted AND l.database = (SELECT oid FROM pg_database "
    "WHERE datname = current_database()) AND l.classid = CAST(CAST(:k AS integer) AS oid) "
    "AND l.objid = CAST(hashtext(current_schema()) AS oid) AND l.objsubid = 2"
)


def needs_database_lock(engine: Engine) -> bool:
    return engine.dialect.name == "postgresql"


class DatabaseLock:
    """Hold the writer lock of the database behind `engine` (PostgreSQL), waiting up to `wait` seconds."""

    def __init__(self, engine: Engine, *, wait: float = 0.0) -> None:
        self.engine = engine
        self.wait = wait
        self._conn: Connection | None = None

    def __enter__(self) -> DatabaseLock:
        try:
            conn = self.engine.connect()
        except SQLAlchemyError as e:
            raise BirderIndexError(f"cannot open database {display_url(self.engine.url)}: {first_line(e)}") from None
        try:
            conn.execution_options(isolation_level="AUTOCOMMIT")
            deadline = time.monotonic() + self.wait
            while not conn.execute(_TRY, {"k": WRITER_LOCK_CLASS}).scalar_one():
                if time.monotonic() >= deadline:
                    raise IndexBusy(
                        f"another process ({self._holder(conn)}) is writing the index in database "
                        f"{display_url(self.engine.url)}; wait for it to finish, or pass --wait SECONDS"
                    )
                time.sleep(0.2)
        except BaseException:
            conn.close()
            raise
        self._conn = conn
        return self

    def _holder(self, conn: Connection) -> str:
        row = conn.execute(_HOLDER, {"k": WRITER_LOCK_CLASS}).first()
        if row is None:
            return "?"
        name, addr = row
        return f"{name or 'a client'}" + (f" from {addr}" if addr else "")

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._conn is None:
            return
        conn, self._conn = self._conn, None
        try:
            conn.execute(_UNLOCK, {"k": WRITER_LOCK_CLASS})
        except SQLAlchemyError:
            conn.invalidate()  # never back to the pool holding the lock; a lost connection lost it anyway
        finally:
            conn.close()
