from __future__ import annotations

from pathlib import Path

import pytest

from birder_index.db.engine import sqlite_url


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh, empty database of each kind the store supports: a SQLite file, and a database of a throwaway
    PostgreSQL server (tests/postgres.py)."""
    if request.param == "sqlite":
        return sqlite_url(tmp_path / "i.db")
    url: str = request.getfixturevalue("postgres_url")
    return url
