"""Where a photo file is read: its bytes read once, hashed (sha256) and decoded to the model's pixels, with its
colour signature (colour.py) and thumbnail (thumbnail.py). A file that cannot be read or decoded becomes an `Item`
with its reason, never an exception: a build records it as failed and goes on.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from birder_index.backbone.colour import colour_signature
from birder_index.backbone.images import decode
from birder_index.backbone.thumbnail import thumbnail
from birder_index.errors import ImageError


@dataclass(frozen=True)
class Item:
    id: int
    pixels: np.ndarray | None  # uint8 (3, H, W), None on failure
    error: str | None
    sha256: str | None
    size: int | None
    mtime_ns: int | None
    width: int | None
    height: int | None
    colour: np.ndarray | None = None  # uint8 (SIGNATURE_DIM,), backbone/colour.py
    thumb: np.ndarray | None = None  # uint8 (THUMB_DIM,), backbone/thumbnail.py


def read_item(root: Path, image_id: int, rel: str, size: tuple[int, int], fast: bool) -> Item:
    try:
        with open(root / rel, "rb") as f:
            st = os.fstat(f.fileno())
            data = f.read()
    except OSError as e:
        return Item(image_id, None, (e.strerror or str(e)).lower(), None, None, None, None, None)
    sha = hashlib.sha256(data).hexdigest()
    if not data:
        return Item(image_id, None, "empty file", sha, 0, st.st_mtime_ns, None, None)
    try:
        d = decode(data, size, fast=fast)
    except ImageError as e:
        return Item(image_id, None, str(e), sha, st.st_size, st.st_mtime_ns, None, None)
    colour = colour_signature(d.pixels)  # here, in the worker: it overlaps the model like the decode
    thumb = thumbnail(d.pixels)
    return Item(image_id, d.pixels, None, sha, st.st_size, st.st_mtime_ns, d.width, d.height, colour, thumb)
