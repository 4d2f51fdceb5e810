"""What every route needs: the server's state, and the refusal of changes under --read-only."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends
from fastapi import HTTPException
from fastapi import Request

from birder_index.web.state import AppState


def get_state(request: Request) -> AppState:
    state: AppState = request.app.state.birder
    return state


State = Annotated[AppState, Depends(get_state)]


def writable(request: Request) -> None:
    """A route that changes the index, its labels, marks or photos: refused under --read-only."""
    if get_state(request).read_only:
        raise HTTPException(403, "the server runs with --read-only: nothing may be changed")


Writable = Depends(writable)
