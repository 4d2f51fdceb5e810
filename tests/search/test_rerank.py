"""The exact re-rank: FAISS kernels over the memory-mapped store, no torch, threads that sleep when idle."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from birder_index.indexer.ann import rerank_scores


def _reference(store: np.ndarray, rows: np.ndarray, xq: np.ndarray) -> np.ndarray:
    v = store[rows].astype(np.float64)
    return np.einsum("qcd,qd->qc", v, xq) / np.maximum(np.linalg.norm(v, axis=2), 1e-12)


@pytest.mark.parametrize("dtype", [np.float16, np.float32])
@pytest.mark.parametrize("nq", [1, 7, 300])  # one query, one partial chunk, a batch split between threads
def test_rerank_is_the_exact_cosine_of_the_stored_vectors(dtype: type[np.generic], nq: int) -> None:
    rng = np.random.default_rng(nq)
    store = (rng.standard_normal((2000, 96)) * 5).astype(dtype)
    store[3] = 0  # an all-zero embedding scores 0, not NaN
    rows = rng.integers(0, 2000, (nq, 37))
    rows[0, 0] = 3
    xq = rng.standard_normal((nq, 96)).astype(np.float32)
    xq /= np.linalg.norm(xq, axis=1, keepdims=True)
    scores = rerank_scores(store, rows, xq)
    np.testing.assert_allclose(scores, _reference(store, rows, xq), atol=1e-5)
    assert scores[0, 0] == 0


def test_rerank_reads_a_memory_mapped_store(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    data = rng.standard_normal((500, 64)).astype(np.float16)
    data.tofile(tmp_path / "vectors.f16")
    store = np.memmap(tmp_path / "vectors.f16", np.float16, "r", shape=(500, 64))
    rows, xq = rng.integers(0, 500, (40, 25)), rng.standard_normal((40, 64)).astype(np.float32)
    xq /= np.linalg.norm(xq, axis=1, keepdims=True)
    np.testing.assert_allclose(rerank_scores(store, rows, xq), _reference(data, rows, xq), atol=1e-5)


def _python(code: str, **env: str) -> str:
    clean = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env={**clean, **env}, capture_output=True,
                          text=True, check=True)  # fmt: skip
    return done.stdout.strip()


def test_openmp_threads_sleep_when_idle_unless_the_user_says_otherwise() -> None:
    code = "import os, birder_index; print(os.environ['OMP_WAIT_POLICY'])"
    assert _python(code) == "PASSIVE"
    assert _python(code, OMP_WAIT_POLICY="ACTIVE") == "ACTIVE"


def test_a_reranked_search_never_imports_torch(tmp_path: Path) -> None:
    code = f"""
        import sys, numpy as np
        from birder_index.indexer import import_embeddings, open_index, select
        from birder_index.search import nearest
        select.FLAT_MAX = 1000
        x = np.random.default_rng(0).standard_normal((3000, 32)).astype(np.float32)
        np.save("{tmp_path}/x.npy", x)
        open("{tmp_path}/p.txt", "w").write("\\n".join(f"v{{i}}" for i in range(3000)))
        import_embeddings("{tmp_path}/x.npy", "{tmp_path}/index", paths_file="{tmp_path}/p.txt")
        with open_index("{tmp_path}/index") as index:
            assert index.ann().factory.startswith("IVF")
            nearest(index, x[:50], k=5, k_factor=4)
        print("torch" in sys.modules)
    """
    assert _python(code) == "False"
