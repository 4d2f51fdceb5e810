"""An index whose metadata lives in PostgreSQL (tests/postgres.py starts a throwaway server): build, search, dedup,
info and verify give what they give on SQLite, and a build killed with SIGKILL resumes."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from birder_index.cli import cli
from birder_index.db import queries as q
from birder_index.db.engine import open_database
from birder_index.db.engine import session_scope
from birder_index.errors import BirderIndexError
from birder_index.indexer import open_index
from birder_index.indexer import verify_index
from tests.crash import build_command
from tests.crash import make_corpus
from tests.helpers import make_photos


def run(*args: object) -> str:
    result = CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.stdout


def test_build_search_dedup_verify(tmp_path: Path, tiny_pt: Path, postgres_url: str, monkeypatch: pytest.MonkeyPatch):
    photos = tmp_path / "photos"
    make_photos(photos)
    shutil.copy(photos / "photo00.jpg", photos / "copy.jpg")  # a duplicate for dedup
    build = ("build", photos, "--weights", tiny_pt, "--workers", "0")
    on_sqlite = run(*build, "--index-dir", tmp_path / "sqlite")
    on_postgres = run(*build, "--index-dir", tmp_path / "pg", "--db", postgres_url)
    assert (
        on_postgres.split(" in ")[0]
        == on_sqlite.split(" in ")[0]
        == "9 indexed (1 identical copies reused), 1 failed, 0 unchanged"
    )
    assert not (tmp_path / "pg" / "index.db").exists()  # the metadata is in the server, not in the folder

    def answers(index_dir: Path) -> tuple[object, ...]:
        search = json.loads(run("search", photos / "photo01.jpg", "-k", "4", "--json", "--index-dir", index_dir))
        dedup = json.loads(run("dedup", "--threshold", "0.99", "--json", "--index-dir", index_dir))
        info = json.loads(run("info", "--json", "--failed", "--index-dir", index_dir))
        verify = json.loads(run("verify", "--json", "--index-dir", index_dir))
        run("label", "import", labels, "--set", "kinds", "--index-dir", index_dir)
        lookup = json.loads(
            run("lookup", photos / "photo04.jpg", "--set", "kinds", "-k", "2", "--json", "--index-dir", index_dir)
        )
        hits = [(r["path"], round(r["score"], 4)) for r in search[0]["results"]]
        groups = sorted(
            sorted(Path(p).name for p in [g["keeper"], *(m["path"] for m in g["duplicates"])]) for g in dedup["groups"]
        )
        counts = (info["images"], info["vectors"], info["failed"], info["failed_files"][0]["path"])
        return hits, groups, counts, verify["healthy"], lookup

    labels = tmp_path / "labels.csv"
    labels.write_text("path,label\n" + "".join(f"{photos}/photo0{i}.jpg,{'ab'[i % 2]}\n" for i in (0, 1, 3, 6)))
    expected = answers(tmp_path / "sqlite")
    monkeypatch.setenv("BIRDER_INDEX_DB", postgres_url)  # how the other commands reach the server
    assert answers(tmp_path / "pg") == expected
    assert expected[1] == [["copy.jpg", "photo00.jpg"]] and expected[3] is True
    assert run(*build, "--index-dir", tmp_path / "pg").startswith("0 indexed, 10 unchanged")  # the env's store


def _indexed(url: str) -> int:
    try:
        engine = open_database(url)
    except BirderIndexError:  # not created yet
        return 0
    try:
        with session_scope(engine) as s:
            return q.counts(s)["indexed"]
    finally:
        engine.dispose()


def test_a_killed_build_resumes(tmp_path: Path, tiny_pt: Path, postgres_url: str) -> None:
    n = 40
    make_corpus(tmp_path / "photos", n)
    command = [*build_command(tmp_path / "photos", tmp_path / "index", tiny_pt), "--db", postgres_url]
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while _indexed(postgres_url) == 0 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    before = _indexed(postgres_url)
    assert 0 < before < n, "the kill did not land inside the embedding loop"
    done = subprocess.run(command, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.startswith(f"{n - before} indexed, ")  # nothing embedded twice
    with open_index(tmp_path / "index", db=postgres_url) as index:
        report = verify_index(index)
        assert report.healthy, report
        ids, rows = index.id_rows()
        assert len(ids) == len(np.unique(rows)) == n
        assert index.ann().index.ntotal == n
