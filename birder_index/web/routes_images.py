"""The collection: what the index is, its pages, searches by a stored or an uploaded photo, previews and files."""

from __future__ import annotations

import mimetypes
import time
from typing import Annotated
from typing import Any

import numpy as np
from fastapi import APIRouter
from fastapi import HTTPException
from fastapi import Query
from fastapi import Request
from fastapi import Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse

from birder_index.db.queries import ImageRow
from birder_index.errors import BirderIndexError
from birder_index.web.deps import State
from birder_index.web.files import Refused
from birder_index.web.files import check_relative
from birder_index.web.files import photo_file
from birder_index.web.schemas import FolderOut
from birder_index.web.schemas import HitOut
from birder_index.web.schemas import ImageOut
from birder_index.web.schemas import JobOut
from birder_index.web.schemas import PageOut
from birder_index.web.schemas import QueryOut
from birder_index.web.schemas import SearchOut
from birder_index.web.schemas import UploadOut
from birder_index.web.state import AppState
from birder_index.web.state import Upload

router = APIRouter(prefix="/api")
MAX_K = 500


@router.get("/info")
def info(state: State) -> dict[str, Any]:
    """What the index holds and how the server runs (read-only or not, model loaded or not)."""
    from birder_index.dedup import KEEP_POLICIES
    from birder_index.fewshot import label_sets
    from birder_index.indexer import describe

    with state.holder.use() as index:
        described = describe(index)
        sets = label_sets(index)
    model = described["model"] or {}
    return {
        "index_dir": described["index_dir"],
        "root": described["root"],
        "images": described["images"],
        "indexed": described["indexed"],
        "pending": described["pending"],
        "failed": described["failed"],
        "model": model.get("name"),
        "embedding_dim": model.get("embedding_dim"),
        "can_embed": bool(model) and model.get("arch") != "imported",
        "faiss": (described["index"] or {}).get("type"),
        "read_only": state.read_only,
        "model_loaded": state.model_loaded(),
        "label_sets": sets,
        "keep_policies": list(KEEP_POLICIES),
        "max_upload_bytes": state.options.max_upload_bytes,
    }


@router.get("/folders")
def folders(state: State) -> list[FolderOut]:
    """Folders holding indexed images, with how many are at or below each ("" is the photo folder)."""
    return [FolderOut(folder=f, images=n) for f, n in sorted(state.folders().items())]


def labelled(state: AppState, rows: list[ImageRow], label_set: str | None) -> list[ImageOut]:
    """Rows as the API gives them, each with its label in `label_set` when one is asked for."""
    from birder_index.fewshot import labels_of_images

    labels = labels_of_images(state.holder.index, label_set, [r.id for r in rows]) if label_set else {}
    return [ImageOut.of(r, label=labels.get(r.id)) for r in rows]


@router.get("/images")
def images(
    state: State,
    *,
    offset: Annotated[int, Query(ge=0)] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    sort: Annotated[str, Query(pattern="^(path|date|-date)$")] = "path",
    folder: str | None = None,
    status: Annotated[str | None, Query(pattern="^(indexed|failed|pending)$")] = None,
    label_set: str | None = None,
) -> PageOut:
    """One page of the collection (never all of it), by path or file date; failed files carry their reason."""
    from birder_index.search import browse

    page = browse(state.holder.index, offset=offset, limit=limit, sort=sort, folder=folder, status=status)
    return PageOut(total=page.total, offset=page.offset, items=labelled(state, page.items, label_set))


@router.get("/images/{image_id}")
def image(state: State, image_id: int, *, label_set: str | None = None) -> ImageOut:
    return labelled(state, [_row(state, image_id)], label_set)[0]


@router.get("/lookup")
def lookup_path(state: State, path: str) -> ImageOut:
    """The image stored under a path (relative to the photo folder, or absolute inside it)."""
    from birder_index.search import image_at

    row = image_at(state.holder.index, path)
    if row is None:
        raise HTTPException(404, f"{path} is not a photo of this index")
    return ImageOut.of(row)


def _row(state: AppState, image_id: int) -> ImageRow:
    from birder_index.search import image_details

    row = image_details(state.holder.index, [image_id]).get(image_id)
    if row is None:
        raise HTTPException(404, f"no image {image_id} in this index")
    return row


