"""PostgreSQL as the store: the driver's extra, the URL forms, and the writer lock held in the database."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest

from birder_index.db.engine import connect
from birder_index.db.engine import display_url
from birder_index.db.engine import open_database
from birder_index.errors import BirderIndexError
from birder_index.errors import IndexBusy
from birder_index.indexer.lock import WriterLock


def test_without_psycopg_the_error_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "psycopg", None)  # `import psycopg` now raises ImportError
    with pytest.raises(BirderIndexError, match=r'^a PostgreSQL database needs psycopg: pip install "birder-index\['):
        connect("postgresql://someone@/photos")


def test_plain_postgresql_urls_mean_psycopg_3() -> None:
    for url in ("postgresql://u@/photos", "postgres://u@/photos", "postgresql+psycopg://u@/photos"):
        assert connect(url).dialect.driver == "psycopg"


def test_messages_never_show_the_password() -> None:
    assert display_url("postgresql://me:s3cret@db.example/photos") == "postgresql://me:***@db.example/photos"
    assert display_url("sqlite:////data/index.db") == "/data/index.db"


def test_an_unreachable_server_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(BirderIndexError, match="^cannot open database postgresql") as e:
        open_database(f"postgresql://me@/photos?host={tmp_path}")  # no server listens there
    assert "\n" not in str(e.value)


def test_one_writer_per_database_even_with_two_index_folders(postgres_url: str, tmp_path: Path) -> None:
    """Two machines that share the store but not a file lock (two folders here, as on two hosts, or a shared
    filesystem whose flock does not reach the other host) still meet on the database's lock."""
    open_database(postgres_url, create=True).dispose()
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    engine = connect(postgres_url)
    other = connect(postgres_url)
    try:
        busy = r"another process \(birder-index pid \d+ on .*\) is writing the index in database postgresql"
        with (
            WriterLock(tmp_path / "a", engine=engine),
            pytest.raises(IndexBusy, match=busy),
            WriterLock(tmp_path / "b", engine=other, wait=0.3),
        ):
            pass
        with WriterLock(tmp_path / "b", engine=other):  # released on exit
            pass
    finally:
        engine.dispose()
        other.dispose()


def test_a_killed_writer_leaves_no_database_lock(postgres_url: str, tmp_path: Path) -> None:
    open_database(postgres_url, create=True).dispose()
    code = (
        "import os; from pathlib import Path\n"
        "from birder_index.db.engine import connect; from birder_index.indexer.lock import WriterLock\n"
        f"WriterLock(Path({str(tmp_path / 'a')!r}), engine=connect({postgres_url!r})).__enter__()\n"
        "print('locked', flush=True); os.kill(os.getpid(), 9)"
    )
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    child = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert child.stdout == "locked\n" and child.returncode == -signal.SIGKILL, child.stderr[-1000:]
    engine = connect(postgres_url)
    try:
        with WriterLock(tmp_path / "b", engine=engine, wait=5):  # the server ended the dead writer's session
            pass
    finally:
        engine.dispose()
