"""import: birder-predict's --save-embeddings files (parquet, CSV) and .npy with a paths file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from birder_index.cli import cli
from birder_index.db import queries as qu
from birder_index.db.engine import session_scope
from birder_index.errors import BirderIndexError
from birder_index.errors import IndexMismatch
from birder_index.indexer import import_embeddings
from birder_index.indexer import open_index
from birder_index.indexer.vectors import normalize
from birder_index.search import nearest

X = np.random.default_rng(0).standard_normal((50, 16)).astype(np.float32)
SAMPLES = [f"data/validation/class_{i % 3}/img{i:03d}.jpeg" for i in range(50)]


def _parquet(path: Path, with_label: bool = True) -> Path:
    columns = {"sample": pa.array(SAMPLES)}
    if with_label:
        columns["label"] = pa.array(np.arange(50) % 3, pa.int64())
    columns["embedding"] = pa.FixedSizeListArray.from_arrays(pa.array(X.ravel()), 16)
    pq.write_table(pa.table(columns), path)
    return path


def _csv(path: Path) -> Path:
    header = "sample,label," + ",".join(str(i) for i in range(16))
    rows = [f"{s},{i % 3}," + ",".join(f"{v:.8f}" for v in X[i]) for i, s in enumerate(SAMPLES)]
    path.write_text("\n".join([header, *rows]) + "\n")
    return path


@pytest.mark.parametrize("maker", [_parquet, _csv])
def test_birder_predict_files(tmp_path: Path, maker: object) -> None:
    source = maker(tmp_path / ("e.parquet" if maker is _parquet else "e.csv"))  # type: ignore[operator]
    report = import_embeddings(source, tmp_path / "idx", label_set="classes")
    assert (report.imported, report.dim, report.factory) == (50, 16, "Flat")
    with open_index(tmp_path / "idx") as index:
        D, I = nearest(index, X[:5], k=1)
        with session_scope(index.engine) as s:
            paths = qu.paths_of(s, I.ravel())
            ids, labels = qu.labels_of(s, "classes")
        assert [paths[int(i)] for i in I.ravel()] == SAMPLES[:5] and np.all(D > 0.999)
        assert len(ids) == 50 and sorted(set(labels)) == ["0", "1", "2"]


def test_npy_with_paths_and_reimport_replaces(tmp_path: Path) -> None:
    np.save(tmp_path / "x.npy", X)
    (tmp_path / "p.txt").write_text("\n".join(SAMPLES))
    import_embeddings(tmp_path / "x.npy", tmp_path / "idx", paths_file=tmp_path / "p.txt")
    np.save(tmp_path / "y.npy", -X[:10])
    (tmp_path / "q.txt").write_text("\n".join(SAMPLES[:10]))
    report = import_embeddings(tmp_path / "y.npy", tmp_path / "idx", paths_file=tmp_path / "q.txt")
    assert report.imported == 10
    with open_index(tmp_path / "idx") as index:
        assert index.ann().index.ntotal == 50  # replaced, not added twice
        _, I = nearest(index, -X[:1], k=1)
        with session_scope(index.engine) as s:
            assert qu.paths_of(s, I.ravel())[int(I[0, 0])] == SAMPLES[0]


def test_import_errors(tmp_path: Path) -> None:
    np.save(tmp_path / "x.npy", X)
    with pytest.raises(BirderIndexError, match="needs --paths"):
        import_embeddings(tmp_path / "x.npy", tmp_path / "idx")
    (tmp_path / "p.txt").write_text("\n".join(SAMPLES[:3]))
    with pytest.raises(BirderIndexError, match=r"holds \(50, 16\) vectors but .* lists 3 paths"):
        import_embeddings(tmp_path / "x.npy", tmp_path / "idx", paths_file=tmp_path / "p.txt")
    import_embeddings(_parquet(tmp_path / "e.parquet"), tmp_path / "idx2")
    np.save(tmp_path / "w.npy", np.ones((3, 8), np.float32))
    with pytest.raises(IndexMismatch, match="dimension 8, the index holds 16|dimension 8, the model"):
        import_embeddings(tmp_path / "w.npy", tmp_path / "idx2", paths_file=tmp_path / "p.txt")
    (tmp_path / "bad.parquet").write_bytes(b"not parquet")
    result = CliRunner().invoke(cli, ["import", str(tmp_path / "bad.parquet"), "--index-dir", str(tmp_path / "i3")])
    assert result.exit_code == 1 and result.output.startswith("Error: cannot read embeddings from")


def test_search_image_needs_a_model(tmp_path: Path) -> None:
    import_embeddings(_parquet(tmp_path / "e.parquet"), tmp_path / "idx")
    img = tmp_path / "q.png"
    from tests.helpers import photo

    photo(1).save(img)
    result = CliRunner().invoke(cli, ["search", str(img), "--index-dir", str(tmp_path / "idx")])
    assert result.exit_code == 1 and "holds imported embeddings without a model" in result.output


def test_info_names_imported_embeddings_as_such(tmp_path: Path) -> None:
    np.save(tmp_path / "x.npy", X)
    (tmp_path / "p.txt").write_text("\n".join(SAMPLES))
    import_embeddings(tmp_path / "x.npy", tmp_path / "idx", paths_file=tmp_path / "p.txt")
    result = CliRunner().invoke(cli, ["info", "--index-dir", str(tmp_path / "idx")])
    assert result.exit_code == 0, result.output
    assert "photos:  (imported embeddings)" in result.output
    assert "model:   none (16-d imported embeddings)" in result.output


def test_csv_without_pyarrow_and_parquet_asks_for_the_extra(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "pyarrow", None)  # as if the parquet extra were not installed
    monkeypatch.setitem(sys.modules, "pyarrow.csv", None)
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    report = import_embeddings(_csv(tmp_path / "e.csv"), tmp_path / "idx", label_set="classes")
    assert (report.imported, report.dim) == (50, 16)
    with open_index(tmp_path / "idx") as index:
        ids, _ = index.id_rows()
        assert np.allclose(normalize(index.vectors(ids)), normalize(X), atol=1e-3)  # float16 store
    (tmp_path / "e.parquet").write_bytes(b"PAR1")
    result = CliRunner().invoke(cli, ["import", str(tmp_path / "e.parquet"), "--index-dir", str(tmp_path / "i2")])
    assert result.exit_code == 1 and 'pip install "birder-index[parquet]"' in result.output
