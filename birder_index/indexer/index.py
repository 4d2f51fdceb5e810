"""An open index folder: the SQLite metadata, the embedding store and the FAISS index, kept consistent.

The database and the embedding store are the truth: a batch is appended to the store (fsync) and then committed
to the database with the store's new length, so after any crash the store is cut back to what the database says.
The FAISS file is derived data: the manifest names the file and the data generation it holds, and an index whose
generation lags (a build was killed, or is running) is brought up to date in memory from the store on open.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from typing import Any

import faiss
import numpy as np
from sqlalchemy import Engine

from birder_index.backbone.info import ModelInfo
from birder_index.backbone.info import Preprocess
from birder_index.db import queries as q
from birder_index.db.engine import open_database
from birder_index.db.engine import session_scope
from birder_index.db.engine import sqlite_url
from birder_index.db.models import MetaKey
from birder_index.db.models import Model
from birder_index.errors import BirderIndexError
from birder_index.errors import IndexMismatch
from birder_index.indexer import ann
from birder_index.indexer.layout import DB_FILE
from birder_index.indexer.layout import find_index_dir
from birder_index.indexer.signatures import COLOURS
from birder_index.indexer.signatures import THUMBNAILS
from birder_index.indexer.signatures import Signature
from birder_index.indexer.signatures import committed_store
from birder_index.indexer.vectors import VectorStore
from birder_index.indexer.vectors import normalize
from birder_index.indexer.vectors import open_embedding_store

if TYPE_CHECKING:
    from birder_index.backbone.encoder import Encoder

logger = logging.getLogger(__name__)


@dataclass
class AnnState:
    index: faiss.Index
    factory: str
    params: dict[str, Any]  # nprobe, k_factor, ... as tuned
    row_map: np.ndarray  # id -> store row of the vector the index holds (-1: none): tells replaced vectors apart


class Index:
    def __init__(self, directory: Path, engine: Engine) -> None:
        self.dir = directory
        self.engine = engine
        self._ann: AnnState | None = None
        self._id_rows: tuple[np.ndarray, np.ndarray] | None = None
        self._row_map: np.ndarray | None = None
        self._store: VectorStore | None = None
        self._signatures: dict[str, VectorStore] = {}
        self._model: Model | None = None
        self._seen: tuple[int, str | None] | None = None  # (generation, FAISS file) when `sync` last looked

    # -- what the index holds -------------------------------------------------------------------------------------
    @property
    def root(self) -> Path | None:
        """The photo folder that paths are relative to (None for imported embeddings)."""
        with session_scope(self.engine) as s:
            root = q.get_meta(s, MetaKey.ROOT)
            inside = q.get_meta(s, MetaKey.INDEX_INSIDE_ROOT) == "1"
        if root is None:
            return None
        return self.dir.resolve().parent if inside else Path(root)  # an index inside its folder moves with it

    def model_row(self) -> Model:
        if self._model is None:
            with session_scope(self.engine) as s:
                self._model = q.get_model(s)
        if self._model is None:
            raise BirderIndexError(f"the index in {self.dir} has no model yet (build it first)")
        return self._model

    def model_info(self) -> ModelInfo:
        row = self.model_row()
        stats = json.loads(row.rgb_stats)
        pre = Preprocess((row.input_height, row.input_width), tuple(stats["mean"]), tuple(stats["std"]))
        return ModelInfo(row.name, row.arch, row.sha256, row.embedding_dim, pre)

    def store(self) -> VectorStore:
        """The embedding store as committed when first asked (or since `invalidate`)."""
        if self._store is not None:
            return self._store
        dim = self.model_row().embedding_dim
        with session_scope(self.engine) as s:
            self._store = open_embedding_store(s, self.dir, dim)
        return self._store

    def colours(self) -> VectorStore:
        """The colour-signature store (`signatures.py`), as committed when first asked."""
        return self._signature_store(COLOURS)

    def thumbnails(self) -> VectorStore:
        """The thumbnail store (`signatures.py`), as committed when first asked."""
        return self._signature_store(THUMBNAILS)

    def _signature_store(self, kind: Signature) -> VectorStore:
        if kind.file not in self._signatures:
            self._signatures[kind.file] = committed_store(self.dir, self.engine, kind)
        return self._signatures[kind.file]

    def id_rows(self) -> tuple[np.ndarray, np.ndarray]:
        """(sorted image ids, their store rows) of every indexed image."""
        if self._id_rows is None:
            with session_scope(self.engine) as s:
                self._id_rows = q.indexed_rows(s)
        return self._id_rows

    def invalidate(self) -> None:
        """Forget cached rows, maps and store length: the caller has written to the index."""
        self._id_rows = None
        self._row_map = None
        self._store = None
        self._signatures = {}
        self._model = None

    def sync(self) -> bool:
        """Catch up with what other processes committed since this Index last looked (a build, an import, a dedup
        move): cached rows, maps and store lengths are dropped, and a FAISS index already loaded is brought up to
        date in memory, or reloaded where a newer file replaced it. One query when nothing changed. For a
        long-lived reader (`birder-index serve`), called before each use; returns whether anything changed."""
        with session_scope(self.engine) as s:
            manifest = q.get_manifest(s)
            seen = (q.get_int(s, MetaKey.GENERATION), manifest.file if manifest is not None else None)
        if seen == self._seen:
            return False
        file_changed = self._seen is None or seen[1] != self._seen[1]
        self._seen = seen
        self.invalidate()
        if self._ann is not None and (file_changed or ann.is_gpu(self._ann.index)):
            self._ann = None
        elif self._ann is not None:
            self.catch_up(self._ann)
        return True

    def row_map(self) -> np.ndarray:
        """Dense id -> store row (-1: not indexed). Memory-mapped from the file written beside the FAISS index
        when that is current, so opening a large index for search reads no rows from the database."""
        if self._row_map is None:
            with session_scope(self.engine) as s:
                manifest = q.get_manifest(s)
                current = manifest is not None and manifest.generation == q.get_int(s, MetaKey.GENERATION)
            path = self.dir / (manifest.file + ROW_MAP_SUFFIX) if manifest is not None else None
            loaded = load_row_map(path) if current and path is not None and path.exists() else None
            if current and path is not None and path.exists() and loaded is None:
                logger.warning("%s cannot be read as an id -> row map: run `birder-index verify --repair`", path)
            self._row_map = loaded if loaded is not None else dense_row_map(*self.id_rows())
        return self._row_map

    def rows_of(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(store rows, found mask) for image ids."""
        rows = lookup_rows(self.row_map(), ids)
        return rows, rows >= 0

    def fetch_normalized(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(L2-normalised float32 vectors, found mask) for ids; ids no longer indexed come back as zeros."""
        rows, found = self.rows_of(ids)
        out = np.zeros((len(rows), self.store().dim), np.float32)
        if found.any():
            out[found] = normalize(self.store().get(rows[found]))
        return out, found

    def vectors(self, ids: np.ndarray) -> np.ndarray:
        """Raw float32 embeddings for image ids (ids must be indexed)."""
        rows, found = self.rows_of(ids)
        if not found.all():
            raise BirderIndexError("some ids are not indexed")
        return self.store().get(rows)

    # -- the FAISS index ------------------------------------------------------------------------------------------
    def ann(self) -> AnnState:
        """The FAISS index for searching, brought up to the database's committed state in memory if its file lags
        behind (on the GPU when a GPU build of FAISS has one)."""
        if self._ann is None:
            state = self._load_ann()
            state.index = ann.to_gpu(state.index)
            self._ann = state
        return self._ann

    def _load_ann(self) -> AnnState:
        for _attempt in range(3):  # a concurrent build may replace the file between reading the manifest and opening
            with session_scope(self.engine) as s:
                manifest = q.get_manifest(s)
                generation = q.get_int(s, MetaKey.GENERATION)
            if manifest is None:
                return self._exact_from_store()
            try:
                state = self.load_ann_file(manifest.file, manifest.factory, json.loads(manifest.params))
            except FileNotFoundError:
                continue
            if manifest.generation != generation:
                self.catch_up(state)
            return state
        return self._exact_from_store()

    def load_ann_file(self, name: str, factory: str, params: dict[str, Any]) -> AnnState:
        """A FAISS file and the id -> row map written with it (no map: every vector counts as replaced)."""
        path = self.dir / name
        try:
            index = ann.load(path)
        except RuntimeError:
            if not path.exists():
                raise FileNotFoundError(path) from None
            raise BirderIndexError(f"cannot read the FAISS index {path}: run `birder-index verify --repair`") from None
        loaded = load_row_map(self.dir / (name + ROW_MAP_SUFFIX))
        row_map = np.asarray(loaded) if loaded is not None else np.zeros(0, np.int64)
        return AnnState(index, factory, params, row_map)

    def catch_up(self, state: AnnState) -> None:
        """Bring the FAISS index to what the database committed after its file was written: drop deleted ids and
        ids whose vector was replaced (another store row: a changed photo, a re-import), add the new ones."""
        ids, rows = self.id_rows()
        now = dense_row_map(ids, rows)
        present = ann.ids_in(state.index)
        before, after = lookup_rows(state.row_map, present), lookup_rows(now, present)
        stale = present[(after < 0) | (before != after)]
        ann.remove(state.index, stale)
        missing = ~np.isin(ids, np.setdiff1d(present, stale), assume_unique=True)
        if missing.any() and ann.is_trained(state.index):
            for start, block in self.store().blocks(rows[missing]):
                ann.add(state.index, ids[missing][start : start + len(block)], normalize(block))
        state.row_map = now
        logger.info("FAISS index caught up in memory: +%d -%d vectors", int(missing.sum()), len(stale))

    def _exact_from_store(self) -> AnnState:
        ids, rows = self.id_rows()
        index = ann.new_index("Flat", self.model_row().embedding_dim)
        for start, block in self.store().blocks(rows):
            ann.add(index, ids[start : start + len(block)], normalize(block))
        return AnnState(index, "Flat", {}, dense_row_map(ids, rows))

    # -- the model --------------------------------------------------------------------------------------------------
    def load_encoder(self, *, device: str | None = None, precision: str = "auto", progress: bool = True) -> Encoder:
        """The backbone this index was built with, checked by sha256."""
        from birder_index.backbone.load import load_backbone

        row = self.model_row()
        if row.arch == "imported":
            raise BirderIndexError(
                "this index holds imported embeddings without a model: query it with --vectors, "
                "or import with --model NAME"
            )
        source = Path(row.source)
        known = None
        if source.is_absolute():
            try:
                st = source.stat()
            except OSError:
                raise BirderIndexError(f"the index's model file {source} is missing: pass --weights FILE") from None
            if (st.st_size, st.st_mtime_ns) == (row.source_size, row.source_mtime_ns):
                known = row.sha256
            enc = load_backbone(
                weights=source,
                size=(row.input_height, row.input_width),
                device=device,
                precision=precision,
                sha256=known,
                progress=progress,
            )
        else:
            enc = load_backbone(
                model=row.source,
                size=(row.input_height, row.input_width),
                device=device,
                precision=precision,
                progress=progress,
            )
        check_model(self, enc.info)
        return enc

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> Index:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


ROW_MAP_SUFFIX = ".rows.npy"


def dense_row_map(ids: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """int32 (int64 past 2**31 rows) array indexed by image id, holding the store row or -1."""
    dtype = np.int32 if (len(rows) == 0 or rows.max() < 2**31 - 1) else np.int64
    out = np.full(int(ids.max()) + 1 if len(ids) else 0, -1, dtype)
    out[ids] = rows
    return out


def load_row_map(path: Path) -> np.ndarray | None:
    """The id -> store row map written beside a FAISS file, memory-mapped, or None where it is missing or cannot be
    one (damaged, of another type): callers then rebuild it from the database."""
    try:
        row_map = np.load(path, mmap_mode="r", allow_pickle=False)
    except Exception:  # a damaged header raises whatever numpy's parser meets: ValueError, TokenError, SyntaxError...
        return None
    return row_map if row_map.ndim == 1 and row_map.dtype.kind == "i" else None


def lookup_rows(row_map: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """row_map[ids], with -1 for ids outside the map (or negative)."""
    ids = np.asarray(ids, dtype=np.int64)
    inside = (ids >= 0) & (ids < len(row_map))
    out = np.full(len(ids), -1, np.int64)
    out[inside] = row_map[ids[inside]]
    return out


def check_model(index: Index, info: ModelInfo) -> None:
    row = index.model_row()
    if info.sha256 != row.sha256 or info.preprocess.size != (row.input_height, row.input_width):
        raise IndexMismatch(
            f"the index in {index.dir} was built with {row.name} at {row.input_height}x{row.input_width} "
            f"(sha256 {row.sha256[:12]}), not {info.name} at {info.preprocess.size[0]}x{info.preprocess.size[1]} "
            f"(sha256 {info.sha256[:12]}); use another --index-dir"
        )


def open_index(
    index_dir: str | Path | None = None, *, db: str | None = None, paths: Sequence[str | Path] = (),
    below: bool = False,
) -> Index:  # fmt: skip
    """Open an existing index: `index_dir`, else $BIRDER_INDEX_DIR, else the index whose photo folder holds `paths`
    (a command's path arguments), else the nearest `.birder-index/` here or upwards, else with `below` the only one
    in a folder just below (layout.find_index_dir).

    The metadata may live in another SQLAlchemy database (`db`, else $BIRDER_INDEX_DB); the folder, which then
    must be named, still holds the embedding store and the FAISS files.
    """
    db = db or os.environ.get("BIRDER_INDEX_DB")
    if db:
        folder = index_dir or os.environ.get("BIRDER_INDEX_DIR")
        if not folder:
            raise BirderIndexError("with a --db / BIRDER_INDEX_DB database, name the index folder with --index-dir")
        return Index(Path(folder), open_database(db))
    directory = find_index_dir(explicit=index_dir, paths=paths, below=below)
    return Index(directory, open_database(sqlite_url(directory / DB_FILE)))


def absolute_path(root: Path | None, rel: str) -> str:
    return rel if root is None or os.path.isabs(rel) else str(root / rel)
