"""Curation benchmark (docs/benchmarks.md#curation): the label audit against cleanlab and random ranking, outliers
among planted foreign images, and time and peak memory at scale.

    python benchmarks/curation.py audit --digits /tmp/digits --cleanlab-python /work/side-venv/bin/python
    python benchmarks/curation.py outliers --digits /tmp/digits --photos /tmp/real-photos
    python benchmarks/curation.py scale --rows 100000 1000000

- audit: scikit-learn's handwritten digits (../shared/datasets/digits.py; 1,797 real scans, 10 classes) embedded
  with the shared ImageNet encoder, 5 % of the labels flipped at random to another class (per seed). Each method
  ranks the photos; the top 5 % (as many as were flipped) are compared with the flipped ones: precision = recall
  there. Methods: `audit_labels`; cleanlab's `find_label_issues` (and its self-confidence ranking) given
  out-of-sample probabilities of birder-index's own linear probe (`cross_val_scores`, 5-fold), run in a side
  environment by cleanlab_side.py; random ranking (its expected precision is the flip rate).
- outliers: the digits plus 2 % foreign images (a third each: noise, blank frames of one random colour, 64 px
  crops of the shared real photos), the foreign ones embedded by a small build and imported beside the digits'
  vectors: how many rank in the top 2 % of `find_outliers`.
- scale: N synthetic embeddings (512-d, the calibrated generator of synthetic.py, as dedup's benchmark) in classes
  of 370 (the generator's clusters), 5 % of labels flipped, imported with `import_embeddings`; then each signal in
  a fresh process: its seconds and peak resident memory (VmHWM).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image
from realdata import SHARED_PT2
from synthetic import Generator

from birder_index.curation import audit_labels
from birder_index.curation import find_outliers
from birder_index.db import queries as q
from birder_index.db.engine import session_scope
from birder_index.fewshot.classifiers import fit_classes
from birder_index.fewshot.labels import label_folder_or_csv
from birder_index.fewshot.probe import cross_val_scores
from birder_index.indexer import BuildOptions
from birder_index.indexer import ModelSpec
from birder_index.indexer import build_index
from birder_index.indexer import import_embeddings
from birder_index.indexer import open_index

DIGITS_SCRIPT = SHARED_PT2.parents[1] / "datasets" / "digits.py"
FLIP = 0.05
FOREIGN = 0.02


def digits_index(folder: Path) -> Path:
    if not folder.exists():
        subprocess.run([sys.executable, str(DIGITS_SCRIPT), str(folder)], check=True)
    _, index_dir = label_folder_or_csv(folder, "digits", spec=ModelSpec(weights=SHARED_PT2))
    return index_dir


def flip(y: np.ndarray, n_classes: int, share: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(noisy labels, flipped positions): `share` of the labels moved to another class, at random."""
    rng = np.random.default_rng(seed)
    flipped = np.sort(rng.choice(len(y), round(share * len(y)), replace=False))
    noisy = y.copy()
    noisy[flipped] = (y[flipped] + rng.integers(1, n_classes, len(flipped))) % n_classes
    return noisy, flipped


