"""Choose the dedup threshold for the model and the collection at hand, from a target precision.

A sample of the collection's photos is turned into near-duplicate variants of known kinds (downscale, low-quality
JPEG, crop keeping 85 %, horizontal flip, 5 degree rotation, brightness/contrast, text overlay) and embedded with
the collection's own model. Positives are (photo, variant) pairs; negatives are pairs of different sampled photos.
A pair counts as found when it scores at least the threshold and its colour signatures agree (dedup's colour
check); the threshold is the lowest similarity at which the estimated precision, positives / everything found, is
at least the target.

A collection that already holds duplicates puts some among the "negatives". Pairs whose 32 x 32 thumbnails are
near-identical, straight or mirrored, are copies and leave the negatives. Those scoring above what four in five
positives reach (DUPLICATE_ANCHOR), the copies included, are taken for such duplicates; a quarter as many again are
expected below, spread like the positives, and that expected number, less the copies already left out, is
subtracted from the false positives at every threshold (`choose_threshold`). That correction may lower the
threshold only down to the score that 92.5 % of the positives (those the colour check lets through) reach
(RECALL_FLOOR): below it, it could explain away a real near miss. On a collection without duplicates nothing is
subtracted and the floor plays no part. Where the sample seems to hold many duplicates, the output says so, with
the threshold it would have without the correction, for a collection the user knows to hold few.

Then the thumbnail bar (dedup's second signal, backbone/thumbnail.py): the lowest of THUMBNAIL_BARS at which
pairs found by either signal still keep the estimated precision, or none (`choose_thumbnail_min`). The threshold
is chosen first and never moves for it, so the thumbnails only add pairs. Limits: docs/dedup.md.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import asdict
from dataclasses import dataclass
from dataclasses import fields
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
# Pairs of sampled photos scoring at least this quantile of the positives are taken for the collection's own
# duplicates. The median, used before, counted too few: copies in a collection (other crops, sizes and aspect
# ratios, rotations) are less alike than a photo and one variant of it; with it the realistic benchmark's threshold
# ranged 0.77-0.97 between draws, with 0.2 and RECALL_FLOOR 0.86-0.89 (docs/benchmarks.md#calibration).
DUPLICATE_ANCHOR = 0.2
# The correction for duplicates lowers the threshold no further than the score this share of the positives fails
# to reach: below it the correction can explain away a real near miss (two designs of one layout at cosine 0.845
# on the realistic benchmark). Chosen on that benchmark: 0.05 loses precision there, 0.1 crops; 0.075 meets every
# target of the three benchmarks (docs/benchmarks.md#calibration).
RECALL_FLOOR = 0.075
# Version of the estimate: a calibration stored by an earlier one is redone, not reused.
ESTIMATOR = 2
# Estimated duplicate pairs per sampled photo from which the sample "holds many duplicates": the correction for
# them is approximate there, and the output says so (`many_duplicates`). Measured: 0.28 on the README's 54 photos,
# 0.37-0.69 on realistic collections, 1.25-1.60 on two made mostly of duplicates (docs/benchmarks.md#calibration).
MANY_DUPLICATES = 1.0
# The fixed threshold that line suggests reviewing lies this far below the calibrated one: measured at 0.85 and
# 0.87 on both duplicate-heavy benchmarks, precision 0.991-0.999, and more rotations found on the one that has
# them (docs/benchmarks.md#calibration).
REVIEW_BELOW = 0.02


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
    advice: str = ""  # one line for the user when the sample holds many duplicates
    estimator: int = 1  # ESTIMATOR when stored (those stored before it existed: 1)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def choose_threshold(
    pos: np.ndarray, neg: np.ndarray, precision: float, *, copies: np.ndarray | None = None, correct: bool = True
) -> tuple[float, float, float]:
    """Lowest threshold t with TP(t) / (TP(t) + FP(t)) >= precision -> (t, the precision reached, the number of
    duplicates estimated among the negatives beyond the known copies). FP(t) counts the negatives at t or above,
    less the duplicates estimated among them; that correction may lower the threshold only down to the RECALL_FLOOR
    quantile of the positives (a threshold the negatives meet uncorrected is taken wherever it lies). `pos` holds
    -inf for pairs the colour check rejects; `copies`: the scores of pairs of sampled photos known to be copies,
    left out of `neg`; `correct=False`: every negative counts (no duplicates estimated among them)."""
    copies = np.zeros(0) if copies is None else copies
    pos_sorted, neg_sorted = np.sort(pos), np.sort(neg)
    found = np.sort(pos[np.isfinite(pos)])  # the negatives given are those that pass the colour check too

    def share_found_above(t: np.ndarray) -> np.ndarray:
        return (len(found) - np.searchsorted(found, t, side="left")) / max(len(found), 1)

    def score_missing(share: float) -> float:  # the score that `share` of the positives found falls below
        return float(found[int(share * len(found))]) if len(found) else np.inf

    anchor = score_missing(DUPLICATE_ANCHOR)
    above = len(neg) - np.searchsorted(neg_sorted, anchor, side="left") + np.count_nonzero(copies >= anchor)
    duplicates = above / max(float(share_found_above(np.array([anchor]))[0]), 1e-9) if above else 0.0
    duplicates = max(0.0, duplicates - len(copies)) if correct else 0.0  # the known copies are out of `neg` already
    candidates = np.unique(np.concatenate([pos, neg]))
    candidates = candidates[np.isfinite(candidates) & (candidates > 0)]  # -inf: a pair the colour check rejects
    tp = len(pos) - np.searchsorted(pos_sorted, candidates, side="left")
    counted = len(neg) - np.searchsorted(neg_sorted, candidates, side="left")
    fp = np.maximum(0.0, counted - duplicates * share_found_above(candidates))
    prec = np.where(tp > 0, tp / np.maximum(tp + fp, 1e-9), 0.0)
    uncorrected = np.where(tp > 0, tp / np.maximum(tp + counted, 1e-9), 0.0)
    floor = score_missing(RECALL_FLOOR)
    ok = np.nonzero((uncorrected >= precision) | ((prec >= precision) & (candidates >= floor)))[0]
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


@dataclass(frozen=True)
class Measured:
    """What the calibration measures on its sampled photos: photo i is `ids[i]`, row i of the `*_orig` arrays, and
    rows i * K to i * K + K - 1 of the `*_var` arrays (K = len(VARIANTS), in VARIANTS order) are its variants."""

    ids: np.ndarray  # int64 (n,) image ids
    orig: np.ndarray  # float32 (n, d) unit embeddings
    var: np.ndarray  # float32 (n * K, d)
    sig_orig: np.ndarray  # colour signatures
    sig_var: np.ndarray
    th_orig: np.ndarray  # 16 x 16 thumbnails (dedup's)
    th_var: np.ndarray
    fine: np.ndarray  # 32 x 32 thumbnails of the photos (COPY_SIDE): known copies among them

    def take(self, rows: np.ndarray) -> Measured:
        """The measurements of photos `rows` only (a smaller sample)."""
        k = len(VARIANTS)
        vrows = (np.asarray(rows)[:, None] * k + np.arange(k)).ravel()
        return Measured(
            **{name: value[vrows if name.endswith("var") else rows] for name, value in asdict(self).items()}
        )

    @classmethod
    def join(cls, parts: list[Measured]) -> Measured:
        return cls(**{name: np.concatenate([getattr(p, name) for p in parts]) for name in asdict(parts[0])})


@dataclass(frozen=True)
class Estimate:
    threshold: float
    reached: float  # the estimated precision at the threshold (and bar)
    recall: dict[str, float]
    positives: int
    negatives: int
    duplicates: int  # estimated among the pairs of sampled photos, known copies included
    thumbnail_min: float
    advice: str


def measure(images: list[Image.Image], ids: np.ndarray, encoder: Encoder, *, progress: Progress = silent) -> Measured:
    """Embed the photos (upright, decoded; shrunk in place to WORKING_SIZE) and their VARIANTS with the collection's
    model; their colour signatures and thumbnails."""
    import torch

    from birder_index.backbone.images import resize

    size = encoder.info.preprocess.size
    originals, variants = [], []
    for n, img in enumerate(images):
        progress("calibrating: making variants of sampled photos", n, len(images))
        img.thumbnail((WORKING_SIZE, WORKING_SIZE), Image.Resampling.BICUBIC)
        originals.append(resize(img, size))
        variants += [resize(make(img).convert("RGB"), size) for make in VARIANTS.values()]
    emb = normalize(_embed(encoder, originals + variants, torch, progress))
    pixels = np.stack(originals + variants)
    sig, thumbs, n = colour_signatures(pixels), thumbnails(pixels), len(originals)
    fine = thumbnails(pixels[:n], side=COPY_SIDE)
    return Measured(np.asarray(ids, np.int64), emb[:n], emb[n:], sig[:n], sig[n:], thumbs[:n], thumbs[n:], fine)


def estimate(m: Measured, *, precision: float, colour_min: float = COLOUR_MIN) -> Estimate:
    """The threshold and thumbnail bar from the measurements (see the module docstring)."""
    k, n = len(VARIANTS), len(m.ids)
    owners = np.repeat(np.arange(n), k)
    pos = np.einsum("ij,ij->i", m.orig[owners], m.var)
    pos = np.where(colour_similarity(m.sig_orig[owners], m.sig_var) >= colour_min, pos, -np.inf)  # never found
    pos_thumb, _ = thumbnail_match(m.th_orig[owners], m.th_var)
    iu = np.triu_indices(n, 1)
    passing = colour_similarity(m.sig_orig[iu[0]], m.sig_orig[iu[1]]) >= colour_min  # the others are never found
    copies = passing & (thumbnail_match(m.fine[iu[0]], m.fine[iu[1]])[0] >= COPY_MIN)
    a, b = iu[0][passing & ~copies], iu[1][passing & ~copies]
    neg, (neg_thumb, _) = np.einsum("ij,ij->i", m.orig[a], m.orig[b]), thumbnail_match(m.th_orig[a], m.th_orig[b])
    copy_scores = np.einsum("ij,ij->i", m.orig[iu[0][copies]], m.orig[iu[1][copies]])
    threshold, reached, duplicates = choose_threshold(pos, neg, precision, copies=copy_scores)
    bar, with_thumbs = choose_thumbnail_min(
        pos, pos_thumb, neg, neg_thumb, threshold, duplicates=duplicates, precision=precision
    )
    found = np.isfinite(pos) & ((pos >= threshold) | (pos_thumb >= (bar or np.inf)))
    kinds = np.tile(np.array(list(VARIANTS)), n)
    recall = {kind: float(np.mean(found[kinds == kind])) for kind in VARIANTS}
    duplicates = round(duplicates) + int(copies.sum())
    advice = ""
    if duplicates >= MANY_DUPLICATES * n:
        try:  # were those pairs different photos the model scores alike, the threshold would be this one
            uncorrected = choose_threshold(pos, neg, precision, copies=copy_scores, correct=False)[0]
        except BirderIndexError:
            uncorrected = 1.0
        advice = many_duplicates(duplicates, n, threshold, uncorrected)
    return Estimate(threshold, with_thumbs if bar else reached, recall, len(pos), len(iu[0]), duplicates, bar,
                    advice)  # fmt: skip


def many_duplicates(duplicates: int, photos: int, threshold: float, uncorrected: float) -> str:
    """The line for a sample that holds many duplicates (MANY_DUPLICATES per photo or more, which `estimate`
    checks); `uncorrected`: the threshold with none of the sample's pairs of photos taken for duplicates."""
    lower = round(threshold - REVIEW_BELOW, 2)
    return (
        f"the sample holds many duplicates (about {duplicates} pairs among {photos} photos): if the collection does, "
        "those of its own duplicates that differ more than the variants above (rotations, heavier crops) are found "
        "less often than their recall says, and a lower fixed threshold finds more (review: birder-index dedup "
        f"--threshold {lower:.2f} --report groups.html); if it does not, those pairs are different photos the model "
        f"scores alike, and the threshold without them is {uncorrected:.4f} (birder-index dedup --threshold "
        f"{uncorrected:.4f})"
    )


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
    if not 0 < precision < 1:
        raise BirderIndexError(f"--precision must be in (0, 1), got {precision}")
    m = measure_sample(index, encoder, sample=sample, seed=seed, progress=progress)
    est = estimate(m, precision=precision, colour_min=colour_min)
    created = datetime.now(UTC).isoformat(timespec="seconds")
    cal = Calibration(est.threshold, precision, est.reached, est.recall, len(m.ids), est.positives, est.negatives,
                      index.model_row().sha256, created, colour_min, est.duplicates, est.thumbnail_min,
                      est.advice, ESTIMATOR)  # fmt: skip
    if store:
        with session_scope(index.engine) as s:
            q.set_json(s, MetaKey.DEDUP_CALIBRATION, cal.to_json())
    return cal


