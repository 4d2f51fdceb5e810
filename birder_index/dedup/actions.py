"""Acting on duplicates: move them aside or delete them, never a keeper, never a file that is not what the index
recorded, always from a plan recorded in the index's own database first. The rules: docs/robustness.md#file-actions.

- Planning (`plan_actions`) records, for each duplicate, its path, size and sha256 as indexed, and its group's
  keeper's. An index without a photo folder (imported embeddings) has no files to act on: refused.
- Applying (`apply_plan`) records the plan in the database, writes a CSV export for people, then, immediately
  before each action, checks the duplicate and its keeper again (`check_file`): each must exist, be a regular file
  and not a symlink, lie inside its photo folder and have the size and content hash the index recorded. A file or
  a group that fails is skipped with its reason, never acted on, so at least the checked keeper of every group
  remains. Only the files acted on and their keepers are hashed again, not the collection.
- A move within a filesystem is a hard link then an unlink (the destination is never overwritten); across
  filesystems it is copy, verify, fsync, rename into place, then delete. A killed run leaves every photo at least
  once, in place or at its destination; running it again finishes the moves it finds half done.
- Undo (`undo_plan`) acts only on recorded plans, file by file with the same checks, restoring atomically
  (temporary name, fsync, rename, fsync the folder); a killed undo runs again to completion. Deletions cannot be
  undone.
"""

from __future__ import annotations

import csv
import errno
import glob
import hashlib
import logging
import os
import stat
from collections.abc import Sequence
from dataclasses import dataclass
from dataclasses import field
from datetime import datetime
from pathlib import Path

from birder_index.db import queries as q
from birder_index.db.engine import session_scope
from birder_index.db.models import DedupAction
from birder_index.db.models import DedupPlan
from birder_index.dedup.find import DedupResult
from birder_index.errors import BirderIndexError
from birder_index.indexer.index import Index
from birder_index.indexer.layout import fsync_dir
from birder_index.indexer.lock import WriterLock
from birder_index.indexer.options import BuildOptions
from birder_index.indexer.options import BuildReport
from birder_index.output import csv_text
from birder_index.output import write_text
from birder_index.progress import Progress
from birder_index.progress import silent

logger = logging.getLogger(__name__)

MOVE, DELETE = "move", "delete"
PLANNED, DONE, SKIPPED, UNDONE = "planned", "done", "skipped", "undone"
_CHUNK = 1 << 20
# A test hook in the manner of faiss contrib's `crash_at`: BIRDER_INDEX_CRASH_AT="point:n" ends the process at the
# n-th time it passes `point`, as a SIGKILL would (tests/dedup/test_actions.py).
CRASH_AT = "BIRDER_INDEX_CRASH_AT"
_passes: dict[str, int] = {}


def _crash_point(point: str) -> None:
    spec = os.environ.get(CRASH_AT)
    if not spec or not spec.startswith(point + ":"):
        return
    _passes[point] = _passes.get(point, 0) + 1
    if _passes[point] == int(spec.rsplit(":", 1)[1]):
        os._exit(137)


@dataclass(frozen=True, kw_only=True)
class Action:
    seq: int
    kind: str  # MOVE or DELETE
    image_id: int
    path: Path  # absolute, inside `root`
    dst: Path | None  # moves only
    size: int
    sha256: str
    keeper: Path  # absolute, inside `keeper_root`
    keeper_root: Path
    keeper_size: int
    keeper_sha256: str


@dataclass
class Outcome:
    """What applying or undoing a plan did: each action done, or skipped with its reason."""

    plan_id: int
    kind: str
    done: list[Action] = field(default_factory=list)
    skipped: list[tuple[Action, str]] = field(default_factory=list)
    deletions_left: int = 0  # undo: deleted files, which cannot be brought back
    csv: Path | None = None


# -- planning -----------------------------------------------------------------------------------------------------


