"""Calibration benchmark (issue 24): the calibrated dedup threshold on realistic collections, over many random
draws, and on collections made mostly of duplicates.

    python benchmarks/calibration.py realistic --photos PHOTOS --work DIR [--draws 40]
    python benchmarks/calibration.py heavy --photos PHOTOS --work DIR [--set quality|other] [--draws 10]
    python benchmarks/calibration.py spread [--anchor 0.5 --floor 0]   # the limit of a widely spreading model

`--anchor` and `--floor` try other values of the estimate's two constants (calibrate.DUPLICATE_ANCHOR and
RECALL_FLOOR), for the sensitivity table in docs/benchmarks.md#calibration.

Each collection is made, indexed with the shared ImageNet encoder and measured once (every image as the
calibration would measure it: embedded with its 7 calibration variants, colours, thumbnails), all cached under
DIR (outside the repository); each draw then reruns only the estimate on the measurements of the draw's sample,
and groups the draw's images from the stored embeddings, colours and thumbnails as `find_duplicates` does (same
pairs, same star groups, the same exact check).

- realistic: every distinct real photo of ../shared/datasets/real-photos.sh, and a quarter of them (14 of 54)
  given one variant each, of a kind of the quality benchmark drawn at random (`dedup.py`'s KINDS), per draw.
- heavy: the whole collection of `--set`: `quality`, the quality benchmark's (54 photos, 9 variants each), or
  `other` (54 photos, 6 variants each of other kinds: resize with re-encoding, an off-centre crop, a flip with
  re-encoding, blur, black borders, a stretch); the calibration samples 150 images, a new sample per draw.

Ground truth as the quality benchmark's: a photo and its variants are duplicates, and so are the photos that are
one picture at several sizes or aspect ratios (the Elephants and the Sway wallpapers); colourings of one design
are not. Reported: the calibrated threshold per draw, pairwise precision and recall, recall per variant kind (the
variant grouped with its own original), group purity; the mean over draws with a 95 % interval, and the worst draw.
"""

from __future__ import annotations

import argparse
import io
import sys
import time
from dataclasses import asdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from dedup import KINDS
from dedup import evaluate
from dedup import make_collection
from dedup import variant
from PIL import Image
from PIL import ImageFilter
from PIL import ImageOps
from realdata import SHARED_PT2

from birder_index.backbone.colour import colour_similarity
from birder_index.backbone.images import open_upright
from birder_index.backbone.thumbnail import thumbnail_match
from birder_index.db import queries as q
from birder_index.db.engine import session_scope
from birder_index.dedup.calibrate import Measured
from birder_index.dedup.calibrate import choose_threshold
from birder_index.dedup.calibrate import estimate
from birder_index.dedup.calibrate import measure
from birder_index.dedup.find import COLOUR_MIN
from birder_index.dedup.find import THUMBNAIL_MIN
from birder_index.dedup.find import Group
from birder_index.dedup.find import Member
from birder_index.dedup.find import _mark_exact
from birder_index.dedup.find import group_stars
from birder_index.dedup.find import keeper_order
from birder_index.dedup.find import twins_of
from birder_index.indexer import ModelSpec
from birder_index.indexer import build_index
from birder_index.indexer import open_index
from birder_index.indexer.index import Index
from birder_index.indexer.signatures import read_signatures
from birder_index.indexer.vectors import normalize

OTHER_KINDS = ("resize_jpeg", "crop", "flip_jpeg", "blur", "border", "stretch")
TARGETS = {"quality": ("resize", "jpeg", "flip", "crop80"), "other": ("resize_jpeg", "flip_jpeg", "crop80")}
SHARE = 0.25  # of the photos given a variant in a realistic draw
FIXED = (0.85, 0.90)


def other_variant(img: Image.Image, kind: str, rng: np.random.Generator) -> tuple[Image.Image, str]:
    """A duplicate of a kind the quality benchmark does not make, and its label."""
    w, h = img.size
    if kind == "resize_jpeg":
        s, quality = rng.uniform(0.3, 0.6), int(rng.integers(40, 81))
        return _jpeg(img.resize((max(16, int(w * s)), max(16, int(h * s))), Image.Resampling.BILINEAR), quality), (
            f"resize_jpeg{s:.2f}"
        )
    if kind == "crop":  # off-centre, keeping 80-95 % of the area with its own aspect ratio
        keep, aspect = rng.uniform(0.80, 0.95), rng.uniform(0.9, 1.1)
        cw, ch = min(w, int(w * (keep * aspect) ** 0.5)), min(h, int(h * (keep / aspect) ** 0.5))
        x, y = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
        return img.crop((x, y, x + cw, y + ch)), f"crop{cw * ch / (w * h):.2f}"
    if kind == "flip_jpeg":
        return _jpeg(ImageOps.mirror(img), int(rng.integers(50, 81))), "flip_jpeg"
    if kind == "blur":
        r = rng.uniform(1.0, 2.5)
        return img.filter(ImageFilter.GaussianBlur(r)), f"blur{r:.1f}"
    if kind == "border":
        pad = rng.uniform(0.05, 0.12)
        return ImageOps.expand(img, border=int(pad * max(w, h)), fill=(0, 0, 0)), f"border{pad:.2f}"
    s = rng.uniform(0.75, 1.33)  # stretch: the aspect ratio changed
    return img.resize((int(w * s), h), Image.Resampling.BICUBIC), f"stretch{s:.2f}"