def measure_sample(
    index: Index, encoder: Encoder, *, sample: int = 150, seed: int = 0, progress: Progress = silent
) -> Measured:
    """`measure` over a random sample of the index's photos with distinct content, those still readable."""
    from birder_index.backbone.images import open_upright

    root = index.root
    if root is None:
        raise BirderIndexError("calibration needs the photos (this index holds imported vectors): pass --threshold")
    chosen = _sample(index, sample, seed)
    if len(chosen) < MIN_PHOTOS:
        raise BirderIndexError(
            f"calibrating a threshold needs at least {MIN_PHOTOS} distinct photos; the index in {index.dir} has "
            f"{len(chosen)}: pass --threshold (0.90 is a cautious start), or calibrate on a larger index of the same "
            "model"
        )
    images, ids = [], []
    for n, (i, rel) in enumerate(chosen):
        progress("calibrating: reading sampled photos", n, len(chosen))
        try:
            img = open_upright(root / rel)[0]
        except Exception:  # a file changed or vanished since indexing: skip it
            logger.info("calibration: cannot read %s", rel)
            continue
        img.thumbnail((WORKING_SIZE, WORKING_SIZE), Image.Resampling.BICUBIC)  # 150 photos at full size: GBs
        images.append(img)
        ids.append(i)
    if len(images) < 2:
        raise BirderIndexError("calibration needs at least 2 readable photos; pass --threshold")
    return measure(images, np.array(ids, np.int64), encoder, progress=progress)


