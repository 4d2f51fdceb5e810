"""FAISS index selection, training, tuning, growth and removal, on small synthetic collections (seconds)."""

from __future__ import annotations

import math
import time
from pathlib import Path

import faiss
import numpy as np
import pytest

from birder_index.db import queries as q
from birder_index.db.engine import session_scope
from birder_index.indexer import import_embeddings
from birder_index.indexer import open_index
from birder_index.indexer import reindex
from birder_index.indexer import select
from birder_index.indexer import verify_index
from birder_index.indexer.ann import ids_in
from birder_index.indexer.refresh import refresh_ann
from birder_index.indexer.refresh import training_positions
from birder_index.indexer.refresh import tuning_positions
from birder_index.indexer.select import choose_index
from birder_index.indexer.tune import drop_self
from birder_index.indexer.tune import exact_knn
from birder_index.indexer.tune import recall_at
from birder_index.indexer.tune import tune
from birder_index.search import nearest


def clustered(n: int, d: int, seed: int = 0) -> np.ndarray:
    """Vectors around 50 centres with spread comparable to the gaps, so neighbours are not all equidistant."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((50, d)).astype(np.float32)
    x = centres[rng.integers(0, 50, n)] + rng.standard_normal((n, d)).astype(np.float32) * 0.8
    return x.astype(np.float32)


def _import(tmp_path: Path, x: np.ndarray, name: str = "x", **kw: object) -> Path:
    np.save(tmp_path / f"{name}.npy", x)
    (tmp_path / f"{name}.txt").write_text("\n".join(f"{name}/{i}.jpg" for i in range(len(x))))
    import_embeddings(tmp_path / f"{name}.npy", tmp_path / "index", paths_file=tmp_path / f"{name}.txt", **kw)  # type: ignore[arg-type]
    return tmp_path / "index"


@pytest.mark.parametrize("n", [100, 10_000, 50_000])
def test_small_collections_are_searched_exactly(n: int) -> None:
    assert choose_index(n, 768).factory == "Flat"


@pytest.mark.parametrize("n,d", [(100_000, 512), (1_000_000, 768), (10_000_000, 1024), (50_000_000, 768)])
def test_large_collections_get_ivf_pq_sized_to_the_budget(n: int, d: int) -> None:
    plan = choose_index(n, d)
    assert not plan.exact and 2 * math.sqrt(n) <= plan.nlist < 4 * math.sqrt(n)
    assert 4 * d * plan.nlist / n <= 32  # the centroids' RAM per vector
    assert d % plan.m == 0 and plan.nbits == 4 and plan.factory.endswith(f"PQ{plan.m}x4fs")
    assert plan.bytes_per_vector(d) <= select.DEFAULT_MEMORY / n
    assert 39 * plan.nlist <= plan.training_points <= 256 * plan.nlist or plan.training_points == n
    assert ("HNSW" in plan.factory) == (n >= select.HNSW_COARSE_MIN)


def test_tight_budget_means_shorter_codes_and_gpu_uses_its_m_values() -> None:
    roomy, tight = choose_index(1_000_000, 768), choose_index(1_000_000, 768, max_memory=60 * 10**6)
    assert tight.m < roomy.m and tight.bytes_per_vector(768) <= 60
    gpu = choose_index(1_000_000, 768, gpu=True)
    assert gpu.nbits == 8 and gpu.m in select.GPU_PQ_M and 768 % gpu.m == 0
    assert choose_index(2_000_000, 1000, gpu=True).m in (8, 20, 40)  # divisors of 1000 the GPU accepts


def test_exact_index_has_recall_one_and_no_faiss_warnings(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    index_dir = _import(tmp_path, clustered(10_000, 32))
    assert "WARNING" not in capfd.readouterr().err
    with open_index(index_dir) as index, session_scope(index.engine) as s:
        m = q.get_manifest(s)
        assert m is not None and m.factory == "Flat" and m.recall_at_10 == 1.0 and m.queries_per_second
        assert m.bytes_per_vector is not None and m.bytes_per_vector < 4 * 32 + 40


@pytest.fixture
def small_flat_max(monkeypatch: pytest.MonkeyPatch) -> None:
    """IVF from 1,000 vectors up, so training and tuning run in seconds."""
    monkeypatch.setattr(select, "FLAT_MAX", 1000)


def test_tuning_queries_are_held_out_of_training() -> None:
    sample, queries = training_positions(60_000, 20_000), tuning_positions(60_000)
    assert len(sample) == 20_000 and len(np.unique(sample)) == 20_000 and len(queries) == 2_000
    assert not np.intersect1d(sample, queries).size
    assert sample.max() > 50_000  # a random sample, not the first N
    assert len(training_positions(1_500, 1_400)) == 1_400  # too small to spare them: trained on everything


def test_ivf_is_trained_tuned_and_reaches_its_target(tmp_path: Path, small_flat_max: None) -> None:
    x = clustered(8000, 64)
    index_dir = _import(tmp_path, x, target_recall=0.9)
    with open_index(index_dir) as index, session_scope(index.engine) as s:
        m = q.get_manifest(s)
        assert m is not None and m.factory.startswith("IVF256,PQ16x4fs") and m.trained_on == 8000
        assert m.recall_at_10 is not None and m.recall_at_10 >= 0.9
    with open_index(index_dir) as index:
        params = index.ann().params
        assert params["nprobe"] >= 1 and params["k_factor"] >= 1
        timing = params["timing"]  # what the rate means, recorded with it
        assert timing["batch"] == 1000 and timing["threads"] >= 1 and timing["cpus"] >= 1
        assert timing["busy_elsewhere"] is None or timing["busy_elsewhere"] >= 0
        ids, _ = index.id_rows()
        xq = index.vectors(ids[:300])
        gt = drop_self(exact_knn(xq / np.linalg.norm(xq, axis=1, keepdims=True),
                                 [(ids, index.fetch_normalized(ids)[0])], 11), ids[:300], 10)  # fmt: skip
        _, I = nearest(index, xq, k=11)
        tuned = recall_at(drop_self(I, ids[:300], 10), gt)
        _, I1 = nearest(index, xq, k=11, nprobe=1, k_factor=1)
        assert tuned >= 0.88 and tuned > recall_at(drop_self(I1, ids[:300], 10), gt)  # tuning and re-ranking pay


def test_tuner_picks_the_fastest_setting_that_reaches_the_target_timing_what_users_call() -> None:
    """Recall comes from the k + 1 search; the rates from the users' k search, timed over repeated batches."""
    gt = np.arange(10)[None, :].repeat(4, 0)
    q_ids = np.full(4, 99)
    calls: list[tuple[int, int, int]] = []

    def search(xq: np.ndarray, k: int, nprobe: int, k_factor: int) -> tuple[np.ndarray, np.ndarray]:
        found = min(10, 2 * nprobe + k_factor)  # recall grows with both; 0.8 needs nprobe 4 at k_factor 1, 2 at 4
        ids = np.where(np.arange(k) < found, np.arange(k), -1)[None, :].repeat(len(xq), 0)
        return np.zeros(ids.shape, np.float32), ids

    def timed(xq: np.ndarray, k: int, nprobe: int, k_factor: int) -> tuple[np.ndarray, np.ndarray]:
        calls.append((k, nprobe, k_factor))
        time.sleep(0.003 * nprobe * k_factor**2)  # (4, 1) costs 12 ms, (2, 4) 96 ms, (1, 6) 108 ms ...
        return search(xq, k, nprobe, k_factor)

    t = tune(search, np.zeros((4, 8), np.float32), q_ids, gt, 64, target=0.8, timed=timed)
    assert (t.nprobe, t.k_factor) == (4, 1) and t.recall >= 0.8
    assert {k for k, _, _ in calls} == {10}  # timed as a user asks: k, not k + 1
    assert 4 / 0.012 * 0.5 < t.qps <= 4 / 0.012  # the median of batches of 4 queries sleeping 12 ms


