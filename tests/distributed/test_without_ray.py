"""`--ray` without the extra, and bad Ray settings: one line each, before any work."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from birder_index.cli import cli
from birder_index.distributed import RaySettings
from birder_index.errors import BirderIndexError
from birder_index.indexer import import_embeddings


def test_without_ray_the_error_names_the_extra(
    monkeypatch: pytest.MonkeyPatch, photos: Path, tiny_pt: Path, tmp_path: Path
) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now raises ImportError
    result = CliRunner().invoke(
        cli, ["build", str(photos), "--weights", str(tiny_pt), "--index-dir", str(tmp_path / "i"), "--ray"]
    )
    assert result.exit_code == 1
    assert result.output == 'Error: --ray needs Ray: pip install "birder-index[ray]"\n'
    assert not (tmp_path / "i").exists()  # refused before any work


def test_bad_settings_are_one_line() -> None:
    with pytest.raises(BirderIndexError, match="^Ray actors must be >= 1, got 0$"):
        RaySettings(actors=0)
    with pytest.raises(BirderIndexError, match="^CPUs per Ray actor must be > 0, got -1"):
        RaySettings(cpus_per_actor=-1)


def _imported(tmp_path: Path) -> Path:
    np.save(tmp_path / "x.npy", np.random.default_rng(0).standard_normal((20, 8)).astype(np.float32))
    (tmp_path / "p.txt").write_text("\n".join(f"{i}.jpg" for i in range(20)))
    import_embeddings(tmp_path / "x.npy", tmp_path / "idx", paths_file=tmp_path / "p.txt")
    return tmp_path / "idx"


@pytest.mark.parametrize("command", [["reindex"], ["dedup", "--threshold", "0.9"]])
def test_reindex_and_dedup_without_ray_are_one_line(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, command: list[str]
) -> None:
    index_dir = _imported(tmp_path)
    monkeypatch.setitem(sys.modules, "ray", None)
    result = CliRunner().invoke(cli, [*command, "--index-dir", str(index_dir), "--ray"])
    assert result.exit_code == 1
    assert result.output == 'Error: --ray needs Ray: pip install "birder-index[ray]"\n'