def precision_recall(flagged: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    """Of the positions flagged, the share flipped; of the flipped (mask), the share flagged."""
    hits = int(truth[flagged].sum())
    return hits / max(len(flagged), 1), hits / max(int(truth.sum()), 1)


# -- audit ---------------------------------------------------------------------------------------------------------


def audit_one(index_dir: Path, seed: int, cleanlab_python: str, work: Path) -> dict[str, float]:
    with open_index(index_dir) as index:
        with session_scope(index.engine) as s:
            ids, labels = q.labels_of(s, "digits")
        y, classes = fit_classes(labels)
        noisy, flipped = flip(y, len(classes), FLIP, seed)
        truth = np.zeros(len(y), bool)
        truth[flipped] = True
        name = f"digits-flipped-{seed}"
        with session_scope(index.engine) as s:
            q.set_labels(s, name, ids.tolist(), [classes[c] for c in noisy])
        t0 = time.perf_counter()
        audit = audit_labels(index, name)
        ours_s = time.perf_counter() - t0
        assert np.array_equal(audit.ids, ids)
        pos = {int(i): n for n, i in enumerate(ids)}
        low = audit_labels(index, name, copy_min=0.95)  # the copy threshold that made tight classes "copies"
        t0 = time.perf_counter()
        probs = cross_val_scores(index.vectors(ids), noisy, classes, folds=5)
        probe_s = time.perf_counter() - t0
        with session_scope(index.engine) as s:
            q.remove_labels(s, name)
    np.save(work / "labels.npy", noisy)
    np.save(work / "probs.npy", probs)
    subprocess.run([cleanlab_python, str(Path(__file__).parent / "cleanlab_side.py"), str(work)], check=True)
    cl = json.loads((work / "cleanlab.json").read_text())
    top = len(flipped)
    ours_rank = np.argsort(-audit.suspicion, kind="stable")
    cl_rank = np.argsort(np.array(cl["quality"]), kind="stable")
    rng = np.random.default_rng(seed + 1000)
    random = np.mean([truth[rng.permutation(len(y))[:top]].mean() for _ in range(1000)])
    out = {
        "ours_top": precision_recall(ours_rank[:top], truth)[0],
        "ours_095_top": precision_recall(np.argsort(-low.suspicion, kind="stable")[:top], truth)[0],
        "ours_flagged": audit.flagged,
        "ours_flagged_pr": precision_recall(np.array([pos[s.id] for s in audit.suspects], np.int64), truth),
        "cleanlab_top": precision_recall(cl_rank[:top], truth)[0],
        "cleanlab_flagged": len(cl["issues"]),
        "cleanlab_flagged_pr": precision_recall(np.array(cl["issues"], np.int64), truth),
        "random_top": float(random),
        "ours_s": ours_s,
        "probe_s": probe_s,
        "cleanlab_s": cl["seconds"],
        "flipped": top,
        "n": len(y),
    }
    return out  # type: ignore[return-value]


def run_audit(args: argparse.Namespace) -> None:
    index_dir = digits_index(args.digits)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in range(args.seeds):
            r = audit_one(index_dir, seed, args.cleanlab_python, Path(tmp))
            rows.append(r)
            print(
                f"seed {seed}: {r['flipped']} of {r['n']} flipped | top {r['flipped']}: birder-index "
                f"{r['ours_top']:.3f} (copies at 0.95: {r['ours_095_top']:.3f}), cleanlab {r['cleanlab_top']:.3f}, "
                f"random {r['random_top']:.3f} | flagged: "
                f"birder-index {r['ours_flagged']} (precision {r['ours_flagged_pr'][0]:.3f}, recall "
                f"{r['ours_flagged_pr'][1]:.3f}), cleanlab {r['cleanlab_flagged']} (precision "
                f"{r['cleanlab_flagged_pr'][0]:.3f}, recall {r['cleanlab_flagged_pr'][1]:.3f}) | seconds: audit "
                f"{r['ours_s']:.1f}, probe CV {r['probe_s']:.1f} + cleanlab {r['cleanlab_s']:.2f}",
                flush=True,
            )
    mean = {
        key: float(np.mean([r[key] for r in rows]))
        for key in ("ours_top", "ours_095_top", "cleanlab_top", "random_top")
    }
    print(
        f"mean over {len(rows)} seeds, precision = recall in the top 5 %: birder-index {mean['ours_top']:.3f} "
        f"(copies at 0.95: {mean['ours_095_top']:.3f}), "
        f"cleanlab {mean['cleanlab_top']:.3f}, random {mean['random_top']:.3f}"
    )


# -- outliers ------------------------------------------------------------------------------------------------------


def foreign_images(folder: Path, photos: Path, n: int, seed: int = 0) -> list[str]:
    """n foreign 64 px images in folder: noise, blank frames, crops of the real photos (a third each)."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True)
    sources = sorted(p for p in photos.iterdir() if p.suffix.lower() in {".jpg", ".png", ".webp"})
    kinds = []
    for i in range(n):
        kind = ("noise", "blank", "photo")[i % 3]
        if kind == "noise":
            img = Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8))
        elif kind == "blank":
            img = Image.new("RGB", (64, 64), tuple(int(v) for v in rng.integers(0, 256, 3)))
        else:
            src = Image.open(sources[int(rng.integers(len(sources)))]).convert("RGB")
            side = int(min(src.size) * rng.uniform(0.2, 0.6))
            x0, y0 = int(rng.integers(0, src.size[0] - side + 1)), int(rng.integers(0, src.size[1] - side + 1))
            img = src.crop((x0, y0, x0 + side, y0 + side)).resize((64, 64), Image.Resampling.BICUBIC)
        img.save(folder / f"{kind}-{i:03d}.png")
        kinds.append(kind)
    return kinds


def run_outliers(args: argparse.Namespace) -> None:
    index_dir = digits_index(args.digits)
    with open_index(index_dir) as index:
        ids, _ = index.id_rows()
        x = index.vectors(ids)
    n_foreign = round(FOREIGN * len(x) / (1 - FOREIGN))  # 2 % of the whole
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        kinds = foreign_images(work / "foreign", args.photos, n_foreign)
        build_index(work / "foreign", spec=ModelSpec(weights=SHARED_PT2), options=BuildOptions())
        with open_index(work / "foreign" / ".birder-index") as index:
            fids, _ = index.id_rows()
            with session_scope(index.engine) as s:
                names = q.paths_of(s, fids)
            fx = index.vectors(fids)
        np.save(work / "x.npy", np.concatenate([x, fx]))
        paths = [f"digit-{i}" for i in range(len(x))] + [f"foreign/{names[int(i)]}" for i in fids]
        (work / "p.txt").write_text("\n".join(paths))
        import_embeddings(work / "x.npy", work / "all", paths_file=work / "p.txt")
        with open_index(work / "all") as index:
            for k in args.k:
                t0 = time.perf_counter()
                result = find_outliers(index, top=n_foreign, k=k)
                seconds = time.perf_counter() - t0
                found = [Path(o.path).name for o in result.outliers if "foreign/" in o.path]
                per_kind = {kind: sum(f.startswith(kind) for f in found) for kind in ("noise", "blank", "photo")}
                planted = {kind: kinds.count(kind) for kind in ("noise", "blank", "photo")}
                print(
                    f"{len(x)} digits + {n_foreign} foreign ({FOREIGN:.0%}), k {k}: {len(found)} of {n_foreign} "
                    f"foreign in the top {n_foreign} ({', '.join(f'{c} {per_kind[c]}/{planted[c]}' for c in planted)});"
                    f" median score {result.median:.3f}, in {seconds:.1f}s",
                    flush=True,
                )


# -- scale ---------------------------------------------------------------------------------------------------------

GEN = Generator(mean=3.0, spread=0.6875, rank=128, decay=0.5, noise=0.16, per_cluster=370, local_rank=8)


def labelled_sample(n: int, d: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(vectors (n, d), cluster of each): the generator's draw, keeping the cluster it picks."""
    rng = np.random.default_rng(seed)
    shape = GEN.shape(n, d, rng)
    x, y = np.empty((n, d), np.float32), np.empty(n, np.int64)
    for start in range(0, n, 16384):
        m = min(16384, n - start)
        state = rng.bit_generator.state
        y[start : start + m] = rng.integers(0, len(shape.centres), m)  # the draw's own first call
        rng.bit_generator.state = state
        x[start : start + m] = GEN.draw(shape, m, rng)
    return x, y


SIGNALS = {
    "audit": "from birder_index.curation import audit_labels\nr = audit_labels(index, 'labels')\n"
    "out = {'flagged': r.flagged}",
    "outliers": "from birder_index.curation import find_outliers\nr = find_outliers(index, top=100)\n"
    "out = {'median': r.median}",
    "representatives": "from birder_index.curation import find_representatives\n"
    "r = find_representatives(index, top=100)\nout = {'rounds': r.iterations, 'skipped': r.skipped}",
}


def run_scale(args: argparse.Namespace) -> None:
    for rows in args.rows:
        work = Path(tempfile.mkdtemp(prefix="curation-scale-", dir=args.work))
        x, y = labelled_sample(rows, args.dim)
        noisy, flipped = flip(y, int(y.max()) + 1, FLIP, 0)
        np.save(work / "x.npy", x)
        np.save(work / "flipped.npy", flipped)  # read by the audit's process (a million ids do not fit in argv)
        (work / "p.txt").write_text("\n".join(str(i) for i in range(rows)))
        del x
        t0 = time.perf_counter()
        import_embeddings(work / "x.npy", work / "index", paths_file=work / "p.txt")
        with open_index(work / "index") as index, session_scope(index.engine) as s:
            ids, _ = index.id_rows()
            q.set_labels(s, "labels", ids.tolist(), [f"c{c}" for c in noisy])  # ids follow p.txt's order
        print(f"{rows} x {args.dim}: imported and labelled in {time.perf_counter() - t0:.0f}s", flush=True)
        (work / "x.npy").unlink()
        for name in args.signals:
            code = (
                f"import json, sys, time\nsys.path.insert(0, {str(Path(__file__).parent)!r})\n"
                "from peak import peak_rss_mb\nfrom birder_index.indexer import open_index\n"
                f"t0 = time.perf_counter()\nindex = open_index({str(work / 'index')!r})\n{SIGNALS[name]}\n"
                "out |= {'seconds': time.perf_counter() - t0, 'peak_mb': peak_rss_mb()}\n"
                + (
                    f"import numpy as np\nflipped = np.load({str(work / 'flipped.npy')!r})\n"
                    + "out['top_flipped'] = float(np.isin(r.ids[np.argsort(-r.suspicion)][:len(flipped)] - 1, "
                    "flipped).mean())\n"
                    if name == "audit"
                    else ""
                )
                + "print(json.dumps(out))\n"
            )
            res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
            print(f"  {name}: {res.stdout.strip()}", flush=True)
        shutil.rmtree(work)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="what", required=True)
    a = sub.add_parser("audit")
    a.add_argument("--digits", type=Path, required=True)
    a.add_argument("--cleanlab-python", required=True, help="a Python with cleanlab and scikit-learn")
    a.add_argument("--seeds", type=int, default=3)
    o = sub.add_parser("outliers")
    o.add_argument("--digits", type=Path, required=True)
    o.add_argument("--photos", type=Path, required=True, help="the shared real photos (real-photos.sh)")
    o.add_argument("-k", type=int, nargs="+", default=[10], help="neighbours averaged (several: one line each)")
    s = sub.add_parser("scale")
    s.add_argument("--rows", type=int, nargs="+", default=[100_000, 1_000_000])
    s.add_argument("--dim", type=int, default=512)
    s.add_argument("--signals", nargs="+", default=list(SIGNALS), choices=list(SIGNALS))
    s.add_argument("--work", type=Path, default=None, help="where the temporary index goes (default: /tmp)")
    args = parser.parse_args()
    {"audit": run_audit, "outliers": run_outliers, "scale": run_scale}[args.what](args)


if __name__ == "__main__":
    main()