def test_tuner_stops_probing_more_lists_once_recall_stops_growing() -> None:
    """At a k_factor whose candidates cap the recall, doubling nprobe up to nlist only scans the whole index."""
    gt = np.arange(10)[None, :].repeat(4, 0)
    probed: list[tuple[int, int]] = []

    def search(xq: np.ndarray, k: int, nprobe: int, k_factor: int) -> tuple[np.ndarray, np.ndarray]:
        probed.append((nprobe, k_factor))
        found = min(10, k_factor + min(nprobe, 4))  # lists beyond 4 add nothing; 10 found needs k_factor >= 6
        ids = np.where(np.arange(k) < found, np.arange(k), -1)[None, :].repeat(len(xq), 0)
        return np.zeros(ids.shape, np.float32), ids

    t = tune(search, np.zeros((4, 8), np.float32), np.full(4, 99), gt, 4096, target=1.0)
    assert t.recall == 1.0 and t.k_factor + min(t.nprobe, 4) >= 10
    assert max(p for p, kf in probed if kf == 1) == 8  # 8 gained nothing over 4: 4096 lists were never scanned


def test_tuner_clears_the_target_by_a_margin_and_reports_the_recall_of_queries_that_did_not_choose() -> None:
    """Queries whose recalls spread around the target: a mean at the target is not enough, and the recall returned
    is the check queries' own, measured at the chosen setting."""
    gt = np.arange(10)[None, :].repeat(99, 0)
    spread = np.arange(99) % 3 - 1  # -1, 0, +1 neighbours around each setting's mean: a standard error of 0.008

    def search(xq: np.ndarray, k: int, nprobe: int, k_factor: int) -> tuple[np.ndarray, np.ndarray]:
        # nprobe 1 finds 8 of 10 on average, nprobe 2 9, nprobe 4 and more all; the check queries (xq[:, 0] == 1)
        # find one fewer than the choosing ones at every setting
        mean = {1: 8, 2: 9}.get(nprobe, 10) - xq[:, 0].astype(int)
        found = np.clip(mean + spread[: len(xq)] * (nprobe < 4), 0, 10)
        ids = np.where(np.arange(k)[None, :] < found[:, None], np.arange(k)[None, :], -1)
        return np.zeros(ids.shape, np.float32), ids

    choose, check = np.zeros((99, 8), np.float32), np.ones((99, 8), np.float32)
    held = (check, np.full(99, 99), gt)
    t = tune(search, choose, np.full(99, 99), gt, 64, target=0.9, check=held)
    assert t.nprobe == 4  # nprobe 2 averages exactly 0.9: short of 0.9 + 2 standard errors (k_factor adds nothing)
    assert t.recall == 0.9  # the check queries' recall at nprobe 4, not the choosing queries' 1.0
    t = tune(search, choose, np.full(99, 99), gt, 64, target=0.85)
    assert (t.nprobe, t.recall) == (2, 0.9)  # 0.9 clears 0.85 by more than two standard errors; no check: its own