def plan_actions(
    index: Index,
    result: DedupResult,
    *,
    move_to: Path | None = None,
    delete: bool = False,
    against: Index | None = None,
) -> list[Action]:
    """One action per duplicate (a keeper is never in the plan), with what the index recorded of it and its keeper."""
    check_action_options(move_to=move_to, delete=delete)
    root = _photo_root(index)
    keeper_index = against or index
    keeper_root = _photo_root(keeper_index)
    if move_to is not None:
        move_to = Path(
            os.path.abspath(move_to)
        )  # the plan records where files went, whatever folder its undo runs from
        _check_out_of_the_scan(move_to, root)
    with session_scope(index.engine) as s:
        members = q.images_by_ids(s, [m.id for g in result.groups for m in g.duplicates])
    with session_scope(keeper_index.engine) as s:
        keepers = q.images_by_ids(s, [g.keeper.id for g in result.groups])
    keeper_ids = {g.keeper.id for g in result.groups} if against is None else set()
    actions: list[Action] = []
    for g in result.groups:
        kept = keepers.get(g.keeper.id)
        for m in g.duplicates:
            row = members.get(m.id)
            if row is None or kept is None or m.id in keeper_ids:  # gone since, or a keeper of another group
                continue
            src = root / row.path
            dst = move_to / row.path if move_to is not None else None
            actions.append(
                Action(
                    seq=len(actions),
                    kind=MOVE if move_to is not None else DELETE,
                    image_id=m.id,
                    path=src,
                    dst=dst,
                    size=row.size or 0,
                    sha256=row.sha256 or "",
                    keeper=keeper_root / kept.path,
                    keeper_root=keeper_root,
                    keeper_size=kept.size or 0,
                    keeper_sha256=kept.sha256 or "",
                )
            )
    return actions


def check_action_options(*, move_to: Path | None, delete: bool) -> None:
    """Refuse contradictory actions before any work (before dedup runs)."""
    if move_to is not None and delete:
        raise BirderIndexError("choose one of --move-to DIR and --delete, not both")


def _photo_root(index: Index) -> Path:
    root = index.root
    if root is None:
        raise BirderIndexError(
            f"the index in {index.dir} holds imported embeddings without their photo folder: dedup lists their "
            "duplicates but moves and deletes no file"
        )
    return root.resolve()


def _check_out_of_the_scan(move_to: Path, root: Path) -> None:
    """Refuse a destination the next build would scan: the moved files would be indexed (and found) again."""
    try:
        inside = move_to.resolve().relative_to(root)
    except ValueError:
        return
    if not any(part.startswith(".") for part in inside.parts):  # hidden folders are not scanned
        raise BirderIndexError(
            f"--move-to {move_to} is inside the photo folder, where the next build would index the moved files "
            f"again: use a folder outside it, or a hidden one such as {root / '.duplicates'}"
        )


# -- the checks -----------------------------------------------------------------------------------------------------


def hash_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


class Checker:
    """`check(path, root, size, sha256)`: None when the file is what the index recorded, else the reason.

    A file hashed once in this run is not hashed again while its inode, size, mtime and ctime stay the same (a
    keeper of many duplicates); any write changes its ctime."""

    def __init__(self) -> None:
        self._hashed: dict[tuple[int, int, int, int, int], str] = {}

    def check(self, path: Path, root: Path, size: int, sha256: str) -> str | None:
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            return "missing"
        except OSError as e:
            return (e.strerror or str(e)).lower()
        if stat.S_ISLNK(st.st_mode):
            return "a symlink"
        if not stat.S_ISREG(st.st_mode):
            return "not a regular file"
        if not inside(path, root):
            return f"outside the photo folder {root}"
        if st.st_size != size:
            return "changed since it was indexed (size)"
        key = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
        if key not in self._hashed:
            try:
                self._hashed[key] = hash_file(path)
            except OSError as e:
                return (e.strerror or str(e)).lower()
        return None if self._hashed[key] == sha256 else "changed since it was indexed (content)"


