"""Real pretrained features for benchmarks: the shared ImageNet encoder's embeddings of random crops of the real
photos (../shared/datasets/real-photos.sh). Cached under benchmarks/out/ (not committed)."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from birder_index.backbone import load_backbone
from birder_index.backbone.images import open_upright

OUT = Path(__file__).resolve().parent / "out"
SHARED_PT2 = Path(__file__).resolve().parents[2] / "shared" / "models" / "efficientnet_lite0_imagenet.pt2"
EXTENSIONS = {".jpg", ".jpeg", ".png", ".webp"}


def photo_paths(folder: Path) -> list[Path]:
    paths = sorted(p for p in folder.iterdir() if p.suffix.lower() in EXTENSIONS)
    if not paths:
        raise SystemExit(f"no photos in {folder}: run ../shared/datasets/real-photos.sh {folder}")
    return paths


def random_crops(img: Image.Image, n: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """n crops of 5-100% of the area, aspect 3:4 to 4:3, resized to size x size: uint8 (n, 3, size, size)."""
    w, h = img.size
    out = np.empty((n, 3, size, size), np.uint8)
    for i in range(n):
        area = rng.uniform(0.05, 1.0) * w * h
        aspect = np.exp(rng.uniform(np.log(3 / 4), np.log(4 / 3)))
        cw, ch = min(w, int(np.sqrt(area * aspect))), min(h, int(np.sqrt(area / aspect)))
        x0, y0 = rng.integers(0, w - cw + 1), rng.integers(0, h - ch + 1)
        crop = img.resize((size, size), Image.Resampling.BICUBIC, box=(x0, y0, x0 + cw, y0 + ch))
        out[i] = np.asarray(crop).transpose(2, 0, 1)
    return out


def crop_embeddings(photos: Path, n: int, seed: int = 0) -> np.ndarray:
    """float32 (n, 1280): raw embeddings of n random crops spread evenly over the photos (cached)."""
    cache = OUT / f"crops_{n}_{seed}.npy"
    if cache.exists():
        return np.load(cache)
    OUT.mkdir(exist_ok=True)
    encoder = load_backbone(weights=SHARED_PT2, precision="float32")
    size = encoder.info.preprocess.size[0]
    paths = photo_paths(photos)
    rng = np.random.default_rng(seed)
    per_photo = np.diff(np.linspace(0, n, len(paths) + 1).astype(int))
    chunks = []
    t0 = time.perf_counter()
    for path, k in zip(paths, per_photo, strict=True):
        img, _, _ = open_upright(path)
        img.thumbnail((1024, 1024), Image.Resampling.BICUBIC)  # crops of a 1024 px copy: 224 px output either way
        for start in range(0, k, 64):
            pixels = random_crops(img, min(64, k - start), size, rng)
            chunks.append(encoder.embed(torch.from_numpy(pixels)).numpy())
    x = np.concatenate(chunks)
    print(f"embedded {len(x)} crops of {len(paths)} photos in {time.perf_counter() - t0:.0f}s")
    np.save(cache, x)
    return x
