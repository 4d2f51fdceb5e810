"""`import_embeddings`: vectors computed elsewhere into an index, streamed in chunks.

Formats (docs/models.md §6.1): birder-predict's `--save-embeddings` parquet (`sample`, optional `label`,
`embedding` as a fixed-size list) and CSV (`sample`, optional `label`, columns "0".."D-1"); also a `.npy` (n, d)
with a text file of n paths. Re-importing a sample replaces its vector.
"""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from birder_index.db import queries as q
from birder_index.db.engine import open_database
from birder_index.db.engine import session_scope
from birder_index.db.engine import sqlite_url
from birder_index.db.models import MetaKey
from birder_index.db.models import Model
from birder_index.errors import BirderIndexError
from birder_index.errors import IndexMismatch
from birder_index.indexer.index import Index
from birder_index.indexer.layout import DB_FILE
from birder_index.indexer.layout import ensure_writable
from birder_index.indexer.lock import WriterLock
from birder_index.indexer.model import ModelSpec
from birder_index.indexer.model import load_encoder
from birder_index.indexer.refresh import RefreshReport
from birder_index.indexer.refresh import refresh_ann
from birder_index.indexer.refresh import set_index_options
from birder_index.indexer.select import check_index_options
from birder_index.indexer.vectors import DEFAULT_STORE_DTYPE
from birder_index.indexer.vectors import STORE_DTYPES
from birder_index.indexer.vectors import VectorStore
from birder_index.indexer.vectors import open_embedding_store
from birder_index.indexer.vectors import unstorable

CHUNK = 65536


@dataclass(frozen=True)
class Chunk:
    samples: list[str]
    vectors: np.ndarray  # float32 (n, d)
    labels: list[str] | None


@dataclass(frozen=True)
class ImportReport:
    imported: int
    dim: int
    factory: str
    seconds: float
    index: RefreshReport  # what the FAISS refresh did (training, adding, tuning)


def read_chunks(path: Path, *, paths_file: Path | None = None) -> Iterator[Chunk]:
    suffix = path.suffix.lower()
    try:
        if suffix == ".npy":
            yield from _npy_chunks(path, paths_file)
        elif suffix == ".parquet":
            yield from _parquet_chunks(path)
        elif suffix == ".csv":
            yield from _csv_chunks(path)
        else:
            raise BirderIndexError(f"{path}: unknown embeddings format (expected .parquet, .csv or .npy)")
    except (OSError, ValueError) as e:
        raise BirderIndexError(f"cannot read embeddings from {path}: {str(e).splitlines()[0]}") from None


def _npy_chunks(path: Path, paths_file: Path | None) -> Iterator[Chunk]:
    if paths_file is None:
        raise BirderIndexError("a .npy file needs --paths FILE (one path per row)")
    xb = np.load(path, mmap_mode="r", allow_pickle=False)
    n_paths = _count_lines(paths_file)
    if xb.ndim != 2 or n_paths != xb.shape[0]:
        raise BirderIndexError(f"{path} holds {xb.shape} vectors but {paths_file} lists {n_paths} paths")
    with open(paths_file, encoding="utf-8", newline="\n") as lines:  # streamed, like the vectors
        for start in range(0, n_paths, CHUNK):
            samples = [line.rstrip("\r\n") for line in itertools.islice(lines, CHUNK)]
            yield Chunk(samples, np.asarray(xb[start : start + CHUNK], np.float32), None)


def _count_lines(path: Path) -> int:
    """Lines split at "\\n" only (a CRLF file loses its "\\r" when read): a last line without its newline counts."""
    count, last = 0, b"\n"
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            count += block.count(b"\n")
            last = block[-1:]
    return count + (last != b"\n")


def _table_chunk(batch: object) -> Chunk:
    import pyarrow as pa

    assert isinstance(batch, pa.RecordBatch)
    names = batch.schema.names
    if "sample" not in names:
        raise BirderIndexError("embeddings table has no `sample` column")
    samples = [str(s) for s in batch.column("sample").to_pylist()]
    if "embedding" in names:
        col = batch.column("embedding")
        d = col.type.list_size if hasattr(col.type, "list_size") else len(col[0].as_py())
        vectors = np.asarray(col.flatten().to_numpy(zero_copy_only=False), np.float32).reshape(-1, d)
    else:
        dims = sorted((n for n in names if n.isdigit()), key=int)
        if not dims:
            raise BirderIndexError("embeddings table has neither an `embedding` column nor columns 0..D-1")
        vectors = np.stack([np.asarray(batch.column(n).to_numpy(zero_copy_only=False), np.float32) for n in dims], 1)
    labels = [str(v) for v in batch.column("label").to_pylist()] if "label" in names else None
    return Chunk(samples, vectors, labels)


def _parquet_chunks(path: Path) -> Iterator[Chunk]:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise BirderIndexError('reading parquet needs pyarrow: pip install "birder-index[parquet]"') from None
    for batch in pq.ParquetFile(path).iter_batches(batch_size=CHUNK):
        yield _table_chunk(batch)


def _csv_chunks(path: Path) -> Iterator[Chunk]:
    """birder-predict's CSV: with pyarrow where installed (fast), else Python's csv module (slower, no extra)."""
    try:
        import pyarrow as pa
        import pyarrow.csv as pcsv
    except ImportError:
        yield from _csv_chunks_stdlib(path)
        return
    convert = pcsv.ConvertOptions(column_types={"sample": pa.string()})
    reader = pcsv.open_csv(path, read_options=pcsv.ReadOptions(block_size=64 << 20), convert_options=convert)
    for batch in reader:
        yield _table_chunk(batch)