def inside(path: Path, root: Path) -> bool:
    """The file's real folder is the root or below it (no `..`, no symlinked folder leading out)."""
    real_root = os.path.realpath(root)
    real_dir = os.path.realpath(path.parent)
    return real_dir == real_root or real_dir.startswith(real_root.rstrip(os.sep) + os.sep)


# -- applying -------------------------------------------------------------------------------------------------------


def apply_plan(
    index: Index, actions: Sequence[Action], *, move_to: Path | None, csv_file: Path | None = None,
    progress: Progress = silent,
) -> Outcome:  # fmt: skip
    """Record the plan, then carry it out action by action, each after its checks; under the writer lock. The
    plan's CSV export goes to `csv_file`, by default `birder-index-plan-N.csv` in the destination folder (or, for
    deletions, the index folder)."""
    kind = MOVE if move_to is not None else DELETE
    root = _photo_root(index)
    with WriterLock(index.dir, engine=index.engine):
        plan_id = _record(index, actions, kind=kind, root=root, move_to=move_to)
        if csv_file is None:
            (move_to or index.dir).mkdir(parents=True, exist_ok=True)
            csv_file = (move_to or index.dir) / f"birder-index-plan-{plan_id}.csv"
        with session_scope(index.engine) as s:
            q.set_plan_csv(s, plan_id, str(csv_file.resolve()))
        outcome = Outcome(plan_id, kind, csv=csv_file)
        write_csv(actions, csv_file)
        checker = Checker()
        verb = "moving" if kind == MOVE else "deleting"
        for n, a in enumerate(actions):
            progress(f"checking and {verb} duplicates", n, len(actions))
            reason = _check_pair(checker, a, root)
            if reason is None:
                reason = _move(a, plan_id) if a.kind == MOVE else _delete(a.path)
            _finish(index, outcome, a, reason, done=DONE)
    return outcome


def check_plan(
    index: Index, actions: Sequence[Action], *, progress: Progress = silent
) -> list[tuple[Action, str | None]]:
    """A dry run: each action with the reason it would be skipped now (None: it would be carried out)."""
    root, checker = _photo_root(index), Checker()
    out = []
    for n, a in enumerate(actions):
        progress("checking the plan", n, len(actions))
        reason = _check_pair(checker, a, root)
        if reason is None and a.kind == MOVE and a.dst is not None and os.path.lexists(a.dst):
            reason = (
                None if _holds(a.dst, a.size, a.sha256) else f"{a.dst} already exists; nothing would be overwritten"
            )
        out.append((a, reason))
    return out


def _check_pair(checker: Checker, a: Action, root: Path) -> str | None:
    """The duplicate and its keeper, checked now; for a move whose destination already holds the duplicate's bytes
    (an interrupted run), the duplicate may be gone."""
    keeper = checker.check(a.keeper, a.keeper_root, a.keeper_size, a.keeper_sha256)
    if keeper is not None:
        return f"its keeper {a.keeper} is {keeper}"
    if os.path.lexists(a.keeper) and os.path.lexists(a.path) and os.path.samefile(a.keeper, a.path):
        return f"it is the same file as its keeper {a.keeper}"
    if a.kind == MOVE and a.dst is not None and not os.path.lexists(a.path) and _holds(a.dst, a.size, a.sha256):
        return None  # moved by an interrupted run: nothing left to do but record it
    return _prefixed(checker.check(a.path, root, a.size, a.sha256))


def _prefixed(reason: str | None) -> str | None:
    return None if reason is None else f"it is {reason}"


def _holds(path: Path, size: int, sha256: str) -> bool:
    """A regular file (not a symlink) with these bytes."""
    try:
        st = os.lstat(path)
        return stat.S_ISREG(st.st_mode) and st.st_size == size and hash_file(path) == sha256
    except OSError:
        return False