def test_growth_retrains_and_removal_needs_no_rebuild(tmp_path: Path, small_flat_max: None) -> None:
    index_dir = _import(tmp_path, clustered(1500, 32), "a")
    with open_index(index_dir) as index, session_scope(index.engine) as s:
        assert q.get_manifest(s).trained_on == 1500  # type: ignore[union-attr]
    _import(tmp_path, clustered(5000, 32, seed=1), "b")  # 6,500 >= 4 x 1,500: retrained
    with open_index(index_dir) as index:
        with session_scope(index.engine) as s:
            m = q.get_manifest(s)
            assert m is not None and m.trained_on == 6500 and m.factory.startswith("IVF256")  # 2 sqrt(6500) lists
            gone = [k.id for p, k in q.known_files(s).items() if p.startswith("a/")][:100]
            q.delete_images(s, gone)
            q.bump_generation(s)
        before = m.file
        report = refresh_ann(index)
        assert not report.retrained and report.vectors == 6400
        assert not np.isin(gone, ids_in(index.ann().index)).any()
        with session_scope(index.engine) as s:
            assert q.get_manifest(s).trained_on == 6500  # type: ignore[union-attr]
        assert not (index_dir / before).exists()
    assert verify_index(open_index(index_dir)).healthy


def test_reindex_and_shrinking_back_to_exact(tmp_path: Path, small_flat_max: None) -> None:
    index_dir = _import(tmp_path, clustered(3000, 32))
    with open_index(index_dir) as index:
        report = reindex(index, target_recall=0.99)
        assert report.retrained and report.recall is not None and report.recall >= 0.99
        with session_scope(index.engine) as s:
            ids = [k.id for k in q.known_files(s).values()][:2500]
            q.delete_images(s, ids)
            q.bump_generation(s)
        assert refresh_ann(index).factory == "Flat"  # 500 vectors: exact again


def test_reindex_tune_only_keeps_the_trained_index_and_tunes_to_the_new_target(
    tmp_path: Path, small_flat_max: None
) -> None:
    index_dir = _import(tmp_path, clustered(3000, 32), target_recall=0.5)
    with open_index(index_dir) as index:
        before = index.ann()
        centroids = faiss.extract_index_ivf(before.index).quantizer.reconstruct_n(0, 8)
        low = (before.params["nprobe"], before.params["k_factor"])
        report = reindex(index, target_recall=0.99, tune_only=True)
        assert not report.retrained and report.train_seconds == 0 and report.recall is not None
        after = index.ann()
        assert np.array_equal(faiss.extract_index_ivf(after.index).quantizer.reconstruct_n(0, 8), centroids)
        assert (after.params["nprobe"], after.params["k_factor"]) != low and report.recall >= 0.95
        with session_scope(index.engine) as s:
            assert q.get_manifest(s).trained_on == 3000  # type: ignore[union-attr]


def test_exact_knn_streams_blocks_to_the_brute_force_answer() -> None:
    rng = np.random.default_rng(3)
    xq, xb = rng.normal(size=(50, 16)).astype(np.float32), rng.normal(size=(700, 16)).astype(np.float32)
    ids = np.arange(700, dtype=np.int64) * 7 + 5  # ids are not positions
    blocks = [(ids[s : s + 256], xb[s : s + 256]) for s in range(0, 700, 256)]  # the last block is short
    expected = ids[np.argsort(-(xq @ xb.T), axis=1)[:, :10]]
    assert np.array_equal(exact_knn(xq, blocks, 10), expected)
    assert np.array_equal(exact_knn(xq, [(ids[:3], xb[:3])], 10)[:, 3:], np.full((50, 7), -1))  # fewer than k


def test_reindex_of_a_one_vector_index_says_recall_was_not_measured(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from birder_index.cli import cli

    index_dir = _import(tmp_path, clustered(1, 8))
    for args in ([], ["--tune-only"]):
        out = CliRunner().invoke(cli, ["reindex", "--index-dir", str(index_dir), *args])
        assert out.exit_code == 0 and "recall not measured (fewer than 2 vectors)" in out.output, out.output
