"""Would a pixel-domain signal lift dedup's recall where the encoder misses? (A question for issue 6, not a feature.)

    python benchmarks/dedup_thumbs.py --photos PHOTOS

The quality benchmark's collection (benchmarks/dedup.py: real photos and 9 generated variants of each), embedded
with the shared ImageNet encoder. Beside the embedding cosine, each image gets a 32 x 32 greyscale thumbnail
(box-filtered, mean removed, unit norm), and a pair's thumbnail correlation is their dot product. Pairs are scored
pairwise (no grouping): a pair is found when its colour signatures agree (dedup's colour check) and its cosine is
at least t, or, with the second signal, its thumbnail correlation is at least c. Reported: pairwise precision
over all pairs of the collection, and the recall of each target kind (a variant found with its own original).
"""

from __future__ import annotations

import argparse
import re
import tempfile
from pathlib import Path

import numpy as np
from dedup import collection_arrays
from dedup import make_collection
from PIL import Image
from realdata import SHARED_PT2

from birder_index.backbone.colour import colour_similarity
from birder_index.backbone.images import open_upright
from birder_index.indexer import ModelSpec
from birder_index.indexer import build_index
from birder_index.indexer import open_index
from birder_index.search.dedup import COLOUR_MIN

THRESHOLDS = (0.85, 0.86, 0.88, 0.90)
CORRELATIONS = (None, 0.95, 0.98, 0.99)


def thumbnail(path: Path, side: int = 32) -> np.ndarray:
    img, _, _ = open_upright(path)
    t = np.asarray(img.convert("L").resize((side, side), Image.Resampling.BOX), np.float32).ravel()
    t -= t.mean()
    return t / (np.linalg.norm(t) + 1e-6)


def own_pairs(names: list[str], truth: dict[str, tuple[str, str]], kind: str) -> list[tuple[int, int]]:
    """(original, variant) positions for the variants of one target kind ("crop80": crops keeping >= 80 %)."""
    position = {n: i for i, n in enumerate(names)}
    out = []
    for n in names:
        family_kind = truth[n][1]
        if kind == "crop80":
            m = re.search(r"__crop([0-9.]+)\.", n)
            if family_kind != "crop" or m is None or float(m.group(1)) < 0.80:
                continue
        elif family_kind != kind:
            continue
        original = position[n.split("__")[0] + ".png"]
        out.append((min(original, position[n]), max(original, position[n])))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--photos", type=Path, required=True)
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp()) / "collection"
    truth = make_collection(args.photos, folder)
    build_index(folder, spec=ModelSpec(weights=SHARED_PT2))
    with open_index(folder / ".birder-index") as index:
        names, x, signatures = collection_arrays(index)  # the stored signatures: those dedup's colour check reads
    cos = x @ x.T
    thumbs = np.stack([thumbnail(folder / n) for n in names])
    corr = thumbs @ thumbs.T
    a, b = np.triu_indices(len(names), 1)
    colour_ok = colour_similarity(signatures[a], signatures[b]) >= COLOUR_MIN
    family = np.array([truth[n][0] for n in names])
    same = family[a] == family[b]
    print(f"{len(names)} images, {len(a)} pairs, {int(same.sum())} of them copies of one picture")
    negatives = ~same & colour_ok
    print("different pictures passing the colour check, highest thumbnail correlations: "
          + ", ".join(f"{v:.4f}" for v in np.sort(corr[a, b][negatives])[-5:]))  # fmt: skip
    jpeg = own_pairs(names, truth, "jpeg")
    low = sorted(jpeg, key=lambda p: cos[p])[:3]
    print("JPEG variants the encoder scores lowest: cosine "
          + ", ".join(f"{cos[p]:.3f} (thumbnail {corr[p]:.4f})" for p in low))  # fmt: skip
    kinds = ("resize", "jpeg", "flip", "crop80")
    pair_of = {p: k for k, p in enumerate(zip(a.tolist(), b.tolist(), strict=True))}
    for t in THRESHOLDS:
        for c in CORRELATIONS:
            found = colour_ok & ((cos[a, b] >= t) | (corr[a, b] >= c if c is not None else False))
            tp, fp = int((found & same).sum()), int((found & ~same).sum())
            recall = {k: np.mean([found[pair_of[p]] for p in own_pairs(names, truth, k)]) for k in kinds}
            signal = f"or thumbnail >= {c}" if c is not None else "embedding only"
            print(f"cosine >= {t:.2f} {signal:<22} pairwise precision {tp / max(tp + fp, 1):.4f} ({fp} false), "
                  + ", ".join(f"{k} {v:.3f}" for k, v in recall.items()))  # fmt: skip


if __name__ == "__main__":
    main()