def _record(index: Index, actions: Sequence[Action], *, kind: str, root: Path, move_to: Path | None) -> int:
    plan = DedupPlan(kind=kind, root=str(root), move_to=str(move_to.resolve()) if move_to else None)
    rows = [
        DedupAction(
            seq=a.seq,
            image_id=a.image_id,
            path=str(a.path),
            dst=str(a.dst) if a.dst else None,
            size=a.size,
            sha256=a.sha256,
            keeper=str(a.keeper),
            keeper_root=str(a.keeper_root),
            keeper_size=a.keeper_size,
            keeper_sha256=a.keeper_sha256,
            state=PLANNED,
        )
        for a in actions
    ]
    with session_scope(index.engine) as s:
        return q.add_plan(s, plan, rows)


def _finish(index: Index, outcome: Outcome, a: Action, reason: str | None, *, done: str, failed: str = SKIPPED) -> None:
    """Record an action's outcome: `done`, or `failed` with its reason (an undo that cannot restore a file leaves
    it DONE, still moved, so a later undo can try again)."""
    with session_scope(index.engine) as s:
        q.set_action_state(s, outcome.plan_id, a.seq, done if reason is None else failed, reason=reason)
    if reason is None:
        outcome.done.append(a)
    else:
        outcome.skipped.append((a, reason))
        logger.info("skipped %s: %s", a.path, reason)


def _delete(path: Path) -> str | None:
    _crash_point("delete")
    try:
        path.unlink()
    except OSError as e:
        return f"not deleted: {(e.strerror or str(e)).lower()}"
    fsync_dir(path.parent)
    return None


def _move(a: Action, plan_id: int) -> str | None:
    assert a.dst is not None
    return transfer(a.path, a.dst, size=a.size, sha256=a.sha256, tmp=_tmp_name(a.dst, plan_id, a.seq, "move"))


def _tmp_name(target: Path, plan_id: int, seq: int, what: str) -> Path:
    return target.with_name(f".{target.name}.birder-index-{what}-{plan_id}-{seq}.part")


def transfer(src: Path, dst: Path, *, size: int, sha256: str, tmp: Path) -> str | None:
    """Move `src` (checked: these bytes) to `dst`, never overwriting, durable before `src` goes. None when done,
    else why not (src is then untouched). A `dst` that already holds these bytes finishes an interrupted move."""
    try:
        dst.parent.mkdir(parents=True, exist_ok=True)
        for stale in dst.parent.glob(f".{glob.escape(dst.name)}.birder-index-*.part"):
            stale.unlink(missing_ok=True)  # copies that interrupted runs left half written (named by _tmp_name)
        if os.path.lexists(dst):
            if not _holds(dst, size, sha256):
                return f"{dst} already exists; nothing was overwritten"
        else:
            reason = _place(src, dst, sha256=sha256, tmp=tmp)
            if reason is not None:
                return reason
        fsync_dir(dst.parent)
        _crash_point("move.placed")
        if os.path.lexists(src):
            src.unlink()
            fsync_dir(src.parent)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        return f"not moved: {(e.strerror or str(e)).lower()}"
    return None


def _place(src: Path, dst: Path, *, sha256: str, tmp: Path) -> str | None:
    """A new name `dst` for src's bytes: a hard link where the filesystem allows (atomic, never overwrites), else a
    verified, fsynced copy renamed into place."""
    try:
        os.link(src, dst)
        return None
    except OSError as e:
        if e.errno not in (errno.EXDEV, errno.EPERM, errno.ENOTSUP, errno.EMLINK, errno.EOPNOTSUPP):
            raise
    copied = _copy_hashed(src, tmp)
    if copied != sha256:
        tmp.unlink(missing_ok=True)
        return "changed while it was copied"
    _crash_point("move.copied")
    if os.path.lexists(dst):  # appeared meanwhile: keep it, drop the copy
        tmp.unlink(missing_ok=True)
        return f"{dst} already exists; nothing was overwritten"
    os.replace(tmp, dst)
    return None


