"""Duplicates: the groups of `dedup` (run in the background), keepers changed by hand, "not duplicates" marks kept
in the index (the CLI's dedup honours them), and moves or deletions with the CLI's safety: a plan checked and
shown first, nothing done without a confirmation, every file checked again right before acting, an undo."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated
from typing import Any

from fastapi import APIRouter
from fastapi import HTTPException
from fastapi import Query

from birder_index.dedup import Action
from birder_index.dedup import DedupResult
from birder_index.dedup import Member
from birder_index.progress import Progress
from birder_index.web.deps import State
from birder_index.web.deps import Writable
from birder_index.web.routes_images import image_rows
from birder_index.web.schemas import ActionOut
from birder_index.web.schemas import ApplyIn
from birder_index.web.schemas import DedupRun
from birder_index.web.schemas import GroupOut
from birder_index.web.schemas import GroupsOut
from birder_index.web.schemas import IdsIn
from birder_index.web.schemas import ImageOut
from birder_index.web.schemas import JobOut
from birder_index.web.schemas import KeeperIn
from birder_index.web.schemas import MarkedOut
from birder_index.web.schemas import MemberOut
from birder_index.web.schemas import PlanIn
from birder_index.web.schemas import PlanOut
from birder_index.web.schemas import PlanSummaryOut
from birder_index.web.schemas import UndoIn
from birder_index.web.state import AppState
from birder_index.web.state import DedupSession

router = APIRouter(prefix="/api/dedup")


@router.get("/calibration")
def calibration(state: State) -> dict[str, Any] | None:
    """The calibration a CLI or an earlier run stored (threshold, precision, estimated recall), or null."""
    from birder_index.dedup import last_calibration

    with state.holder.use() as index:
        cal = last_calibration(index)
    return cal.to_json() if cal is not None else None


@router.post("/run")
def run(state: State, body: DedupRun) -> JobOut:
    """Find the duplicate groups in the background (a calibration first, unless a threshold is given or one is
    stored); poll /api/jobs/{id}, then read /api/dedup/groups. Under --read-only a new calibration is not stored."""
    from birder_index.dedup import COLOUR_MIN

    colour_min = 0.0 if body.ignore_colour else COLOUR_MIN

    def work(progress: Progress) -> dict[str, Any]:
        from birder_index.dedup import find_duplicates
        from birder_index.dedup import resolve_threshold

        index = state.holder.fresh()
        encoder = state.encoder() if _needs_model(state, body) else None
        threshold, cal, fresh = resolve_threshold(
            index, threshold=body.threshold, precision=body.precision, recalibrate=body.recalibrate,
            colour_min=colour_min, store=not state.read_only, encoder=encoder, progress=progress,
        )  # fmt: skip
        bar = body.thumbnail if body.thumbnail is not None else (cal.thumbnail_min if cal is not None else None)
        result = find_duplicates(
            index, threshold, keep=body.keep, colour_min=colour_min, thumbnail_min=bar, progress=progress
        )
        with state.dedup_lock:
            state.dedup = DedupSession(result, body.keep)
            state.plans.clear()
        summary = _summary(state.dedup)
        if cal is not None:
            summary["calibration"] = {**cal.to_json(), "fresh": fresh}
        return summary

    return JobOut(**state.jobs.start("dedup", work).to_json())


def _needs_model(state: AppState, body: DedupRun) -> bool:
    """Whether this run calibrates (which embeds variants of sampled photos), so the shared model is used."""
    from birder_index.dedup import COLOUR_MIN
    from birder_index.dedup import stored_calibration

    if body.threshold is not None:
        return False
    if body.recalibrate:
        return True
    colour_min = 0.0 if body.ignore_colour else COLOUR_MIN
    with state.holder.use() as index:
        stored = stored_calibration(index, body.precision or 0.99, colour_min=colour_min, any_estimator=state.read_only)
        return stored is None


def _summary(session: DedupSession) -> dict[str, Any]:
    r = session.result
    return {
        "version": session.version,
        "threshold": r.threshold,
        "thumbnail_min": r.thumbnail_min,
        "groups": len(r.groups),
        "duplicates": sum(len(g.duplicates) for g in r.groups),
        "notes": r.notes(),
    }


def _session(state: AppState, version: str | None = None) -> DedupSession:
    session = state.dedup
    if session is None:
        raise HTTPException(404, "no duplicates found yet: run dedup first")
    if version is not None and version != session.version:
        raise HTTPException(409, "the groups changed since this page read them: reload them")
    return session


@router.get("/groups")
def groups(
    state: State,
    *,
    offset: Annotated[int, Query(ge=0)] = 0,
    limit: Annotated[int, Query(ge=1, le=200)] = 20,
) -> GroupsOut:
    """One page of the latest run's groups, largest first: the keeper, then each duplicate with its score to the
    keeper, its kind (exact: same bytes or pixels) and its thumbnail correlation."""
    session = _session(state)
    r = session.result
    shown = r.groups[offset : offset + limit]
    ids = [m.id for g in shown for m in (g.keeper, *g.duplicates)]
    rows = {row.id: row for row in image_rows(state, ids)}

    def member(m: Member, kind: str) -> MemberOut | None:
        row = rows.get(m.id)
        if row is None:
            return None
        thumb = None if m.thumbnail is None else round(m.thumbnail, 4)
        return MemberOut(**ImageOut.of(row).model_dump(), score=round(m.score, 6), kind=kind, thumbnail=thumb,
                         mirrored=m.mirrored)  # fmt: skip

    out = []
    for n, g in enumerate(shown, offset):
        keeper = member(g.keeper, "keeper")
        dups = [d for m in g.duplicates if (d := member(m, m.kind)) is not None]
        if keeper is not None and dups:
            out.append(GroupOut(number=n, keeper=keeper, duplicates=dups))
    summary = _summary(session)
    return GroupsOut(version=session.version, threshold=r.threshold, thumbnail_min=r.thumbnail_min, keep=session.keep,
                     groups_total=summary["groups"], duplicates_total=summary["duplicates"], notes=summary["notes"],
                     offset=offset, groups=out)  # fmt: skip


@router.post("/keeper")
def keeper(state: State, body: KeeperIn) -> dict[str, Any]:
    """Keep another member of a group: the old keeper becomes a duplicate, every score is to the new keeper. Only
    what this page shows changes; a plan made from it keeps the chosen photo (and checks it before acting)."""
    from birder_index.dedup import choose_keeper

    with state.dedup_lock:
        session = _session(state, body.version)
        with state.holder.use() as index:
            session.result = choose_keeper(index, session.result, body.group, body.id)
        g = session.result.groups[body.group]
        session.chosen[frozenset([g.keeper.id, *(m.id for m in g.duplicates)])] = body.id
        session.version = _new_version()
        state.plans.clear()
    return _summary(session)


def _new_version() -> str:
    import uuid

    return uuid.uuid4().hex[:12]


@router.post("/not-duplicates", dependencies=[Writable])
def not_duplicates(state: State, body: IdsIn) -> dict[str, Any]:
    """Mark every pair of these images (a group, or a duplicate and its keeper) as not duplicates, in the index:
    dedup, here and on the command line, never groups them again. The current groups are formed again."""
    from birder_index.dedup import mark_not_duplicates

    with state.holder.use() as index:
        added = mark_not_duplicates(index, body.ids)
    return {"marked": added, **_regroup(state)}


@router.post("/unmark", dependencies=[Writable])
def unmark(state: State, body: IdsIn) -> dict[str, Any]:
    """Forget the "not duplicates" marks between these images."""
    from birder_index.dedup import unmark_not_duplicates

    with state.holder.use() as index:
        removed = unmark_not_duplicates(index, body.ids)
    return {"unmarked": removed, **_regroup(state)}


def _regroup(state: AppState) -> dict[str, Any]:
    """The current groups formed again from their pairs and the marks; keepers chosen by hand stay where their
    group is unchanged."""
    from birder_index.dedup import choose_keeper
    from birder_index.dedup import regroup

    with state.dedup_lock:
        session = state.dedup
        if session is None:
            return {}
        with state.holder.use() as index:
            result = regroup(index, session.result, keep=session.keep)
            for n, g in enumerate(result.groups):
                members = frozenset([g.keeper.id, *(m.id for m in g.duplicates)])
                chosen = session.chosen.get(members)
                if chosen is not None and chosen != g.keeper.id:
                    result = choose_keeper(index, result, n, chosen)
        session.result = result
        session.version = _new_version()
        state.plans.clear()
        return _summary(session)


@router.get("/marks")
def marks(
    state: State,
    *,
    offset: Annotated[int, Query(ge=0)] = 0,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> dict[str, Any]:
    """The pairs marked not duplicates (newest marks are not first: by image id), to review or unmark."""
    from birder_index.dedup import not_duplicate_pairs

    with state.holder.use() as index:
        a, b = not_duplicate_pairs(index)
    pairs = list(zip(a.tolist(), b.tolist(), strict=True))
    page = pairs[offset : offset + limit]
    rows = {r.id: r for r in image_rows(state, [i for pair in page for i in pair])}
    items = [MarkedOut(a=ImageOut.of(rows[x]), b=ImageOut.of(rows[y])) for x, y in page if x in rows and y in rows]
    return {"total": len(pairs), "offset": offset, "items": items}


@router.post("/plan")
def plan(state: State, body: PlanIn) -> PlanOut:
    """A dry run: the moves or deletions the current groups make (never a keeper), each checked now as it will be
    checked again right before acting. Nothing changes; `apply` with the token carries out exactly this plan."""
    from birder_index.dedup import check_plan
    from birder_index.dedup import plan_actions

    move_to = _destination(body)
    with state.dedup_lock:
        session = _session(state, body.version)
        with state.holder.use() as index:
            actions = plan_actions(index, session.result, move_to=move_to, delete=move_to is None)
            checked = check_plan(index, actions)
        pending = state.add_plan(actions, move_to)
    go = sum(reason is None for _, reason in checked)
    return PlanOut(token=pending.token, action=body.action, move_to=str(move_to) if move_to else None, go=go,
                   skipped=len(checked) - go, actions=[_action(a, reason) for a, reason in checked])  # fmt: skip


def _destination(body: PlanIn) -> Path | None:
    if body.action == "delete":
        if body.move_to:
            raise HTTPException(422, "a deletion has no destination folder")
        return None
    if not body.move_to:
        raise HTTPException(422, "moving needs a destination folder (move_to)")
    folder = Path(body.move_to).expanduser()
    if not folder.is_absolute():
        raise HTTPException(422, f"the destination must be an absolute folder, not {body.move_to}")
    return folder


def _action(a: Action, reason: str | None) -> ActionOut:
    return ActionOut(action=a.kind, path=str(a.path), dst=str(a.dst) if a.dst else None, keeper=str(a.keeper),
                     skipped=reason)  # fmt: skip


@router.post("/apply", dependencies=[Writable])
def apply(state: State, body: ApplyIn) -> JobOut:
    """Carry out a plan shown by `plan` (confirm must be true), in the background: recorded in the index first,
    each file and its keeper checked again right before acting, then the index brought up to date. A build
    holding the index makes it fail with a message (nothing moved); `undo` moves the files back."""
    from birder_index.dedup import apply_plan
    from birder_index.dedup import refresh_index

    if not body.confirm:
        raise HTTPException(422, "nothing is done without confirm: true")
    pending = state.take_plan(body.token)

    def work(progress: Progress) -> dict[str, Any]:
        index = state.holder.fresh()
        outcome = apply_plan(index, pending.actions, move_to=pending.move_to, progress=progress)
        refreshed = _refresh(index, progress) if outcome.done else None
        results = [_action(a, None) for a in outcome.done] + [_action(a, r) for a, r in outcome.skipped]
        with state.dedup_lock:
            if state.dedup is not None:
                done = {a.image_id for a in outcome.done}
                state.dedup.result = _without(state.dedup.result, done)
                state.dedup.version = _new_version()
        return {"plan": outcome.plan_id, "kind": outcome.kind, "done": len(outcome.done),
                "skipped": len(outcome.skipped), "csv": str(outcome.csv) if outcome.csv else None,
                "refreshed": refreshed, "actions": [a.model_dump() for a in results]}  # fmt: skip

    def _refresh(index: Any, progress: Progress) -> str:
        from birder_index.errors import IndexBusy

        try:
            report = refresh_index(index, progress=progress)
        except IndexBusy:
            return "a build holds the index now: it takes these changes in"
        return f"{report.removed} removed, {report.moved} moved" if report is not None else ""

    return JobOut(**state.jobs.start("apply", work).to_json())


def _without(result: DedupResult, gone: set[int]) -> DedupResult:
    """The groups without the duplicates moved or deleted (groups left with none go)."""
    from dataclasses import replace

    groups = []
    for g in result.groups:
        dups = [m for m in g.duplicates if m.id not in gone]
        if dups:
            groups.append(replace(g, duplicates=dups))
    return replace(result, groups=groups)


@router.get("/plans")
def plans(state: State) -> list[PlanSummaryOut]:
    """The plans recorded in the index (by this page or the CLI), newest first, with their actions' states."""
    from birder_index.dedup import list_plans

    with state.holder.use() as index:
        found = list_plans(index)
    return [PlanSummaryOut(id=p.id, kind=p.kind, created=p.created.isoformat(timespec="seconds") + "Z",
                           move_to=p.move_to, states=p.states) for p in found]  # fmt: skip


@router.post("/undo", dependencies=[Writable])
def undo(state: State, body: UndoIn) -> JobOut:
    """Move back the files a recorded plan moved (each only if it is still the file that was moved and its place
    is free), then bring the index up to date. Deletions cannot be undone."""
    from birder_index.dedup import refresh_index
    from birder_index.dedup import undo as undo_plan

    def work(progress: Progress) -> dict[str, Any]:
        from birder_index.errors import IndexBusy

        index = state.holder.fresh()
        outcome = undo_plan(index, str(body.plan))
        note = None
        if outcome.done:
            try:
                refresh_index(index, progress=progress)
            except IndexBusy:
                note = "a build holds the index now: it takes these changes in"
        return {"plan": body.plan, "done": len(outcome.done), "skipped": [[str(a.path), r] for a, r in outcome.skipped],
                "deletions_left": outcome.deletions_left, "note": note}  # fmt: skip

    return JobOut(**state.jobs.start("undo", work).to_json())
