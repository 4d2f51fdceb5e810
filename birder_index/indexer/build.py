"""`build_index`: a photo folder to rows, vectors and a FAISS index, incrementally, resumably, crash-safely.

The run: lock -> scan -> plan (diff with the database) -> apply row changes -> reader (decoders) ->
mapper (encoder) -> writer (store, then database) per batch -> FAISS refresh. Every batch is committed on its own,
so an interrupted build resumes where it stopped.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy.orm import Session

from birder_index.db import queries as q
from birder_index.db.engine import check_schema
from birder_index.db.engine import connect
from birder_index.db.engine import open_database
from birder_index.db.engine import session_scope
from birder_index.db.engine import sqlite_url
from birder_index.db.models import MetaKey
from birder_index.distributed.cluster import RaySettings
from birder_index.distributed.cluster import require_ray
from birder_index.errors import BirderIndexError
from birder_index.errors import IndexMismatch
from birder_index.indexer.index import Index
from birder_index.indexer.layout import DB_FILE
from birder_index.indexer.layout import default_index_dir
from birder_index.indexer.layout import ensure_writable
from birder_index.indexer.lock import WriterLock
from birder_index.indexer.model import ModelSpec
from birder_index.indexer.model import check_spec
from birder_index.indexer.model import load_encoder
from birder_index.indexer.options import BuildOptions
from birder_index.indexer.options import BuildReport
from birder_index.indexer.pipeline import run_pipeline
from birder_index.indexer.plan import Plan
from birder_index.indexer.plan import make_plan
from birder_index.indexer.refresh import refresh_ann
from birder_index.indexer.refresh import remove_stale_files
from birder_index.indexer.refresh import set_index_options
from birder_index.indexer.scan import scan
from birder_index.indexer.vectors import open_embedding_store
from birder_index.progress import Progress
from birder_index.progress import silent

logger = logging.getLogger(__name__)


def build_index(
    photos: str | Path,
    *,
    index_dir: str | Path | None = None,
    spec: ModelSpec | None = None,
    options: BuildOptions | None = None,
    progress: Progress = silent,
    stop: threading.Event | None = None,
    ray: str | RaySettings | None = None,
) -> BuildReport:
    """Index a photo folder (see the module docstring). `stop` ends the run cleanly after the current batch.

    `ray`: embed on a Ray cluster ("auto", an address, or RaySettings; docs/scale.md); the scan, the plan, the
    store and its crash safety stay here, as in a local build."""
    t0 = time.perf_counter()
    settings = RaySettings(address=ray) if isinstance(ray, str) else ray
    if settings is not None:
        require_ray()  # before any work: the one-line error naming the extra
    spec = spec or ModelSpec()
    options = options or BuildOptions()
    root = Path(photos).expanduser()
    if not root.is_dir():
        raise BirderIndexError(f"photo folder not found: {photos}")
    root = root.resolve()
    directory = Path(index_dir).expanduser() if index_dir else default_index_dir(root)
    created = not directory.exists()
    ensure_writable(directory)
    stop = stop or threading.Event()
    try:
        engine = connect(options.db or sqlite_url(directory / DB_FILE), create=True)  # connects on first use
        try:
            with WriterLock(directory, wait=options.wait, engine=engine), _stop_on_signals(stop):
                check_schema(engine, create=True)
                report = _build(Index(directory, engine), root, spec, options, progress, stop, settings)
        finally:
            engine.dispose()
    except BaseException:
        if created and options.db is None:
            _remove_if_nothing_embedded(directory)
        raise
    report.seconds = time.perf_counter() - t0
    logger.info(
        "%d photos indexed in %.1fs (%.1f/s), %d failed, %d unchanged",
        report.indexed,
        report.seconds,
        report.images_per_second,
        report.failed,
        report.unchanged,
    )
    return report


def _build(
    index: Index,
    root: Path,
    spec: ModelSpec,
    options: BuildOptions,
    progress: Progress,
    stop: threading.Event,
    ray: RaySettings | None,
) -> BuildReport:
    report = BuildReport(index.dir)
    for name in remove_stale_files(index):
        logger.info("removed %s, left by an interrupted build", name)
    _bind_root(index, root)
    set_index_options(index, max_index_memory=options.max_index_memory, target_recall=options.target_recall)
    check_spec(index, spec)
    scanned = scan(root, exclude=index.dir)
    for folder, reason in scanned.skipped_dirs:
        logger.warning("folder skipped: %s (%s)", folder, reason)
    with session_scope(index.engine) as s:
        plan = make_plan(root, scanned, q.known_files(s), retry_failed=options.retry_failed)
    report.scanned = len(scanned.files) + len(scanned.problems)
    _apply_plan(index, plan, report)
    with session_scope(index.engine) as s:
        todo = q.pending(s)
    if todo:
        _embed(index, root, todo, spec, options, progress, stop, report, ray)
    with session_scope(index.engine) as s:
        has_model = q.get_model(s) is not None  # none yet: nothing was ever embedded, so there is nothing to index
    if has_model and (not report.interrupted or report.indexed):
        refresh_ann(index, ray=ray)
    return report


def _remove_if_nothing_embedded(directory: Path) -> None:
    """A first build that failed before embedding anything (no model: a download that failed offline, a file that
    is no checkpoint) leaves no half-made index folder behind; one that embedded something keeps it, to resume."""
    import shutil

    try:
        engine = open_database(sqlite_url(directory / DB_FILE))
        try:
            with session_scope(engine) as s:
                embedded = q.get_model(s) is not None
        finally:
            engine.dispose()
    except BirderIndexError:  # the database was not even complete
        embedded = False
    if not embedded:
        shutil.rmtree(directory, ignore_errors=True)


def _bind_root(index: Index, root: Path) -> None:
    """An index belongs to one photo folder; an index inside its folder follows the folder if it moves."""
    with session_scope(index.engine) as s:
        recorded = q.get_meta(s, MetaKey.ROOT)
        inside = index.dir.resolve().parent == root
        if (
            recorded is not None
            and Path(recorded) != root
            and not (inside and q.get_meta(s, MetaKey.INDEX_INSIDE_ROOT) == "1")
        ):
            raise IndexMismatch(f"the index in {index.dir} is for {recorded}, not {root}; use another --index-dir")
        q.set_meta(s, MetaKey.ROOT, str(root))
        q.set_meta(s, MetaKey.INDEX_INSIDE_ROOT, "1" if inside else "0")


def _apply_plan(index: Index, plan: Plan, report: BuildReport) -> None:
    """All row changes of the plan in one transaction (new rows enter as pending)."""
    with session_scope(index.engine) as s:
        q.insert_pending(s, ((f.path, f.size, f.mtime_ns) for f in plan.new))
        q.update_stat(s, [{"id": i, "size": f.size, "mtime_ns": f.mtime_ns} for i, f in plan.touched])
        q.update_stat(s, [{"id": i, "path": f.path, "size": f.size, "mtime_ns": f.mtime_ns} for i, f in plan.moved])
        q.update_stat(s, [{"id": i, "size": f.size, "mtime_ns": f.mtime_ns, "sha256": None} for i, f in plan.reembed])
        q.set_pending(s, [i for i, _ in plan.reembed])
        q.delete_images(s, plan.gone)
        _record_problems(s, plan.problems)
        if plan.gone or plan.reembed:
            q.bump_generation(s)
    report.moved, report.touched, report.removed = len(plan.moved), len(plan.touched), len(plan.gone)
    report.unchanged = plan.unchanged
    report.failed += len(plan.problems)
    report.failures.extend(plan.problems)


def _record_problems(s: Session, problems: list[tuple[str, str]]) -> None:
    for path, reason in problems:
        row = q.image_by_path(s, path)
        if row is None:
            q.insert_pending(s, [(path, 0, 0)])
            row = q.image_by_path(s, path)
        assert row is not None
        q.mark_failed(s, [{"id": row.id, "error": reason, "sha256": None}])


def _embed(
    index: Index,
    root: Path,
    todo: list[tuple[int, str]],
    spec: ModelSpec,
    options: BuildOptions,
    progress: Progress,
    stop: threading.Event,
    report: BuildReport,
    ray: RaySettings | None,
) -> None:
    encoder = load_encoder(index, spec)
    with session_scope(index.engine) as s:
        store = open_embedding_store(s, index.dir, encoder.embedding_dim, dtype=options.store_dtype)
    dropped = store.drop_torn_tail()
    if dropped:
        logger.warning("dropped %d bytes of an interrupted write from the embedding store", dropped)
    if ray is not None:
        from birder_index.indexer.ray_pipeline import run_ray_pipeline  # Ray loads only for --ray

        counts = run_ray_pipeline(
            index, root, todo, encoder, store, options=options, settings=ray, progress=progress, stop=stop
        )
    else:
        counts = run_pipeline(index, root, todo, encoder, store, options=options, progress=progress, stop=stop)
    report.indexed, report.reused, report.pending = counts.indexed, counts.reused, counts.pending
    report.failed += counts.failed
    report.failures.extend(counts.failures)
    report.interrupted = counts.interrupted
    report.actors = counts.actors
    report.embed_seconds, report.compile_seconds = counts.embed_seconds, counts.compile_seconds


@contextmanager
def _stop_on_signals(stop: threading.Event) -> Iterator[None]:
    """First Ctrl-C (or SIGTERM): finish the current batch and stop. Second Ctrl-C: stop now (still safe)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, _frame: object) -> None:
        if stop.is_set() and signum == signal.SIGINT:
            raise KeyboardInterrupt
        stop.set()

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
