"""User mistakes and hostile input get one line and a non-zero exit, never a traceback (issue 17, items 8 and 9):
outputs into missing folders, full disks, damaged or wrong model files, NaN and overflowing embeddings, duplicate
import samples, text and NaN query vectors, names made to inject formulas or terminal escapes."""

from __future__ import annotations

import errno
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from birder_index.cli import cli
from birder_index.dedup import actions
from birder_index.indexer import BuildOptions
from birder_index.indexer import ModelSpec
from birder_index.indexer import build_index
from birder_index.indexer import import_embeddings
from birder_index.indexer import open_index
from birder_index.indexer.vectors import VectorStore
from birder_index.output import csv_cell
from birder_index.output import printable
from tests.helpers import RGB_STATS
from tests.helpers import photo
from tests.helpers import signature

OPTS = BuildOptions(workers=0)


def run(*args: object) -> tuple[int, str]:
    result = CliRunner().invoke(cli, [str(a) for a in args])
    assert not isinstance(result.exception, Exception) or isinstance(result.exception, SystemExit), result.exception
    return result.exit_code, result.output


def one_line_error(code: int, out: str, *words: str) -> None:
    errors = [line for line in out.splitlines() if line.startswith("Error: ")]
    assert code != 0 and len(errors) == 1 and all(w in errors[0] for w in words), out
    assert "Traceback" not in out


@pytest.fixture
def built(photos: Path, tiny_pt: Path) -> Path:
    build_index(photos, spec=ModelSpec(weights=tiny_pt), options=OPTS)
    return photos / ".birder-index"


@pytest.mark.parametrize("option", ["--json-file", "--csv", "--report"])
def test_outputs_into_a_missing_folder_or_onto_a_folder(built: Path, tmp_path: Path, option: str) -> None:
    code, out = run("dedup", "--index-dir", built, "--threshold", "0.99", option, tmp_path / "nowhere" / "x")
    one_line_error(code, out, "cannot write", "nowhere")
    code, out = run("dedup", "--index-dir", built, "--threshold", "0.99", option, tmp_path)
    assert code != 0 and "Traceback" not in out and ("directory" in out.lower() or "is a folder" in out)


