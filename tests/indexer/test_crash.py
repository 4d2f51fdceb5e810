"""Crash safety: real `build` processes killed with SIGKILL at random moments, then resumed."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from birder_index.errors import IndexBusy
from birder_index.indexer import BuildOptions
from birder_index.indexer import ModelSpec
from birder_index.indexer import build_index
from birder_index.indexer import open_index
from birder_index.indexer import verify_index
from birder_index.indexer.lock import WriterLock
from tests.crash import build_command
from tests.crash import check_against
from tests.crash import indexed_count
from tests.crash import kill_and_resume
from tests.crash import make_corpus
from tests.helpers import save_vit

N = 200


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """200 photos, a tiny checkpoint, and the index an uninterrupted build makes of them."""
    root = tmp_path_factory.mktemp("crash")
    make_corpus(root / "photos", N)
    weights = save_vit(root, "vit_reg4_b16", "pt")
    build_index(
        root / "photos",
        index_dir=root / "reference",
        spec=ModelSpec(weights=weights),
        options=BuildOptions(workers=0, batch_size=2),
    )
    return root / "photos", weights, root / "reference"


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_sigkill_at_random_moments_then_resume(corpus: tuple[Path, Path, Path], tmp_path: Path, seed: int) -> None:
    photos, weights, reference = corpus
    trial = kill_and_resume(photos, tmp_path / "index", weights, random.Random(seed), kills=2)
    assert trial.final_rc == 0
    check_against(tmp_path / "index", reference, N)


def test_ctrl_c_stops_after_the_batch_and_says_how_to_resume(corpus: tuple[Path, Path, Path], tmp_path: Path) -> None:
    photos, weights, reference = corpus
    index_dir = tmp_path / "index"
    proc = subprocess.Popen(
        build_command(photos, index_dir, weights), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    deadline = time.monotonic() + 30
    while indexed_count(index_dir) == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "Interrupted:" in out and "run the same command again to resume" in out
    assert "Traceback" not in err
    before = indexed_count(index_dir)
    assert 0 < before < N
    with open_index(index_dir) as index:
        report = verify_index(index)
        assert not report.faiss_missing and not report.faiss_orphans and not report.torn_tail_bytes
    done = subprocess.run(build_command(photos, index_dir, weights), capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout.startswith(f"{N - before} indexed, ")  # nothing embedded twice
    check_against(index_dir, reference, N)


def test_one_writer_at_a_time(corpus: tuple[Path, Path, Path], tmp_path: Path) -> None:
    photos, weights, _ = corpus
    index_dir = tmp_path / "index"
    index_dir.mkdir()
    with WriterLock(index_dir):
        result = subprocess.run(build_command(photos, index_dir, weights), capture_output=True, text=True)
        assert result.returncode == 1
        assert result.stderr.startswith(f"Error: another process (pid {os.getpid()}) is writing the index in")
        assert "--wait SECONDS" in result.stderr
        with pytest.raises(IndexBusy), WriterLock(index_dir, wait=0.3):
            pass


def test_a_killed_writer_leaves_no_lock(tmp_path: Path) -> None:
    code = (
        "from birder_index.indexer.lock import WriterLock; from pathlib import Path; import os, sys\n"
        f"WriterLock(Path({str(tmp_path)!r})).__enter__(); print('locked', flush=True); os.kill(os.getpid(), 9)"
    )
    child = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert child.stdout == "locked\n" and child.returncode == -signal.SIGKILL, child.stderr[-1000:]
    with WriterLock(tmp_path):  # acquired at once: the kernel released the dead process's lock
        pass


def test_readers_work_during_a_build(corpus: tuple[Path, Path, Path], tmp_path: Path) -> None:
    photos, weights, _ = corpus
    index_dir = tmp_path / "index"
    log = (tmp_path / "stderr").open("w+")
    proc = subprocess.Popen(build_command(photos, index_dir, weights), stdout=subprocess.DEVNULL, stderr=log)
    seen = []
    try:
        while proc.poll() is None and len(seen) < 20:
            n = indexed_count(index_dir)
            if n:
                with open_index(index_dir) as index:
                    ids, _ = index.id_rows()
                    seen.append((len(ids), index.ann().index.ntotal))
            time.sleep(0.05)
    finally:
        proc.wait(timeout=60)
    log.seek(0)
    assert proc.returncode == 0, log.read()[-2000:]
    assert seen, "the build finished before a reader could look"
    assert all(committed == searchable for committed, searchable in seen)  # readers see the last committed state
