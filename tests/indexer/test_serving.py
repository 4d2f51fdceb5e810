"""What a long-lived reader (`birder-index serve`) needs of the indexer: catching up with another process's
build, previews cached beside the index (or in the user's cache), and finding the index from the folder above."""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from birder_index.errors import BirderIndexError
from birder_index.errors import ImageError
from birder_index.indexer import BuildOptions
from birder_index.indexer import ModelSpec
from birder_index.indexer import build_index
from birder_index.indexer import open_index
from birder_index.indexer.layout import find_index_dir
from birder_index.indexer.previews import PreviewCache
from birder_index.indexer.previews import preview_cache_dir
from birder_index.search import search_vectors
from tests.helpers import photo


def test_sync_catches_up_with_a_build_made_meanwhile(photos: Path, tiny_pt: Path) -> None:
    build_index(photos, spec=ModelSpec(weights=tiny_pt), options=BuildOptions(workers=0))
    with open_index(photos / ".birder-index") as index:
        assert index.sync() is True  # first look
        assert index.sync() is False  # nothing changed: one query
        before = len(index.id_rows()[0])
        index.ann()  # a FAISS index in memory, as a server holds it
        photo(30).save(photos / "new.jpg")
        (photos / "photo01.jpg").unlink()
        build_index(photos, options=BuildOptions(workers=0))  # another process's build, as far as `index` knows
        assert len(index.id_rows()[0]) == before  # stale until synced
        assert index.sync() is True
        ids, _ = index.id_rows()
        assert len(ids) == before  # one in, one out
        new_id = next(i for i, p in _paths(index).items() if p == "new.jpg")
        (hits,) = search_vectors(index, index.vectors(np.array([new_id])), k=3)
        assert hits[0].path.endswith("new.jpg") and not any(h.path.endswith("photo01.jpg") for h in hits)


def _paths(index: object) -> dict[int, str]:
    from birder_index.db import queries as q
    from birder_index.db.engine import session_scope

    with session_scope(index.engine) as s:  # type: ignore[attr-defined]
        return q.paths_of(s, index.id_rows()[0])  # type: ignore[attr-defined]


def test_previews_are_upright_small_webp_made_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    exif = Image.Exif()
    exif[0x0112] = 8  # rotated 270 degrees on display
    photo(3, (400, 200)).save(tmp_path / "p.jpg", exif=exif)
    Image.new("RGBA", (300, 300), (255, 255, 255, 0)).save(tmp_path / "clear.png")
    cache = PreviewCache(tmp_path / "cache", side=128)
    st = os.stat(tmp_path / "p.jpg")
    data = cache.get(str(tmp_path / "p.jpg"), st)
    with Image.open(io.BytesIO(data)) as img:
        assert img.format == "WEBP" and img.size == (64, 128)
    clear = cache.get(str(tmp_path / "clear.png"), os.stat(tmp_path / "clear.png"))
    with Image.open(io.BytesIO(clear)) as img:
        assert img.convert("RGB").getpixel((5, 5)) == pytest.approx((128, 128, 128), abs=3)  # as the build sees it
    import birder_index.indexer.previews as previews

    monkeypatch.setattr(previews, "render_preview", lambda *a, **k: pytest.fail("made twice"))
    assert cache.get(str(tmp_path / "p.jpg"), st) == data
    os.utime(tmp_path / "p.jpg", ns=(1, 1))  # a changed file (its date here) gets a new preview
    with pytest.raises(BaseException, match="made twice"):
        cache.get(str(tmp_path / "p.jpg"), os.stat(tmp_path / "p.jpg"))
    (tmp_path / "bad.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    monkeypatch.undo()
    with pytest.raises(ImageError):
        cache.get(str(tmp_path / "bad.jpg"), os.stat(tmp_path / "bad.jpg"))


def test_previews_go_to_the_users_cache_when_the_index_folder_cannot_be_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    index_dir = tmp_path / "idx"
    index_dir.mkdir()
    assert preview_cache_dir(index_dir) == index_dir / "thumbs-cache"
    # Tests run as root here, which writes through any permission bits: a file standing where the cache folder
    # would go makes the folder impossible to create, as a read-only disk or another user's index would.
    (index_dir / "thumbs-cache").rmdir()
    (index_dir / "thumbs-cache").write_text("in the way")
    elsewhere = preview_cache_dir(index_dir)
    assert elsewhere.parent == Path(os.environ["BIRDER_INDEX_HOME"]) / "thumbs-cache"
    assert preview_cache_dir(index_dir) == elsewhere  # the same folder each time, named after the index


def test_the_only_index_below_is_found_from_the_folder_above(tmp_path: Path, photos: Path, tiny_pt: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    build_index(photos, spec=ModelSpec(weights=tiny_pt), options=BuildOptions(workers=0))
    monkeypatch.chdir(tmp_path)
    assert find_index_dir(below=True) == photos / ".birder-index"
    with pytest.raises(BirderIndexError, match="no index found"):
        find_index_dir()  # other commands keep looking here and above only
    other = tmp_path / "more"
    other.mkdir()
    photo(5).save(other / "a.jpg")
    build_index(other, spec=ModelSpec(weights=tiny_pt), options=BuildOptions(workers=0))
    with pytest.raises(BirderIndexError, match="several indexes"):
        find_index_dir(below=True)
