"""Choose the dedup threshold for the model and the collection at hand, from a target precision.

A sample of the collection's photos is turned into near-duplicate variants of known kinds (downscale, low-quality
JPEG, crop keeping 85 %, horizontal flip, 5 degree rotation, brightness/contrast, text overlay) and embedded with
the collection's own model. Positives are (photo, variant) pairs; negatives are pairs of different sampled photos.
A pair counts as found when it scores at least the threshold and its colour signatures agree (dedup's colour
check); the threshold is the lowest similarity at which the estimated precision, positives / everything found, is
at least the target.

A collection that already holds duplicates puts some among the "negatives". Pairs whose 32 x 32 thumbnails are
near-identical, straight or mirrored, are copies and leave the negatives. Those scoring above the positives'
median, the copies included, are taken for such duplicates; as many again are expected below it, spread like the
positives, and that expected number, less the copies already left out, is subtracted from the false positives at
every threshold (`choose_threshold`). On a collection without duplicates nothing changes.

Then the thumbnail bar (dedup's second signal, backbone/thumbnail.py): the lowest of THUMBNAIL_BARS at which
pairs found by either signal still keep the estimated precision, or none (`choose_thumbnail_min`). The threshold
is chosen first and never moves for it, so the thumbnails only add pairs. Limits: docs/dedup.md.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import asdict
from dataclasses import dataclass
from datetime import UTC
from datetime import datetime
from typing import TYPE_CHECKING
from typing import Any

import numpy as np
from PIL import Image
from PIL import ImageDraw
from PIL import ImageEnhance

from birder_index.backbone.colour import colour_signatures
from birder_index.backbone.colour import colour_similarity
from birder_index.backbone.thumbnail import thumbnail_match
from birder_index.backbone.thumbnail import thumbnails
from birder_index.db import queries as q
from birder_index.db.engine import session_scope
from birder_index.db.models import MetaKey
from birder_index.dedup.find import COLOUR_MIN
from birder_index.errors import BirderIndexError
from birder_index.indexer.index import Index
from birder_index.indexer.vectors import normalize
from birder_index.progress import Progress
from birder_index.progress import silent

if TYPE_CHECKING:
    from birder_index.backbone.encoder import Encoder

logger = logging.getLogger(__name__)
MIN_PHOTOS = 10  # below this the sample's pairs of photos say little about the collection's near misses
WORKING_SIZE = 768  # variants are made from a copy this large: the model sees 224-384 px either way
# Thumbnail correlations tried, lowest first: below 0.98 different photos of smooth scenes correlate (the quality
# benchmark: docs/benchmarks.md#dedup), so lower bars are never tried, however clean the sample looks.
THUMBNAIL_BARS = (0.98, 0.985, 0.99, 0.995)
# Pairs of sampled photos whose 32 x 32 grey thumbnails correlate this much, straight or mirrored, are copies
# already in the collection (resized, re-encoded, retouched, flipped), not negatives: on the quality benchmark's
# sample every such pair is a copy of one picture, and the different pictures closest in pixels (a light and a
# dark theme, grey alike) stay below (docs/dedup.md).
COPY_SIDE, COPY_MIN = 32, 0.98


def _jpeg(img: Image.Image, quality: int) -> Image.Image:
    import io

    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=quality)
    buf.seek(0)
    return Image.open(buf).convert("RGB")


def _crop(img: Image.Image, keep: float) -> Image.Image:
    w, h = img.size
    cw, ch = int(w * keep**0.5), int(h * keep**0.5)
    return img.crop(((w - cw) // 2, (h - ch) // 2, (w - cw) // 2 + cw, (h - ch) // 2 + ch))


def _rotate(img: Image.Image, degrees: float) -> Image.Image:
    """A slightly rotated copy without its empty corners (the largest centred crop inside the rotated frame)."""
    rotated = img.rotate(degrees, resample=Image.Resampling.BICUBIC, expand=False)
    a = np.radians(abs(degrees))
    w, h = img.size
    scale = 1 / (np.cos(a) + np.sin(a) * max(w / h, h / w))
    cw, ch = int(w * scale), int(h * scale)
    return rotated.crop(((w - cw) // 2, (h - ch) // 2, (w - cw) // 2 + cw, (h - ch) // 2 + ch))


def _text(img: Image.Image) -> Image.Image:
    out = img.copy()
    draw = ImageDraw.Draw(out)
    w, h = out.size
    draw.rectangle((0, int(h * 0.85), w, h), fill=(0, 0, 0))
    draw.text((int(w * 0.05), int(h * 0.88)), "(c) 2026 birder-index sample  #duplicate", fill=(255, 255, 255))
    return out


VARIANTS: dict[str, Callable[[Image.Image], Image.Image]] = {
    "downscale": lambda im: im.resize((max(1, im.width // 3), max(1, im.height // 3)), Image.Resampling.BILINEAR),
    "jpeg": lambda im: _jpeg(im, 30),
    "crop": lambda im: _crop(im, 0.85),
    "flip": lambda im: im.transpose(Image.Transpose.FLIP_LEFT_RIGHT),
    "rotate": lambda im: _rotate(im, 5),
    "color": lambda im: ImageEnhance.Contrast(ImageEnhance.Brightness(im).enhance(1.25)).enhance(0.8),
    "text": _text,
}


@dataclass(frozen=True)
class Calibration:
    threshold: float
    precision: float  # the target
    estimated_precision: float  # at the chosen threshold, on the sample
    recall: dict[str, float]  # per variant kind, at the chosen threshold
    sample: int
    positives: int
    negatives: int
    model_sha256: str
    created: str
    colour_min: float = 0.0  # dedup's colour check the threshold was chosen with (0: none)
    duplicates: int = 0  # estimated duplicates among the sample's pairs of photos (the collection's own)
    thumbnail_min: float = 0.0  # thumbnail correlation that also makes a duplicate (0: thumbnails not used)
    advice: str = ""  # one line for the user when the sample says the threshold is likely too strict

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def choose_threshold(
    pos: np.ndarray, neg: np.ndarray, precision: float, *, copies: np.ndarray | None = None
) -> tuple[float, float, float]:
    """Lowest threshold t with TP(t) / (TP(t) + FP(t)) >= precision -> (t, the precision reached, the number of
    duplicates estimated among the negatives beyond the known copies). `pos` holds -inf for pairs the colour
    check rejects; `copies`: the scores of pairs of sampled photos known to be copies, left out of `neg`."""
    copies = np.zeros(0) if copies is None else copies
    pos_sorted, neg_sorted = np.sort(pos), np.sort(neg)
    found = np.sort(pos[np.isfinite(pos)])  # the negatives given are those that pass the colour check too

    def share_found_above(t: np.ndarray) -> np.ndarray:
        return (len(found) - np.searchsorted(found, t, side="left")) / max(len(found), 1)

    median = np.median(found) if len(found) else np.inf
    above = len(neg) - np.searchsorted(neg_sorted, median, side="left") + np.count_nonzero(copies >= median)
    duplicates = above / max(float(share_found_above(np.array([median]))[0]), 1e-9) if above else 0.0
    duplicates = max(0.0, duplicates - len(copies))  # the known copies are out of `neg` already
    candidates = np.unique(np.concatenate([pos, neg]))
    candidates = candidates[np.isfinite(candidates) & (candidates > 0)]  # -inf: a pair the colour check rejects
    tp = len(pos) - np.searchsorted(pos_sorted, candidates, side="left")
    fp = len(neg) - np.searchsorted(neg_sorted, candidates, side="left")
    fp = np.maximum(0.0, fp - duplicates * share_found_above(candidates))
    prec = np.where(tp > 0, tp / np.maximum(tp + fp, 1e-9), 0.0)
    ok = np.nonzero(prec >= precision)[0]
    if not len(ok):
        raise BirderIndexError(f"no threshold reaches precision {precision} on this sample; pass --threshold")
    return float(candidates[ok[0]]), float(prec[ok[0]]), float(duplicates)


def choose_thumbnail_min(
    pos: np.ndarray, pos_thumb: np.ndarray, neg: np.ndarray, neg_thumb: np.ndarray, threshold: float,
    *, duplicates: float, precision: float,
) -> tuple[float, float]:  # fmt: skip
    """The lowest bar c of THUMBNAIL_BARS at which pairs with cosine >= threshold or thumbnail correlation >= c
    keep the target precision, with the duplicates estimated among the negatives subtracted as in
    `choose_threshold` -> (c, the precision reached), or (0.0, nan) when no bar keeps it. `pos` holds -inf for
    pairs the colour check rejects; `neg` and `neg_thumb` are the pairs it lets through."""
    can = np.isfinite(pos)
    for bar in THUMBNAIL_BARS:
        found = can & ((pos >= threshold) | (pos_thumb >= bar))
        tp = int(found.sum())
        share = tp / max(int(can.sum()), 1)  # of the positives the colour check lets through
        fp = max(0.0, int(((neg >= threshold) | (neg_thumb >= bar)).sum()) - duplicates * share)
        reached = tp / max(tp + fp, 1e-9)
        if tp and reached >= precision:
            return bar, reached
    return 0.0, float("nan")


def calibrate(
    index: Index,
    encoder: Encoder,
    *,
    precision: float = 0.99,
    sample: int = 150,
    seed: int = 0,
    colour_min: float = COLOUR_MIN,
    store: bool = True,
    progress: Progress = silent,
) -> Calibration:
    """Sample photos, embed their variants, choose the threshold; stored in the index for the next run (unless
    `store` is False: a reader that must not write, such as `serve --read-only`)."""
    import torch

    from birder_index.backbone.images import open_upright
    from birder_index.backbone.images import resize

    if not 0 < precision < 1:
        raise BirderIndexError(f"--precision must be in (0, 1), got {precision}")
    root = index.root
    if root is None:
        raise BirderIndexError("calibration needs the photos (this index holds imported vectors): pass --threshold")
    paths = _sample(index, sample, seed)
    if len(paths) < MIN_PHOTOS:
        raise BirderIndexError(
            f"calibrating a threshold needs at least {MIN_PHOTOS} distinct photos; the index in {index.dir} has "
            f"{len(paths)}: pass --threshold (0.90 is a cautious start), or calibrate on a larger index of the same "
            "model"
        )
    size = encoder.info.preprocess.size
    originals, variants, kinds, owners = [], [], [], []
    for n, rel in enumerate(paths):
        progress("calibrating: making variants of sampled photos", n, len(paths))
        try:
            img, _, _ = open_upright(root / rel)
        except Exception:  # a file changed or vanished since indexing: skip it
            logger.info("calibration: cannot read %s", rel)
            continue
        img.thumbnail((WORKING_SIZE, WORKING_SIZE), Image.Resampling.BICUBIC)
        originals.append(resize(img, size))
        for kind, make in VARIANTS.items():
            variants.append(resize(make(img).convert("RGB"), size))
            kinds.append(kind)
            owners.append(len(originals) - 1)
    if len(originals) < 2:
        raise BirderIndexError("calibration needs at least 2 readable photos; pass --threshold")
    emb = normalize(_embed(encoder, originals + variants, torch, progress))
    orig, var = emb[: len(originals)], emb[len(originals) :]
    pixels = np.stack(originals + variants)
    sig, thumbs = colour_signatures(pixels), thumbnails(pixels)
    sig_orig, sig_var = sig[: len(originals)], sig[len(originals) :]
    th_orig, th_var = thumbs[: len(originals)], thumbs[len(originals) :]
    owners_a = np.array(owners)
    pos = np.einsum("ij,ij->i", orig[owners_a], var)
    pos = np.where(colour_similarity(sig_orig[owners_a], sig_var) >= colour_min, pos, -np.inf)  # never found
    pos_thumb, _ = thumbnail_match(th_orig[owners_a], th_var)
    iu = np.triu_indices(len(orig), 1)
    passing = colour_similarity(sig_orig[iu[0]], sig_orig[iu[1]]) >= colour_min  # the others are never found
    fine = thumbnails(pixels[: len(originals)], side=COPY_SIDE)
    copies = passing & (thumbnail_match(fine[iu[0]], fine[iu[1]])[0] >= COPY_MIN)
    a, b = iu[0][passing & ~copies], iu[1][passing & ~copies]
    neg, (neg_thumb, _) = np.einsum("ij,ij->i", orig[a], orig[b]), thumbnail_match(th_orig[a], th_orig[b])
    copy_scores = np.einsum("ij,ij->i", orig[iu[0][copies]], orig[iu[1][copies]])
    threshold, reached, duplicates = choose_threshold(pos, neg, precision, copies=copy_scores)
    bar, with_thumbs = choose_thumbnail_min(
        pos, pos_thumb, neg, neg_thumb, threshold, duplicates=duplicates, precision=precision
    )
    reached = with_thumbs if bar else reached
    found = np.isfinite(pos) & ((pos >= threshold) | (pos_thumb >= (bar or np.inf)))
    kinds_a = np.array(kinds)
    recall = {k: float(np.mean(found[kinds_a == k])) for k in VARIANTS}
    created = datetime.now(UTC).isoformat(timespec="seconds")
    cal = Calibration(threshold, precision, reached, recall, len(orig), len(pos), len(iu[0]),
                      index.model_row().sha256, created, colour_min, round(duplicates) + int(copies.sum()),
                      bar)  # fmt: skip
    if store:
        with session_scope(index.engine) as s:
            q.set_json(s, MetaKey.DEDUP_CALIBRATION, cal.to_json())
    return cal


def stored_calibration(index: Index, precision: float, *, colour_min: float = COLOUR_MIN) -> Calibration | None:
    """The calibration an earlier run stored, if it was for this model, precision and colour check."""
    cal = last_calibration(index)  # one stored before thumbnails: calibrate again, the bar is part of the answer
    if cal is None:
        return None
    ok = cal.model_sha256 == index.model_row().sha256 and abs(cal.precision - precision) < 1e-9
    ok = ok and abs(cal.colour_min - colour_min) < 1e-9
    return cal if ok else None


def last_calibration(index: Index) -> Calibration | None:
    """The calibration an earlier run stored, whatever it was for (None if none, or one stored before thumbnails
    were part of it)."""
    with session_scope(index.engine) as s:
        data = q.get_json(s, MetaKey.DEDUP_CALIBRATION)
    return Calibration(**data) if data and "thumbnail_min" in data else None


def _sample(index: Index, n: int, seed: int) -> list[str]:
    """Paths of up to n indexed photos, a random sample with distinct content."""
    with session_scope(index.engine) as s:
        attrs = q.indexed_attributes(s)
    _, first = np.unique(attrs["sha256"], return_index=True)  # identical files would be false "negatives"
    rng = np.random.default_rng(seed)
    chosen = np.sort(rng.choice(attrs["id"][first], min(n, len(first)), replace=False))
    with session_scope(index.engine) as s:
        paths = q.paths_of(s, chosen)
    return [paths[int(i)] for i in chosen]


def _embed(encoder: Encoder, pixels: list[np.ndarray], torch: Any, progress: Progress, batch: int = 32) -> np.ndarray:
    out = []
    for i in range(0, len(pixels), batch):
        progress("calibrating: embedding the photos and their variants", i, len(pixels))
        out.append(encoder.embed(torch.from_numpy(np.stack(pixels[i : i + batch]))).numpy())
    progress("calibrating: embedding the photos and their variants", len(pixels), len(pixels))
    return np.concatenate(out)


def resolve_threshold(
    index: Index,
    *,
    threshold: float | None = None,
    precision: float | None = None,
    recalibrate: bool = False,
    device: str | None = None,
    colour_min: float = COLOUR_MIN,
    against: Index | None = None,
    store: bool = True,
    encoder: Encoder | None = None,
    progress: Progress = silent,
) -> tuple[float, Calibration | None, bool]:
    """(threshold, calibration, calibrated now): an explicit threshold wins; else the stored calibration for this
    model and precision; else a new calibration (precision 0.99 by default), stored unless `store` is False. With
    `against` (deduplicating one index against another of the same model), the larger of the two is calibrated:
    its sample says more. `encoder`: the index's model, where the caller has it loaded already."""
    if threshold is not None:
        if precision is not None:
            raise BirderIndexError("give --threshold or --precision, not both")
        return threshold, None, False
    precision = 0.99 if precision is None else precision
    if against is not None and len(against.id_rows()[0]) > len(index.id_rows()[0]):
        index = against
    stored = None if recalibrate else stored_calibration(index, precision, colour_min=colour_min)
    if stored is not None:
        return stored.threshold, stored, False
    if encoder is None:
        progress("loading the model", 0, None)
        encoder = index.load_encoder(device=device)
    cal = calibrate(index, encoder, precision=precision, colour_min=colour_min, store=store, progress=progress)
    return cal.threshold, cal, True
