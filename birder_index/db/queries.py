"""Query functions, each taking a Session first. SQL lives here and nowhere else."""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterable
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from typing import TypeVar

import numpy as np
from sqlalchemy import and_
from sqlalchemy import delete
from sqlalchemy import func
from sqlalchemy import insert
from sqlalchemy import select
from sqlalchemy import tuple_
from sqlalchemy import update
from sqlalchemy.orm import Session

from birder_index.db.models import FAILED
from birder_index.db.models import INDEXED
from birder_index.db.models import PENDING
from birder_index.db.models import DedupAction
from birder_index.db.models import DedupPlan
from birder_index.db.models import Image
from birder_index.db.models import IndexManifest
from birder_index.db.models import Label
from birder_index.db.models import LabelSet
from birder_index.db.models import Meta
from birder_index.db.models import MetaKey
from birder_index.db.models import Model
from birder_index.db.models import NotDuplicate
from birder_index.db.models import Prediction
from birder_index.db.models import utcnow

T = TypeVar("T")

# -- meta -------------------------------------------------------------------------------------------------------------


def get_meta(s: Session, key: MetaKey, *, default: str | None = None) -> str | None:
    row = s.get(Meta, key.value)
    return row.value if row is not None else default


def get_int(s: Session, key: MetaKey, *, default: int = 0) -> int:
    value = get_meta(s, key)
    return int(value) if value is not None else default


def set_meta(s: Session, key: MetaKey, value: str | int | float) -> None:
    s.merge(Meta(key=key.value, value=str(value)))


def get_json(s: Session, key: MetaKey) -> Any:
    value = get_meta(s, key)
    return json.loads(value) if value is not None else None


def set_json(s: Session, key: MetaKey, value: Any) -> None:
    set_meta(s, key, json.dumps(value))


def bump_generation(s: Session) -> int:
    """The data generation counts commits that change the indexed set; the FAISS file records the one it holds."""
    gen = get_int(s, MetaKey.GENERATION) + 1
    set_meta(s, MetaKey.GENERATION, gen)
    return gen


# -- model ------------------------------------------------------------------------------------------------------------


def get_model(s: Session) -> Model | None:
    return s.scalars(select(Model).order_by(Model.id.desc()).limit(1)).first()


# -- images: scanning state -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Known:
    id: int
    size: int | None
    mtime_ns: int | None
    status: str
    sha256: str | None


def known_files(s: Session) -> dict[str, Known]:
    """path -> what the database knows of it, for diffing a fresh scan (one query, no ORM objects)."""
    rows = s.execute(select(Image.path, Image.id, Image.size, Image.mtime_ns, Image.status, Image.sha256))
    return {path: Known(i, size, mtime, status, sha) for path, i, size, mtime, status, sha in rows}


def insert_pending(s: Session, files: Iterable[tuple[str, int, int]]) -> None:
    rows = [{"path": p, "size": size, "mtime_ns": mtime, "status": PENDING} for p, size, mtime in files]
    if rows:
        s.execute(insert(Image), rows)


def pending(s: Session) -> list[tuple[int, str]]:
    """(id, path) of images waiting to be embedded, in id order (the order they were scanned)."""
    return [
        (i, p) for i, p in s.execute(select(Image.id, Image.path).where(Image.status == PENDING).order_by(Image.id))
    ]


def set_pending(s: Session, ids: Sequence[int]) -> None:
    for chunk in _chunks(ids):
        s.execute(update(Image).where(Image.id.in_(chunk)).values(status=PENDING, error=None))


def mark_indexed(s: Session, rows: Sequence[dict[str, Any]]) -> None:
    """rows: dicts with id, vector_row, sha256, width, height, size, mtime_ns."""
    if rows:
        now = utcnow()
        s.execute(
            update(Image),
            [{**r, "status": INDEXED, "error": None, "indexed_at": now} for r in rows],
        )


def mark_failed(s: Session, rows: Sequence[dict[str, Any]]) -> None:
    """rows: dicts with id, error, and where known sha256, size, mtime_ns."""
    if rows:
        s.execute(update(Image), [{**r, "status": FAILED, "vector_row": None} for r in rows])


