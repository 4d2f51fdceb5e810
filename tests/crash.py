"""Kill-and-resume trials, shared by tests/indexer/test_crash.py (a few in CI) and benchmarks/soak.py (50)."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from birder_index.db import queries as q
from birder_index.db.engine import session_scope
from birder_index.indexer import open_index
from birder_index.indexer import verify_index
from birder_index.indexer.signatures import read_signatures
from birder_index.search import nearest
from tests.helpers import photo


def make_corpus(folder: Path, n: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        photo(1000 + i, (128, 96)).save(folder / f"img{i:04d}.jpg", quality=85)


def build_command(photos: Path, index_dir: Path, weights: Path) -> list[str]:
    return [
        sys.executable, "-m", "birder_index", "build", str(photos), "--index-dir", str(index_dir),
        "--weights", str(weights), "--workers", "0", "--batch-size", "2",
    ]  # fmt: skip


@dataclass
class Trial:
    kills: list[int]  # images indexed when each SIGKILL landed
    final_rc: int


def kill_and_resume(photos: Path, index_dir: Path, weights: Path, rng: random.Random, kills: int = 2) -> Trial:
    """Start `build`, SIGKILL it at a random moment, `kills` times, then let a last run finish."""
    landed = []
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    for attempt in range(kills):
        start = indexed_count(index_dir)
        proc = subprocess.Popen(
            build_command(photos, index_dir, weights), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        if attempt % 2:  # anywhere: start-up, scan, embedding, commits, FAISS refresh
            time.sleep(rng.uniform(0.5, 3.0))
        else:  # inside the embedding loop: wait for its first commit, then a random moment
            deadline = time.monotonic() + 30
            while indexed_count(index_dir) == start and proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.02)
            time.sleep(rng.uniform(0.0, 0.5))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        landed.append(indexed_count(index_dir))
    done = subprocess.run(build_command(photos, index_dir, weights), env=env, capture_output=True, text=True)
    return Trial(landed, done.returncode)


def indexed_count(index_dir: Path) -> int:
    if not (index_dir / "index.db").exists():
        return 0
    try:
        with open_index(index_dir) as index, session_scope(index.engine) as s:
            return q.counts(s)["indexed"]
    except Exception:  # a kill before the schema exists
        return 0


def check_against(index_dir: Path, reference_dir: Path, n: int) -> None:
    """Every image indexed exactly once, verify healthy, and the same neighbours as the uninterrupted build."""
    with open_index(index_dir) as index, open_index(reference_dir) as ref:
        with session_scope(index.engine) as s:
            known = q.known_files(s)
        assert sum(k.status == "indexed" for k in known.values()) == n, "not every image is indexed"
        _, rows = index.id_rows()
        assert len(np.unique(rows)) == len(rows) == n, "an image has two store rows, or a row two images"
        report = verify_index(index)
        assert report.healthy, report
        assert index.ann().index.ntotal == n, "a vector was added twice"
        ref_ids, _ = ref.id_rows()
        xq = ref.vectors(ref_ids)
        D, I = nearest(index, xq, k=5)
        Dr, Ir = nearest(ref, xq, k=5)
        path_of = {k.id: p for p, k in known.items()}
        with session_scope(ref.engine) as s:
            ref_path_of = {k.id: p for p, k in q.known_files(s).items()}
        got = [[path_of[int(i)] for i in row] for row in I]
        expected = [[ref_path_of[int(i)] for i in row] for row in Ir]
        assert got == expected, "search results differ from the uninterrupted build"
        assert np.allclose(D, Dr, atol=2e-3)
        # The side stores stay row-aligned through kills: each photo keeps its own colour signature and thumbnail.
        ids, rows = index.id_rows()
        ref_ids, ref_rows = ref.id_rows()
        by_path = dict(zip([ref_path_of[int(i)] for i in ref_ids], ref_rows.tolist(), strict=True))
        ref_rows_aligned = np.array([by_path[path_of[int(i)]] for i in ids])
        for mine, theirs in ((index.colours(), ref.colours()), (index.thumbnails(), ref.thumbnails())):
            got_sig, want_sig = read_signatures(mine, rows), read_signatures(theirs, ref_rows_aligned)
            assert np.array_equal(got_sig, want_sig), f"{mine.path.name}: a row holds another photo's signature"