def _copy_hashed(src: Path, dst: Path) -> str:
    """Copy bytes, fsync the copy, and return the sha256 of what was read."""
    digest = hashlib.sha256()
    with open(src, "rb") as fin, open(dst, "xb") as fout:
        while chunk := fin.read(_CHUNK):
            digest.update(chunk)
            fout.write(chunk)
            _crash_point("copy.chunk")
        fout.flush()
        os.fsync(fout.fileno())
    return digest.hexdigest()


def write_csv(actions: Sequence[Action], path: Path) -> None:
    """The plan for people (the database holds the plan `undo` trusts): action, path, destination, keeper."""
    rows = ((a.kind, str(a.path), str(a.dst) if a.dst else "", str(a.keeper), a.sha256) for a in actions)
    write_text(path, csv_text(("action", "src", "dst", "keeper", "sha256"), rows))


def refresh_index(index: Index, *, progress: Progress = silent) -> BuildReport | None:
    """Bring the index up to date after files moved, were deleted or came back (as a build would), in the same
    metadata database; None for an index without a photo folder. Nothing is embedded unless files came back
    changed. Raises IndexBusy when a build holds the index: that build takes the changes in."""
    from birder_index.indexer.build import build_index

    root = index.root
    if root is None:
        return None
    db = index.engine.url.render_as_string(hide_password=False)
    return build_index(root, index_dir=index.dir, options=BuildOptions(db=db), progress=progress)


@dataclass(frozen=True, kw_only=True)
class PlanSummary:
    id: int
    kind: str
    created: datetime
    move_to: str | None
    csv: str | None
    states: dict[str, int]  # actions per state: planned, done, skipped, undone


def list_plans(index: Index) -> list[PlanSummary]:
    """The plans recorded in the index, newest first."""
    with session_scope(index.engine) as s:
        return [
            PlanSummary(id=p.id, kind=p.kind, created=p.created_at, move_to=p.move_to, csv=p.csv, states=states)
            for p, states in q.list_plans(s)
        ]


# -- undo -----------------------------------------------------------------------------------------------------------


def undo(index: Index, plan: str) -> Outcome:
    """Undo a plan named by its number or by the path of its CSV export. A CSV the database does not know is
    refused, except a plan written by birder-index 0.1.0 (`undo_legacy_plan`)."""
    with session_scope(index.engine) as s:
        if plan.isdigit():
            found = q.get_plan(s, int(plan))
            if found is None:
                raise BirderIndexError(f"no dedup plan {plan} in the index in {index.dir} (`birder-index dedup plans`)")
            return undo_plan(index, found.id)
        recorded = q.plan_by_csv(s, str(Path(plan).resolve()))
    if recorded is not None:
        return undo_plan(index, recorded.id)
    legacy = read_legacy_plan(Path(plan))
    if legacy is None:
        raise BirderIndexError(
            f"{plan} is not a plan recorded in the index in {index.dir}: undo acts only on the plans it recorded "
            "(`birder-index dedup plans` lists them)"
        )
    return undo_legacy_plan(index, legacy)


def undo_plan(index: Index, plan_id: int) -> Outcome:
    """Move back every file the plan moved, each only if it is still what was moved; under the writer lock."""
    with WriterLock(index.dir, engine=index.engine):
        with session_scope(index.engine) as s:
            plan = q.get_plan(s, plan_id)
            rows = q.plan_actions(s, plan_id)
        if plan is None:
            raise BirderIndexError(f"no dedup plan {plan_id} in the index in {index.dir}")
        outcome = Outcome(plan_id, plan.kind)
        root = Path(plan.root)
        for row in reversed(rows):  # last moved, first restored
            if plan.kind == DELETE:
                outcome.deletions_left += row.state == DONE
                continue
            if row.state != DONE:
                continue
            a = _action_of(row, plan.kind)
            reason = _restore(a, root, plan_id)
            _finish(index, outcome, a, reason, done=UNDONE, failed=DONE)
    return outcome