def test_a_full_disk_during_a_build_is_one_line_and_the_next_build_goes_on(
    photos: Path, tiny_pt: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    original = VectorStore.append

    def full(self: VectorStore, vectors: np.ndarray) -> np.ndarray:
        with open(self.path, "ab") as f:
            f.write(b"\0" * 7)  # part of a row reached the disk
        raise OSError(errno.ENOSPC, "No space left on device", str(self.path))

    monkeypatch.setattr(VectorStore, "append", full)
    code, out = run("build", photos, "--weights", tiny_pt, "--workers", "0")
    one_line_error(code, out, "no space left on device", "vectors.f16")
    monkeypatch.setattr(VectorStore, "append", original)
    code, out = run("build", photos, "--weights", tiny_pt, "--workers", "0")
    assert code == 0 and "8 indexed" in out
    code, out = run("verify", "--index-dir", photos / ".birder-index")
    assert code == 0 and out.splitlines()[-1] == "healthy"


def test_a_database_full_disk_during_a_build_is_one_line_and_the_next_build_goes_on(
    photos: Path, tiny_pt: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SQLite's SQLITE_FULL is an OperationalError of SQLAlchemy's, not an OSError (seen on a 200 KB tmpfs): here
    the build's first write of new rows meets it, inside its transaction."""
    import sqlite3

    from sqlalchemy.exc import OperationalError

    from birder_index.db import queries

    def full(*_: object) -> None:
        raise OperationalError("INSERT INTO images ...", {}, sqlite3.OperationalError("database or disk is full"))

    monkeypatch.setattr(queries, "insert_pending", full)
    code, out = run("build", photos, "--weights", tiny_pt, "--workers", "0")
    one_line_error(code, out, "cannot write the index database: the disk is full")
    monkeypatch.undo()
    code, out = run("build", photos, "--weights", tiny_pt, "--workers", "0")
    assert code == 0 and "8 indexed" in out


def test_a_full_disk_during_a_move_leaves_the_photo_and_no_partial_copy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src, dst = tmp_path / "a" / "p.jpg", tmp_path / "b" / "p.jpg"
    src.parent.mkdir()
    src.write_bytes(b"photo bytes" * 1000)
    digest = actions.hash_file(src)

    def no_links(*_: object) -> None:
        raise OSError(errno.EXDEV, "cross-device link")  # as another filesystem would answer

    def full(source: Path, target: Path) -> str:
        target.write_bytes(b"photo")  # the copy had begun
        raise OSError(errno.ENOSPC, "No space left on device", str(target))

    monkeypatch.setattr(actions.os, "link", no_links)
    monkeypatch.setattr(actions, "_copy_hashed", full)
    reason = actions.transfer(src, dst, size=src.stat().st_size, sha256=digest, tmp=dst.with_name(".p.jpg.part"))
    assert reason == "not moved: no space left on device"
    assert actions.hash_file(src) == digest and not dst.exists() and not list(dst.parent.iterdir())


def test_output_to_a_full_device_is_one_line(built: Path, photos: Path) -> None:
    code = "from birder_index.cli import cli; cli()"
    args = ["search", str(photos / "photo00.jpg"), "--index-dir", str(built)]
    with open("/dev/full", "w") as full:
        done = subprocess.run([sys.executable, "-c", code, *args], stdout=full, stderr=subprocess.PIPE, text=True)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith("Error: cannot write: no space left on device")


def test_a_damaged_safetensors_file(photos: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes((200).to_bytes(8, "little") + b'{"w": {"dtype": "F32", "shape": [9999], "data_offsets": [0, 40')
    code, out = run("build", photos, "--weights", bad)
    one_line_error(code, out, str(bad))
    assert not (photos / ".birder-index" / "vectors.f16").exists()


def _export(module: torch.nn.Module, path: Path, size: int = 32) -> Path:
    program = torch.export.export(module.eval(), (torch.randn(2, 3, size, size),))
    extra = {"birder_version": "v0.8.4", "task": "image_classification", "class_to_idx": "{}",
             "signature": json.dumps(signature(size, 0)), "rgb_stats": json.dumps(RGB_STATS)}  # fmt: skip
    torch.export.save(program, path, extra_files=extra)
    return path


class FeatureMap(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.avg_pool2d(x, 4)  # (B, 3, 8, 8): not an embedding


class Scaled(torch.nn.Module):
    """A flat 6-d embedding scaled by `scale` (inf * 0 gives NaN for a black photo, inf for others)."""

    def __init__(self, scale: float) -> None:
        super().__init__()
        self.scale = scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x.mean((2, 3)), x.std((2, 3))], 1) * self.scale


def test_a_pt2_that_returns_no_embedding(photos: Path, tmp_path: Path) -> None:
    code, out = run("build", photos, "--weights", _export(FeatureMap(), tmp_path / "fm.pt2"))
    one_line_error(code, out, "returns a tensor of shape (2, 3, 8, 8)", "(batch, dim)")


def test_nan_and_overflowing_embeddings_are_recorded_failures(photos: Path, tmp_path: Path) -> None:
    nan = _export(Scaled(float("nan")), tmp_path / "nan.pt2")
    code, out = run("build", photos, "--weights", nan, "--workers", "0", "--index-dir", tmp_path / "a")
    assert code == 0 and "0 indexed, 9 failed" in out
    code, out = run("info", "--failed", "--index-dir", tmp_path / "a")
    assert "not finite (NaN or infinity)" in out
    huge = _export(Scaled(1e30), tmp_path / "huge.pt2")
    code, out = run("build", photos, "--weights", huge, "--workers", "0", "--index-dir", tmp_path / "b")
    assert code == 0 and "0 indexed, 9 failed" in out
    assert "--store-dtype float32" in run("info", "--failed", "--index-dir", tmp_path / "b")[1]
    code, out = run("build", photos, "--weights", huge, "--workers", "0", "--index-dir", tmp_path / "c",
                    "--store-dtype", "float32")  # fmt: skip
    assert code == 0 and "8 indexed, 1 failed" in out  # the truncated JPEG


def test_import_refuses_what_it_cannot_store_before_writing_it(tmp_path: Path) -> None:
    x = np.ones((4, 8), np.float32)
    names = tmp_path / "p.txt"
    for problem, vectors, samples in (
        ("appears twice", x, "a\nb\na\nc\n"),
        ("not finite", np.where(np.arange(4)[:, None] == 2, np.nan, x), "a\nb\nc\nd\n"),
        ("--store-dtype float32", x * 1e30, "a\nb\nc\nd\n"),
    ):
        np.save(tmp_path / "x.npy", vectors.astype(np.float32))
        names.write_text(samples)
        code, out = run("import", tmp_path / "x.npy", "--paths", names, "--index-dir", tmp_path / problem[:6])
        one_line_error(code, out, problem)
        store = tmp_path / problem[:6] / "vectors.f16"
        assert not store.exists() or store.stat().st_size == 0  # no torn tail left behind
    np.save(tmp_path / "x.npy", x * 1e30)
    names.write_text("a\nb\nc\nd\n")
    code, out = run("import", tmp_path / "x.npy", "--paths", names, "--index-dir", tmp_path / "f32",
                    "--store-dtype", "float32")  # fmt: skip
    assert code == 0 and "4 embeddings imported" in out


def test_query_vectors_that_are_not_numbers(built: Path, tmp_path: Path, photos: Path) -> None:
    np.save(tmp_path / "text.npy", np.array([["a", "b"]]))
    one_line_error(*run("search", "--vectors", tmp_path / "text.npy", "--index-dir", built), "must be numbers")
    np.save(tmp_path / "nan.npy", np.full((2, 32), np.nan, np.float32))
    one_line_error(*run("search", "--vectors", tmp_path / "nan.npy", "--index-dir", built), "NaN or infinity")
    code, out = run("search", photos / "photo00.jpg", "--vectors", tmp_path / "nan.npy", "--index-dir", built)
    assert code == 2 and "not both" in out


def test_names_cannot_inject_formulas_or_terminal_escapes(tmp_path: Path, tiny_pt: Path) -> None:
    assert csv_cell('=HYPERLINK("http://x")') == '\'=HYPERLINK("http://x")' and csv_cell("-0.5") == "-0.5"
    assert csv_cell("@SUM(A1)") == "'@SUM(A1)" and csv_cell("/photos/a.jpg") == "/photos/a.jpg"
    assert printable("a\x1b[31mred\nb.jpg") == "a\\x1b[31mred\\nb.jpg"
    x = np.ones((2, 8), np.float32)
    np.save(tmp_path / "x.npy", x)
    (tmp_path / "p.txt").write_text("=1+1\n+cmd|' /C calc'!A0\n")
    import_embeddings(tmp_path / "x.npy", tmp_path / "idx", paths_file=tmp_path / "p.txt")
    code, _ = run("dedup", "--index-dir", tmp_path / "idx", "--threshold", "0.99", "--csv", tmp_path / "d.csv")
    cells = [c for line in (tmp_path / "d.csv").read_text().splitlines()[1:] for c in line.split(",")[1:3]]
    assert code == 0 and cells and all(c.startswith("'") for c in cells)
    folder = tmp_path / "photos"
    folder.mkdir()
    photo(1).save(folder / "evil\x1b[2Jname.jpg")
    photo(2).save(folder / "other.jpg")
    build_index(folder, spec=ModelSpec(weights=tiny_pt), options=OPTS)
    code, out = run("search", folder / "other.jpg", "--index-dir", folder / ".birder-index")
    assert code == 0 and "\x1b" not in out and "evil\\x1b[2Jname.jpg" in out
    with open_index(folder / ".birder-index"):
        pass