def _jpeg(img: Image.Image, quality: int) -> Image.Image:
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=quality)
    return Image.open(io.BytesIO(buf.getvalue())).convert("RGB")


def make(photos: Path, out: Path, kinds: tuple[str, ...], seed: int = 0) -> dict[str, tuple[str, str]]:
    """Originals and one variant of each kind per photo in `out` (dedup.py's collection); name -> (family, kind)."""
    return make_collection(photos, out, seed, kinds=kinds, make_variant=variant if kinds == KINDS else other_variant)


@dataclass
class Collection:
    """One indexed collection and its cached measurements, row-aligned with `ids` (path order)."""

    index: Index
    names: list[str]
    ids: np.ndarray
    truth: dict[str, tuple[str, str]]
    attrs: dict[str, np.ndarray]
    cos: np.ndarray  # (n, n) cosines of the stored embeddings
    thumb: np.ndarray  # (n, n) thumbnail correlations, the better of straight and mirrored
    colour: np.ndarray  # (n, n) colour similarity
    measured: Measured  # the calibration's measurements, one photo per row

    def rows_of_sha_first(self, rows: np.ndarray) -> np.ndarray:
        """Those of `rows` with distinct content (the first of identical files), as the calibration samples."""
        _, first = np.unique(self.attrs["sha256"][rows], return_index=True)
        return np.sort(rows[first])


def load(photos: Path, work: Path, kinds: tuple[str, ...]) -> Collection:
    folder = work / "collection"
    if not (folder / ".birder-index").exists():
        t0 = time.perf_counter()
        truth = make(photos, folder, kinds)
        build_index(folder, spec=ModelSpec(weights=SHARED_PT2))
        (work / "truth.txt").write_text("\n".join(f"{n}\t{f}\t{k}" for n, (f, k) in sorted(truth.items())))
        print(f"{len(truth)} images made and indexed in {time.perf_counter() - t0:.0f}s", flush=True)
    truth = {n: (f, k) for n, f, k in (line.split("\t") for line in (work / "truth.txt").read_text().splitlines())}
    index = open_index(folder / ".birder-index")
    ids, rows = index.id_rows()
    with session_scope(index.engine) as s:
        paths, attrs = q.paths_of(s, ids), q.indexed_attributes(s)
    assert np.array_equal(attrs["id"], ids), "rows and attributes in one order"
    names = [Path(paths[int(i)]).name for i in ids]
    x = normalize(index.store().get(rows))
    sig, th = read_signatures(index.colours(), rows), read_signatures(index.thumbnails(), rows)
    a, b = np.triu_indices(len(ids), 1)
    thumb, colour = np.eye(len(ids), dtype=np.float32), np.eye(len(ids), dtype=np.float32)
    thumb[a, b] = thumb[b, a] = thumbnail_match(th[a], th[b])[0]
    colour[a, b] = colour[b, a] = colour_similarity(sig[a], sig[b])
    return Collection(index, names, ids, truth, attrs, x @ x.T, thumb, colour, measured(index, work, ids, names))


def measured(index: Index, work: Path, ids: np.ndarray, names: list[str]) -> Measured:
    """Every image measured as the calibration measures a sampled photo (cached: the expensive part)."""
    cache = work / "measured.npz"
    if cache.exists():
        return Measured(**dict(np.load(cache)))
    encoder, parts, t0 = index.load_encoder(), [], time.perf_counter()
    root = index.root
    assert root is not None
    for start in range(0, len(ids), 32):
        images = [open_upright(root / n)[0] for n in names[start : start + 32]]
        parts.append(measure(images, ids[start : start + 32], encoder))
        print(f"  measured {start + len(images)} of {len(ids)} in {time.perf_counter() - t0:.0f}s", flush=True)
    out = Measured.join(parts)
    np.savez(cache, **asdict(out))
    return out


