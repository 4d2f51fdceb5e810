"""dedup's file actions never lose a photo: every reproduction of the adversarial review (issue 17), and kills at
every point of a move, a delete and an undo, each followed by a re-run."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from birder_index.cli import cli
from birder_index.db import queries as q
from birder_index.db.engine import session_scope
from birder_index.dedup import find_duplicates
from birder_index.dedup import plan_actions
from birder_index.errors import BirderIndexError
from birder_index.indexer import BuildOptions
from birder_index.indexer import ModelSpec
from birder_index.indexer import build_index
from birder_index.indexer import import_embeddings
from birder_index.indexer import open_index
from tests.helpers import photo

OPTS = BuildOptions(workers=0)


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def run(*args: object) -> tuple[int, str]:
    result = CliRunner().invoke(cli, [str(a) for a in args])
    return result.exit_code, result.output


def folder_with_copies(root: Path, tiny_pt: Path, copies: dict[str, str], others: int = 2) -> Path:
    """Photos named by `copies` (name -> the name of the photo it is a byte copy of, or itself), plus others."""
    root.mkdir(parents=True, exist_ok=True)
    for n, (name, source) in enumerate(sorted(copies.items())):
        if name == source:
            photo(n + 1, (160, 120)).save(root / name, quality=90)
    for name, source in copies.items():
        if name != source:
            shutil.copy(root / source, root / name)
    for i in range(others):
        photo(50 + i, (160, 120)).save(root / f"other{i}.jpg", quality=90)
    build_index(root, spec=ModelSpec(weights=tiny_pt), options=OPTS)
    return root


def test_a_stale_index_never_deletes_the_last_copy(tmp_path: Path, tiny_pt: Path) -> None:
    st = folder_with_copies(tmp_path / "st", tiny_pt, {"a.jpg": "a.jpg", "b.jpg": "a.jpg"})
    kept = sha(st / "b.jpg")
    (st / "a.jpg").unlink()  # the keeper goes after the build: the index does not know
    code, out = run("dedup", "--index-dir", st / ".birder-index", "--threshold", "0.99", "--delete", "--yes")
    assert code == 0 and "0 files deleted, 1 skipped" in out and "its keeper" in out and "is missing" in out
    assert sha(st / "b.jpg") == kept  # the last copy is still there


def test_a_duplicate_changed_since_the_build_is_not_deleted(tmp_path: Path, tiny_pt: Path) -> None:
    st = folder_with_copies(tmp_path / "st", tiny_pt, {"a.jpg": "a.jpg", "b.jpg": "a.jpg"})
    photo(99, (160, 120)).save(st / "b.jpg", quality=90)  # overwritten with another photo
    changed = sha(st / "b.jpg")
    code, out = run("dedup", "--index-dir", st / ".birder-index", "--threshold", "0.99", "--delete", "--yes")
    assert code == 0 and "changed since it was indexed" in out
    assert sha(st / "b.jpg") == changed and (st / "a.jpg").exists()


@pytest.mark.parametrize("action", ["--delete", "--move-to"])
def test_a_symlink_is_never_a_keeper_nor_acted_on(tmp_path: Path, tiny_pt: Path, action: str) -> None:
    sl = tmp_path / "sl"
    sl.mkdir()
    photo(1, (160, 120)).save(sl / "b_real.jpg", quality=90)
    (sl / "a_link.jpg").symlink_to("b_real.jpg")  # keeper by path order, and a symlink
    for i in range(3):
        photo(10 + i, (160, 120)).save(sl / f"p{i}.jpg", quality=90)
    build_index(sl, spec=ModelSpec(weights=tiny_pt), options=OPTS)
    real = sha(sl / "b_real.jpg")
    args = [action, tmp_path / "aside"] if action == "--move-to" else [action]
    code, out = run(
        "dedup", "--index-dir", sl / ".birder-index", "--threshold", "0.99", *args, "--yes", "--keep", "first"
    )
    assert code == 0 and "a symlink" in out, out
    assert sha(sl / "b_real.jpg") == real and os.readlink(sl / "a_link.jpg") == "b_real.jpg"
    moved = [p.name for p in (tmp_path / "aside").rglob("*") if p.suffix != ".csv"] if action == "--move-to" else []
    assert moved == []  # only the plan's CSV export is there


def test_an_imported_index_acts_on_no_file(tmp_path: Path) -> None:
    x = np.ones((3, 8), np.float32)
    x[2] = -1
    np.save(tmp_path / "x.npy", x)
    (tmp_path / "x.txt").write_text("data/a.jpg\ndata/b.jpg\ndata/c.jpg\n")
    import_embeddings(tmp_path / "x.npy", tmp_path / "imp", paths_file=tmp_path / "x.txt")
    elsewhere = tmp_path / "elsewhere"
    (elsewhere / "data").mkdir(parents=True)
    (elsewhere / "data" / "b.jpg").write_bytes(b"an unrelated file")
    os.chdir(elsewhere)
    code, out = run("dedup", "--index-dir", tmp_path / "imp", "--threshold", "0.99", "--delete", "--yes")
    assert code == 1 and "holds imported embeddings without their photo folder" in out
    assert (elsewhere / "data" / "b.jpg").read_bytes() == b"an unrelated file"
    listed, out = run("dedup", "--index-dir", tmp_path / "imp", "--threshold", "0.99")
    assert listed == 0 and "1 groups" in out  # listing is fine; acting is not


def test_undo_refuses_a_plan_the_database_does_not_know(tmp_path: Path, tiny_pt: Path) -> None:
    st = folder_with_copies(tmp_path / "st", tiny_pt, {"a.jpg": "a.jpg"})
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "important.txt").write_text("keep me")
    forged = tmp_path / "plan.csv"
    forged.write_text(f"action,src,dst\nmove,{tmp_path / 'elsewhere' / 'important.txt'},{victim / 'important.txt'}\n")
    code, out = run("dedup", "undo", forged, "--index-dir", st / ".birder-index")
    assert code == 1 and "records no content hashes" in out and "nothing was moved" in out
    assert (victim / "important.txt").read_text() == "keep me" and not (tmp_path / "elsewhere").exists()
    for junk in (b"\xff\xfe not utf-8", b"action,src\nmove\n", b"x,y,z\n1,2,3\n"):
        forged.write_bytes(junk)
        code, out = run("dedup", "undo", forged, "--index-dir", st / ".birder-index")
        assert code == 1 and out.startswith("Error: ") and "is not a plan recorded in the index" in out
        assert len(out.strip().splitlines()) == 1


def test_a_legacy_plan_is_undone_where_the_index_vouches_for_every_file(tmp_path: Path, tiny_pt: Path) -> None:
    st = folder_with_copies(tmp_path / "st", tiny_pt, {"a.jpg": "a.jpg", "b.jpg": "a.jpg"})
    aside = tmp_path / "aside"
    aside.mkdir()
    shutil.move(st / "b.jpg", aside / "b.jpg")  # as 0.1.0 did, before its index update
    plan = tmp_path / "legacy.csv"
    plan.write_text(f"action,src,dst\nmove,{st / 'b.jpg'},{aside / 'b.jpg'}\n")
    code, out = run("dedup", "undo", plan, "--index-dir", st / ".birder-index")
    assert code == 0 and "1 files moved back" in out and sha(st / "b.jpg") == sha(st / "a.jpg")


def test_actions_are_refused_before_any_work(tmp_path: Path, tiny_pt: Path) -> None:
    st = folder_with_copies(tmp_path / "st", tiny_pt, {"a.jpg": "a.jpg", "b.jpg": "a.jpg"})
    code, out = run("dedup", "--index-dir", st / ".birder-index", "--move-to", tmp_path / "x", "--delete")
    assert code == 1 and "choose one of --move-to DIR and --delete, not both" in out
    assert "calibrat" not in out  # refused before the calibration ran


def test_the_plan_keeps_what_the_index_recorded(tmp_path: Path, tiny_pt: Path) -> None:
    st = folder_with_copies(tmp_path / "st", tiny_pt, {"a.jpg": "a.jpg", "b.jpg": "a.jpg"})
    with open_index(st / ".birder-index") as index:
        result = find_duplicates(index, 0.99)
        (action,) = plan_actions(index, result, delete=True)
        with session_scope(index.engine) as s:
            recorded = {img.path: img for img in q.images_by_ids(s, [action.image_id]).values()}
    assert action.sha256 == sha(action.path) == action.keeper_sha256 and action.path.name in recorded
    with pytest.raises(BirderIndexError, match="not both"), open_index(st / ".birder-index") as index:
        plan_actions(index, result, move_to=tmp_path / "x", delete=True)


# -- kills at every point, then a re-run -----------------------------------------------------------------------------

CRASH_POINTS = {
    "move": ["move.placed:1", "move.placed:2", "move.copied:1", "copy.chunk:1", "copy.chunk:3"],
    "delete": ["delete:1", "delete:2"],
}


def big_photo(seed: int) -> bytes:
    """An incompressible PNG of about 2.5 MB: copies take several chunks, so a kill can land mid-copy."""
    import io

    from PIL import Image

    pixels = np.random.default_rng(seed).integers(0, 256, (900, 900, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, "PNG", compress_level=0)
    return buf.getvalue()


@pytest.fixture(scope="module")
def crash_corpus(tmp_path_factory: pytest.TempPathFactory, checkpoints: Path) -> tuple[Path, Path]:
    """Two groups of byte copies (2.5 MB each) and two other photos, indexed: copied per trial."""
    root = tmp_path_factory.mktemp("crash") / "photos"
    root.mkdir()
    for g in range(2):
        data = big_photo(g)
        for c in range(3):
            (root / f"g{g}_{c}.png").write_bytes(data)
    for i in range(2):
        photo(70 + i, (160, 120)).save(root / f"solo{i}.jpg", quality=90)
    build_index(root, spec=ModelSpec(weights=checkpoints / "vit_reg4_b16_tiny.pt"), options=OPTS)
    return root, checkpoints / "vit_reg4_b16_tiny.pt"


def _cli(args: list[str], crash: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "BIRDER_INDEX_CRASH_AT": crash or ""}
    code = "from birder_index.cli import cli; cli()"
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, env=env, timeout=300)


def _snapshot(folder: Path) -> dict[str, str]:
    return {p.name: sha(p) for p in folder.iterdir() if p.is_file() and p.suffix != ".csv"}


def _plans(index_dir: Path) -> list[tuple[str, str, str | None]]:
    """(kind, path, dst) of every action of every recorded plan."""
    with open_index(index_dir) as index, session_scope(index.engine) as s:
        return [(p.kind, a.path, a.dst) for p, _ in q.list_plans(s) for a in q.plan_actions(s, p.id)]


def _check_nothing_lost(before: dict[str, str], folder: Path, aside: Path, index_dir: Path, *, finished: bool) -> None:
    """Every photo's bytes exist, in place or at a plan's destination; every group keeps a copy in place; nothing
    outside a plan moved; once finished, no temporary file is left."""
    now = _snapshot(folder)
    moved = _snapshot(aside) if aside.exists() else {}
    planned = {Path(path).name for _, path, _ in _plans(index_dir)}
    for name, digest in before.items():
        if name not in planned:
            assert now.get(name) == digest, f"{name} changed or moved outside the plan"
        assert digest in now.values(), f"no copy of {name} left in place"  # each group keeps its keeper
        assert now.get(name, digest) == digest and moved.get(name, digest) == digest
    if finished:
        assert not [p for p in folder.rglob("*.part")] and not [p for p in aside.rglob("*.part") if aside.exists()]


def _trial(corpus: Path, tmp: Path, action: str, crash: str, aside: Path) -> tuple[Path, Path, dict[str, str]]:
    folder = tmp / "photos"
    shutil.copytree(corpus, folder, symlinks=True)
    before = {k: v for k, v in _snapshot(folder).items()}
    index_dir = folder / ".birder-index"
    args = ["dedup", "--index-dir", str(index_dir), "--threshold", "0.999", "--keep", "first", "--yes"]
    args += ["--move-to", str(aside)] if action == "move" else ["--delete"]
    killed = _cli(args, crash)
    assert killed.returncode == 137, killed.stderr[-2000:]  # the crash point was reached
    _check_nothing_lost(before, folder, aside, index_dir, finished=False)
    again = _cli(args)  # the same command again finishes the work
    assert again.returncode == 0, again.stderr[-2000:]
    _check_nothing_lost(before, folder, aside, index_dir, finished=True)
    return folder, index_dir, before


def _aside(tmp_path: Path) -> Path:
    """Destinations on another filesystem where there is one (copies), else beside the photos (hard links)."""
    shm = Path("/dev/shm")
    if shm.is_dir() and os.access(shm, os.W_OK) and os.stat(shm).st_dev != os.stat(tmp_path).st_dev:
        folder = Path(tempfile.mkdtemp(dir=shm, prefix="birder-index-test-"))
        return folder / "aside"
    pytest.skip("moves across filesystems need a second filesystem (/dev/shm) to copy to")


@pytest.mark.parametrize("action,crash", [(a, c) for a, points in CRASH_POINTS.items() for c in points])
def test_a_killed_action_loses_nothing_and_a_rerun_finishes(
    crash_corpus: tuple[Path, Path], tmp_path: Path, action: str, crash: str
) -> None:
    corpus, _ = crash_corpus
    aside = _aside(tmp_path) if crash.startswith(("copy", "move.copied")) else tmp_path / "aside"
    try:
        folder, _, _ = _trial(corpus, tmp_path, action, crash, aside)
        remaining = _snapshot(folder)
        assert len(remaining) == 4  # a keeper of each group, and the two others
        if action == "move":
            moved = sorted(name for name in _snapshot(aside) if not name.endswith(".csv"))
            assert moved == ["g0_1.png", "g0_2.png", "g1_1.png", "g1_2.png"]
    finally:
        shutil.rmtree(aside.parent if aside.parent.name.startswith("birder-index-test-") else aside, True)


@pytest.mark.parametrize("crash", ["move.placed:1", "copy.chunk:2", "move.copied:2"])
def test_a_killed_undo_runs_again_to_completion(crash_corpus: tuple[Path, Path], tmp_path: Path, crash: str) -> None:
    corpus, _ = crash_corpus
    aside = _aside(tmp_path)
    try:
        folder = tmp_path / "photos"
        shutil.copytree(corpus, folder, symlinks=True)
        before = _snapshot(folder)
        index_dir = str(folder / ".birder-index")
        done = _cli(["dedup", "--index-dir", index_dir, "--threshold", "0.999", "--move-to", str(aside), "--yes"])
        assert done.returncode == 0, done.stderr
        killed = _cli(["dedup", "undo", "1", "--index-dir", index_dir], crash)
        assert killed.returncode == 137, killed.stderr[-2000:]
        for name, digest in before.items():  # every photo somewhere, whole, at every moment
            assert digest in (*_snapshot(folder).values(), *_snapshot(aside).values()), name
        again = _cli(["dedup", "undo", "1", "--index-dir", index_dir])
        assert again.returncode == 0 and " files moved back, 0 skipped" in again.stdout, again.stdout + again.stderr
        assert _snapshot(folder) == before and not list(folder.rglob("*.part"))
        info = json.loads(_cli(["info", "--json", "--index-dir", index_dir]).stdout)
        assert info["indexed"] == len(before)  # the undo brought the index up to date
    finally:
        shutil.rmtree(aside.parent if aside.parent.name.startswith("birder-index-test-") else aside, True)
