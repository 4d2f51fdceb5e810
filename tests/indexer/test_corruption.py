"""Every index file damaged three ways (truncated, garbage, wrong but valid): `verify` names it, and `verify --repair`
(then a build, for what must be embedded again) makes the index healthy; no command answers with a traceback."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import faiss
import numpy as np
import pytest
from click.testing import CliRunner

from birder_index.backbone.colour import SIGNATURE_DIM
from birder_index.backbone.thumbnail import THUMB_DIM
from birder_index.cli import cli
from birder_index.db import queries as q
from birder_index.db.engine import session_scope
from birder_index.db.models import Image
from birder_index.indexer import BuildOptions
from birder_index.indexer import ModelSpec
from birder_index.indexer import build_index
from birder_index.indexer import open_index

OPTS = BuildOptions(workers=0)


@pytest.fixture
def index_dir(photos: Path, tiny_pt: Path) -> Path:
    build_index(photos, spec=ModelSpec(weights=tiny_pt), options=OPTS)
    return photos / ".birder-index"


def cli_run(*args: object) -> tuple[int, str]:
    result = CliRunner().invoke(cli, [str(a) for a in args])
    assert ("Traceback" not in result.output and not isinstance(result.exception, Exception)) or result.exit_code == 1
    return result.exit_code, result.output


def verify(index_dir: Path, *args: str) -> dict[str, object]:
    code, out = cli_run("verify", "--json", "--index-dir", index_dir, *args)
    report = json.loads(out.splitlines()[-1])
    assert (code == 0) == (report["healthy"] or "--repair" in args), out
    return report


def search_works(index_dir: Path, photos: Path) -> None:
    code, out = cli_run("search", photos / "photo02.png", "-k", "3", "--index-dir", index_dir, "--json")
    assert code == 0, out
    hits = json.loads(out.splitlines()[-1])[0]["results"]
    assert hits[0]["path"].endswith("photo02.png") and hits[0]["score"] > 0.999


def repair_and_rebuild(index_dir: Path, photos: Path, tiny_pt: Path) -> None:
    repaired = verify(index_dir, "--deep", "--repair")
    assert repaired["repaired"]
    build_index(photos, spec=ModelSpec(weights=tiny_pt), options=OPTS)  # embeds what the repair re-queued
    assert verify(index_dir, "--deep")["healthy"]
    search_works(index_dir, photos)


def _file(index_dir: Path, what: str) -> Path:
    with open_index(index_dir) as index:
        manifest_file = index.store().path if what == "store" else None
        with session_scope(index.engine) as s:
            manifest = q.get_manifest(s)
    assert manifest is not None
    return {
        "store": manifest_file,
        "faiss": index_dir / manifest.file,
        "rows map": index_dir / (manifest.file + ".rows.npy"),
        "colours": index_dir / "colours.u8",
        "thumbnails": index_dir / "thumbs.u8",
    }[what]  # type: ignore[return-value]


def truncate(path: Path) -> None:
    os.truncate(path, max(0, path.stat().st_size - 1000) if path.stat().st_size > 2000 else path.stat().st_size // 2)


def garbage(path: Path) -> None:
    data = bytearray(path.read_bytes())
    rng = np.random.default_rng(0)
    start = len(data) // 3
    data[start : start + min(512, len(data) // 3)] = rng.integers(0, 256, min(512, len(data) // 3), np.uint8).tobytes()
    if path.suffix == ".f16":  # random bits are often finite: make sure of one NaN, as flipped exponent bits give
        data[start : start + 2] = np.array([np.nan], np.float16).tobytes()
    path.write_bytes(bytes(data))


def swap_rows(path: Path, row_bytes: int) -> None:
    """Exchange two whole rows: every value is still a valid number, only in the wrong place."""
    data = bytearray(path.read_bytes())
    a, b = data[:row_bytes], data[2 * row_bytes : 3 * row_bytes]
    data[:row_bytes], data[2 * row_bytes : 3 * row_bytes] = b, a
    path.write_bytes(bytes(data))


FINDS: dict[str, Callable[[dict[str, object]], bool]] = {
    "store": lambda r: bool(
        r["store_rows_lost"] or r["torn_tail_bytes"] or r["nonfinite_rows"] or r["embeddings_wrong"]
    ),
    "faiss": lambda r: bool(r["faiss_unreadable"] or r["faiss_self_missed"]),
    "rows map": lambda r: bool(r["row_map_wrong"]),
    "colours": lambda r: bool(r["colour_rows_lost"] or r["embeddings_wrong"]),
    "thumbnails": lambda r: bool(r["thumb_rows_lost"] or r["embeddings_wrong"]),
}


@pytest.mark.parametrize("what", list(FINDS))
@pytest.mark.parametrize("damage", ["truncated", "garbage", "wrong but valid"])
def test_a_damaged_file_is_named_and_repaired(
    index_dir: Path, photos: Path, tiny_pt: Path, what: str, damage: str
) -> None:
    path = _file(index_dir, what)
    if damage == "truncated":
        truncate(path)
    elif damage == "garbage":
        garbage(path)
    elif what == "faiss":
        _shuffled_faiss(index_dir, path)
    elif what == "rows map":
        row_map = np.load(path)
        np.save(path, row_map[::-1].copy())  # every id points at another row
    else:
        swap_rows(path, {"store": 32 * 2, "colours": SIGNATURE_DIM, "thumbnails": THUMB_DIM}[what])
    report = verify(index_dir, "--deep")
    assert not report["healthy"] and FINDS[what](report), report
    code, out = cli_run("search", photos / "photo02.png", "-k", "3", "--index-dir", index_dir)
    assert code in (0, 1) and (code == 0 or (out.startswith("Error: ") and len(out.strip().splitlines()) == 1)), out
    repair_and_rebuild(index_dir, photos, tiny_pt)


def _shuffled_faiss(index_dir: Path, path: Path) -> None:
    """A valid FAISS file with the right ids, each holding another image's vector."""
    with open_index(index_dir) as index:
        ids, _ = index.id_rows()
        vectors, _ = index.fetch_normalized(ids)
    fake = faiss.IndexIDMap2(faiss.IndexFlatIP(vectors.shape[1]))
    fake.add_with_ids(np.ascontiguousarray(vectors[::-1]), ids)
    faiss.write_index(fake, str(path))