def dedup(c: Collection, rows: np.ndarray, threshold: float, bar: float) -> dict[str, float]:
    """Group images `rows` as `find_duplicates` would at (threshold, thumbnail bar), scored against the truth."""
    rows = np.sort(rows)  # path order, as the index's attributes: keeper ties are broken by it
    i, j = np.triu_indices(len(rows), 1)
    ri, rj = rows[i], rows[j]
    near = (c.cos[ri, rj] >= threshold) | ((c.thumb[ri, rj] >= bar) if bar > 0 else False)
    keep = near & (c.colour[ri, rj] >= COLOUR_MIN)
    sub = {k: v[rows] for k, v in c.attrs.items()}
    order = keeper_order(sub, "largest")
    stars = group_stars(order, c.ids[ri[keep]], c.ids[rj[keep]], c.cos[ri[keep], rj[keep]], twins_of(sub))
    pos = {int(i): r for r, i in enumerate(c.ids)}
    root = c.index.root
    assert root is not None
    groups = [Group(Member(k, str(root / c.names[pos[k]]), 1.0, "keeper"),
                    [Member(m, str(root / c.names[pos[m]]), s, "near") for m, s in ms]) for k, ms in stars]  # fmt: skip
    _mark_exact(c.index, c.attrs, groups)
    named = [(Path(g.keeper.path).name, [(Path(m.path).name, m.kind) for m in g.duplicates]) for g in groups]
    truth = {c.names[r]: c.truth[c.names[r]] for r in rows}
    out = evaluate(named, truth)
    group_of = {n: g for g, (k, ms) in enumerate(named) for n in [k, *(m for m, _ in ms)]}
    present = {k for _, k in truth.values()}
    for kind in set(KINDS) - present:  # `evaluate` scores a kind the draw lacks 0; it has no recall here
        out.pop(f"recall_{kind}", None)
    if not any(k == "crop" and float(n.split("__crop")[1][:4]) >= 0.80 for n, (_, k) in truth.items()):
        out.pop("recall_crop80")
    for kind in present - {"original"}:  # the other set's kinds too
        found = [group_of.get(n, -1) == group_of.get(n.split("__")[0] + ".png", -2)
                 for n, (_, k) in truth.items() if k == kind]  # fmt: skip
        out[f"recall_{kind}"] = float(np.mean(found))
    return out


@dataclass
class Draw:
    threshold: float
    bar: float
    duplicates: int  # the calibration's estimate
    advice: str
    scores: dict[str, float]  # at the calibrated threshold
    fixed: dict[float, dict[str, float]]  # at the fixed thresholds (default thumbnail bar)


def run_draw(c: Collection, rows: np.ndarray, sample: np.ndarray, fixed_at: tuple[float, ...] = FIXED) -> Draw:
    est = estimate(c.measured.take(sample), precision=0.99)
    fixed = {t: dedup(c, rows, t, THUMBNAIL_MIN) for t in fixed_at}
    scores = dedup(c, rows, est.threshold, est.thumbnail_min)
    return Draw(est.threshold, est.thumbnail_min, est.duplicates, est.advice, scores, fixed)


def realistic_rows(c: Collection, draw: int) -> np.ndarray:
    """Every original, and one variant of a random kind for a random quarter of them."""
    rng = np.random.default_rng(draw)
    originals = np.array([r for r, n in enumerate(c.names) if c.truth[n][1] == "original"])
    chosen = rng.choice(originals, round(SHARE * len(originals)), replace=False)
    by_name = {n: r for r, n in enumerate(c.names)}
    extra = []
    for r in chosen:
        stem, kind = c.names[r].removesuffix(".png"), KINDS[int(rng.integers(len(KINDS)))]
        extra += [by_name[n] for n in c.names if n.startswith(stem + "__") and c.truth[n][1] == kind]
    return np.sort(np.concatenate([originals, np.array(extra, int)]))


def summary(draws: list[Draw], kinds: tuple[str, ...], targets: tuple[str, ...]) -> str:
    """Mean with a 95 % interval over draws (of the draws holding each kind), and the worst draw."""

    def stat(values: list[float]) -> str:
        v = np.array([x for x in values if np.isfinite(x)])
        half = 1.96 * v.std(ddof=1) / np.sqrt(len(v)) if len(v) > 1 else float("nan")
        return f"{v.mean():.4f} +- {half:.4f} (n={len(v)}, min {v.min():.4f})"

    lines = [f"calibrated threshold: {stat([d.threshold for d in draws])}"]
    for label, pick in [("calibrated", lambda d: d.scores)] + [
        (f"fixed {t}", lambda d, t=t: d.fixed[t]) for t in draws[0].fixed
    ]:
        lines.append(f"{label}:")
        for key in ["precision", "recall", "purity", *(f"recall_{k}" for k in (*kinds, "crop80"))]:
            lines.append(f"  {key:>18}: {stat([pick(d).get(key, np.nan) for d in draws])}")
    worst = min(range(len(draws)), key=lambda i: min([draws[i].scores["precision"]] + [
        draws[i].scores.get(f"recall_{k}", 1.0) for k in targets]))  # fmt: skip
    lines.append(f"worst draw: {worst} " + _row(worst, draws[worst], targets))
    return "\n".join(lines)


