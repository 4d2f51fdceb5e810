"""The threshold choice: precision on the sample, duplicates already in the collection, the colour check."""

from __future__ import annotations

import re
import sys

import numpy as np
import pytest

from birder_index.dedup.calibrate import DUPLICATE_ANCHOR
from birder_index.dedup.calibrate import MANY_DUPLICATES
from birder_index.dedup.calibrate import RECALL_FLOOR
from birder_index.dedup.calibrate import REVIEW_BELOW
from birder_index.dedup.calibrate import THUMBNAIL_BARS
from birder_index.dedup.calibrate import VARIANTS
from birder_index.dedup.calibrate import Measured
from birder_index.dedup.calibrate import choose_threshold
from birder_index.dedup.calibrate import choose_thumbnail_min
from birder_index.dedup.calibrate import estimate
from birder_index.dedup.calibrate import many_duplicates
from birder_index.errors import BirderIndexError

RNG = np.random.default_rng(0)
POS = RNG.uniform(0.85, 1.0, 1000)  # a photo and its variant
NEG = RNG.normal(0.3, 0.1, 10_000)  # different photos: a bulk, as real pairs of different photos spread


def test_clean_collection_threshold_separates_the_two() -> None:
    t, reached, duplicates = choose_threshold(POS, NEG, 0.99)
    assert duplicates == 0 and reached >= 0.99
    assert t <= POS.min()  # every positive: the floor bounds only the correction for duplicates, none here
    assert _precision(POS, NEG, t) >= 0.99 and _precision(POS, NEG, NEG[t > NEG].max()) < 0.99
    anchor = np.sort(POS)[int(DUPLICATE_ANCHOR * len(POS))]
    harder = np.concatenate([NEG, RNG.uniform(0.85, anchor, 50)])  # 50 different photos as alike as variants
    t_hard, reached_hard, _ = choose_threshold(POS, harder, 0.99)
    assert t_hard > 0.85 and reached_hard >= 0.99 and _precision(POS, harder, t_hard) >= 0.99  # they raise it
    above = np.concatenate([NEG, RNG.uniform(anchor, 0.95, 50)])  # the limit: as alike as 4 in 5 variants
    t_above, reached_above, taken = choose_threshold(POS, above, 0.99)
    assert taken > 40 and reached_above >= 0.99 > _precision(POS, above, t_above)  # taken for duplicates


def test_a_model_spreading_different_photos_widely_is_the_limit_and_the_uncorrected_threshold_its_way_out() -> None:
    pos = RNG.normal(0.75, 0.12, 1050)  # 150 photos' variants, spread widely
    neg = RNG.normal(0.45, 0.12, 11_175)  # their pairs, hundreds above the positives' 20th percentile, no copy
    t, _, duplicates = choose_threshold(pos, neg, 0.99)
    assert duplicates >= MANY_DUPLICATES * 150 and _precision(pos, neg, t) < 0.9  # taken for duplicates
    uncorrected, _, _ = choose_threshold(pos, neg, 0.99, correct=False)  # what the many-duplicates line names
    assert uncorrected > t and _precision(pos, neg, uncorrected) >= 0.985


def test_the_collections_copies_below_the_median_positive_are_counted(monkeypatch: pytest.MonkeyPatch) -> None:
    median = np.median(POS)
    copies = np.sort(POS)[np.sort(POS) < median][::2]  # 250 copies, as alike as the lower half of the variants
    t, reached, duplicates = choose_threshold(POS, np.concatenate([NEG, copies]), 0.99)
    assert duplicates > 150 and reached >= 0.99 and t < median  # the 150 above the 20th percentile, / 0.8
    monkeypatch.setattr(sys.modules["birder_index.dedup.calibrate"], "DUPLICATE_ANCHOR", 0.5)  # 0.2.0's median
    t_median, _, counted = choose_threshold(POS, np.concatenate([NEG, copies]), 0.99)
    assert counted < 20 and t_median > t  # none counted: the copies stood for false pairs and raised it


