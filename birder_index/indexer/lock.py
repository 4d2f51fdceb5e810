"""One writer at a time. An OS file lock (flock) is released by the kernel when its process dies, even by SIGKILL,
so a killed build never leaves the index locked. A store that other machines reach (PostgreSQL) is also locked in
the database itself (db/lock.py), since a flock on a shared filesystem cannot be trusted to exclude another host."""

from __future__ import annotations

import os
import time
from pathlib import Path
from types import TracebackType

from sqlalchemy import Engine

from birder_index.db.lock import DatabaseLock
from birder_index.db.lock import needs_database_lock
from birder_index.errors import IndexBusy
from birder_index.indexer.layout import LOCK_FILE

try:
    import fcntl
except ImportError:  # Windows: no advisory locks; one writer is then the user's business
    fcntl = None  # type: ignore[assignment]


class WriterLock:
    def __init__(self, index_dir: Path, *, wait: float = 0.0, engine: Engine | None = None) -> None:
        """`engine`: the index's database, locked too where it is one that other machines reach."""
        self.path = index_dir / LOCK_FILE
        self.wait = wait
        self._fd: int | None = None
        self._db_lock = DatabaseLock(engine, wait=wait) if engine is not None and needs_database_lock(engine) else None

    def __enter__(self) -> WriterLock:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        deadline = time.monotonic() + self.wait
        while fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
                    os.close(fd)
                    raise IndexBusy(
                        f"another process (pid {holder}) is writing the index in {self.path.parent}; "
                        "wait for it to finish, or pass --wait SECONDS"
                    ) from None
                time.sleep(0.2)
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        self._fd = fd
        if self._db_lock is not None:
            try:
                self._db_lock.wait = max(0.0, deadline - time.monotonic())
                self._db_lock.__enter__()
            except BaseException:
                self.__exit__(None, None, None)
                raise
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._db_lock is not None:
            self._db_lock.__exit__(exc_type, exc, tb)
        if self._fd is not None:
            os.ftruncate(self._fd, 0)
            os.close(self._fd)  # closing releases the flock
            self._fd = None
