"""Pairs marked "not duplicates": stored once per pair, never grouped by find_duplicates (so neither by the CLI's
dedup), a group formed again without re-searching, and a keeper chosen by hand re-scoring its group."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from birder_index.dedup import choose_keeper
from birder_index.dedup import find_duplicates
from birder_index.dedup import mark_not_duplicates
from birder_index.dedup import not_duplicate_pairs
from birder_index.dedup import regroup
from birder_index.dedup import unmark_not_duplicates
from birder_index.errors import BirderIndexError
from birder_index.indexer import import_embeddings
from birder_index.indexer import open_index


def _angle(deg: float) -> np.ndarray:
    v = np.zeros(8, np.float32)
    v[0], v[1] = np.cos(np.radians(deg)), np.sin(np.radians(deg))
    return v


@pytest.fixture
def star(tmp_path: Path) -> Path:
    """a (0 deg) with b (5) and c (-5) around it, d far away: one group {a: b, c} at 0.99 with keep=first."""
    x = np.stack([_angle(0), _angle(5), _angle(-5), _angle(90)])
    np.save(tmp_path / "x.npy", x)
    (tmp_path / "x.txt").write_text("a\nb\nc\nd")
    import_embeddings(tmp_path / "x.npy", tmp_path / "index", paths_file=tmp_path / "x.txt")
    return tmp_path / "index"


def ids_of(index_dir: Path) -> dict[str, int]:
    from birder_index.db import queries as q
    from birder_index.db.engine import session_scope

    with open_index(index_dir) as index, session_scope(index.engine) as s:
        return q.ids_by_path(s, ["a", "b", "c", "d"])


def groups(result: object) -> list[tuple[str, list[str]]]:
    return [(g.keeper.path, sorted(m.path for m in g.duplicates)) for g in result.groups]  # type: ignore[attr-defined]


def test_a_marked_pair_is_never_grouped(star: Path) -> None:
    i = ids_of(star)
    with open_index(star) as index:
        assert groups(find_duplicates(index, 0.99, keep="first")) == [("a", ["b", "c"])]
        assert mark_not_duplicates(index, [i["a"], i["b"]]) == 1
        assert mark_not_duplicates(index, [i["b"], i["a"]]) == 0  # the same pair, in either order, once
        result = find_duplicates(index, 0.99, keep="first")
        assert groups(result) == [("a", ["c"])] and result.kept_apart == 1
        assert any("1 pairs marked" in note for note in result.notes())
        a, b = not_duplicate_pairs(index)
        assert list(zip(a.tolist(), b.tolist(), strict=True)) == [(min(i["a"], i["b"]), max(i["a"], i["b"]))]
        assert len(result.pairs[0]) == 2  # a-b and a-c (b-c is 10 degrees): the marked one is still reported


def test_members_marked_apart_from_each_other_do_not_share_a_group(star: Path) -> None:
    i = ids_of(star)
    with open_index(star) as index:
        mark_not_duplicates(index, [i["b"], i["c"]])  # b and c both copy a, but are not copies of each other
        result = find_duplicates(index, 0.99, keep="first")
    assert groups(result) == [("a", ["b"])]  # the better-scoring (tie: first found) stays, the other is left out


def test_a_marked_group_and_unmarking(star: Path) -> None:
    i = ids_of(star)
    with open_index(star) as index:
        assert mark_not_duplicates(index, [i["a"], i["b"], i["c"]]) == 3  # every pair of the group
        assert groups(find_duplicates(index, 0.99, keep="first")) == []
        assert unmark_not_duplicates(index, [i["a"], i["c"]]) == 1
        assert groups(find_duplicates(index, 0.99, keep="first")) == [("a", ["c"])]
        with pytest.raises(BirderIndexError, match="at least two"):
            mark_not_duplicates(index, [i["a"], i["a"]])
        with pytest.raises(BirderIndexError, match="no image with id 99"):
            mark_not_duplicates(index, [i["a"], 99])


def test_identical_files_marked_apart_are_not_grouped(tmp_path: Path) -> None:
    from birder_index.indexer import BuildOptions
    from birder_index.indexer import build_index
    from tests.helpers import photo

    photos = tmp_path / "p"
    photos.mkdir()
    photo(1).save(photos / "a.png")
    (photos / "b.png").write_bytes((photos / "a.png").read_bytes())
    photo(2).save(photos / "c.png")
    from birder_index.indexer import ModelSpec
    from tests.helpers import save_vit

    build_index(photos, spec=ModelSpec(weights=save_vit(tmp_path)), options=BuildOptions(workers=0))
    with open_index(photos / ".birder-index") as index:
        (g,) = find_duplicates(index, 0.9999).groups
        assert g.duplicates[0].kind == "exact"
        mark_not_duplicates(index, [g.keeper.id, g.duplicates[0].id])
        result = find_duplicates(index, 0.9999)
        assert result.groups == [] and result.kept_apart == 1


def test_regroup_after_marking_needs_no_new_search(star: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    i = ids_of(star)
    with open_index(star) as index:
        result = find_duplicates(index, 0.99, keep="first")
        mark_not_duplicates(index, [i["a"], i["c"]])
        import birder_index.dedup.find as find

        monkeypatch.setattr(find, "near_pairs", lambda *a, **k: pytest.fail("regroup searched again"))
        again = regroup(index, result, keep="first")
        assert groups(again) == [("a", ["b"])] and again.kept_apart == 1


def test_choose_keeper_scores_the_group_against_the_new_keeper(star: Path) -> None:
    i = ids_of(star)
    with open_index(star) as index:
        result = find_duplicates(index, 0.99, keep="first")
        chosen = choose_keeper(index, result, 0, i["b"])
        (g,) = chosen.groups
        assert g.keeper.path == "b" and g.keeper.kind == "keeper"
        scores = {m.path: m.score for m in g.duplicates}
        assert scores["a"] == pytest.approx(np.cos(np.radians(5)), abs=1e-3)
        assert scores["c"] == pytest.approx(np.cos(np.radians(10)), abs=1e-3)  # to b now, not to a
        assert [m.path for m in g.duplicates] == ["a", "c"]  # best first
        assert result.groups[0].keeper.path == "a"  # the result given is left as it was
        with pytest.raises(BirderIndexError, match="not in group 1"):
            choose_keeper(index, result, 0, i["d"])
        with pytest.raises(BirderIndexError, match="no group 5"):
            choose_keeper(index, result, 4, i["b"])
