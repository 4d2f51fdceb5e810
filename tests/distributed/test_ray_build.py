"""`build --ray` on a local multi-node Ray cluster (ray.cluster_utils.Cluster: three nodes of one CPU, small object
stores, no dashboard): the same index as a local build, failures recorded, nothing lost."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from birder_index.backbone.read import Item
from birder_index.db import queries as q
from birder_index.db.engine import session_scope
from birder_index.distributed import EmbedActor
from birder_index.distributed import RaySettings
from birder_index.errors import BirderIndexError
from birder_index.indexer import BuildOptions
from birder_index.indexer import ModelSpec
from birder_index.indexer import build_index
from birder_index.indexer import open_index
from birder_index.indexer import verify_index
from birder_index.search import nearest
from tests.crash import make_corpus

ray = pytest.importorskip("ray", reason="the ray extra is not installed")
N = 40
OPTS = BuildOptions(workers=0, batch_size=4)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """40 photos (one of them broken), a tiny checkpoint, and the index a local build makes of them."""
    from tests.helpers import save_vit

    root = tmp_path_factory.mktemp("ray")
    make_corpus(root / "photos", N - 1)
    good = (root / "photos" / "img0000.jpg").read_bytes()
    (root / "photos" / "broken.jpg").write_bytes(good[: len(good) // 3])
    weights = save_vit(root, "vit_reg4_b16", "pt")
    build_index(root / "photos", index_dir=root / "local", spec=ModelSpec(weights=weights), options=OPTS)
    return root / "photos", weights, root / "local"


def _state(index_dir: Path) -> dict[str, tuple[str, str | None]]:
    with open_index(index_dir) as index, session_scope(index.engine) as s:
        return {p: (k.status, k.sha256) for p, k in q.known_files(s).items()}


def test_a_ray_build_equals_a_local_build(cluster: object, corpus: tuple[Path, Path, Path], tmp_path: Path) -> None:
    photos, weights, local = corpus
    report = build_index(photos, index_dir=tmp_path / "ray", spec=ModelSpec(weights=weights), options=OPTS, ray="auto")
    assert (report.indexed, report.failed) == (N - 1, 1)
    assert report.failures[0][0] == "broken.jpg"
    assert _state(tmp_path / "ray") == _state(local)  # same rows, statuses and hashes
    with open_index(tmp_path / "ray") as index, open_index(local) as ref:
        assert verify_index(index).healthy
        ids, _ = index.id_rows()
        ref_ids, _ = ref.id_rows()
        assert np.array_equal(ids, ref_ids)  # the driver planned the same ids
        got, want = index.vectors(ids), ref.vectors(ref_ids)
        cos = (got * want).sum(1) / np.linalg.norm(got, axis=1) / np.linalg.norm(want, axis=1)
        assert cos.min() >= 0.9995  # the precision check's bar
        D, I = nearest(index, want, k=5)
        Dr, Ir = nearest(ref, want, k=5)
        assert np.array_equal(I, Ir)
        assert np.allclose(D, Dr, atol=2e-3)
    # Three actors on three nodes did the work (the per-actor counts are logged; here the rows say which).


class RaisesOnOnePhoto(EmbedActor):
    """An actor whose reading raises on one photo, as a bug or an exotic file would."""

    def read(self, image_id: int, rel: str) -> Item:
        if rel == "img0007.jpg":
            raise RuntimeError("a decoder bug")
        return super().read(image_id, rel)


def test_an_exception_in_the_actor_fails_that_photo_only(
    cluster: object, corpus: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the actors load this test's class
    photos, weights, _ = corpus
    settings = RaySettings(embedder=RaisesOnOnePhoto)
    report = build_index(
        photos, index_dir=tmp_path / "ray", spec=ModelSpec(weights=weights), options=OPTS, ray=settings
    )
    assert (report.indexed, report.failed) == (N - 2, 2)
    assert dict(report.failures)["img0007.jpg"] == "RuntimeError: a decoder bug"
    with open_index(tmp_path / "ray") as index, session_scope(index.engine) as s:
        assert q.counts(s) == {"pending": 0, "indexed": N - 2, "failed": 2}
        assert dict(q.failures(s))["img0007.jpg"] == "RuntimeError: a decoder bug"


def test_an_unreadable_photo_folder_is_one_line(cluster: object, tmp_path: Path) -> None:
    from birder_index.distributed import check_readable

    (tmp_path / "p").mkdir()
    (tmp_path / "p" / "a.jpg").write_bytes(b"x")
    check_readable(tmp_path / "p", ["a.jpg"])  # every node reads it
    with pytest.raises(BirderIndexError, match=r"^--ray: .*/p/b\.jpg is not readable on node .* \(no such file"):
        check_readable(tmp_path / "p", ["a.jpg", "b.jpg"])


def _indexed(index_dir: Path) -> int:
    if not (index_dir / "index.db").exists():
        return 0
    try:
        with open_index(index_dir) as index, session_scope(index.engine) as s:
            return q.counts(s)["indexed"]
    except BirderIndexError:  # not created yet
        return 0


def _wait_for_rows(index_dir: Path, alive: Callable[[], bool]) -> int:
    deadline = time.monotonic() + 120
    while (n := _indexed(index_dir)) == 0 and alive() and time.monotonic() < deadline:
        time.sleep(0.05)
    return n


def test_a_killed_driver_resumes(cluster: Any, corpus: tuple[Path, Path, Path], tmp_path: Path) -> None:
    photos, weights, local = corpus
    index_dir = tmp_path / "ray"
    command = [
        sys.executable, "-m", "birder_index", "build", str(photos), "--index-dir", str(index_dir),
        "--weights", str(weights), "--batch-size", "2", "--ray", cluster.address, "--quiet",
    ]  # fmt: skip
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _wait_for_rows(index_dir, lambda: proc.poll() is None)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    before = _indexed(index_dir)
    assert 0 < before < N - 1, "the kill did not land while the driver was writing"
    report = build_index(photos, index_dir=index_dir, spec=ModelSpec(weights=weights), options=OPTS, ray="auto")
    assert report.indexed == N - 1 - before  # nothing embedded twice
    assert _state(index_dir) == _state(local)
    with open_index(index_dir) as index:
        assert verify_index(index).healthy


@pytest.mark.slow  # 380 s here: Ray takes minutes to give up on the lost node's actor and blocks
def test_a_node_removed_mid_build_loses_nothing(cluster: Any, corpus: tuple[Path, Path, Path], tmp_path: Path) -> None:
    """Last in this module: it takes a node away (and gives one back)."""
    photos, weights, local = corpus
    index_dir = tmp_path / "ray"
    result: list[object] = []

    def run() -> None:
        options = BuildOptions(workers=0, batch_size=2)
        try:
            result.append(build_index(photos, index_dir=index_dir, spec=ModelSpec(weights=weights), options=options,
                                      ray="auto"))  # fmt: skip
        except BaseException as e:  # reported below
            result.append(e)

    worker = threading.Thread(target=run)
    worker.start()
    _wait_for_rows(index_dir, worker.is_alive)
    victim = next(node for node in cluster.worker_nodes)
    cluster.remove_node(victim)
    worker.join(timeout=240)
    cluster.add_node(num_cpus=1, object_store_memory=200 * 2**20)
    assert not worker.is_alive() and result, "the build did not finish"
    assert not isinstance(result[0], BaseException), result[0]
    assert _state(index_dir) == _state(local)  # every photo indexed (or failed, as locally): none lost