@router.get("/search")
def search(
    state: State,
    *,
    id: int | None = None,
    upload: str | None = None,
    path: str | None = None,
    k: Annotated[int, Query(ge=1, le=MAX_K)] = 24,
    folder: str | None = None,
    label_set: str | None = None,
    label: str | None = None,
) -> SearchOut:
    """Nearest neighbours of a photo of the index (`id` or `path`: its stored embedding, no model needed) or of
    an uploaded photo (`upload`), among the images of a folder and/or a class when asked."""
    from birder_index.search import image_at
    from birder_index.search import search_vectors

    t0 = time.perf_counter()
    if sum(x is not None for x in (id, upload, path)) != 1:
        raise HTTPException(422, "give one of id, upload or path")
    if (label_set is None) != (label is None):
        raise HTTPException(422, "a label filter needs both label_set and label")
    with state.holder.use() as index:
        if upload is not None:
            up = state.uploads.get(upload)
            xq, own = up.vector[None, :], None
            query = QueryOut(kind="upload", upload=up.key, name=up.name, width=up.width, height=up.height)
        else:
            row = image_at(index, path) if path is not None else _row(state, int(id or 0))
            if row is None:
                raise HTTPException(404, f"{path} is not a photo of this index")
            if row.status != "indexed":
                raise HTTPException(
                    422, f"{row.path} is not indexed ({row.error or row.status}): nothing to search with"
                )
            xq, own = index.vectors(np.array([row.id], np.int64)), row.id
            query = QueryOut(kind="image", id=row.id, name=row.path.rpartition("/")[2], path=row.path,
                             width=row.width, height=row.height)  # fmt: skip
        among = state.among(index, folder=folder, label=(label_set, label) if label_set and label else None)
        (hits,) = search_vectors(index, xq, k=k + (own is not None), among=among)
    hits = [h for h in hits if h.id != own][:k]  # the photo itself is the query, not a result
    rows = {r.id: r for r in image_rows(state, [h.id for h in hits])}
    out = [HitOut(**ImageOut.of(rows[h.id]).model_dump(), score=round(h.score, 6)) for h in hits if h.id in rows]
    took = round((time.perf_counter() - t0) * 1000, 2)
    return SearchOut(query=query, hits=out, among=None if among is None else len(among), took_ms=took)


def image_rows(state: AppState, ids: list[int]) -> list[ImageRow]:
    from birder_index.search import image_details

    found = image_details(state.holder.index, ids)
    return [found[i] for i in ids if i in found]


@router.post("/uploads", openapi_extra={"requestBody": {"content": {"image/*": {"schema": {"type": "string",
             "format": "binary"}}}, "required": True}})  # fmt: skip
async def upload(request: Request, state: State) -> UploadOut:
    """A query photo, as raw bytes (Content-Type image/... or application/octet-stream; its file name in the
    `X-File-Name` header, URL-encoded). Decoded as the build decodes photos and embedded with the index's model
    (loaded on the first upload); kept in the server's memory, never written to the photo folder."""
    from urllib.parse import unquote

    t0 = time.perf_counter()
    limit = state.options.max_upload_bytes
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise HTTPException(413, f"the photo is larger than the {_mb(limit)} upload limit")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise HTTPException(413, f"the photo is larger than the {_mb(limit)} upload limit")
        chunks.append(chunk)
    data = b"".join(chunks)
    if not data:
        raise HTTPException(422, "the upload is empty")
    name = unquote(request.headers.get("x-file-name", ""))[:300]
    made = await run_in_threadpool(_embed_upload, state, data, name)
    took = round((time.perf_counter() - t0) * 1000, 2)
    return UploadOut(upload=made.key, name=made.name, width=made.width, height=made.height, took_ms=took)


def _mb(n: int) -> str:
    return f"{n / 2**20:.0f} MB"


def _embed_upload(state: AppState, data: bytes, name: str) -> Upload:
    from birder_index.search import decode_query
    from birder_index.search import embed_pixels

    key = state.uploads.key_of(data)
    try:
        return state.uploads.get(key)
    except LookupError:
        pass
    with state.holder.use() as index:
        info = index.model_info()
        if index.model_row().arch == "imported":
            raise BirderIndexError(
                "this index holds imported embeddings without their model: search by a photo of the index instead"
            )
    decoded = decode_query(
        data, info.preprocess.size, name=f"{name} (uploaded)" if name else "(uploaded)"
    )  # an unreadable image fails here, before the model
    with state.embedding() as encoder:
        vector = embed_pixels(encoder, [decoded.pixels])[0]
    made = Upload(key, name or "uploaded photo", data, decoded.width, decoded.height, vector)
    state.uploads.add(made)
    return made