def update_stat(s: Session, rows: Sequence[dict[str, Any]]) -> None:
    """rows: dicts with id, size, mtime_ns (and optionally path): metadata changes that keep the vector."""
    if rows:
        s.execute(update(Image), list(rows))


def delete_images(s: Session, ids: Sequence[int]) -> None:
    for chunk in _chunks(ids):
        s.execute(delete(Image).where(Image.id.in_(chunk)))


def upsert_indexed(s: Session, paths: Sequence[str], rows: np.ndarray) -> list[int]:
    """Indexed rows for imported vectors: existing paths get the new store row, others are inserted. Returns ids."""
    existing: dict[str, int] = {}
    for chunk in _chunks(paths):
        existing.update({p: i for p, i in s.execute(select(Image.path, Image.id).where(Image.path.in_(chunk)))})
    now = utcnow()
    updates = [
        {"id": existing[p], "vector_row": int(r), "status": INDEXED, "indexed_at": now}
        for p, r in zip(paths, rows, strict=True)
        if p in existing
    ]
    if updates:
        s.execute(update(Image), updates)
    fresh = [
        {"path": p, "vector_row": int(r), "status": INDEXED, "indexed_at": now}
        for p, r in zip(paths, rows, strict=True)
        if p not in existing
    ]
    if fresh:
        stmt = insert(Image).returning(Image.path, Image.id, sort_by_parameter_order=True)
        existing.update({p: i for p, i in s.execute(stmt, fresh)})
    return [existing[p] for p in paths]


ATTRIBUTE_ROWS = 1 << 16  # rows of `indexed_attributes` turned into arrays at a time
INT_ATTRIBUTES = (Image.id, Image.width, Image.height, Image.size, Image.mtime_ns)


def indexed_rows(s: Session) -> tuple[np.ndarray, np.ndarray]:
    """(ids, store rows) of every indexed image, by id."""
    result = s.execute(select(Image.id, Image.vector_row).where(Image.status == INDEXED).order_by(Image.id))
    arr = _int_pairs(result)
    return arr[:, 0].copy(), arr[:, 1].copy()


def _int_pairs(rows: Iterable[Any]) -> np.ndarray:
    """(n, 2) int64 from result rows of two integers. np.array over a list of rows probes each row for the array
    protocols (an exception per row): 18-20 s for 1M rows, where iterating their values took 2-6 s."""
    return np.fromiter(itertools.chain.from_iterable(rows), np.int64).reshape(-1, 2)


def vector_rows_by_sha(s: Session) -> dict[str, int]:
    """sha256 -> a store row holding that content's embedding (content embedded once, whatever its paths)."""
    rows = s.execute(select(Image.sha256, Image.vector_row).where(Image.status == INDEXED, Image.sha256.is_not(None)))
    return {sha: row for sha, row in rows if sha is not None and row is not None}


def indexed_attributes(s: Session) -> dict[str, np.ndarray]:
    """Columns of every indexed image as arrays, in path order: id, width, height, size, mtime_ns (-1 where
    unknown), sha256 (S64, empty where unknown).

    Filled ATTRIBUTE_ROWS rows at a time into arrays sized by a count first: the rows of 10M images as Python
    objects took 3.3 GB at their peak, this 1.2 GB (docs/benchmarks.md#one-machine-1m-3m-10m)."""
    n = s.execute(select(func.count()).select_from(Image).where(Image.status == INDEXED)).scalar_one()
    stmt = (
        select(*(func.coalesce(c, -1) for c in INT_ATTRIBUTES), func.coalesce(Image.sha256, ""))
        .where(Image.status == INDEXED)
        .order_by(Image.path)
        .execution_options(yield_per=ATTRIBUTE_ROWS)
    )
    table, sha = np.zeros((n, len(INT_ATTRIBUTES)), np.int64), np.zeros(n, "S64")
    at = 0
    for part in s.connection().execute(stmt).partitions():  # Core rows: the ORM's row processing doubled the time
        end = min(n, at + len(part))  # rows indexed since the count are left out
        values = list(zip(*part, strict=True))  # columns as tuples: numpy reads those at C speed
        for i in range(len(INT_ATTRIBUTES)):
            table[at:end, i] = np.array(values[i][: end - at], np.int64)
        sha[at:end] = np.array(values[-1][: end - at], "S64")
        at = end
    columns = {c.key: table[:at, i] for i, c in enumerate(INT_ATTRIBUTES)}
    return columns | {"sha256": sha[:at]}