def _csv_chunks_stdlib(path: Path) -> Iterator[Chunk]:
    import csv

    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header is None or "sample" not in header:
            raise BirderIndexError("embeddings table has no `sample` column")
        dims = sorted((i for i, n in enumerate(header) if n.isdigit()), key=lambda i: int(header[i]))
        if not dims:
            raise BirderIndexError("embeddings table has neither an `embedding` column nor columns 0..D-1")
        at, label_at = header.index("sample"), header.index("label") if "label" in header else None
        rows: list[list[str]] = []
        for row in reader:
            rows.append(row)
            if len(rows) == CHUNK:
                yield _rows_chunk(rows, at, label_at, dims)
                rows = []
        if rows:
            yield _rows_chunk(rows, at, label_at, dims)


def _rows_chunk(rows: list[list[str]], at: int, label_at: int | None, dims: list[int]) -> Chunk:
    vectors = np.array([[float(r[i]) for i in dims] for r in rows], np.float32)  # ValueError: a bad number
    labels = [r[label_at] for r in rows] if label_at is not None else None
    return Chunk([r[at] for r in rows], vectors, labels)


def import_embeddings(
    source: str | Path,
    index_dir: str | Path,
    *,
    paths_file: str | Path | None = None,
    model: str | None = None,
    weights: str | Path | None = None,
    label_set: str | None = None,
    max_index_memory: int | None = None,
    target_recall: float | None = None,
    store_dtype: str = DEFAULT_STORE_DTYPE,
) -> ImportReport:
    """Index vectors computed elsewhere (module docstring). A sample named twice in one file is an error, found
    before anything of its chunk is written; a sample the index already holds gets the new vector."""
    check_index_options(max_index_memory, target_recall)
    if store_dtype not in STORE_DTYPES:
        raise BirderIndexError(f"--store-dtype must be one of {', '.join(STORE_DTYPES)}, got {store_dtype}")
    t0 = time.perf_counter()
    directory = Path(index_dir)
    ensure_writable(directory)
    with WriterLock(directory):
        engine = open_database(sqlite_url(directory / DB_FILE), create=True)
        index = Index(directory, engine)
        set_index_options(index, max_index_memory=max_index_memory, target_recall=target_recall)
        try:
            spec = ModelSpec(model=model, weights=Path(weights) if weights else None)
            paths = Path(paths_file) if paths_file else None
            n, dim = _import(index, Path(source), paths, spec, label_set=label_set, store_dtype=store_dtype)
            report = refresh_ann(index)
        finally:
            engine.dispose()
    return ImportReport(n, dim, report.factory, time.perf_counter() - t0, report)


def _import(
    index: Index, source: Path, paths_file: Path | None, spec: ModelSpec, *, label_set: str | None, store_dtype: str
) -> tuple[int, int]:
    store: VectorStore | None = None
    total = 0
    for chunk in read_chunks(source, paths_file=paths_file):
        if store is None:
            store = _open_store(index, chunk.vectors.shape[1], spec, store_dtype)
        if chunk.vectors.shape[1] != store.dim:
            raise IndexMismatch(f"embeddings have dimension {chunk.vectors.shape[1]}, the index holds {store.dim}")
        _check_chunk(source, chunk, store, done=total)
        rows = store.append(chunk.vectors)
        with session_scope(index.engine) as s:
            ids = q.upsert_indexed(s, chunk.samples, rows)
            if chunk.labels is not None and label_set:
                q.set_labels(s, label_set, ids, chunk.labels)
            q.set_meta(s, MetaKey.STORE_ROWS, store.rows)
            q.bump_generation(s)
        total += len(chunk.samples)
    if store is None:
        raise BirderIndexError(f"{source} holds no embeddings")
    return total, store.dim


def _check_chunk(source: Path, chunk: Chunk, store: VectorStore, *, done: int) -> None:
    """Refuse a chunk, before any of it is written, whose samples repeat or whose vectors the store cannot hold."""
    seen: dict[str, int] = {}
    for n, sample in enumerate(chunk.samples):
        if sample in seen:
            raise BirderIndexError(
                f"{source}: sample {sample!r} appears twice (rows {done + seen[sample]} and {done + n}); sample names "
                f"must be unique (rows before {done} were imported)"
            )
        seen[sample] = n
    reasons = unstorable(chunk.vectors, store.dtype)
    bad = next((n for n, r in enumerate(reasons) if r is not None), None)
    if bad is not None:
        reason = str(reasons[bad]).replace("the model's embedding of this photo", "its embedding")
        raise BirderIndexError(
            f"{source}: sample {chunk.samples[bad]!r} (row {done + bad}) cannot be stored: {reason} (rows before "
            f"{done} were imported)"
        )


def _open_store(index: Index, dim: int, spec: ModelSpec, store_dtype: str) -> VectorStore:
    with session_scope(index.engine) as s:
        row = q.get_model(s)
    if row is None:
        if spec.given:
            load_encoder(index, spec, progress=True)
        else:
            with session_scope(index.engine) as s:
                s.add(
                    Model(
                        name="imported",
                        arch="imported",
                        sha256="",
                        embedding_dim=dim,
                        input_height=0,
                        input_width=0,
                        rgb_stats=json.dumps({}),
                        source="imported",
                    )
                )
        row = index.model_row()
    if row.embedding_dim != dim:
        raise IndexMismatch(f"embeddings have dimension {dim}, the model {row.name} makes {row.embedding_dim}")
    with session_scope(index.engine) as s:
        store = open_embedding_store(s, index.dir, dim, dtype=store_dtype)
    store.drop_torn_tail()
    return store
