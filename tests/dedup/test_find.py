"""Dedup: exact duplicates, pixel-identical files, no chaining, keep policies, --against, outputs, actions."""

from __future__ import annotations

import csv
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from birder_index.cli import cli
from birder_index.db import queries as q
from birder_index.db.engine import session_scope
from birder_index.db.models import MetaKey
from birder_index.dedup.calibrate import ESTIMATOR
from birder_index.dedup.calibrate import last_calibration
from birder_index.dedup.calibrate import resolve_threshold
from birder_index.dedup.find import DedupResult
from birder_index.dedup.find import find_duplicates
from birder_index.dedup.find import near_pairs
from birder_index.indexer import BuildOptions
from birder_index.indexer import ModelSpec
from birder_index.indexer import build_index
from birder_index.indexer import import_embeddings
from birder_index.indexer import open_index
from tests.helpers import gradient
from tests.helpers import photo

OPTS = BuildOptions(workers=0)


def _vectors(tmp_path: Path, x: np.ndarray, names: list[str]) -> Path:
    np.save(tmp_path / "x.npy", x.astype(np.float32))
    (tmp_path / "x.txt").write_text("\n".join(names))
    import_embeddings(tmp_path / "x.npy", tmp_path / "index", paths_file=tmp_path / "x.txt")
    return tmp_path / "index"


def _angle(deg: float) -> np.ndarray:
    v = np.zeros(8, np.float32)
    v[0], v[1] = np.cos(np.radians(deg)), np.sin(np.radians(deg))
    return v


def test_groups_never_chain(tmp_path: Path) -> None:
    # a ~ b (0.906) and b ~ c (0.906), but a and c are far apart (0.643): no group may hold a and c together
    index_dir = _vectors(tmp_path, np.stack([_angle(0), _angle(25), _angle(50)]), ["a", "b", "c"])
    with open_index(index_dir) as index:
        result = find_duplicates(index, 0.9, keep="first")
    assert [(g.keeper.path, [m.path for m in g.duplicates]) for g in result.groups] == [("a", ["b"])]
    assert result.groups[0].duplicates[0].score == pytest.approx(np.cos(np.radians(25)), abs=1e-3)


def test_a_central_keeper_takes_both_sides(tmp_path: Path) -> None:
    index_dir = _vectors(tmp_path, np.stack([_angle(25), _angle(0), _angle(50)]), ["a_mid", "b_left", "c_right"])
    with open_index(index_dir) as index:
        result = find_duplicates(index, 0.9, keep="first")
    (g,) = result.groups
    assert g.keeper.path == "a_mid" and sorted(m.path for m in g.duplicates) == ["b_left", "c_right"]


