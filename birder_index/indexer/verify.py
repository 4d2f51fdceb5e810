"""`verify_index`: do the database, the embedding store, the side stores, the FAISS index, its row map and the files
agree? What each check looks at and what `--repair` does: docs/robustness.md#verify.

- store: every indexed row has its own store row inside the file; the file holds the committed rows (a shorter
  file lost rows, a longer one has a torn tail); every stored vector is finite.
- side stores (colour signatures, thumbnails): they hold their committed rows.
- FAISS: the file reads; it holds exactly the indexed ids; a sample of stored vectors finds itself through it.
- row map: it reads, and maps every id to the row the database records.
- files: exist with the recorded size and mtime (`deep`: the recorded sha256); with `deep`, a sample of photos is
  decoded and embedded again and must give its stored vector, colour signature and thumbnail.
- leftovers: temporary and FAISS files no manifest names (a killed build or reindex).

`repair` cuts torn tails and forgets rows a damaged store lost (their images are embedded again by the next build),
re-queues images whose vector is missing, shared, not finite or wrong, deletes rows whose file is gone, removes
leftovers, and writes the FAISS index and its row map again from the store (trained anew when the file was
unreadable). A damaged database cannot be repaired from the other files: it is the record of what they hold.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from dataclasses import field

import numpy as np

from birder_index.db import queries as q
from birder_index.db.engine import integrity_problems
from birder_index.db.engine import session_scope
from birder_index.db.models import INDEXED
from birder_index.db.models import MetaKey
from birder_index.errors import BirderIndexError
from birder_index.indexer import ann
from birder_index.indexer import signatures
from birder_index.indexer.index import ROW_MAP_SUFFIX
from birder_index.indexer.index import Index
from birder_index.indexer.index import dense_row_map
from birder_index.indexer.index import load_row_map
from birder_index.indexer.lock import WriterLock
from birder_index.indexer.plan import hash_file
from birder_index.indexer.refresh import refresh_ann
from birder_index.indexer.refresh import stale_files
from birder_index.indexer.vectors import normalize
from birder_index.progress import Progress
from birder_index.progress import silent

logger = logging.getLogger(__name__)

SELF_SAMPLE = 200  # stored vectors searched through the FAISS index
SELF_MIN = 0.95  # the share of them that must find themselves (or an identical copy)
DEEP_SAMPLE = 16  # photos embedded again by --deep
DEEP_MIN_COSINE = 0.99  # their new embedding against the stored one (the same model and settings)


@dataclass
class VerifyReport:
    indexed: int = 0
    pending: int = 0
    failed: int = 0
    database_problems: list[str] = field(default_factory=list)  # SQLite's quick check: cannot be repaired here
    store_rows: int = 0
    torn_tail_bytes: int = 0
    store_rows_lost: int = 0  # committed rows missing from the store file (a truncated store)
    colour_rows_lost: int = 0  # committed colour signatures missing from colours.u8
    thumb_rows_lost: int = 0  # committed thumbnails missing from thumbs.u8
    bad_vector_rows: list[int] = field(default_factory=list)  # image ids whose store row is missing or shared
    nonfinite_rows: list[int] = field(default_factory=list)  # image ids whose stored vector holds NaN or inf
    faiss_unreadable: str | None = None  # why the FAISS file cannot be read
    faiss_missing: list[int] = field(default_factory=list)  # indexed ids without a FAISS vector
    faiss_orphans: list[int] = field(default_factory=list)  # FAISS ids without an indexed row
    faiss_self_missed: int = 0  # sampled stored vectors the FAISS index does not find
    faiss_self_sampled: int = 0
    row_map_wrong: str | None = None  # how the id -> row map disagrees with the database
    files_missing: list[str] = field(default_factory=list)
    files_changed: list[str] = field(default_factory=list)
    embeddings_wrong: list[int] = field(default_factory=list)  # --deep: stored vector, signature or thumbnail
    deep_sampled: int = 0
    leftovers: list[str] = field(default_factory=list)  # temporary and unnamed FAISS files
    repaired: list[str] = field(default_factory=list)

    @property
    def healthy(self) -> bool:
        return not (
            self.database_problems
            or self.torn_tail_bytes
            or self.store_rows_lost
            or self.colour_rows_lost
            or self.thumb_rows_lost
            or self.bad_vector_rows
            or self.nonfinite_rows
            or self.faiss_unreadable
            or self.faiss_missing
            or self.faiss_orphans
            or self.faiss_self_missed > (1 - SELF_MIN) * self.faiss_self_sampled
            or self.row_map_wrong
            or self.files_missing
            or self.files_changed
            or self.embeddings_wrong
            or self.leftovers
            or self.pending
        )


def verify_index(
    index: Index, *, deep: bool = False, repair: bool = False, progress: Progress = silent
) -> VerifyReport:
    if repair:
        with WriterLock(index.dir, engine=index.engine):
            report = _check(index, deep, progress)
            _repair(index, report)
        return report
    return _check(index, deep, progress)


def _check(index: Index, deep: bool, progress: Progress) -> VerifyReport:
    r = VerifyReport()
    progress("checking the database", 0, None)
    r.database_problems = integrity_problems(index.engine)
    if r.database_problems:
        return r  # the other checks read what the database says, which cannot be trusted now
    with session_scope(index.engine) as s:
        counts = q.counts(s)
        known = q.known_files(s)
        r.store_rows = q.get_int(s, MetaKey.STORE_ROWS)
        manifest = q.get_manifest(s)
    r.indexed, r.pending, r.failed = counts["indexed"], counts["pending"], counts["failed"]
    index.invalidate()
    ids, rows = index.id_rows()
    progress("checking the embedding store", 0, None)
    _check_store(index, r, ids, rows, progress)
    r.colour_rows_lost = signatures.lost_rows(index.colours())
    r.thumb_rows_lost = signatures.lost_rows(index.thumbnails())
    progress("checking the FAISS index", 0, None)
    _check_faiss(index, r, ids, rows, manifest.file if manifest else None)
    progress("checking the files", 0, None)
    _check_files(index, r, known, deep, progress)
    if deep and ids.size and not (r.store_rows_lost or r.colour_rows_lost or r.thumb_rows_lost):
        good = np.setdiff1d(ids, np.array(r.bad_vector_rows + r.nonfinite_rows, np.int64))
        _check_embeddings(index, r, good, progress)
    r.leftovers = stale_files(index)
    return r


def _check_store(index: Index, r: VerifyReport, ids: np.ndarray, rows: np.ndarray, progress: Progress) -> None:
    if not len(ids) and not r.store_rows:
        return
    store = index.store()
    size = store.path.stat().st_size if store.path.exists() else 0
    present = size // store.row_bytes  # whole rows in the file
    r.torn_tail_bytes = max(0, size - r.store_rows * store.row_bytes)
    r.store_rows_lost = max(0, r.store_rows - present)
    usable = min(r.store_rows, present)
    _, first = np.unique(rows, return_index=True)
    shared = np.setdiff1d(np.arange(len(rows)), first)  # a store row claimed by two images
    bad = (rows < 0) | (rows >= usable)
    bad[shared] = True
    r.bad_vector_rows = ids[bad].tolist()
    if usable:
        finite = _finite_rows(store.path, store.dtype, store.dim, usable, progress)
        ok = ~bad
        r.nonfinite_rows = ids[ok][~finite[rows[ok]]].tolist()


def _finite_rows(path: os.PathLike[str], dtype: np.dtype, dim: int, rows: int, progress: Progress) -> np.ndarray:
    """Which of the store's first `rows` rows hold only finite values, read in blocks."""
    data = np.memmap(path, dtype, "r", shape=(rows, dim))
    out = np.empty(rows, bool)
    block = max(1, (64 << 20) // max(dim * dtype.itemsize, 1))
    for start in range(0, rows, block):
        progress("checking the embedding store", start, rows)
        out[start : start + block] = np.isfinite(data[start : start + block]).all(axis=1)
    return out


def _check_faiss(index: Index, r: VerifyReport, ids: np.ndarray, rows: np.ndarray, file: str | None) -> None:
    if file is None or not (index.dir / file).exists():
        r.faiss_missing = ids.tolist()
        return
    path = index.dir / file
    try:
        faiss_index = ann.load(path)
    except RuntimeError as e:
        r.faiss_unreadable = (str(e).strip().splitlines() or ["unreadable"])[-1][:200]
        return
    present = ann.ids_in(faiss_index)
    r.faiss_missing = np.setdiff1d(ids, present).tolist()
    r.faiss_orphans = np.setdiff1d(present, ids).tolist()
    r.row_map_wrong = _row_map_problem(index.dir / (file + ROW_MAP_SUFFIX), ids, rows)
    if not (r.faiss_missing or r.faiss_orphans or r.row_map_wrong or r.bad_vector_rows or r.nonfinite_rows):
        r.faiss_self_sampled, r.faiss_self_missed = _self_search(index, ids)


def _row_map_problem(path: os.PathLike[str], ids: np.ndarray, rows: np.ndarray) -> str | None:
    row_map = load_row_map(path)  # type: ignore[arg-type]
    if row_map is None:
        return "missing or unreadable"
    expected = dense_row_map(ids, rows)
    if len(row_map) != len(expected) or not np.array_equal(np.asarray(row_map), expected):
        wrong = int(np.count_nonzero(np.asarray(row_map)[: len(expected)] != expected[: len(row_map)]))
        return f"{wrong + abs(len(row_map) - len(expected))} ids mapped to the wrong store row"
    return None


def _self_search(index: Index, ids: np.ndarray) -> tuple[int, int]:
    """(sampled, missed): stored vectors searched through the FAISS index, as `nearest` does, must find themselves
    first, or a vector identical to theirs (a copy of the same content)."""
    sample = np.sort(np.random.default_rng(0).choice(ids, min(SELF_SAMPLE, len(ids)), replace=False))
    xq, _ = index.fetch_normalized(sample)
    state = index.ann()
    params = state.params
    _, I = ann.search_reranked(
        state.index, xq, min(10, len(ids)), nprobe=params.get("nprobe"), k_factor=params.get("k_factor", 1),
        rows_of=index.rows_of, vectors=index.store().array(),
    )  # fmt: skip
    found = I[:, 0] == sample  # first: nothing is closer to a vector than itself
    top, ok = index.fetch_normalized(I[:, 0])
    identical = ok & (np.einsum("ij,ij->i", top, xq) >= 0.9999)
    return len(sample), int(np.count_nonzero(~(found | identical)))


def _check_files(index: Index, r: VerifyReport, known: dict[str, q.Known], deep: bool, progress: Progress) -> None:
    root = index.root
    if root is None:  # imported embeddings: no files to check
        return
    indexed = [(path, k) for path, k in known.items() if k.status == INDEXED]
    for n, (path, k) in enumerate(indexed):
        if deep:
            progress("hashing the files", n, len(indexed))
        try:
            st = os.stat(root / path)
        except OSError:
            r.files_missing.append(path)
            continue
        if (st.st_size, st.st_mtime_ns) != (k.size, k.mtime_ns) or (deep and hash_file(root / path) != k.sha256):
            r.files_changed.append(path)


def _check_embeddings(index: Index, r: VerifyReport, ids: np.ndarray, progress: Progress) -> None:
    """Decode and embed a sample of photos again, as the build does: their vector, colour signature and thumbnail
    must be the stored ones (a store whose rows were swapped or overwritten with other valid numbers)."""
    import torch

    from birder_index.backbone.read import read_item

    root = index.root
    if root is None or index.model_row().arch == "imported":
        return
    with session_scope(index.engine) as s:
        setting = q.get_json(s, MetaKey.LAST_EMBEDDING) or {}
        candidates = q.images_by_ids(s, np.random.default_rng(1).choice(ids, min(DEEP_SAMPLE, len(ids)), replace=False))
    progress("loading the model", 0, None)
    encoder = index.load_encoder(progress=False)
    fast = setting.get("decode", "fast") == "fast"
    all_ids, all_rows = index.id_rows()  # the database's rows: the row map may be the thing that is wrong
    row_of = dict(zip(all_ids.tolist(), all_rows.tolist(), strict=True))
    for n, image in enumerate(sorted(candidates.values(), key=lambda i: i.id)):
        progress("embedding a sample of photos again", n, len(candidates))
        item = read_item(root, image.id, image.path, encoder.info.preprocess.size, fast)
        if item.pixels is None or item.sha256 != image.sha256:
            continue  # unreadable or changed: the file checks report it
        vector = normalize(encoder.embed(torch.from_numpy(item.pixels[None])).numpy())[0]
        row = np.array([row_of[image.id]])
        stored = normalize(index.store().get(row))[0]
        colour = signatures.read_signatures(index.colours(), row)[0]
        thumb = signatures.read_signatures(index.thumbnails(), row)[0]
        same_signatures = (not colour.any() or np.array_equal(colour, np.asarray(item.colour))) and (
            not thumb.any() or np.array_equal(thumb, np.asarray(item.thumb))
        )
        if float(stored @ vector) < DEEP_MIN_COSINE or not same_signatures:
            r.embeddings_wrong.append(image.id)
        r.deep_sampled += 1


def _repair(index: Index, r: VerifyReport) -> None:
    if r.database_problems:
        raise BirderIndexError(
            f"the database of the index in {index.dir} is damaged ({r.database_problems[0]}): it is the record of what "
            "the other files hold, so it cannot be repaired from them; restore it from a backup, or move the index "
            "folder aside and build again (labels and dedup plans live only in the database)"
        )
    # A file that cannot be read or trusted (its vectors do not find themselves, its row map lies) is trained anew;
    # one that only lags behind the database is caught up.
    retrain = bool(r.faiss_unreadable or r.row_map_wrong)
    retrain |= r.faiss_self_missed > (1 - SELF_MIN) * r.faiss_self_sampled
    rebuild = retrain or bool(r.faiss_missing or r.faiss_orphans)
    _repair_stores(index, r)
    with session_scope(index.engine) as s:
        known = q.known_files(s)
        wrong = set(r.bad_vector_rows) | set(r.nonfinite_rows) | set(r.embeddings_wrong)
        requeue = sorted(wrong | {known[p].id for p in r.files_changed})
        gone = [known[p].id for p in r.files_missing]
        q.set_pending(s, requeue)
        q.delete_images(s, gone)
        if requeue or gone:
            q.bump_generation(s)
    if requeue:
        r.repaired.append(f"re-queued {len(requeue)} images for embedding (run `birder-index build` to finish)")
    if gone:
        r.repaired.append(f"removed {len(gone)} images whose files are gone")
    for name in r.leftovers:
        (index.dir / name).unlink(missing_ok=True)
    if r.leftovers:
        r.repaired.append(f"removed {len(r.leftovers)} files left by interrupted writers")
    if rebuild or requeue or gone:
        refresh_ann(index, retrain=retrain, rebuild=True)
        r.repaired.append("wrote the FAISS index and its row map again from the embedding store")


def _repair_stores(index: Index, r: VerifyReport) -> None:
    """Cut torn tails; a store shorter than its committed rows keeps the rows it still holds whole (the images
    beyond are re-queued by the caller, as `bad_vector_rows`); side stores are cut to the same length."""
    store = index.store()
    if r.store_rows_lost:
        kept = r.store_rows - r.store_rows_lost
        with session_scope(index.engine) as s:
            q.set_meta(s, MetaKey.STORE_ROWS, kept)
        r.repaired.append(f"forgot {r.store_rows_lost} embedding-store rows the file lost")
        index.invalidate()
        store = index.store()
    if store.path.exists() and store.path.stat().st_size != store.rows * store.row_bytes:
        dropped = store.path.stat().st_size - store.rows * store.row_bytes
        store.drop_torn_tail()
        r.repaired.append(f"cut {dropped} bytes of torn tail from the embedding store")
    for kind, what, lost in (
        (signatures.COLOURS, "colour signatures", r.colour_rows_lost),
        (signatures.THUMBNAILS, "thumbnails", r.thumb_rows_lost),
    ):
        signatures.repair(index.dir, index.engine, kind, max_rows=store.rows)
        if lost:
            r.repaired.append(f"forgot {lost} {what} missing from the {kind.name}")
    index.invalidate()
