"""Labels: the index's label sets (the CLI's: `label list` shows the same), photos labelled a few at a time,
`lookup`'s suggestions for the unlabelled ones, least confident first, and a probe's cross-validated accuracy."""

from __future__ import annotations

from typing import Annotated
from typing import Any

from fastapi import APIRouter
from fastapi import HTTPException
from fastapi import Query

from birder_index.progress import Progress
from birder_index.web.deps import State
from birder_index.web.deps import Writable
from birder_index.web.routes_images import image_rows
from birder_index.web.schemas import AssignIn
from birder_index.web.schemas import Choice
from birder_index.web.schemas import ClassOut
from birder_index.web.schemas import ImageOut
from birder_index.web.schemas import JobOut
from birder_index.web.schemas import LabelSetOut
from birder_index.web.schemas import ProbeIn
from birder_index.web.schemas import SuggestIn
from birder_index.web.schemas import SuggestionOut
from birder_index.web.schemas import SuggestionsOut
from birder_index.web.schemas import UnassignIn

router = APIRouter(prefix="/api")


@router.get("/labels")
def label_sets(state: State) -> list[LabelSetOut]:
    """Every label set with its classes and how many photos each holds."""
    from birder_index.fewshot import label_sets as sets
    from birder_index.fewshot import label_summary

    with state.holder.use() as index:
        names = sets(index)
        rows = label_summary(index)
    by_set: dict[str, list[ClassOut]] = {name: [] for name in names}
    for set_name, label, n in rows:
        by_set.setdefault(set_name, []).append(ClassOut(label=label, images=n))
    return [LabelSetOut(name=name, classes=classes) for name, classes in by_set.items()]


@router.post("/labels/assign", dependencies=[Writable])
def assign(state: State, body: AssignIn) -> dict[str, Any]:
    """Label these photos in a set (created if new), replacing the label they had in it."""
    from birder_index.fewshot import assign_label

    with state.holder.use() as index:
        n = assign_label(index, body.set, body.ids, body.label)
    state.labelled(body.set.strip(), body.ids)
    return {"labelled": n, "set": body.set.strip(), "label": body.label.strip()}


@router.post("/labels/remove", dependencies=[Writable])
def remove(state: State, body: UnassignIn) -> dict[str, Any]:
    """Take these photos out of a set."""
    from birder_index.fewshot import unassign_labels

    with state.holder.use() as index:
        removed = unassign_labels(index, body.set, body.ids)
    state.unlabelled(body.set, body.ids)
    return {"removed": removed}


@router.post("/labels/suggest")
def suggest(state: State, body: SuggestIn) -> JobOut:
    """Score every unlabelled photo against a set in the background (lookup's classifier and open-set
    threshold), then page through the suggestions with GET /api/labels/suggestions."""
    from birder_index.fewshot import suggest_labels

    def work(progress: Progress) -> dict[str, Any]:
        found = suggest_labels(state.holder.fresh(), body.set, method=body.method, k=3, progress=progress)
        state.suggestions[body.set] = (found, set())
        return {"set": body.set, "method": found.method, "unlabelled": len(found), "classes": found.classes,
                "threshold": found.threshold}  # fmt: skip

    return JobOut(**state.jobs.start("suggest", work).to_json())


@router.get("/labels/suggestions")
def suggestions(
    state: State,
    *,
    set: str,
    offset: Annotated[int, Query(ge=0)] = 0,
    limit: Annotated[int, Query(ge=1, le=200)] = 24,
) -> SuggestionsOut:
    """The photos still unlabelled in a set, least confident first (from `offset` among those), each with its
    three likeliest classes."""
    from birder_index.fewshot import labels_of_images

    if set not in state.suggestions:
        raise HTTPException(404, f"no suggestions computed for set {set!r} yet: POST /api/labels/suggest")
    found, taken = state.suggestions[set]
    page: list[int] = []
    skipped, n = 0, 0
    while n < len(found) and len(page) < limit:  # the open ones from `offset` on, without reading them all
        chunk = [m for m in range(n, min(n + 4 * limit, len(found))) if int(found.ids[m]) not in taken]
        n = min(n + 4 * limit, len(found))
        with state.holder.use() as index:  # labelled since by another page or the CLI: taken too
            now = labels_of_images(index, set, [int(found.ids[m]) for m in chunk])
        taken.update(now)
        for m in chunk:
            if int(found.ids[m]) in now:
                continue
            if skipped < offset:
                skipped += 1
            elif len(page) < limit:
                page.append(m)
    remaining = len(found) - len(taken)
    rows = {r.id: r for r in image_rows(state, [int(found.ids[m]) for m in page])}
    items = []
    for n in page:
        image_id = int(found.ids[n])
        if image_id not in rows:
            continue
        choices = [Choice(label=found.classes[c], score=round(float(s), 4))
                   for c, s in zip(found.top[n].tolist(), found.scores[n].tolist(), strict=True)]  # fmt: skip
        items.append(SuggestionOut(image=ImageOut.of(rows[image_id]), choices=choices,
                                   unknown=bool(found.scores[n, 0] < found.threshold)))  # fmt: skip
    return SuggestionsOut(set=set, method=found.method, threshold=found.threshold, remaining=remaining,
                          offset=offset, items=items)  # fmt: skip


@router.post("/probe")
def probe(state: State, body: ProbeIn) -> JobOut:
    """Fit and cross-validate a linear probe on a set in the background: top-1 and top-5 accuracy, recall per
    class, the confusion matrix (true classes down, predicted across) and k-shot curves (`probe eval`)."""
    from birder_index.fewshot import evaluate_set

    def work(progress: Progress) -> dict[str, Any]:
        import numpy as np

        from birder_index.fewshot.labels import labelled_ids

        index = state.holder.fresh()
        progress("cross-validating the probe", 0, None)
        _, y, classes = labelled_ids(
            index, body.set, purpose="a probe"
        )  # the labels only: evaluate_set reads the vectors
        # The page asks without choosing: as many folds as the smallest class allows, at most 5 (probe eval's
        # default), so a small set is evaluated instead of refused; a chosen number is checked as the CLI checks it.
        smallest = int(np.bincount(y).min())
        folds = body.folds if body.folds is not None else max(2, min(5, smallest))
        ev = evaluate_set(index, body.set, folds=folds, balanced=body.balanced)
        return {"set": body.set, "classes": classes, "top1": ev.top1, "top5": ev.top5,
                "per_class_recall": ev.per_class_recall, "confusion": ev.confusion.tolist(), "lambda": ev.lam,
                "kshot": {m: {str(k): v for k, v in curve.items()} for m, curve in ev.kshot.items()}}  # fmt: skip

    return JobOut(**state.jobs.start("probe", work).to_json())