def test_large_groups_are_not_cut_at_k(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    base = rng.standard_normal(16).astype(np.float32)
    x = base + 0.01 * rng.standard_normal((60, 16)).astype(np.float32)  # 60 near-identical vectors
    index_dir = _vectors(tmp_path, x, [f"img{i:02d}" for i in range(60)])
    with open_index(index_dir) as index:
        result = find_duplicates(index, 0.99, keep="first")
    assert len(result.groups) == 1 and len(result.groups[0].duplicates) == 59


@pytest.fixture
def dup_photos(tmp_path: Path, tiny_pt: Path) -> Path:
    folder = tmp_path / "photos"
    folder.mkdir()
    big = photo(1, (400, 300))
    big.save(folder / "a_big.png")
    big.resize((200, 150), Image.Resampling.BICUBIC).save(folder / "b_small.png")
    shutil.copy(folder / "a_big.png", folder / "c_copy.png")  # identical bytes
    big.save(folder / "d_resaved.png", compress_level=1)  # other bytes, same pixels
    for i in range(2, 6):
        photo(i * 13, (300, 300)).save(folder / f"other{i}.jpg")
    os.utime(folder / "b_small.png", ns=(1, 1))  # the oldest
    build_index(folder, spec=ModelSpec(weights=tiny_pt), options=OPTS)
    return folder


def test_exact_and_pixel_identical_duplicates(dup_photos: Path) -> None:
    with open_index(dup_photos / ".birder-index") as index:
        result = find_duplicates(index, 0.97, keep="largest")
    g = next(g for g in result.groups if g.keeper.path.endswith(("a_big.png", "c_copy.png", "d_resaved.png")))
    kinds = {Path(m.path).name: m.kind for m in g.duplicates}
    assert Path(g.keeper.path).name == "d_resaved.png"  # largest resolution, then largest file (less compressed)
    assert kinds["a_big.png"] == "exact" and kinds["c_copy.png"] == "exact"  # same pixels, other bytes
    assert all(m.score == 1.0 for m in g.duplicates if m.kind == "exact")


@pytest.mark.parametrize("keep,expected", [("largest", "d_resaved.png"), ("smallest", "b_small.png"),
                                           ("oldest", "b_small.png"), ("first", "a_big.png")])  # fmt: skip
def test_keep_policies(dup_photos: Path, keep: str, expected: str) -> None:
    with open_index(dup_photos / ".birder-index") as index:
        result = find_duplicates(index, 0.8, keep=keep)
    keepers = {Path(g.keeper.path).name for g in result.groups}
    members = {Path(m.path).name for g in result.groups for m in g.duplicates}
    assert expected in keepers and expected not in members


def test_against_reports_only_cross_pairs(tmp_path: Path, tiny_pt: Path) -> None:
    train, test = tmp_path / "train", tmp_path / "test"
    train.mkdir(), test.mkdir()
    photo(1, (300, 200)).save(train / "x.png")
    photo(2, (300, 200)).save(train / "y.png")
    photo(2, (300, 200)).save(train / "y_copy.png")  # a duplicate inside train: not reported with --against
    photo(1, (300, 200)).resize((150, 100)).save(test / "x_small.png")  # leaked
    photo(3, (300, 200)).save(test / "z.png")
    for folder in (train, test):
        build_index(folder, spec=ModelSpec(weights=tiny_pt), options=OPTS)
    with open_index(test / ".birder-index") as mine, open_index(train / ".birder-index") as theirs:
        result = find_duplicates(mine, 0.97, against=theirs)
    assert [(Path(g.keeper.path).name, [Path(m.path).name for m in g.duplicates]) for g in result.groups] == [
        ("x.png", ["x_small.png"])
    ]


def test_cli_outputs_dry_run_move_and_undo(dup_photos: Path, tmp_path: Path) -> None:
    index_dir = str(dup_photos / ".birder-index")
    run = CliRunner().invoke
    out = run(cli, ["dedup", "--index-dir", index_dir, "--threshold", "0.97", "--json"])
    data = json.loads(out.stdout)  # exactly one document on stdout
    assert out.exit_code == 0 and data["threshold"] == 0.97
    assert data["thumbnail_min"] == 0.98  # the default bar with an explicit threshold
    assert set(data["groups"][0]) == {"keeper", "duplicates"} and set(data["groups"][0]["duplicates"][0]) == {
        "path",
        "score",
        "kind",
        "thumbnail",
    }
    csv_file, report, json_file = tmp_path / "d.csv", tmp_path / "d.html", tmp_path / "d.json"
    files = run(cli, ["dedup", "--index-dir", index_dir, "--threshold", "0.97", "--csv", str(csv_file), "--report",
                      str(report), "--json-file", str(json_file)])  # fmt: skip
    assert files.exit_code == 0 and json.loads(json_file.read_text()) == data
    rows = list(csv.DictReader(csv_file.read_text().splitlines()))
    assert rows and set(rows[0]) == {"group", "keeper", "path", "score", "kind", "thumbnail", "mirrored"}
    page = report.read_text()
    assert page.count("data:image/jpeg;base64,") >= 2 and "keeper" in page

    before = sorted(p.name for p in dup_photos.iterdir())
    aside = tmp_path / "aside"
    dry = run(cli, ["dedup", "--index-dir", index_dir, "--threshold", "0.97", "--move-to", str(aside)])
    assert "dry run:" in dry.output and sorted(p.name for p in dup_photos.iterdir()) == before and not aside.exists()
    plan = tmp_path / "plan.csv"
    done = run(cli, ["dedup", "--index-dir", index_dir, "--threshold", "0.97", "--move-to", str(aside), "--yes",
                     "--plan", str(plan)])  # fmt: skip
    assert done.exit_code == 0 and "undo with: birder-index dedup undo 1" in done.output
    moved = {Path(r["src"]).name for r in csv.DictReader(plan.read_text().splitlines())}
    keepers = {Path(g["keeper"]).name for g in data["groups"]}
    assert moved and not (moved & keepers) and all((aside / name).exists() for name in moved)
    assert all((dup_photos / k).exists() for k in keepers)
    # The index follows: the moved files are no longer in it, so a search never returns a path that is gone.
    assert f"index updated: 0 indexed, {len(moved)} removed," in done.output
    info = json.loads(run(cli, ["info", "--json", "--index-dir", index_dir]).output)
    assert info["indexed"] == len(before) - 1 - len(moved)  # minus the index folder itself
    undo = run(cli, ["dedup", "undo", str(plan), "--index-dir", index_dir])  # by its CSV export, from anywhere
    assert undo.exit_code == 0, undo.output
    assert f"{len(moved)} files moved back, 0 skipped" in undo.output
    assert sorted(p.name for p in dup_photos.iterdir()) == before
    assert "index updated: " in undo.output  # the moved-back files are indexed again
    info = json.loads(run(cli, ["info", "--json", "--index-dir", index_dir]).output)
    assert info["indexed"] == len(before) - 1


def test_move_to_a_folder_the_build_scans_is_refused_unless_hidden(dup_photos: Path) -> None:
    index_dir = str(dup_photos / ".birder-index")
    before = sorted(p.name for p in dup_photos.iterdir())
    inside = CliRunner().invoke(cli, ["dedup", "--index-dir", index_dir, "--threshold", "0.97", "--move-to",
                                      str(dup_photos / "dups"), "--yes"])  # fmt: skip
    assert inside.exit_code == 1 and "is inside the photo folder, where the next build would index" in inside.output
    assert sorted(p.name for p in dup_photos.iterdir()) == before  # nothing moved
    hidden = CliRunner().invoke(cli, ["dedup", "--index-dir", index_dir, "--threshold", "0.97", "--move-to",
                                      str(dup_photos / ".duplicates"), "--yes"])  # fmt: skip
    assert hidden.exit_code == 0 and "removed" in hidden.output.splitlines()[-1]
    again = CliRunner().invoke(cli, ["dedup", "--index-dir", index_dir, "--threshold", "0.97"])
    assert "0 groups" in again.output  # the moved files left the index and stay out of it


def test_moves_update_an_index_whose_metadata_is_in_another_database(
    tmp_path: Path, tiny_pt: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder, index_dir = tmp_path / "photos", tmp_path / "vectors"
    folder.mkdir()
    photo(1, (300, 200)).save(folder / "a.png")
    shutil.copy(folder / "a.png", folder / "b.png")
    photo(7, (300, 200)).save(folder / "c.png")
    url = f"sqlite:///{tmp_path / 'meta.db'}"
    build_index(folder, index_dir=index_dir, spec=ModelSpec(weights=tiny_pt), options=BuildOptions(workers=0, db=url))
    monkeypatch.setenv("BIRDER_INDEX_DB", url)
    moved = CliRunner().invoke(cli, ["dedup", "--index-dir", str(index_dir), "--threshold", "0.99", "--move-to",
                                     str(tmp_path / "aside"), "--yes"])  # fmt: skip
    assert moved.exit_code == 0 and "index updated: 0 indexed, 1 removed, 2 unchanged" in moved.output
    assert not (index_dir / "index.db").exists()  # the update went to the same database, not a new one
    info = json.loads(CliRunner().invoke(cli, ["info", "--json", "--index-dir", str(index_dir)]).output)
    assert info["indexed"] == 2


def test_calibration_is_stored_and_reused(dup_photos: Path, tiny_pt: Path) -> None:
    index_dir = str(dup_photos / ".birder-index")
    small = CliRunner().invoke(cli, ["dedup", "--index-dir", index_dir, "--precision", "0.9"])
    assert small.exit_code == 1 and "needs at least 10 distinct photos" in small.output  # 7 here: too few to judge
    for i in range(4):
        photo(100 + i, (200, 200)).save(dup_photos / f"more{i}.png")
    build_index(dup_photos, spec=ModelSpec(weights=tiny_pt), options=OPTS)
    first = CliRunner().invoke(cli, ["dedup", "--index-dir", index_dir, "--precision", "0.9"])
    assert first.exit_code == 0 and first.stdout.startswith("calibrated threshold ")
    assert "estimated recall per variant: downscale" in first.output
    second = CliRunner().invoke(cli, ["dedup", "--index-dir", index_dir, "--precision", "0.9", "--quiet"])
    assert second.stdout.startswith("stored calibration: threshold ") and not second.stderr
    with open_index(dup_photos / ".birder-index") as index, session_scope(index.engine) as s:
        older = q.get_json(s, MetaKey.DEDUP_CALIBRATION)
        older.pop("estimator")  # as a version before the current estimate stored it
        q.set_json(s, MetaKey.DEDUP_CALIBRATION, older)
    with open_index(dup_photos / ".birder-index") as index:  # a reader that cannot store a new one uses it
        assert resolve_threshold(index, precision=0.9, store=False)[1:] == (last_calibration(index), False)
    again = CliRunner().invoke(cli, ["dedup", "--index-dir", index_dir, "--precision", "0.9", "--quiet"])
    assert again.stdout.startswith("calibrated threshold ")  # redone, not reused
    with open_index(dup_photos / ".birder-index") as index:
        assert last_calibration(index).estimator == ESTIMATOR  # type: ignore[union-attr]
    both = CliRunner().invoke(cli, ["dedup", "--index-dir", index_dir, "--precision", "0.9", "--threshold", "0.9"])
    assert both.exit_code == 1 and "give --threshold or --precision, not both" in both.output


def test_a_recoloured_copy_is_not_a_duplicate_unless_colour_is_ignored(tmp_path: Path, tiny_pt: Path) -> None:
    folder = tmp_path / "photos"
    folder.mkdir()
    warm = Image.fromarray((np.asarray(photo(1, (300, 200))) * np.array([1.0, 0.75, 0.5])).astype(np.uint8))
    warm.save(folder / "warm.png")
    r, g, b = warm.split()
    Image.merge("RGB", (b, g, r)).save(folder / "cool.png")  # the same design in another colour scheme
    warm.resize((150, 100), Image.Resampling.BICUBIC).save(folder / "warm_small.png")
    build_index(folder, spec=ModelSpec(weights=tiny_pt), options=OPTS)
    with open_index(folder / ".birder-index") as index:
        a, b_, s = near_pairs(index, 0.01)
        with session_scope(index.engine) as se:
            paths = q.paths_of(se, np.concatenate([a, b_]))
        score = {frozenset((paths[int(x)], paths[int(y)])): float(v) for x, y, v in zip(a, b_, s, strict=True)}
        t = min(score[frozenset(("warm.png", "cool.png"))], score[frozenset(("warm.png", "warm_small.png"))]) - 1e-3
        checked = find_duplicates(index, t, keep="first")
        ignored = find_duplicates(index, t, keep="first", colour_min=0)
    assert _names(checked) == [("warm.png", ["warm_small.png"])]  # the model alone would take the cool copy too
    assert sorted(_names(ignored)[0][1] + [_names(ignored)[0][0]]) == ["cool.png", "warm.png", "warm_small.png"]


def _names(result: DedupResult) -> list[tuple[str, list[str]]]:
    return [(Path(g.keeper.path).name, sorted(Path(m.path).name for m in g.duplicates)) for g in result.groups]


def _symmetric(seed: int) -> Image.Image:
    """A picture that is its own mirror image: its mirrored thumbnail matches itself, which is no duplicate."""
    half = np.asarray(photo(seed, (160, 240)))
    return Image.fromarray(np.concatenate([half, half[:, ::-1]], axis=1))


@pytest.mark.parametrize("mirror", [False, True], ids=["jpeg", "mirrored jpeg"])
def test_thumbnails_find_a_copy_the_embeddings_score_below_the_threshold(
    tmp_path: Path, tiny_pt: Path, mirror: bool
) -> None:
    train, test, folder = tmp_path / "train", tmp_path / "test", tmp_path / "photos"
    for f in (train, test, folder):
        f.mkdir()
    gradient(1).save(train / "sky.png")
    photo(2, (320, 240)).save(train / "field.png")
    _symmetric(3).save(train / "kite.png")
    copy = gradient(1).transpose(Image.Transpose.FLIP_LEFT_RIGHT) if mirror else gradient(1)
    copy.save(test / "sky_q15.jpg", quality=15)
    for f in (train, test):
        shutil.copytree(f, folder, dirs_exist_ok=True)
    for f in (train, test, folder):
        build_index(f, spec=ModelSpec(weights=tiny_pt), options=OPTS)
    with open_index(folder / ".birder-index") as index:
        _, _, cos = near_pairs(index, 0.01)  # every pair
        assert len(cos) == 6 and cos.max() < 0.9999
        t = (cos.max() + 1) / 2  # above every pair's cosine: the embeddings alone find nothing
        assert find_duplicates(index, t, thumbnail_min=0).groups == []
        assert len(near_pairs(index, t, thumbnail_min=0.98)[0]) == 1  # once, and the kite not with itself
        found = find_duplicates(index, t)
    with open_index(test / ".birder-index") as mine, open_index(train / ".birder-index") as theirs:
        across = find_duplicates(mine, t, against=theirs)
    assert _names(found) == [("sky.png", ["sky_q15.jpg"])]
    member = found.groups[0].duplicates[0]
    assert member.kind == "near" and member.score < t and np.isclose(cos, member.score, atol=1e-5).any()
    assert member.thumbnail is not None and member.thumbnail >= 0.98 and member.mirrored == mirror
    assert _names(across) == [("sky.png", ["sky_q15.jpg"])]  # the test set's copy of a training photo
    assert across.groups[0].duplicates[0].mirrored == mirror
    out = CliRunner().invoke(cli, ["dedup", "--index-dir", str(folder / ".birder-index"), "--threshold", f"{t:.6f}"])
    assert out.exit_code == 0 and "or thumbnail 0.980" in out.output and "(thumbnail 0.99" in out.output
    assert (", mirrored)" in out.output) == mirror
    assert found.to_json()["groups"][0]["duplicates"][0].get("mirrored", False) == mirror
    off = CliRunner().invoke(
        cli, ["dedup", "--index-dir", str(folder / ".birder-index"), "--threshold", f"{t:.6f}", "--thumbnail", "0"]
    )
    assert off.exit_code == 0 and off.output.startswith("0 groups")
