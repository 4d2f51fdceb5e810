from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from birder_index.cli import cli
from birder_index.db import queries as q
from birder_index.db.engine import session_scope
from birder_index.indexer import BuildOptions
from birder_index.indexer import ModelSpec
from birder_index.indexer import build_index
from birder_index.indexer import open_index
from birder_index.indexer import verify_index
from birder_index.indexer.ann import ids_in

OPTS = BuildOptions(workers=0)


@pytest.fixture
def index_dir(photos: Path, tiny_pt: Path) -> Path:
    build_index(photos, spec=ModelSpec(weights=tiny_pt), options=OPTS)
    return photos / ".birder-index"


def _verify(index_dir: Path, *args: str) -> tuple[int, dict[str, object]]:
    result = CliRunner().invoke(cli, ["verify", "--json", "--index-dir", str(index_dir), *args])
    return result.exit_code, json.loads(result.stdout)  # stderr may hold a progress line on a slow machine


def test_fresh_index_is_healthy(index_dir: Path) -> None:
    code, report = _verify(index_dir, "--deep")
    assert code == 0 and report["healthy"] and report["indexed"] == 8
    text = CliRunner().invoke(cli, ["verify", "--index-dir", str(index_dir)]).output
    assert text.splitlines()[-1] == "healthy"


def test_changed_and_missing_files_are_reported_and_repaired(index_dir: Path, photos: Path) -> None:
    (photos / "photo01.jpg").unlink()
    data = (photos / "photo03.jpg").read_bytes()
    (photos / "photo03.jpg").write_bytes(data[:-10] + b"0123456789")  # same size, new content
    st = (photos / "photo03.jpg").stat()
    code, report = _verify(index_dir)
    assert code == 1 and report["files_missing"] == ["photo01.jpg"]
    with open_index(index_dir) as index, session_scope(index.engine) as s:
        k = q.known_files(s)["photo03.jpg"]
    os.utime(photos / "photo03.jpg", ns=(k.mtime_ns, k.mtime_ns))  # same size and mtime: only --deep sees it
    assert st.st_size == k.size
    assert _verify(index_dir)[1]["files_changed"] == []
    assert _verify(index_dir, "--deep")[1]["files_changed"] == ["photo03.jpg"]
    code, report = _verify(index_dir, "--deep", "--repair")
    assert code == 0 and len(report["repaired"]) == 3  # re-queued, removed, FAISS rewritten
    code, report = _verify(index_dir)
    assert report["pending"] == 1 and not report["healthy"]  # photo03 waits for the next build
    build_index(photos, options=OPTS)
    assert _verify(index_dir, "--deep") == (0, _verify(index_dir, "--deep")[1])
    assert _verify(index_dir, "--deep")[1]["healthy"]


def test_torn_tail_and_faiss_drift_are_found_and_repaired(index_dir: Path) -> None:
    with open_index(index_dir) as index:
        store = index.store()
        with open(store.path, "ab") as f:
            f.write(b"\x01" * (store.row_bytes // 2))  # half a row: a write cut by a crash
        with session_scope(index.engine) as s:
            manifest = q.get_manifest(s)
            assert manifest is not None
            victim = int(ids_in(index.ann().index)[0])
            q.delete_images(s, [victim])  # a row deleted behind the FAISS file's back
    report = verify_index(open_index(index_dir))
    assert report.torn_tail_bytes == store.row_bytes // 2 and report.faiss_orphans == [victim]
    report = verify_index(open_index(index_dir), repair=True)
    assert report.repaired
    assert verify_index(open_index(index_dir)).healthy


def test_reindex_keeps_every_vector(index_dir: Path) -> None:
    result = CliRunner().invoke(cli, ["reindex", "--index-dir", str(index_dir)])
    assert result.exit_code == 0 and result.output.startswith("Flat index of 8 vectors")
    assert verify_index(open_index(index_dir)).healthy