def test_the_floor_keeps_out_near_misses_the_duplicate_correction_would_explain_away(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    floor = np.sort(POS)[int(RECALL_FLOOR * len(POS))]
    near = np.full(3, floor - 0.005)  # three pairs of different photos just below the floor
    negatives = np.concatenate([NEG, np.sort(POS)[1::3], near])  # and 333 pairs of copies, spread as variants are
    t, reached, _ = choose_threshold(POS, negatives, 0.99)
    assert t == floor > near.max() and reached >= 0.99
    monkeypatch.setattr(sys.modules["birder_index.dedup.calibrate"], "RECALL_FLOOR", 0.0)
    assert choose_threshold(POS, negatives, 0.99)[0] <= near.max()  # without it the copies hide the near misses


def test_duplicates_already_in_the_collection_do_not_push_the_threshold_to_one() -> None:
    contaminated = np.concatenate([NEG, RNG.uniform(0.85, 1.0, 300)])  # 300 pairs of copies of one photo
    t_naive = _naive(POS, contaminated, 0.99)
    t, reached, duplicates = choose_threshold(POS, contaminated, 0.99)
    assert t_naive > 0.99  # what counting them as false positives gives
    assert duplicates == pytest.approx(300, rel=0.2)
    assert t < 0.9 and reached >= 0.99


def test_known_copies_leave_the_negatives_and_count_among_the_duplicates() -> None:
    copies = RNG.uniform(0.85, 1.0, 300)  # pairs of copies whose pixels agree: known, left out of the negatives
    t, reached, duplicates = choose_threshold(POS, NEG, 0.99, copies=copies)
    assert t < 0.9 and reached >= 0.99 and duplicates < 30  # few left to estimate beyond the known ones
    hidden = np.concatenate([NEG, RNG.uniform(0.85, 1.0, 100)])  # 100 more copies the pixels did not reveal
    t_hidden, reached_hidden, more = choose_threshold(POS, hidden, 0.99, copies=copies)
    assert more == pytest.approx(100, rel=0.35) and t_hidden < 0.9 and reached_hidden >= 0.99


def test_pairs_the_colour_check_rejects_are_never_found() -> None:
    pos = POS.copy()
    pos[:100] = -np.inf
    t, _, _ = choose_threshold(pos, NEG, 0.99)
    assert 0 < t <= 1
    with pytest.raises(BirderIndexError, match="no threshold reaches precision"):
        choose_threshold(np.full(10, -np.inf), NEG, 0.99)


def test_the_thumbnail_bar_is_the_lowest_that_keeps_the_precision() -> None:
    pos = POS.copy()
    pos[:100] = RNG.uniform(0.6, 0.8, 100)  # copies the encoder scores low (heavy JPEG of smooth gradients)
    pos_thumb = np.where(np.arange(len(pos)) < 100, 0.999, RNG.uniform(0.5, 1.0, len(pos)))
    neg = np.concatenate([NEG, RNG.uniform(0.55, 0.8, 400)])  # different photos of smooth scenes score that high
    neg_thumb = RNG.uniform(0.0, 0.9, len(neg))
    t, _, duplicates = choose_threshold(pos, neg, 0.99)
    assert np.mean(pos[:100] >= t) < 0.1  # the low copies cost too many negatives for the embeddings alone
    bar, reached = choose_thumbnail_min(pos, pos_thumb, neg, neg_thumb, t, duplicates=duplicates, precision=0.99)
    assert bar == THUMBNAIL_BARS[0] and reached >= 0.99
    smooth = neg_thumb.copy()
    smooth[:30] = 0.987  # different photos of one smooth scene: their thumbnails agree this much
    bar, reached = choose_thumbnail_min(pos, pos_thumb, neg, smooth, t, duplicates=duplicates, precision=0.99)
    assert bar == 0.99 and reached >= 0.99  # the lowest bar above them
    alike = neg_thumb.copy()
    alike[:30] = 0.999  # as alike as the copies: no bar keeps the precision, thumbnails stay off
    bar, reached = choose_thumbnail_min(pos, pos_thumb, neg, alike, t, duplicates=duplicates, precision=0.99)
    assert bar == 0.0 and np.isnan(reached)


def _precision(pos: np.ndarray, neg: np.ndarray, t: float) -> float:
    tp = np.sum(pos >= t)
    return float(tp / (tp + np.sum(neg >= t)))


def _naive(pos: np.ndarray, neg: np.ndarray, precision: float) -> float:
    for t in np.unique(np.concatenate([pos, neg])):
        tp, fp = np.sum(pos >= t), np.sum(neg >= t)
        if tp and tp / (tp + fp) >= precision:
            return float(t)
    return 1.0


def _measured(photos: int, *, copies: int = 0, seed: int = 0) -> Measured:
    """Synthetic measurements: unit embeddings, variants close to their photo, one colour for all, thumbnails that
    tell every photo apart. With `copies`, the photos come in groups of 1 + `copies`, near copies of the group's
    first (the collection's own duplicates, which the thumbnails do not reveal)."""
    rng = np.random.default_rng(seed)
    d, k = 32, len(VARIANTS)
    orig = rng.standard_normal((photos, d))
    group = np.arange(photos) // (1 + copies) * (1 + copies)
    orig = np.where((group == np.arange(photos))[:, None], orig, orig[group] + 0.25 * rng.standard_normal((photos, d)))
    orig = orig / np.linalg.norm(orig, axis=1, keepdims=True)
    var = np.repeat(orig, k, axis=0) + 0.25 * rng.standard_normal((photos * k, d))
    var = var / np.linalg.norm(var, axis=1, keepdims=True)
    sig = np.tile(rng.integers(0, 255, (1, 193), dtype=np.uint8), (photos * (k + 1), 1))
    th = rng.integers(0, 255, (photos, 256), dtype=np.uint8)
    fine = rng.integers(0, 255, (photos, 1024), dtype=np.uint8)
    return Measured(np.arange(photos, dtype=np.int64), orig.astype(np.float32), var.astype(np.float32),
                    sig[:photos], sig[photos:], th, np.repeat(th, k, axis=0), fine)  # fmt: skip


def test_a_sample_full_of_duplicates_says_so_in_one_line() -> None:
    clean = estimate(_measured(60), precision=0.99)
    assert clean.duplicates < MANY_DUPLICATES * 60 and clean.advice == ""
    heavy = estimate(_measured(60, copies=3), precision=0.99)
    assert heavy.duplicates >= MANY_DUPLICATES * 60  # 15 groups of 4 copies: 90 pairs, 1.5 per photo
    assert "\n" not in heavy.advice and f"about {heavy.duplicates} pairs among 60 photos" in heavy.advice
    assert f"--threshold {heavy.threshold - REVIEW_BELOW:.2f}" in heavy.advice
    uncorrected = re.search(
        r"the threshold without them is (\d\.\d{4}) \(birder-index dedup --threshold \1\)", heavy.advice
    )
    assert uncorrected and float(uncorrected[1]) > heavy.threshold  # the other reading: every pair a false one
    assert "--threshold 0.85 " in many_duplicates(200, 100, 0.8668, 0.95)  # rounded: 0.8468 -> 0.85, not 0.84


def test_taking_a_smaller_sample_keeps_each_photo_with_its_variants() -> None:
    m = _measured(10)
    part = m.take(np.array([2, 7]))
    k = len(VARIANTS)
    assert np.array_equal(part.ids, [2, 7]) and np.array_equal(
        part.var, np.concatenate([m.var[2 * k : 3 * k], m.var[7 * k : 8 * k]])
    )
    assert np.array_equal(Measured.join([m.take(np.arange(5)), m.take(np.arange(5, 10))]).var, m.var)
