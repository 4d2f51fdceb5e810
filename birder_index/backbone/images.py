"""Where a photo is decoded and resized: file bytes -> upright RGB -> uint8 (3, H, W) at the model's input size.

The exact path equals birder's inference transform on a PIL image (a squash resize to (H, W), bicubic with
antialiasing; the normalisation happens in the encoder). The fast path lets libjpeg decode a JPEG at 1/2, 1/4 or
1/8 scale in the DCT domain (PIL's draft mode) before the same bicubic resize: several times less work per
camera photo, with embeddings within the tolerance stated in the README.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from PIL import ImageOps

from birder_index.errors import ImageError

# PIL's own bound: refuse (not just warn about) images over 2 x 89.5 MP, the usual decompression bombs.
MAX_PIXELS = 2 * (Image.MAX_IMAGE_PIXELS or 89_478_485)
_ORIENTATION_TAG = 0x0112
_heif_registered = False


@dataclass(frozen=True)
class Decoded:
    pixels: np.ndarray  # uint8 (3, H, W) at the model's input size
    width: int  # the upright image's own size, before resizing
    height: int


def _register_heif() -> None:
    global _heif_registered
    if not _heif_registered:
        try:
            import pillow_heif

            pillow_heif.register_heif_opener()
        except ImportError:  # optional at run time: HEIC files then fail with "cannot identify image file"
            pass
        _heif_registered = True


def open_upright(source: bytes | Path, *, draft_size: tuple[int, int] | None = None) -> tuple[Image.Image, int, int]:
    """Decode the first frame as RGB with its EXIF orientation applied; returns (image, width, height).

    `draft_size` lets a JPEG decode at the smallest DCT scale that still covers that size; width and height are
    always the full upright size.
    """
    _register_heif()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            img: Image.Image = Image.open(io.BytesIO(source) if isinstance(source, bytes) else source)
            width, height = img.size
            if width * height > MAX_PIXELS:
                raise ImageError(f"image is {width}x{height}, over the {MAX_PIXELS}-pixel limit (decompression bomb?)")
            orientation = img.getexif().get(_ORIENTATION_TAG, 1)
            if orientation in (5, 6, 7, 8):
                width, height = height, width
            if draft_size is not None and img.format == "JPEG":
                side = max(draft_size)
                img.draft("RGB", (side, side))  # never below the target on either axis, whatever the rotation
            img = ImageOps.exif_transpose(img) if orientation != 1 else img
            return _to_rgb(img), width, height
        except ImageError:
            raise
        except Image.DecompressionBombError:
            raise ImageError(f"image is over the {MAX_PIXELS}-pixel limit (decompression bomb?)") from None
        except Exception as e:  # PIL raises many types for damaged files: SyntaxError, struct.error, zlib.error...
            raise ImageError(_reason(e)) from None


def _to_rgb(img: Image.Image) -> Image.Image:
    if img.mode == "RGB":
        img.load()
        return img
    if img.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        # 16-bit greyscale: PIL's convert("RGB") clips at 255; scale to 8 bits instead.
        arr = np.asarray(img, dtype=np.uint32)
        shift = 8 if img.mode.startswith("I;16") or arr.max(initial=0) > 255 else 0
        return Image.fromarray((arr >> shift).clip(0, 255).astype(np.uint8)).convert("RGB")
    if img.mode == "F":
        arr = np.asarray(img, dtype=np.float32)
        top = float(arr.max(initial=0.0))
        scale = 255.0 if top <= 1.0 else 255.0 / top
        return Image.fromarray((arr * scale).clip(0, 255).astype(np.uint8)).convert("RGB")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (img.mode == "P" and "transparency" in img.info):
        return _flatten_alpha(img.convert("RGBA"))
    return img.convert("RGB")


def _flatten_alpha(img: Image.Image) -> Image.Image:
    """Composite over mid-grey: what is visible is what gets embedded, whatever colour hides under transparent
    pixels (white in some wallpapers and icons, black in most exports). Dropping the alpha channel, as birder's and
    most loaders do, turns a white-on-transparent picture into a blank white image."""
    alpha_min, _ = img.getchannel("A").getextrema()
    if alpha_min == 255:  # fully opaque: nothing to composite
        return img.convert("RGB")
    background = Image.new("RGBA", img.size, (128, 128, 128, 255))
    return Image.alpha_composite(background, img).convert("RGB")


def _reason(e: BaseException) -> str:
    text = str(e).strip().splitlines()[0] if str(e).strip() else ""
    if isinstance(e, Image.UnidentifiedImageError):
        return "not an image PIL can read"
    if isinstance(e, OSError):
        return e.strerror.lower() if e.strerror else text or "unreadable image"
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


def resize(img: Image.Image, size: tuple[int, int], *, fast: bool = False) -> np.ndarray:
    """Squash-resize to (H, W) with antialiased bicubic (PIL's BICUBIC, as birder) -> uint8 (3, H, W)."""
    h, w = size
    # reducing_gap: a box pre-reduction by an integer factor for images several times too big (fast path only).
    out = img.resize((w, h), Image.Resampling.BICUBIC, reducing_gap=3.0 if fast else None)
    return np.ascontiguousarray(np.asarray(out, dtype=np.uint8).transpose(2, 0, 1))


def decode(source: bytes | Path, size: tuple[int, int], *, fast: bool = False) -> Decoded:
    """One photo to model-ready pixels; raises ImageError with a short reason."""
    img, width, height = open_upright(source, draft_size=size if fast else None)
    return Decoded(resize(img, size, fast=fast), width, height)
