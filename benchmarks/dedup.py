"""Dedup benchmark: quality on real photos with generated duplicates and hard negatives, and scale on synthetic
embeddings against imagededup's N x N approach.

    python benchmarks/dedup.py quality --photos PHOTOS
    python benchmarks/dedup.py scale [--rows 1000000] [--imagededup-python /path/to/venv/bin/python]

Quality: every real photo (../shared/datasets/real-photos.sh) plus generated variants of each (resize, JPEG
quality 30-95, crop keeping 70-95 %, flip, rotation up to 10 degrees, brightness, greyscale, text overlay, a
lossless re-save), embedded with the shared ImageNet encoder. Ground truth: a photo and its variants are
duplicates; so are the photos that are the same picture at several sizes (the Elephants and the Sway wallpapers);
light/dark and recoloured versions of one design and the grey abstract set are hard negatives. Reported as
imagededup's evaluation does: pairwise precision, recall and F1 of the duplicate class, recall per variant kind,
group purity; with the calibrated threshold and fixed ones (with the thumbnail signal at the default bar, and
without it: `emb`), and a sweep of fixed thresholds (what the best one does).

Scale: N synthetic embeddings from the calibrated generator with 1 % planted near-duplicates, deduplicated in one
process (time, peak memory, planted pairs found); at 20k and 50k side by side with imagededup's
`find_duplicates(encoding_map=...)` on the same vectors and threshold (run with --imagededup-python). With
`--thumbnails`, the N images also get synthetic 16 x 16 thumbnails (smooth random fields that correlate as widely
as real photos' thumbnails; the planted copies' thumbnails their source's plus noise), so the run pays for the
thumbnail join as a built index does.
"""

from __future__ import annotations

import argparse
import io
import itertools
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from PIL import ImageDraw
from PIL import ImageEnhance
from PIL import ImageOps
from realdata import SHARED_PT2
from realdata import photo_paths
from synthetic import Generator

from birder_index.backbone.colour import colour_similarity
from birder_index.backbone.images import open_upright
from birder_index.backbone.thumbnail import mirrored
from birder_index.backbone.thumbnail import thumbnail_match
from birder_index.backbone.thumbnail import thumbnail_vectors
from birder_index.db import queries as q
from birder_index.db.engine import session_scope
from birder_index.dedup.calibrate import _rotate
from birder_index.dedup.calibrate import _sample
from birder_index.dedup.calibrate import calibrate
from birder_index.dedup.find import COLOUR_MIN
from birder_index.dedup.find import THUMBNAIL_MIN
from birder_index.dedup.find import find_duplicates
from birder_index.indexer import Index
from birder_index.indexer import ModelSpec
from birder_index.indexer import build_index
from birder_index.indexer import import_embeddings
from birder_index.indexer import open_index
from birder_index.indexer.signatures import THUMBNAILS
from birder_index.indexer.signatures import read_signatures
from birder_index.indexer.vectors import normalize

SAME_PICTURE = [r"mate_abstract_Elephants", r"sway_Sway_Wallpaper_Blue"]  # one picture at several sizes
KINDS = ("resize", "jpeg", "crop", "flip", "rotate", "brightness", "grey", "text", "lossless")
FIXED = (0.85, 0.90, 0.95, 0.98)
TARGET_KINDS = ("resize", "jpeg", "flip", "crop80")  # the recall targets