def counts(s: Session) -> dict[str, int]:
    rows = s.execute(select(Image.status, func.count()).group_by(Image.status))
    out = {PENDING: 0, INDEXED: 0, FAILED: 0}
    out.update({status: n for status, n in rows})
    return out


def failures(s: Session) -> list[tuple[str, str]]:
    rows = s.execute(select(Image.path, Image.error).where(Image.status == FAILED).order_by(Image.path))
    return [(p, e or "") for p, e in rows]


def paths_of(s: Session, ids: Iterable[int]) -> dict[int, str]:
    out: dict[int, str] = {}
    for chunk in _chunks(sorted({int(i) for i in ids if i >= 0})):
        out.update({i: p for i, p in s.execute(select(Image.id, Image.path).where(Image.id.in_(chunk)))})
    return out


def images_by_ids(s: Session, ids: Iterable[int]) -> dict[int, Image]:
    out: dict[int, Image] = {}
    for chunk in _chunks(sorted({int(i) for i in ids})):
        out.update({img.id: img for img in s.scalars(select(Image).where(Image.id.in_(chunk)))})
    return out


def image_by_path(s: Session, path: str) -> Image | None:
    return s.scalars(select(Image).where(Image.path == path)).first()


# -- images: browsing ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ImageRow:
    """What a page shows of an image: no ORM object, so it outlives its session."""

    id: int
    path: str  # relative to the collection root, "/"-separated
    size: int | None
    mtime_ns: int | None
    width: int | None
    height: int | None
    status: str
    error: str | None


_ROW_COLUMNS = (Image.id, Image.path, Image.size, Image.mtime_ns, Image.width, Image.height, Image.status, Image.error)
SORTS = ("path", "date", "-date")  # by path; by file date, oldest or newest first


def _under(s: Session, prefix: str | None) -> Any:
    """Rows whose path lies in the folder `prefix` (relative, "/"-separated) or below; every row for None or "".
    An exact prefix comparison: LIKE would read `_` and `%` as wildcards and, in SQLite, ignore ASCII case. In
    SQLite, whose text compares byte by byte, a range on the path's index ("a/" <= path < "a0") finds the rows
    first ('0' follows '/'), so a folder of 10,000 in a million is read without a scan of the rest; other
    databases may collate otherwise, and compare the prefix alone."""
    folder = (prefix or "").strip("/")
    if not folder:
        return Image.id.is_not(None)
    exact = func.substr(Image.path, 1, len(folder) + 1) == folder + "/"
    if s.get_bind().dialect.name == "sqlite":
        return and_(Image.path >= folder + "/", Image.path < folder + "0", exact)
    return exact


def _has_status(status: str) -> Any:
    """`status = X` for a filter over most rows (indexed): written so that no database reads them through the
    status index, which holds nearly every row under that one value (SQLite then read a million rows to sort them
    by path for a page of 100); a rare status (failed, pending) is best found through it."""
    if status == INDEXED:
        return func.coalesce(Image.status, "") == status
    return Image.status == status


def browse_images(
    s: Session, *, offset: int = 0, limit: int = 100, sort: str = "path", folder: str | None = None,
    status: str | None = None,
) -> list[ImageRow]:  # fmt: skip
    """One page of images in a stable order (ties by id), optionally those of one folder or one status."""
    order = {"path": (Image.path,), "date": (Image.mtime_ns, Image.id), "-date": (Image.mtime_ns.desc(), Image.id)}
    stmt = select(*_ROW_COLUMNS).where(_under(s, folder)).order_by(*order[sort]).offset(offset).limit(limit)
    if status is not None:
        stmt = stmt.where(_has_status(status))
    return [ImageRow(*row) for row in s.execute(stmt)]