def _action_of(row: DedupAction, kind: str) -> Action:
    return Action(
        seq=row.seq,
        kind=kind,
        image_id=row.image_id,
        path=Path(row.path),
        dst=Path(row.dst) if row.dst else None,
        size=row.size,
        sha256=row.sha256,
        keeper=Path(row.keeper),
        keeper_root=Path(row.keeper_root),
        keeper_size=row.keeper_size,
        keeper_sha256=row.keeper_sha256,
    )


def _restore(a: Action, root: Path, plan_id: int) -> str | None:
    """The moved file back to where it was, if it is still the bytes that were moved and its place is free (or
    already holds them: an interrupted undo)."""
    assert a.dst is not None
    if not inside(a.path, root):
        return f"its place {a.path} is outside the photo folder {root}"
    if not _holds(a.dst, a.size, a.sha256):
        if _holds(a.path, a.size, a.sha256):
            return None  # restored by an interrupted undo, which did not record it
        state = "missing" if not os.path.lexists(a.dst) else "not the file that was moved"
        return f"{a.dst} is {state}"
    return transfer(a.dst, a.path, size=a.size, sha256=a.sha256, tmp=_tmp_name(a.path, plan_id, a.seq, "undo"))


# -- plans written by birder-index 0.1.0 ------------------------------------------------------------------------------

LEGACY_HEADER = ["action", "src", "dst"]


def read_legacy_plan(path: Path) -> list[tuple[Path, Path]] | None:
    """(src, dst) of the moves of a 0.1.0 plan CSV (header action,src,dst), or None when it is not one."""
    try:
        with open(path, newline="", encoding="utf-8") as f:
            rows = list(csv.reader(f))
    except (OSError, UnicodeDecodeError, csv.Error):
        return None
    if not rows or rows[0] != LEGACY_HEADER or any(len(r) != 3 for r in rows[1:]):
        return None
    return [(Path(src), Path(dst)) for action, src, dst in rows[1:] if action == MOVE and src and dst]


def undo_legacy_plan(index: Index, moves: list[tuple[Path, Path]]) -> Outcome:
    """A 0.1.0 plan records no hashes: it is undone only where every moved file is inside the photo folder and its
    bytes are those the index still records for its old path. Otherwise nothing moves and the error says what
    would have."""
    root = _photo_root(index)
    with session_scope(index.engine) as s:
        known = q.known_files(s)
    actions, unverified = [], []
    for seq, (src, dst) in enumerate(moves):
        rel = _relative_to(src, root)
        record = known.get(rel) if rel is not None else None
        ok = record is not None and record.sha256 and record.size is not None
        if not ok or not _holds(dst, record.size or 0, record.sha256 or ""):  # type: ignore[union-attr]
            unverified.append(f"{dst} -> {src}")
            continue
        assert record is not None
        actions.append(
            Action(
                seq=seq,
                kind=MOVE,
                image_id=record.id,
                path=src,
                dst=dst,
                size=record.size or 0,
                sha256=record.sha256 or "",
                keeper=src,
                keeper_root=root,
                keeper_size=0,
                keeper_sha256="",
            )
        )
    if unverified:
        shown = "; ".join(unverified[:5]) + (f"; ... ({len(unverified)} in all)" if len(unverified) > 5 else "")
        raise BirderIndexError(
            f"this plan was written by birder-index 0.1.0 and records no content hashes, and {len(unverified)} of "
            f"its {len(moves)} moves cannot be checked against the index, so nothing was moved. It would move back: "
            f"{shown}"
        )
    outcome = Outcome(0, MOVE)
    with WriterLock(index.dir, engine=index.engine):
        for a in reversed(actions):
            reason = _restore(a, root, 0)
            (outcome.done.append(a) if reason is None else outcome.skipped.append((a, reason)))
    return outcome


def _relative_to(path: Path, root: Path) -> str | None:
    try:
        return Path(os.path.abspath(path)).relative_to(root).as_posix()
    except ValueError:
        return None