def variant(img: Image.Image, kind: str, rng: np.random.Generator) -> tuple[Image.Image, str]:
    """A generated duplicate and a label with its parameter."""
    w, h = img.size
    if kind == "resize":
        s = rng.uniform(0.25, 0.7)
        return img.resize((max(16, int(w * s)), max(16, int(h * s))), Image.Resampling.BICUBIC), f"resize{s:.2f}"
    if kind == "jpeg":
        q = int(rng.integers(30, 96))
        buf = io.BytesIO()
        img.save(buf, "JPEG", quality=q)
        return Image.open(io.BytesIO(buf.getvalue())).convert("RGB"), f"jpeg{q}"
    if kind == "crop":
        keep = rng.uniform(0.70, 0.95)
        cw, ch = int(w * keep**0.5), int(h * keep**0.5)
        x, y = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
        return img.crop((x, y, x + cw, y + ch)), f"crop{keep:.2f}"
    if kind == "flip":
        return ImageOps.mirror(img), "flip"
    if kind == "rotate":
        deg = rng.uniform(2, 10) * rng.choice([-1, 1])
        return _rotate(img, float(deg)), f"rotate{deg:.1f}"
    if kind == "brightness":
        f = rng.uniform(0.7, 1.3)
        return ImageEnhance.Brightness(img).enhance(f), f"brightness{f:.2f}"
    if kind == "grey":
        return ImageOps.grayscale(img).convert("RGB"), "grey"
    if kind == "text":
        out = img.copy()
        ImageDraw.Draw(out).text((w // 10, h // 2), "SAMPLE  (c) birder-index", fill=(255, 255, 0))
        return out, "text"
    return img, "lossless"


def make_collection(
    photos: Path, out: Path, seed: int = 0, *, kinds: tuple[str, ...] = KINDS, make_variant: Any = None
) -> dict[str, tuple[str, str]]:
    """Originals and one variant of each kind (`make_variant(img, kind, rng)`, default `variant`) in `out`; returns
    name -> (source family, kind)."""
    make_variant = make_variant or variant
    rng = np.random.default_rng(seed)
    truth = {}
    out.mkdir(parents=True, exist_ok=True)
    for path in photo_paths(photos):
        family = next((f for f in SAME_PICTURE if re.match(f, path.stem)), path.stem)
        img, _, _ = open_upright(path)  # as `build` decodes it: alpha over grey (4 wallpapers are white under it)
        img.thumbnail((1600, 1600), Image.Resampling.BICUBIC)  # a camera-sized original keeps this benchmark short
        img.save(out / f"{path.stem}.png")
        truth[f"{path.stem}.png"] = (family, "original")
        for kind in kinds:
            v, label = make_variant(img, kind, rng)
            name = f"{path.stem}__{label}.{'png' if kind == 'lossless' else 'jpg'}"
            v.save(out / name, **({} if kind == "lossless" else {"quality": 95}))
            truth[name] = (family, kind)
    return truth


def evaluate(groups: list[tuple[str, list[tuple[str, str]]]], truth: dict[str, tuple[str, str]]) -> dict[str, float]:
    """Pairwise precision/recall/F1 of the duplicate class, recall per kind (photo and its own variant in one
    group), group purity, and exact-duplicate precision/recall."""
    group_of = {}
    for n, (keeper, members) in enumerate(groups):
        for name in [keeper, *(m for m, _ in members)]:
            group_of[name] = n
    names = sorted(truth)
    tp = fp = fn = 0
    for a, b in itertools.combinations(names, 2):
        same_truth = truth[a][0] == truth[b][0]
        same_pred = a in group_of and group_of.get(a) == group_of.get(b)
        tp += same_truth and same_pred
        fp += same_pred and not same_truth
        fn += same_truth and not same_pred
    precision, recall = tp / max(tp + fp, 1), tp / max(tp + fn, 1)
    out = {"precision": precision, "recall": recall, "f1": 2 * precision * recall / max(precision + recall, 1e-9)}

    def with_its_original(n: str) -> bool:
        source = n.split("__")[0] + ".png"
        return source in group_of and group_of.get(n) == group_of[source]

    for kind in KINDS:
        variants = [n for n in names if truth[n][1] == kind]
        out[f"recall_{kind}"] = sum(map(with_its_original, variants)) / max(len(variants), 1)
    crops80 = [n for n in names if truth[n][1] == "crop" and float(n.split("__crop")[1][:4]) >= 0.80]
    out["recall_crop80"] = sum(map(with_its_original, crops80)) / max(len(crops80), 1)  # the target's crops
    pure = [len({truth[m][0] for m in [k, *(x for x, _ in ms)]}) == 1 for k, ms in groups]
    out["purity"] = float(np.mean(pure)) if pure else 1.0
    exact_pred = {(k, m) for k, ms in groups for m, kind in ms if kind == "exact"}
    exact_true = {(n.split("__")[0] + ".png", n) for n in names if truth[n][1] == "lossless"}
    exact_pred_norm = {tuple(sorted(p)) for p in exact_pred}
    exact_true_norm = {tuple(sorted(p)) for p in exact_true}
    out["exact_precision"] = len(exact_pred_norm & exact_true_norm) / max(len(exact_pred_norm), 1)
    out["exact_recall"] = len(exact_pred_norm & exact_true_norm) / max(len(exact_true_norm), 1)
    return out


def quality(args: argparse.Namespace) -> None:
    work = Path(tempfile.mkdtemp())
    truth = make_collection(args.photos, work / "collection")
    t0 = time.perf_counter()
    build_index(work / "collection", spec=ModelSpec(weights=SHARED_PT2))
    print(f"{len(truth)} images ({len(photo_paths(args.photos))} photos, {len(KINDS)} variants each) indexed in "
          f"{time.perf_counter() - t0:.0f}s with {SHARED_PT2.name}")  # fmt: skip
    with open_index(work / "collection" / ".birder-index") as index:
        print(colour_check(index, truth))
        print(thumbnail_check(index, truth))
        t0 = time.perf_counter()
        cal = calibrate(index, index.load_encoder(), precision=0.99)
        print(f"calibrated threshold {cal.threshold:.4f}, thumbnails {cal.thumbnail_min or 'off'}, for precision "
              f"0.99 in {time.perf_counter() - t0:.0f}s "
              f"(estimated {cal.estimated_precision:.3f}; per-variant recall on the sample: "
              + ", ".join(f"{k} {v:.2f}" for k, v in cal.recall.items()) + ")")  # fmt: skip
        families = [truth[Path(rel).name][0] for _, rel in _sample(index, cal.sample, 0)]  # the calibration's sample
        copies = sum(a == b for a, b in itertools.combinations(families, 2))
        print(f"of its {cal.negatives} pairs of sampled photos, {copies} are copies of one picture; "
              f"the calibration estimated {cal.duplicates}")  # fmt: skip
        header = ["threshold", "precision", "recall", "f1", "purity", "exact P", "exact R"]
        header += [f"R {k}" for k in KINDS] + ["R crop80"]
        print("  ".join(f"{h:>9}" for h in header))
        runs = [("calibrated", cal.threshold, COLOUR_MIN, cal.thumbnail_min)]
        runs += [(f"fixed {t}", t, COLOUR_MIN, THUMBNAIL_MIN) for t in FIXED]
        runs += [(f"emb {t}", t, COLOUR_MIN, 0.0) for t in FIXED[:3]]  # the embeddings alone, no thumbnails
        runs += [(f"nocol {t}", t, 0.0, 0.0) for t in FIXED[:2]]  # the model alone, without the colour check
        for label, t, colour_min, thumbnail_min in runs:
            m = evaluate_at(index, truth, t, colour_min, thumbnail_min)
            cells = [t, m["precision"], m["recall"], m["f1"], m["purity"], m["exact_precision"], m["exact_recall"]]
            cells += [m[f"recall_{k}"] for k in KINDS] + [m["recall_crop80"]]
            print(f"{label:>10} " + "  ".join(f"{c:9.4f}" for c in cells))
        print(sweep(index, truth))


def evaluate_at(
    index: Index, truth: dict[str, tuple[str, str]], t: float, colour_min: float, thumbnail_min: float = THUMBNAIL_MIN
) -> dict[str, float]:
    """Dedup at threshold t and score its groups against the ground truth."""
    result = find_duplicates(index, t, colour_min=colour_min, thumbnail_min=thumbnail_min)
    groups = [(Path(g.keeper.path).name, [(Path(m.path).name, m.kind) for m in g.duplicates])
              for g in result.groups]  # fmt: skip
    return evaluate(groups, truth)


def sweep(index: Index, truth: dict[str, tuple[str, str]], precision: float = 0.99) -> str:
    """What the best fixed threshold does: whether any threshold meets the targets with this encoder, which
    separates the calibration's error from the model's own limit."""
    lines = [f"threshold sweep (colour check on, thumbnails {THUMBNAIL_MIN}): pairwise precision, then the recall "
             "of the target kinds"]  # fmt: skip
    meeting = []
    for t in np.round(np.arange(0.75, 0.951, 0.01), 2):
        m = evaluate_at(index, truth, float(t), COLOUR_MIN)
        targets = {k: m[f"recall_{k}"] for k in TARGET_KINDS}
        cells = "  ".join(f"{k} {v:.4f}" for k, v in targets.items())
        lines.append(f"  {t:.2f}  P {m['precision']:.4f}  {cells}")
        if m["precision"] >= precision and min(targets.values()) >= 0.95:
            meeting.append(f"{t:.2f}")
    lines.append(
        f"thresholds meeting every target (precision >= {precision}, recalls >= 0.95): {', '.join(meeting) or 'none'}"
    )
    return "\n".join(lines)


def collection_arrays(index: Index) -> tuple[list[str], np.ndarray, np.ndarray]:
    """The indexed images' file names, their L2-normalised embeddings and stored colour signatures, row-aligned."""
    ids, rows = index.id_rows()
    with session_scope(index.engine) as s:
        paths = q.paths_of(s, ids)
    names = [Path(paths[int(i)]).name for i in ids]
    return names, normalize(index.store().get(rows)), read_signatures(index.colours(), rows)


def colour_check(index: Index, truth: dict[str, tuple[str, str]]) -> str:
    """How alike the colour signatures of each variant kind and its original are, and those of the hard negatives:
    the different pictures the model finds most alike."""
    names, x, sig = collection_arrays(index)
    pos = {n: k for k, n in enumerate(names)}
    by_kind: dict[str, list[float]] = {}
    for n, (_, kind) in truth.items():
        if kind != "original":
            source = pos[n.split("__")[0].removesuffix(".png") + ".png"]
            by_kind.setdefault(kind, []).append(float(colour_similarity(sig[[pos[n]]], sig[[source]])[0]))
    family = np.array([truth[n][0] for n in names])
    sims = x @ x.T
    iu = np.triu_indices(len(names), 1)
    cross = family[iu[0]] != family[iu[1]]
    hardest = np.argsort(-np.where(cross, sims[iu], -2))[:100]
    hard = colour_similarity(sig[iu[0][hardest]], sig[iu[1][hardest]])
    lines = [f"colour check (signatures at least {COLOUR_MIN} alike): lowest similarity of a variant to its original: "
             + ", ".join(f"{k} {min(v):.3f}" for k, v in by_kind.items())]  # fmt: skip
    passing = [f"{names[iu[0][h]]} ~ {names[iu[1][h]]}" for h in hardest[hard >= COLOUR_MIN]]
    lines.append(f"the 100 pairs of different pictures the model finds most alike (cosine "
                 f"{sims[iu][hardest].min():.3f}-{sims[iu][hardest].max():.3f}): {np.sum(hard < COLOUR_MIN)} fail the "
                 f"colour check; passing: {', '.join(passing[:8])}{' ...' if len(passing) > 8 else ''}")  # fmt: skip
    return "\n".join(lines)


def thumbnail_check(index: Index, truth: dict[str, tuple[str, str]], paired: float = 0.88) -> str:
    """Where the thumbnail bar must sit: how alike the thumbnails of different pictures get when the encoder does
    not already pair them (cosine below `paired`, colours agreeing), and the JPEG copies the encoder scores lowest."""
    names, x, sig = collection_arrays(index)
    stored = read_signatures(index.thumbnails(), index.id_rows()[1])
    thumbs = thumbnail_vectors(stored)
    a, b = np.triu_indices(len(names), 1)
    family = np.array([truth[n][0] for n in names])
    cos, (corr, _) = np.einsum("ij,ij->i", x[a], x[b]), thumbnail_match(stored[a], stored[b])  # as dedup compares
    apart = (family[a] != family[b]) & (colour_similarity(sig[a], sig[b]) >= COLOUR_MIN) & (cos < paired)
    pos = {n: k for k, n in enumerate(names)}
    jpegs = [(pos[n.split("__")[0] + ".png"], pos[n]) for n in names if truth[n][1] == "jpeg"]
    low = sorted(jpegs, key=lambda p: float(x[p[0]] @ x[p[1]]))[:3]
    lowest = ", ".join(f"cosine {x[i] @ x[j]:.3f} (thumbnail {thumbs[i] @ thumbs[j]:.4f})" for i, j in low)
    return (f"thumbnails: different pictures the encoder does not pair (cosine < {paired}) correlate at most "
            f"{corr[apart].max():.4f}; the JPEG copies it scores lowest: {lowest}")  # fmt: skip


# -- scale ---------------------------------------------------------------------------------------------------------

GEN = Generator(mean=3.0, spread=0.6875, rank=128, decay=0.5, noise=0.16, per_cluster=370, local_rank=8)


def planted(n: int, d: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """n vectors, the last 1 % being near-duplicates (cosine about 0.998) of random earlier ones."""
    n_dup = n // 100
    x = GEN.sample(n - n_dup, d, seed=seed)
    rng = np.random.default_rng(seed + 1)
    src = rng.choice(n - n_dup, n_dup, replace=False)
    dup = x[src] + rng.standard_normal((n_dup, d)).astype(np.float32) * (0.06 / np.sqrt(d))
    return np.concatenate([x, dup / np.linalg.norm(dup, axis=1, keepdims=True)]), src


def planted_thumbnails(n: int, src: np.ndarray, seed: int = 0, block: int = 1 << 16) -> tuple[np.ndarray, np.ndarray]:
    """uint8 (n, 256) grey 16 x 16 thumbnails: random fields whose amplitude falls as 1/f^2, so that different
    images correlate as widely as the real photos' thumbnails do (mean |correlation| 0.26 here, 0.24 over the 54
    real photos: the pruning of the range join is no easier than on real ones); the last len(src) rows copy rows
    src with a little noise (the planted duplicates). And (k, 2) pairs of other rows, k = n / 200, whose
    embeddings are unrelated but whose thumbnails are copies, every other one mirrored: the thumbnails' own
    planted pairs, found by the straight and the mirrored join alone."""
    rng = np.random.default_rng(seed)
    fy, fx = np.meshgrid(np.fft.fftfreq(16), np.fft.fftfreq(16), indexing="ij")
    amplitude = 1 / np.maximum(np.hypot(fx, fy), 1 / 16) ** 2
    amplitude[0, 0] = 0
    n_own = n - len(src)
    out = np.empty((n, 256), np.uint8)
    for start in range(0, n_own, block):
        m = min(block, n_own - start)
        phase = rng.uniform(0, 2 * np.pi, (m, 16, 16))
        field = np.fft.ifft2(amplitude * rng.rayleigh(1.0, (m, 16, 16)) * np.exp(1j * phase)).real
        field /= field.std(axis=(1, 2), keepdims=True)
        out[start : start + m] = np.clip(128 + 40 * field, 0, 255).reshape(m, 256).astype(np.uint8)
    out[n_own:] = _noisy(out[src], rng)
    pairs = np.sort(rng.choice(np.setdiff1d(np.arange(n_own), src), (n // 200, 2), replace=False), axis=1)
    copies = out[pairs[:, 0]]
    copies[1::2] = mirrored(copies[1::2])
    out[pairs[:, 1]] = _noisy(copies, rng)
    return out, pairs


def _noisy(thumbs: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return np.clip(thumbs.astype(np.float32) + rng.normal(0, 2, thumbs.shape), 0, 255).astype(np.uint8)


def scale(args: argparse.Namespace) -> None:
    work = Path(tempfile.mkdtemp())
    for n in args.compare:
        x, _ = planted(n, args.dim)
        ours = _ours(x, work / f"cmp{n}", args.threshold, None)
        line = f"{n:>8} x {args.dim}: birder-index {ours['seconds']:.1f}s, {ours['peak_mb']:.0f} MB peak, "
        line += f"{ours['pairs']} pairs"
        if args.imagededup_python:
            np.save(work / "x.npy", x)
            cmd = [str(args.imagededup_python), str(Path(__file__).with_name("imagededup_run.py")), str(work / "x.npy"),
                   str(args.threshold), str(work / "pairs.json")]  # fmt: skip
            idd = json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.splitlines()[-1])
            theirs = {tuple(p) for p in json.loads((work / "pairs.json").read_text())}
            mine = {tuple(p) for p in json.loads((work / f"cmp{n}" / "pairs.json").read_text())}
            line += (f" | imagededup {idd['seconds']:.1f}s, {idd['peak_mb']:.0f} MB peak, {len(theirs)} pairs | "
                     f"{idd['seconds'] / ours['seconds']:.1f}x faster, same pairs: {mine == theirs} "
                     f"(only ours {len(mine - theirs)}, only theirs {len(theirs - mine)})")  # fmt: skip
            line += _exact_range("only theirs", theirs - mine, x) + _exact_range("only ours", mine - theirs, x)
            exact = _exact_pairs(x, args.threshold)
            line += f" | float64 brute force: {len(exact)} pairs, ours the same: {mine == exact}"
            line += _exact_range("ours differ", mine ^ exact, x)
        print(line, flush=True)
    if args.rows:
        x, src = planted(args.rows, args.dim)
        thumbs, thumb_pairs = planted_thumbnails(args.rows, src) if args.thumbnails else (None, np.zeros((0, 2)))
        res = _ours(x, work / "big", args.threshold, thumbs)
        n_dup = args.rows // 100
        found = {tuple(p) for p in json.loads((work / "big" / "pairs.json").read_text())}
        planted_pairs = {(int(s), int(args.rows - n_dup + i)) for i, s in enumerate(src)}
        line = (f"{args.rows} x {args.dim}: deduplicated in {res['seconds']:.0f}s (import, index and tuning "
                f"{res['import_s']:.0f}s before), peak memory {res['peak_mb']:.0f} MB, {res['pairs']} pairs, "
                f"planted pairs found {len(found & planted_pairs) / len(planted_pairs):.3f}")  # fmt: skip
        if args.thumbnails:
            hits = np.array([(int(a), int(b)) in found for a, b in thumb_pairs])
            line += (f", with thumbnails (bar {THUMBNAIL_MIN}): thumbnail copies found {hits[0::2].mean():.3f}, "
                     f"mirrored {hits[1::2].mean():.3f} ({len(hits)} planted)")  # fmt: skip
        print(line)


def _exact_pairs(x: np.ndarray, threshold: float, block: int = 4096) -> set[tuple[int, int]]:
    """Every pair with float64 cosine >= threshold: a float32 brute force with a margin, re-checked in float64."""
    import torch

    xt = torch.from_numpy(np.ascontiguousarray(x, np.float32))
    found = set()
    for start in range(0, len(x), block):
        i, j = torch.nonzero(xt[start : start + block] @ xt.T >= threshold - 1e-3, as_tuple=True)
        i, j = i.numpy() + start, j.numpy()
        i, j = i[i < j], j[i < j]
        cos = _cos64(x, i, j)
        found |= set(zip(i[cos >= threshold].tolist(), j[cos >= threshold].tolist(), strict=True))
    return found


def _cos64(x: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Exact (float64) cosine of the unit rows a[i] and b[i] of x."""
    return np.einsum("ij,ij->i", x[a].astype(np.float64), x[b].astype(np.float64))


def _exact_range(label: str, pairs: set[tuple[int, int]], x: np.ndarray) -> str:
    """The exact float64 cosine range of pairs that one side alone found: where the two sides disagree."""
    if not pairs:
        return ""
    cos = _cos64(x, *np.array(sorted(pairs)).T)
    return f"; {label}: exact cosine {cos.min():.5f} to {cos.max():.5f}"


def _ours(x: np.ndarray, work: Path, threshold: float, thumbs: np.ndarray | None) -> dict[str, float]:
    """Import (not timed as dedup), then dedup in a fresh process: its time and peak memory alone."""
    work.mkdir(parents=True)
    np.save(work / "x.npy", x)
    (work / "p.txt").write_text("\n".join(str(i) for i in range(len(x))))
    t0 = time.perf_counter()
    import_embeddings(work / "x.npy", work / "index", paths_file=work / "p.txt")
    if thumbs is not None:  # as a build would have stored them, row for row with the embeddings
        (work / "index" / THUMBNAILS.file).write_bytes(thumbs.tobytes())
        with open_index(work / "index") as index, session_scope(index.engine) as se:
            q.set_meta(se, THUMBNAILS.meta, len(thumbs))
    import_s = time.perf_counter() - t0
    (work / "x.npy").unlink()
    code = (
        f"import json, sys, time\nsys.path.insert(0, {str(Path(__file__).parent)!r})\nfrom peak import peak_rss_mb\n"
        "from birder_index.indexer import open_index\nfrom birder_index.dedup.find import find_duplicates\n"
        f"t0 = time.perf_counter()\nindex = open_index({str(work / 'index')!r})\n"
        f"r = find_duplicates(index, {threshold})\ns = time.perf_counter() - t0\n"
        "paths = {i: int(p) for i, p in enumerate(open(%r).read().split(), 1)}\n"
        % str(work / "p.txt")
        + "a, b, _ = r.pairs\npairs = sorted(sorted((paths[int(i)], paths[int(j)])) for i, j in zip(a, b))\n"
        f"open({str(work / 'pairs.json')!r}, 'w').write(json.dumps(pairs))\n"
        "print(json.dumps({'seconds': s, 'peak_mb': peak_rss_mb(), "
        "'pairs': len(pairs)}))\n"
    )
    out = json.loads(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)
    return {**out, "import_s": import_s}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="what", required=True)
    q = sub.add_parser("quality")
    q.add_argument("--photos", type=Path, required=True)
    s = sub.add_parser("scale")
    s.add_argument("--rows", type=int, default=1_000_000)
    s.add_argument("--dim", type=int, default=512)
    s.add_argument("--threshold", type=float, default=0.995)
    s.add_argument("--compare", type=int, nargs="*", default=[20_000, 50_000])
    s.add_argument("--imagededup-python", type=Path)
    s.add_argument("--thumbnails", action="store_true", help="give the --rows images synthetic thumbnails too")
    args = parser.parse_args()
    quality(args) if args.what == "quality" else scale(args)


if __name__ == "__main__":
    main()