def count_images(s: Session, *, folder: str | None = None, status: str | None = None) -> int:
    stmt = select(func.count()).select_from(Image).where(_under(s, folder))
    if status is not None:
        stmt = stmt.where(Image.status == status if not folder else _has_status(status))
    return int(s.execute(stmt).scalar_one())


def image_rows(s: Session, ids: Iterable[int]) -> dict[int, ImageRow]:
    out: dict[int, ImageRow] = {}
    for chunk in _chunks(sorted({int(i) for i in ids})):
        out.update({row[0]: ImageRow(*row) for row in s.execute(select(*_ROW_COLUMNS).where(Image.id.in_(chunk)))})
    return out


def indexed_ids_under(s: Session, folder: str) -> np.ndarray:
    """Ids of the indexed images in a folder (or below), sorted."""
    rows = s.execute(select(Image.id).where(_has_status(INDEXED), _under(s, folder)))
    return np.sort(np.array([r[0] for r in rows], np.int64))


def folder_counts(s: Session) -> dict[str, int]:
    """Every folder holding indexed images ("" for the root), with the number of images at or below it."""
    out: dict[str, int] = {}
    for (path,) in s.execute(select(Image.path).where(Image.status == INDEXED)):
        parts = path.split("/")[:-1]
        out[""] = out.get("", 0) + 1
        for depth in range(1, len(parts) + 1):
            key = "/".join(parts[:depth])
            out[key] = out.get(key, 0) + 1
    return out


# -- labels -----------------------------------------------------------------------------------------------------------


def label_set_id(s: Session, name: str, *, create: bool = False) -> int | None:
    found = s.scalars(select(LabelSet.id).where(LabelSet.name == name)).first()
    if found is None and create:
        row = LabelSet(name=name)
        s.add(row)
        s.flush()
        return row.id
    return found


def set_labels(s: Session, set_name: str, ids: Sequence[int], labels: Sequence[str]) -> None:
    """Label images in a set (replacing their previous label in that set)."""
    set_id = label_set_id(s, set_name, create=True)
    for chunk in _chunks(list(ids)):
        s.execute(delete(Label).where(Label.set_id == set_id, Label.image_id.in_(chunk)))
    rows = [{"image_id": int(i), "set_id": set_id, "label": str(lab)} for i, lab in zip(ids, labels, strict=True)]
    if rows:
        s.execute(insert(Label), rows)


def labels_of(s: Session, set_name: str) -> tuple[np.ndarray, list[str]]:
    """(image ids, labels) of the indexed images labelled in a set, by id."""
    rows = s.execute(
        select(Label.image_id, Label.label)
        .join(LabelSet, LabelSet.id == Label.set_id)
        .join(Image, Image.id == Label.image_id)
        .where(LabelSet.name == set_name, Image.status == INDEXED)
        .order_by(Label.image_id)
    ).all()
    return np.array([r[0] for r in rows], np.int64), [r[1] for r in rows]


def label_summary(s: Session, *, set_name: str | None = None) -> list[tuple[str, str, int]]:
    """(set, label, number of images) for every class, or those of one set."""
    stmt = (
        select(LabelSet.name, Label.label, func.count())
        .join(Label, Label.set_id == LabelSet.id)
        .group_by(LabelSet.name, Label.label)
        .order_by(LabelSet.name, Label.label)
    )
    if set_name is not None:
        stmt = stmt.where(LabelSet.name == set_name)
    return [(a, b, c) for a, b, c in s.execute(stmt)]


