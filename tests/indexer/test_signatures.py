"""The signature stores (colour signatures, thumbnails): one row per embedding-store row, padded for indexes and
imports that lack them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from birder_index.backbone.colour import SIGNATURE_DIM
from birder_index.backbone.colour import colour_signature
from birder_index.backbone.images import decode
from birder_index.backbone.thumbnail import THUMB_DIM
from birder_index.backbone.thumbnail import thumbnail
from birder_index.cli import cli
from birder_index.db import queries as q
from birder_index.db.engine import session_scope
from birder_index.db.models import MetaKey
from birder_index.dedup.find import find_duplicates
from birder_index.errors import IndexMismatch
from birder_index.indexer import BuildOptions
from birder_index.indexer import ModelSpec
from birder_index.indexer import build_index
from birder_index.indexer import open_index
from birder_index.indexer import verify_index
from birder_index.indexer.signatures import COLOURS
from birder_index.indexer.signatures import THUMBNAILS
from birder_index.indexer.signatures import read_signatures
from tests.helpers import photo

OPTS = BuildOptions(workers=0)


def _signatures(index_dir: Path) -> tuple[dict[str, np.ndarray], int, int]:
    """path -> stored signature, and the committed lengths of the embedding and colour stores."""
    with open_index(index_dir) as index:
        ids, rows = index.id_rows()
        with session_scope(index.engine) as s:
            paths = q.paths_of(s, ids)
            lengths = q.get_int(s, MetaKey.STORE_ROWS), q.get_int(s, MetaKey.COLOUR_ROWS)
        sigs = read_signatures(index.colours(), rows)
    return {paths[int(i)]: sig for i, sig in zip(ids, sigs, strict=True)}, *lengths


def test_build_stores_each_photos_signature(photos: Path, tiny_pt: Path) -> None:
    build_index(photos, spec=ModelSpec(weights=tiny_pt), options=BuildOptions(workers=0, exact=True))
    sigs, store_rows, colour_rows = _signatures(photos / ".birder-index")
    assert colour_rows == store_rows == len(sigs) == 8
    assert (photos / ".birder-index" / COLOURS.file).stat().st_size == 8 * SIGNATURE_DIM
    for path, sig in sigs.items():  # the signature of the pixels the model saw (exact decode)
        assert np.array_equal(sig, colour_signature(decode(photos / path, (32, 32)).pixels)), path


def test_build_stores_each_photos_thumbnail_row_aligned(photos: Path, tiny_pt: Path) -> None:
    build_index(photos, spec=ModelSpec(weights=tiny_pt), options=BuildOptions(workers=0, exact=True))
    photo(99).save(photos / "new.png")  # a second build appends to both stores
    build_index(photos, spec=ModelSpec(weights=tiny_pt), options=BuildOptions(workers=0, exact=True))
    index_dir = photos / ".birder-index"
    assert (index_dir / THUMBNAILS.file).stat().st_size == 9 * THUMB_DIM
    with open_index(index_dir) as index:
        ids, rows = index.id_rows()
        with session_scope(index.engine) as s:
            paths = q.paths_of(s, ids)
            assert q.get_int(s, MetaKey.THUMB_ROWS) == q.get_int(s, MetaKey.STORE_ROWS) == 9
        thumbs = read_signatures(index.thumbnails(), rows)
    for i, thumb in zip(ids, thumbs, strict=True):  # the thumbnail of the pixels the model saw
        assert np.array_equal(thumb, thumbnail(decode(photos / paths[int(i)], (32, 32)).pixels)), paths[int(i)]


def test_an_index_without_signatures_is_padded_before_the_next_append(photos: Path, tiny_pt: Path) -> None:
    build_index(photos, spec=ModelSpec(weights=tiny_pt), options=OPTS)
    index_dir = photos / ".birder-index"
    (index_dir / COLOURS.file).unlink()  # as an index built before colour signatures existed
    with open_index(index_dir) as index, session_scope(index.engine) as s:
        q.set_meta(s, MetaKey.COLOUR_ROWS, 0)
    sigs, _, _ = _signatures(index_dir)
    assert not any(sig.any() for sig in sigs.values())  # unknown: dedup's colour check lets them pass
    photo(99).save(photos / "new.png")
    build_index(photos, spec=ModelSpec(weights=tiny_pt), options=OPTS)
    sigs, store_rows, colour_rows = _signatures(index_dir)
    assert colour_rows == store_rows == 9  # padded, then appended: rows stay aligned
    assert sigs["new.png"].any() and not sigs["photo00.jpg"].any()
    with open_index(index_dir) as index:
        assert find_duplicates(index, 0.9).unsigned == 8  # dedup says how many it could not judge
        assert find_duplicates(index, 0.9, colour_min=0).unsigned == 0
    note = CliRunner().invoke(cli, ["dedup", "--index-dir", str(index_dir), "--threshold", "0.9"])
    assert note.exit_code == 0 and "note: 8 images have no colour signature" in note.output


def test_verify_finds_and_repairs_a_lost_colour_store(photos: Path, tiny_pt: Path) -> None:
    build_index(photos, spec=ModelSpec(weights=tiny_pt), options=OPTS)
    index_dir = photos / ".birder-index"
    (index_dir / COLOURS.file).write_bytes(b"\0" * SIGNATURE_DIM * 3 + b"torn")  # 3 of 8 rows and a torn tail
    with open_index(index_dir) as index:
        report = verify_index(index)
        assert report.colour_rows_lost == 5 and not report.healthy
        with pytest.raises(IndexMismatch, match="colour store .* verify --repair"):
            index.colours().array()
        repaired = verify_index(index, repair=True)
        assert any("colour signatures" in line for line in repaired.repaired)
        index.invalidate()
        assert verify_index(index).healthy
    _, _, colour_rows = _signatures(index_dir)
    assert colour_rows == 3


def test_verify_finds_and_repairs_a_lost_thumbnail_store(photos: Path, tiny_pt: Path) -> None:
    build_index(photos, spec=ModelSpec(weights=tiny_pt), options=OPTS)
    index_dir = photos / ".birder-index"
    (index_dir / THUMBNAILS.file).unlink()
    with open_index(index_dir) as index:
        report = verify_index(index)
        assert report.thumb_rows_lost == 8 and not report.healthy
        repaired = verify_index(index, repair=True)
        assert any("8 thumbnails" in line for line in repaired.repaired)
        index.invalidate()
        assert verify_index(index).healthy and index.thumbnails().rows == 0
        assert find_duplicates(index, 0.9).no_thumbnail == 8  # embeddings only, and dedup says so
        assert find_duplicates(index, 0.9, thumbnail_min=0).no_thumbnail == 0
    note = CliRunner().invoke(cli, ["dedup", "--index-dir", str(index_dir), "--threshold", "0.9"])
    assert note.exit_code == 0 and "note: 8 images have no thumbnail" in note.output
    photo(99).save(photos / "new.png")
    build_index(photos, spec=ModelSpec(weights=tiny_pt), options=OPTS)
    with open_index(index_dir) as index:
        assert index.thumbnails().rows == 9  # padded with unknown rows, then the new one appended