def stored_calibration(
    index: Index, precision: float, *, colour_min: float = COLOUR_MIN, any_estimator: bool = False
) -> Calibration | None:
    """The calibration an earlier run stored, if it was for this model, precision and colour check, by this
    ESTIMATOR (or any, for a reader that could not store a new one: `serve --read-only`)."""
    cal = last_calibration(index)  # one stored before thumbnails: calibrate again, the bar is part of the answer
    if cal is None:
        return None
    ok = cal.model_sha256 == index.model_row().sha256 and abs(cal.precision - precision) < 1e-9
    ok = ok and abs(cal.colour_min - colour_min) < 1e-9 and (any_estimator or cal.estimator == ESTIMATOR)
    return cal if ok else None


def last_calibration(index: Index) -> Calibration | None:
    """The calibration an earlier run stored, whatever it was for (None if none, or one stored before thumbnails
    were part of it)."""
    with session_scope(index.engine) as s:
        data = q.get_json(s, MetaKey.DEDUP_CALIBRATION)
    if not data or "thumbnail_min" not in data:
        return None
    known = {f.name for f in fields(Calibration)}  # a key a later version added is ignored, not an error
    return Calibration(**{k: v for k, v in data.items() if k in known})


def _sample(index: Index, n: int, seed: int) -> list[tuple[int, str]]:
    """(id, path) of up to n indexed photos, a random sample with distinct content."""
    with session_scope(index.engine) as s:
        attrs = q.indexed_attributes(s)
    _, first = np.unique(attrs["sha256"], return_index=True)  # identical files would be false "negatives"
    rng = np.random.default_rng(seed)
    chosen = np.sort(rng.choice(attrs["id"][first], min(n, len(first)), replace=False))
    with session_scope(index.engine) as s:
        paths = q.paths_of(s, chosen)
    return [(int(i), paths[int(i)]) for i in chosen]


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
    stored = (
        None if recalibrate else stored_calibration(index, precision, colour_min=colour_min, any_estimator=not store)
    )
    if stored is not None:
        return stored.threshold, stored, False
    if encoder is None:
        progress("loading the model", 0, None)
        encoder = index.load_encoder(device=device)
    cal = calibrate(index, encoder, precision=precision, colour_min=colour_min, store=store, progress=progress)
    return cal.threshold, cal, True
