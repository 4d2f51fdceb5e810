"""benchmarks/one_machine.py (issue 22) at a small size, as CI can run it: the same code path as the 1M-10M runs
(streamed generation, `import_embeddings`, `nearest`, `find_duplicates` with planted near-threshold pairs)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

BENCHMARK = Path(__file__).resolve().parents[1] / "benchmarks" / "one_machine.py"


def run(what: str, size: int, work: Path) -> dict[str, object]:
    done = subprocess.run([sys.executable, str(BENCHMARK), what, "--sizes", str(size), "--work", str(work)],
                          capture_output=True, text=True, timeout=600)  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    return dict(json.loads(done.stdout.splitlines()[0]))


def test_index_at_a_size_that_takes_the_ivf_path(tmp_path: Path) -> None:
    row = run("index", 60_000, tmp_path)
    assert str(row["factory"]).startswith("IVF") and row["n"] == 60_000
    assert float(row["recall"]) >= 0.9 and float(row["qps_batch"]) > 0  # type: ignore[arg-type]
    assert float(row["peak_anon_mb"]) > 0  # type: ignore[arg-type]


def test_dedup_finds_every_planted_pair_above_the_threshold_and_no_decoy(tmp_path: Path) -> None:
    row = run("dedup", 30_000, tmp_path)
    assert row["found_above"] == 1.0 and row["found_below"] == 0 and int(row["planted_above"]) > 0  # type: ignore[call-overload]
    stages = [float(row[k]) for k in ("ids_s", "centroids_s", "assign_s", "join_s", "group_s")]  # type: ignore[arg-type]
    assert min(stages) >= 0 and stages[3] > 0 and sum(stages) <= float(row["dedup_s"]) + 1e-6  # type: ignore[arg-type]