def _row(n: int, d: Draw, targets: tuple[str, ...]) -> str:
    s = d.scores
    cells = "  ".join(f"{k} {s[f'recall_{k}']:.3f}" for k in targets if f"recall_{k}" in s)
    exact = f"  exact {s['recall_lossless']:.2f}" if "recall_lossless" in s else ""
    return (f"threshold {d.threshold:.4f} bar {d.bar or 'off'} est.dups {d.duplicates:>4}  P {s['precision']:.4f}  "
            f"R {s['recall']:.4f}  purity {s['purity']:.3f}{exact}  {cells}")  # fmt: skip


def realistic(args: argparse.Namespace) -> None:
    c = load(args.photos, args.work / "quality", KINDS)
    draws = []
    for n in range(args.draws):
        rows = realistic_rows(c, n)
        d = run_draw(c, rows, c.rows_of_sha_first(rows), tuple(args.fixed))
        draws.append(d)
        print(f"draw {n:>2}: {len(rows)} images  {_row(n, d, TARGETS['quality'])}", flush=True)
    print(summary(draws, KINDS, TARGETS["quality"]))
    advised = sum(bool(d.advice) for d in draws)
    print(f"the many-duplicates line was printed in {advised} of {len(draws)} draws")


def heavy(args: argparse.Namespace) -> None:
    kinds = KINDS if args.set == "quality" else OTHER_KINDS
    c = load(args.photos, args.work / args.set, kinds)
    rows, draws = np.arange(len(c.ids)), []
    distinct = c.rows_of_sha_first(rows)
    for n in range(args.draws):
        sample = np.sort(np.random.default_rng(n).choice(distinct, min(150, len(distinct)), replace=False))
        d = run_draw(c, rows, sample, tuple(args.fixed))
        draws.append(d)
        print(f"draw {n:>2}: {_row(n, d, TARGETS[args.set])}", flush=True)
        if n == 0 and d.advice:
            print(f"  the calibration says: {d.advice}")
    print(summary(draws, kinds, TARGETS[args.set]))


def spread(args: argparse.Namespace) -> None:
    """The limit of docs/dedup.md: a model that scores different photos widely (synthetic scores, no photos), with
    the correction for duplicates and without it (the threshold the many-duplicates line names)."""
    rng = np.random.default_rng(0)
    pos, neg = rng.normal(0.75, 0.12, 150 * 7), rng.normal(0.45, 0.12, 150 * 149 // 2)
    for correct in (True, False):
        t, reached, duplicates = choose_threshold(pos, neg, 0.99, correct=correct)
        tp, fp = np.sum(pos >= t), np.sum(neg >= t)
        print(f"{'corrected' if correct else 'uncorrected'}: threshold {t:.3f}, estimated precision {reached:.3f}, "
              f"real {tp / (tp + fp):.3f}, duplicates {duplicates:.0f} ({duplicates / 150:.1f} per photo)")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="what", required=True)
    for name in ("realistic", "heavy", "spread"):
        p = sub.add_parser(name)
        p.add_argument("--anchor", type=float, help="DUPLICATE_ANCHOR to try instead of the package's")
        p.add_argument("--floor", type=float, help="RECALL_FLOOR to try instead of the package's")
        if name == "spread":
            continue
        p.add_argument("--photos", type=Path, required=True)
        p.add_argument("--work", type=Path, required=True, help="cache folder (outside the repository)")
        p.add_argument("--draws", type=int, default=40 if name == "realistic" else 10)
        p.add_argument("--fixed", type=float, nargs="+", default=list(FIXED), help="fixed thresholds measured beside")
    sub.choices["heavy"].add_argument("--set", choices=("quality", "other"), default="quality")
    args = parser.parse_args()
    module = sys.modules["birder_index.dedup.calibrate"]  # the package exports a function of the same name
    for name, value in (("DUPLICATE_ANCHOR", args.anchor), ("RECALL_FLOOR", args.floor)):
        if value is not None:
            setattr(module, name, value)
    print(f"DUPLICATE_ANCHOR {module.DUPLICATE_ANCHOR}, RECALL_FLOOR {module.RECALL_FLOOR}", flush=True)
    {"realistic": realistic, "heavy": heavy, "spread": spread}[args.what](args)


if __name__ == "__main__":
    main()