@router.get("/uploads/{key}/thumb", response_class=Response)
def upload_thumb(state: State, key: str) -> Response:
    from birder_index.backbone.preview import render_preview

    up = state.uploads.get(key)
    if up.preview is None:
        up.preview = render_preview(up.data)
    return Response(up.preview, media_type="image/webp", headers={"cache-control": "private, max-age=86400"})


@router.get("/thumb/{image_id}", response_class=Response)
def thumb(request: Request, state: State, image_id: int) -> Response:
    """A 256 px WebP preview of a photo of the index (EXIF orientation applied, transparency over grey), made on
    first request and cached on disk; only for files inside the photo folder."""
    real, st = _served(state, _row(state, image_id))
    etag = '"' + state.previews.key(real, st)[:32] + '"'
    headers = {"cache-control": "private, max-age=86400", "etag": etag}
    if request.headers.get("if-none-match") == etag:
        return Response(status_code=304, headers=headers)
    return Response(state.previews.get(real, st), media_type="image/webp", headers=headers)


@router.get("/thumbs", response_class=Response)
def thumbs(state: State, ids: Annotated[str, Query(pattern=r"^\d+(,\d+){0,199}$")]) -> Response:
    """The previews already made of up to 200 photos in one answer: their WebP bytes one after the other, and in
    the `X-Thumbs` header `id:length,...` in that order; the others' ids in `X-Missing`, to ask for one by one
    (/api/thumb/{id} makes them, or says why it cannot). A page of 100 thumbnails is one request instead of 100,
    six at a time. The same checks as /api/thumb/{id}."""
    from birder_index.search import image_details

    wanted = list(dict.fromkeys(int(i) for i in ids.split(",")))
    rows = image_details(state.holder.index, wanted)
    root = state.holder.root
    parts: list[bytes] = []
    index: list[str] = []
    missing: list[str] = []
    for image_id in wanted:
        data = None
        row = rows.get(image_id)
        if row is not None and root is not None:
            try:
                data = state.previews.cached(*photo_file(root, row.path))
            except (Refused, OSError):
                data = None
        if data is None:
            missing.append(str(image_id))
        else:
            parts.append(data)
            index.append(f"{image_id}:{len(data)}")
    headers = {"x-thumbs": ",".join(index), "x-missing": ",".join(missing), "cache-control": "private, max-age=60"}
    return Response(b"".join(parts), media_type="application/octet-stream", headers=headers)


@router.get("/original/{image_id}", response_class=FileResponse)
def original(state: State, image_id: int) -> FileResponse:
    """The photo file itself, for a photo of the index inside its photo folder."""
    row = _row(state, image_id)
    return _file_response(*_served(state, row), row.path)


@router.get("/file", response_class=FileResponse)
def file(state: State, path: str) -> FileResponse:
    """The photo file stored under `path` (relative to the photo folder): refused for absolute paths, paths that
    climb out (`..`), paths the index does not hold, and files whose real path (links resolved) is outside."""
    from birder_index.search import image_at

    rel = check_relative(path)
    row = image_at(state.holder.index, rel)
    if row is None:
        raise HTTPException(404, f"{rel} is not a photo of this index")
    return _file_response(*_served(state, row), row.path)


def _served(state: AppState, row: ImageRow) -> tuple[str, Any]:
    root = state.holder.root
    if root is None:
        raise HTTPException(404, "this index holds imported embeddings: it has no photo files to show")
    try:
        return photo_file(root, row.path)
    except Refused as e:
        raise HTTPException(403, f"{row.path} is not served: {e}") from None
    except OSError:
        raise HTTPException(404, f"{row.path} is gone from the photo folder") from None


def _file_response(real: str, st: Any, rel: str) -> FileResponse:
    kind = mimetypes.guess_type(rel)[0] or "application/octet-stream"
    headers = {"cache-control": "private, max-age=3600"}
    return FileResponse(real, media_type=kind, stat_result=st, content_disposition_type="inline",
                        filename=rel.rpartition("/")[2], headers=headers)  # fmt: skip


@router.get("/jobs/{job_id}")
def job(state: State, job_id: str) -> JobOut:
    """A background job's progress, then its result or its one-line error."""
    found = state.jobs.get(job_id)
    if found is None:
        raise HTTPException(404, f"no job {job_id}")
    return JobOut(**found.to_json())


@router.get("/jobs")
def jobs(state: State) -> list[JobOut]:
    """The jobs running now."""
    return [JobOut(**j.to_json()) for j in state.jobs.running()]
