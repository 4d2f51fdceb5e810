"""The JSON the API takes and gives (its OpenAPI description at /api/openapi.json is generated from these)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel
from pydantic import Field

from birder_index.db.queries import ImageRow


class ImageOut(BaseModel):
    id: int
    path: str = Field(description="relative to the photo folder, '/'-separated (or the imported sample name)")
    name: str
    folder: str
    size: int | None = Field(description="bytes")
    mtime: float | None = Field(description="file date, seconds since the epoch")
    width: int | None
    height: int | None
    status: Literal["indexed", "pending", "failed"] | str
    error: str | None = None
    label: str | None = Field(None, description="its label in the label set asked for")

    @classmethod
    def of(cls, row: ImageRow, *, label: str | None = None) -> ImageOut:
        folder, _, name = row.path.rpartition("/")
        return cls(
            id=row.id,
            path=row.path,
            name=name,
            folder=folder,
            size=row.size,
            mtime=row.mtime_ns / 1e9 if row.mtime_ns is not None else None,
            width=row.width,
            height=row.height,
            status=row.status,
            error=row.error,
            label=label,
        )


class HitOut(ImageOut):
    score: float = Field(description="cosine similarity to the query")


class QueryOut(BaseModel):
    kind: Literal["image", "upload"]
    id: int | None = None
    upload: str | None = None
    name: str
    path: str | None = None
    width: int | None = None
    height: int | None = None


class SearchOut(BaseModel):
    query: QueryOut
    hits: list[HitOut]
    among: int | None = Field(description="how many images the filters left to search (None: no filter)")
    took_ms: float = Field(description="time the server spent, from the request to the answer")


class UploadOut(BaseModel):
    upload: str = Field(description="its key: sha256 of its bytes")
    name: str
    width: int
    height: int
    took_ms: float


class PageOut(BaseModel):
    total: int
    offset: int
    items: list[ImageOut]


class FolderOut(BaseModel):
    folder: str
    images: int


class JobOut(BaseModel):
    id: str
    kind: str
    state: Literal["running", "done", "failed"]
    stage: str
    done: int
    total: int | None
    error: str | None
    busy: bool
    seconds: float
    result: object | None = None


# -- duplicates ------------------------------------------------------------------------------------------------------


class DedupRun(BaseModel):
    threshold: float | None = Field(None, gt=0, le=1, description="cosine similarity; default: calibrated")
    precision: float | None = Field(None, gt=0, lt=1, description="calibrate to this precision (default 0.99)")
    recalibrate: bool = False
    keep: Literal["largest", "smallest", "oldest", "newest", "first"] = "largest"
    ignore_colour: bool = False
    thumbnail: float | None = Field(None, ge=0, le=1, description="thumbnail bar; default: calibrated, or 0.98")


class MemberOut(ImageOut):
    score: float
    kind: str = Field(description="keeper, exact (same bytes or pixels as the keeper) or near")
    thumbnail: float | None = None
    mirrored: bool = False


class GroupOut(BaseModel):
    number: int = Field(description="from 0, as `keeper` and the plan take it")
    keeper: MemberOut
    duplicates: list[MemberOut]


class GroupsOut(BaseModel):
    version: str = Field(description="changes with every change to the groups")
    threshold: float
    thumbnail_min: float
    keep: str
    groups_total: int
    duplicates_total: int
    notes: list[str]
    offset: int
    groups: list[GroupOut]


class KeeperIn(BaseModel):
    version: str
    group: int = Field(ge=0)
    id: int


class IdsIn(BaseModel):
    ids: list[int] = Field(min_length=2, max_length=500)


class MarkedOut(BaseModel):
    a: ImageOut
    b: ImageOut


class PlanIn(BaseModel):
    version: str
    action: Literal["move", "delete"]
    move_to: str | None = Field(None, description="absolute folder for moves, outside the scanned photo folder")


class ActionOut(BaseModel):
    action: str
    path: str
    dst: str | None
    keeper: str
    skipped: str | None = Field(description="why it would be (or was) skipped; None: carried out")


class PlanOut(BaseModel):
    token: str
    action: str
    move_to: str | None
    go: int
    skipped: int
    actions: list[ActionOut]


class ApplyIn(BaseModel):
    token: str
    confirm: bool = Field(description="must be true: nothing changes without it")


class UndoIn(BaseModel):
    plan: int


class PlanSummaryOut(BaseModel):
    id: int
    kind: str
    created: str
    move_to: str | None
    states: dict[str, int]


# -- labels and probes ------------------------------------------------------------------------------------------------


class ClassOut(BaseModel):
    label: str
    images: int


class LabelSetOut(BaseModel):
    name: str
    classes: list[ClassOut]


class AssignIn(BaseModel):
    set: str = Field(min_length=1, max_length=200)
    ids: list[int] = Field(min_length=1, max_length=10_000)
    label: str = Field(min_length=1, max_length=200)


class UnassignIn(BaseModel):
    set: str = Field(min_length=1, max_length=200)
    ids: list[int] = Field(min_length=1, max_length=10_000)


class SuggestIn(BaseModel):
    set: str = Field(min_length=1, max_length=200)
    method: Literal["knn", "prototype", "probe"] = "knn"


class Choice(BaseModel):
    label: str
    score: float


class SuggestionOut(BaseModel):
    image: ImageOut
    choices: list[Choice]
    unknown: bool = Field(description="the best score is below the open-set threshold")


class SuggestionsOut(BaseModel):
    set: str
    method: str
    threshold: float
    remaining: int = Field(description="suggestions not yet accepted, corrected or labelled otherwise")
    offset: int
    items: list[SuggestionOut]


class ProbeIn(BaseModel):
    set: str = Field(min_length=1, max_length=200)
    folds: int | None = Field(None, ge=2, le=20)  # None: 5, or fewer where the smallest class has fewer photos
    balanced: bool = False
