"""The application: the JSON API under /api (its OpenAPI description at /api/openapi.json), the page at / and its
files under /static (plain HTML, CSS and JS shipped in the package: nothing from elsewhere), and the checks of
security.py around all of it. Library errors become one-line answers, never a 500."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib.resources import files
from pathlib import Path

from fastapi import FastAPI
from fastapi import Request
from fastapi.responses import FileResponse
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles
from sqlalchemy.exc import OperationalError

from birder_index.errors import BirderIndexError
from birder_index.errors import IndexBusy
from birder_index.indexer import Index
from birder_index.web import routes_dedup
from birder_index.web import routes_images
from birder_index.web import routes_labels
from birder_index.web.files import Refused
from birder_index.web.options import ServeOptions
from birder_index.web.security import Guard
from birder_index.web.security import SecurityMiddleware
from birder_index.web.state import AppState

logger = logging.getLogger(__name__)
STATIC = Path(str(files("birder_index.web") / "static"))
WRITE_JOBS = ("apply", "undo")


def create_app(index: Index, options: ServeOptions, *, token: str, port: int) -> FastAPI:
    """The application over an open index; `port` is the one the server listens on (the Host check needs it)."""
    state = AppState(index, options)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        if any(j.kind in WRITE_JOBS for j in state.jobs.running()):
            logger.warning("waiting for a move or an undo to finish before stopping")
        state.jobs.wait(kinds=WRITE_JOBS)

    app = FastAPI(
        title="birder-index",
        description="Search by photo, review duplicates, label species: the API of `birder-index serve`.",
        version=_version(),
        openapi_url="/api/openapi.json",
        docs_url=None,  # Swagger UI and ReDoc load from a CDN: the page must load nothing from elsewhere
        redoc_url=None,
        lifespan=lifespan,
    )
    app.state.birder = state
    app.include_router(routes_images.router)
    app.include_router(routes_dedup.router)
    app.include_router(routes_labels.router)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(STATIC / "index.html", headers={"cache-control": "no-cache"})

    @app.exception_handler(BirderIndexError)
    def library_error(request: Request, exc: BirderIndexError) -> JSONResponse:
        busy = isinstance(exc, IndexBusy)
        return JSONResponse({"detail": str(exc), "busy": busy}, 409 if busy else 400)

    @app.exception_handler(Refused)
    def refused(request: Request, exc: Refused) -> JSONResponse:
        return JSONResponse({"detail": f"not served: {exc}"}, 403)

    @app.exception_handler(LookupError)
    def gone(request: Request, exc: LookupError) -> JSONResponse:
        return JSONResponse({"detail": str(exc.args[0]) if exc.args else "not found"}, 404)

    @app.exception_handler(OperationalError)
    def database_busy(request: Request, exc: OperationalError) -> JSONResponse:
        logger.info("database error: %s", str(exc).splitlines()[0])
        return JSONResponse({"detail": "the index database is busy (another process is writing it): try again",
                             "busy": True}, 503)  # fmt: skip

    app.add_middleware(SecurityMiddleware, guard=Guard.of(options, port=port, token=token))
    return app


def _version() -> str:
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version

    try:
        return version("birder-index")
    except PackageNotFoundError:
        return "unknown"
