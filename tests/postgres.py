"""A throwaway PostgreSQL server for the tests: Debian's `postgresql` binaries (installed by .ci/run) run on a
temporary data directory, reachable only through a Unix socket in a temporary folder (no TCP at all), trust
authentication, stopped and removed at the end of the session.

initdb refuses to run as root: as root, the server runs as the `postgres` user (runuser), on folders it owns.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

SUPERUSER = "birder"


def server_binaries() -> Path | None:
    """The newest installed PostgreSQL's bin folder (Debian's layout, then pg_config's), or None."""
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(Path(p).parent.name))
    for folder in reversed(candidates):
        if (Path(folder) / "initdb").is_file() and (Path(folder) / "pg_ctl").is_file():
            return Path(folder)
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb and shutil.which("pg_ctl") else None


@dataclass(frozen=True)
class Server:
    socket_dir: Path

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://{SUPERUSER}@/{database}?host={self.socket_dir}"

    def create_database(self) -> str:
        """A fresh, empty database (one per index, as docs/scale.md asks); its URL."""
        from sqlalchemy import create_engine
        from sqlalchemy import text

        name = "t_" + uuid.uuid4().hex[:12]
        engine = create_engine(self.url(), isolation_level="AUTOCOMMIT")
        try:
            with engine.connect() as conn:
                conn.execute(text(f'CREATE DATABASE "{name}"'))
        finally:
            engine.dispose()
        return self.url(name)


@contextmanager
def running_server(bindir: Path) -> Iterator[Server]:
    base = Path(tempfile.mkdtemp(prefix="birder-index-pg-"))
    data, sock = base / "data", base / "sock"
    sock.mkdir()
    as_user: list[str] = []
    if os.geteuid() == 0:
        as_user = ["runuser", "-u", "postgres", "--"]
        shutil.chown(base, "postgres")
        shutil.chown(sock, "postgres")
    base.chmod(0o755)

    def run(*args: str) -> None:
        subprocess.run([*as_user, *args], check=True, capture_output=True, text=True, cwd=base)

    # fsync off: a test server need not survive power loss (the clients' crash tests kill clients, not it).
    options = f"-k {sock} -c listen_addresses='' -c fsync=off -c full_page_writes=off"
    try:
        run(str(bindir / "initdb"), "-D", str(data), "-U", SUPERUSER, "--auth=trust", "-E", "UTF8", "--locale=C")
        run(str(bindir / "pg_ctl"), "-D", str(data), "-l", str(base / "server.log"), "-o", options, "-w", "start")
        try:
            yield Server(sock)
        finally:
            run(str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop")
    finally:
        shutil.rmtree(base, ignore_errors=True)
