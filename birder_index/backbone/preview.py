"""A photo as people look at it in a grid: upright (EXIF orientation applied), transparency over mid-grey, as
the build decodes it for the model (images.py), shrunk to fit a square and encoded as WebP."""

from __future__ import annotations

import io
from pathlib import Path

from PIL import Image

from birder_index.backbone.images import open_upright

PREVIEW_SIDE = 256
QUALITY = 80  # WebP quality: about 8-15 KB for a 256 px photo


def render_preview(source: bytes | Path, *, side: int = PREVIEW_SIDE) -> bytes:
    """WebP bytes of the photo fitting a `side` x `side` square (aspect kept; never enlarged). A JPEG is decoded at
    a reduced scale in the DCT domain first. Raises ImageError for a file that cannot be decoded."""
    img, _, _ = open_upright(source, draft_size=(side, side))
    img.thumbnail((side, side), Image.Resampling.BICUBIC, reducing_gap=3.0)
    buf = io.BytesIO()
    img.save(buf, "WEBP", quality=QUALITY, method=4)
    return buf.getvalue()