def remove_labels(s: Session, set_name: str, *, label: str | None = None) -> int:
    """Remove a class from a set, or the whole set; returns how many labels went."""
    set_id = label_set_id(s, set_name)
    if set_id is None:
        return 0
    stmt = delete(Label).where(Label.set_id == set_id)
    if label is not None:
        stmt = stmt.where(Label.label == label)
    n = s.execute(stmt).rowcount  # type: ignore[attr-defined]
    if label is None:
        s.execute(delete(Prediction).where(Prediction.set_id == set_id))
        s.execute(delete(LabelSet).where(LabelSet.id == set_id))
    return int(n)


def labelled_ids(s: Session, set_name: str, label: str) -> np.ndarray:
    """Ids of the indexed images labelled `label` in a set, sorted."""
    rows = s.execute(
        select(Label.image_id)
        .join(LabelSet, LabelSet.id == Label.set_id)
        .join(Image, Image.id == Label.image_id)
        .where(LabelSet.name == set_name, Label.label == label, Image.status == INDEXED)
        .order_by(Label.image_id)
    )
    return np.array([r[0] for r in rows], np.int64)


def labels_for(s: Session, set_name: str, ids: Iterable[int]) -> dict[int, str]:
    """image id -> its label in a set, for those of `ids` that have one."""
    set_id = label_set_id(s, set_name)
    out: dict[int, str] = {}
    if set_id is None:
        return out
    for chunk in _chunks(sorted({int(i) for i in ids})):
        stmt = select(Label.image_id, Label.label).where(Label.set_id == set_id, Label.image_id.in_(chunk))
        out.update({i: lab for i, lab in s.execute(stmt)})
    return out


def remove_image_labels(s: Session, set_name: str, ids: Sequence[int]) -> int:
    """Take images out of a set (their label in it goes); returns how many labels went."""
    set_id = label_set_id(s, set_name)
    if set_id is None:
        return 0
    n = 0
    for chunk in _chunks(list(ids)):
        result = s.execute(delete(Label).where(Label.set_id == set_id, Label.image_id.in_(chunk)))
        n += int(result.rowcount)  # type: ignore[attr-defined]
    return n


def label_set_names(s: Session) -> list[str]:
    """Every label set, by name (an empty set too)."""
    return list(s.scalars(select(LabelSet.name).order_by(LabelSet.name)))


def unlabelled_ids(s: Session, set_name: str) -> np.ndarray:
    set_id = label_set_id(s, set_name)
    labelled = select(Label.image_id).where(Label.set_id == set_id)
    rows = s.execute(select(Image.id).where(Image.status == INDEXED, Image.id.not_in(labelled)).order_by(Image.id))
    return np.array([r[0] for r in rows], np.int64)


def ids_by_path(s: Session, paths: Sequence[str]) -> dict[str, int]:
    out: dict[str, int] = {}
    for chunk in _chunks(paths):
        out.update({p: i for p, i in s.execute(select(Image.path, Image.id).where(Image.path.in_(chunk)))})
    return out


def set_predictions(s: Session, set_name: str, rows: Sequence[tuple[int, str, float, str]]) -> None:
    """(image id, label, score, method) for unlabelled images; replaces earlier predictions of the set."""
    set_id = label_set_id(s, set_name, create=True)
    s.execute(delete(Prediction).where(Prediction.set_id == set_id))
    if rows:
        now = utcnow()
        s.execute(insert(Prediction), [
            {"image_id": i, "set_id": set_id, "label": lab, "score": sc, "method": m, "predicted_at": now}
            for i, lab, sc, m in rows
        ])  # fmt: skip


# -- not-duplicate marks ----------------------------------------------------------------------------------------------