@pytest.mark.parametrize("damage", ["truncated", "garbage", "header"])
def test_a_damaged_database_is_named_in_one_line(index_dir: Path, photos: Path, damage: str) -> None:
    db = index_dir / "index.db"
    if damage == "truncated":
        os.truncate(db, db.stat().st_size // 2)
    elif damage == "garbage":  # every page after the first: pages in use, not only free ones
        size = db.stat().st_size
        with open(db, "r+b") as f:
            f.seek(4096)
            f.write(np.random.default_rng(0).integers(0, 256, size - 4096, np.uint8).tobytes())
    else:
        with open(db, "r+b") as f:
            f.write(b"not a database, nothing at all")
    code, out = cli_run("verify", "--index-dir", index_dir)
    assert code == 1 and ("database:        DAMAGED" in out or (out.startswith("Error: ") and "index.db" in out)), out
    code, out = cli_run("verify", "--repair", "--index-dir", index_dir)
    assert (code == 1 and out.startswith("Error: ") and "index.db" in out) or "cannot be repaired" in out, out
    for command in (["search", str(photos / "photo02.png")], ["info"], ["build", str(photos)]):
        code, out = cli_run(*command, "--index-dir", index_dir)
        assert code == 0 or (code == 1 and out.startswith("Error: ") and len(out.strip().splitlines()) == 1), out


def test_wrong_store_rows_recorded_in_the_database_are_repaired(index_dir: Path, photos: Path, tiny_pt: Path) -> None:
    with open_index(index_dir) as index, session_scope(index.engine) as s:
        a, b = s.query(Image).filter(Image.vector_row.is_not(None)).order_by(Image.id).limit(2).all()
        a.vector_row, b.vector_row = b.vector_row, a.vector_row  # valid rows, each the other photo's
    report = verify(index_dir, "--deep")
    assert report["row_map_wrong"] or report["embeddings_wrong"]
    repair_and_rebuild(index_dir, photos, tiny_pt)


def test_a_torn_store_is_repaired_and_the_next_build_goes_on(index_dir: Path, photos: Path, tiny_pt: Path) -> None:
    """issue 17, item 6: `truncate -s -1000 vectors.f16; verify --repair; build` used to ask for --repair forever."""
    store = _file(index_dir, "store")
    os.truncate(store, store.stat().st_size // 2 - 10)  # three whole rows and part of a fourth remain
    code, out = cli_run("search", photos / "photo02.png", "--index-dir", index_dir)
    assert code == 1 and "verify --repair" in out and len(out.strip().splitlines()) == 1
    assert verify(index_dir, "--repair")["repaired"]
    code, out = cli_run("build", photos, "--index-dir", index_dir)
    summary = out.strip().splitlines()[-1]  # after any progress line a loaded machine makes it print
    assert code == 0 and summary.startswith(tuple(f"{n} indexed" for n in range(1, 9))), out
    assert verify(index_dir, "--deep")["healthy"]


def test_leftovers_of_a_killed_reindex_are_named_and_removed(index_dir: Path) -> None:
    (index_dir / "index-7-abcdef.faiss.tmp").write_bytes(b"half")
    (index_dir / "index-6-123456.faiss").write_bytes(b"old")
    report = verify(index_dir)
    assert sorted(report["leftovers"]) == ["index-6-123456.faiss", "index-7-abcdef.faiss.tmp"]  # type: ignore[arg-type]
    verify(index_dir, "--repair")
    assert not (index_dir / "index-6-123456.faiss").exists() and verify(index_dir)["healthy"]