def _ordered(pairs: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
    """Pairs as stored: smaller id first, each once, no image paired with itself."""
    return sorted({(min(int(a), int(b)), max(int(a), int(b))) for a, b in pairs if int(a) != int(b)})


def mark_not_duplicates(s: Session, pairs: Iterable[tuple[int, int]]) -> int:
    """Record pairs of images as not duplicates (those already marked stay as they are); returns how many are new."""
    wanted = _ordered(pairs)
    have: set[tuple[int, int]] = set()
    for chunk in _chunks(wanted, 400):  # two parameters a pair
        stmt = select(NotDuplicate.a_id, NotDuplicate.b_id).where(
            tuple_(NotDuplicate.a_id, NotDuplicate.b_id).in_(chunk)
        )
        have.update((a, b) for a, b in s.execute(stmt))
    fresh = [{"a_id": a, "b_id": b, "created_at": utcnow()} for a, b in wanted if (a, b) not in have]
    if fresh:
        s.execute(insert(NotDuplicate), fresh)
    return len(fresh)


def unmark_not_duplicates(s: Session, pairs: Iterable[tuple[int, int]]) -> int:
    """Forget marks; returns how many went."""
    n = 0
    for chunk in _chunks(_ordered(pairs), 400):
        result = s.execute(delete(NotDuplicate).where(tuple_(NotDuplicate.a_id, NotDuplicate.b_id).in_(chunk)))
        n += int(result.rowcount)  # type: ignore[attr-defined]
    return n


def not_duplicate_pairs(s: Session) -> tuple[np.ndarray, np.ndarray]:
    """(a ids, b ids) of every marked pair, a < b, sorted."""
    rows = s.execute(select(NotDuplicate.a_id, NotDuplicate.b_id).order_by(NotDuplicate.a_id, NotDuplicate.b_id))
    arr = _int_pairs(rows)
    return arr[:, 0].copy(), arr[:, 1].copy()


# -- the FAISS manifest -----------------------------------------------------------------------------------------------


def get_manifest(s: Session) -> IndexManifest | None:
    return s.get(IndexManifest, 1)


def set_manifest(s: Session, **fields: Any) -> IndexManifest:
    row = s.get(IndexManifest, 1)
    if row is None:
        row = IndexManifest(id=1, **fields)
        s.add(row)
    else:
        for key, value in fields.items():
            setattr(row, key, value)
    row.built_at = utcnow()
    return row


# -- dedup plans ------------------------------------------------------------------------------------------------------


def add_plan(s: Session, plan: DedupPlan, actions: Sequence[DedupAction]) -> int:
    """Record a plan and its actions (all `planned`); returns the plan's number."""
    s.add(plan)
    s.flush()
    for a in actions:
        a.plan_id = plan.id
    s.add_all(actions)
    return plan.id


def get_plan(s: Session, plan_id: int) -> DedupPlan | None:
    return s.get(DedupPlan, plan_id)


def set_plan_csv(s: Session, plan_id: int, csv_path: str) -> None:
    s.execute(update(DedupPlan).where(DedupPlan.id == plan_id).values(csv=csv_path))


def plan_by_csv(s: Session, csv_path: str) -> DedupPlan | None:
    return s.scalars(select(DedupPlan).where(DedupPlan.csv == csv_path).order_by(DedupPlan.id.desc())).first()


def list_plans(s: Session) -> list[tuple[DedupPlan, dict[str, int]]]:
    """Every recorded plan, newest first, with how many of its actions are in each state."""
    counts: dict[int, dict[str, int]] = {}
    for plan_id, state, n in s.execute(
        select(DedupAction.plan_id, DedupAction.state, func.count()).group_by(DedupAction.plan_id, DedupAction.state)
    ):
        counts.setdefault(plan_id, {})[state] = n
    plans = s.scalars(select(DedupPlan).order_by(DedupPlan.id.desc())).all()
    return [(p, counts.get(p.id, {})) for p in plans]


def plan_actions(s: Session, plan_id: int) -> list[DedupAction]:
    return list(s.scalars(select(DedupAction).where(DedupAction.plan_id == plan_id).order_by(DedupAction.seq)))


def set_action_state(s: Session, plan_id: int, seq: int, state: str, *, reason: str | None = None) -> None:
    s.execute(
        update(DedupAction)
        .where(DedupAction.plan_id == plan_id, DedupAction.seq == seq)
        .values(state=state, reason=reason)
    )


def _chunks(values: Sequence[T], size: int = 900) -> Iterable[Sequence[T]]:
    """SQLite caps bound parameters per statement; IN lists go in chunks."""
    for start in range(0, len(values), size):
        yield values[start : start + size]
