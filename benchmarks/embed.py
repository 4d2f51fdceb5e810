"""Embedding throughput of `build` against the machine's limit, side by side with a plain reference path.

    python benchmarks/embed.py PHOTOS --weights MODEL.pt [--birder-python /path/to/birder-venv/bin/python]

For each path (birder-index's build path, with the model compiled as long builds run it and eager as short ones
do; a reference path: PIL full decode, float32, no overlap) it reports:
decode+resize core-seconds per image (read, sha256, decode, resize: what a decode worker does); the model's
images/s alone; its FLOPs per image; the measured peak matmul rate in the dtype used; the corpus limit
cores / (decode core-seconds + FLOPs / peak per core); the end-to-end images/s of `build_index` (model loading
excluded) and the fraction of the limit reached. Also the tolerances: cosine of the fast decode path to the exact
one on every photo, and of bf16 to float32 embeddings where bf16 runs natively (eager, and compiled as long
builds run it); the compiled model alone with explicit attention and with SDPA, alternated. With --birder-python,
birder's own inference path on the same files (benchmarks/birder_path.py) runs in the same session.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from birder_index.backbone import load_backbone
from birder_index.backbone.colour import colour_signature
from birder_index.backbone.cpu import usable_cores
from birder_index.backbone.encoder import Encoder
from birder_index.backbone.hardware import fast_bf16
from birder_index.backbone.images import decode
from birder_index.backbone.read import read_item
from birder_index.indexer import BuildOptions
from birder_index.indexer import ModelSpec
from birder_index.indexer import build_index
from birder_index.indexer.pipeline import default_batch_size

EXTENSIONS = {".jpg", ".jpeg", ".png", ".webp"}


@dataclass
class PathResult:
    name: str
    decode_cs: float  # core-seconds per image
    model_ips: float
    flops: float
    peak: float  # FLOP/s, all cores, in the dtype used
    dtype: str
    end_to_end: float

    @property
    def limit(self) -> float:
        cores = usable_cores()
        return cores / (self.decode_cs + self.flops / (self.peak / cores))


def peak_matmul(dtype: torch.dtype, n: int = 4096, repeats: int = 10) -> float:
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    a @ b
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - t0)
    return 2 * n**3 / min(times)


def model_flops(encoder: Encoder) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    h, w = encoder.info.preprocess.size
    counter = FlopCounterMode(display=False)
    with counter:
        encoder.embed(torch.zeros(1, 3, h, w, dtype=torch.uint8))
    return float(counter.get_total_flops())


def decode_core_seconds(files: list[Path], size: tuple[int, int], fast: bool) -> float:
    """Mean seconds per image of what a decode worker does (one thread): `read_item`, that is read, sha256,
    decode, resize and the colour signature."""
    torch.set_num_threads(1)
    times = []
    for f in files:
        t0 = time.perf_counter()
        read_item(f.parent, 0, f.name, size, fast)
        times.append(time.perf_counter() - t0)
    torch.set_num_threads(usable_cores())
    return float(np.mean(times))


def signature_seconds(files: list[Path], size: tuple[int, int]) -> float:
    """Mean seconds per image of the colour signature alone (part of the decode figure)."""
    pixels = [decode(f, size, fast=True).pixels for f in files]
    t0 = time.perf_counter()
    for p in pixels:
        colour_signature(p)
    return (time.perf_counter() - t0) / len(pixels)


def model_images_per_second(encoder: Encoder, batch: int = 32, repeats: int = 3) -> float:
    h, w = encoder.info.preprocess.size
    x = torch.randint(0, 256, (batch, 3, h, w), dtype=torch.uint8)
    encoder.embed(x[:4])
    t0 = time.perf_counter()
    for _ in range(repeats):
        encoder.embed(x)
    return batch * repeats / (time.perf_counter() - t0)


def attention_speeds(weights: Path, sha256: str, batch: int, rounds: int = 5) -> tuple[float, float] | None:
    """The compiled model's images/s with explicit attention and with SDPA, alternated: medians of `rounds`.
    None where explicit attention is not taken (no native bf16)."""
    encoders = []
    for explicit in (True, False):
        enc = load_backbone(weights=weights, precision="auto", sha256=sha256)
        enc.explicit_attention_allowed = explicit
        if enc.compile(batch) is None or enc.explicit_attention != explicit:
            return None
        encoders.append(enc)
    speeds: list[list[float]] = [[], []]
    for _ in range(rounds):
        for enc, out in zip(encoders, speeds, strict=True):
            out.append(model_images_per_second(enc, batch, repeats=2))
    return float(np.median(speeds[0])), float(np.median(speeds[1]))


def end_to_end(
    photos: Path, weights: Path, exact: bool, workers: int | None, batch: int | None, compile: bool = False
) -> tuple[float, float]:
    """images/s of `build_index` from its first batch on (model loading and compiling excluded), compile seconds."""
    spec = ModelSpec(weights=weights, precision="float32" if exact else "auto")
    options = BuildOptions(batch_size=batch, workers=workers, exact=exact, compile=compile)
    with tempfile.TemporaryDirectory() as tmp:
        report = build_index(photos, index_dir=Path(tmp) / "index", spec=spec, options=options)
    return report.images_per_second, report.compile_seconds


def tolerances(encoder32: Encoder, files: list[Path], compiled: Encoder) -> dict[str, float]:
    size = encoder32.info.preprocess.size
    exact = torch.stack([torch.from_numpy(decode(f, size).pixels) for f in files])
    fast = torch.stack([torch.from_numpy(decode(f, size, fast=True).pixels) for f in files])
    e, fa = encoder32.embed(exact), encoder32.embed(fast)
    cos = torch.nn.functional.cosine_similarity(e, fa).numpy()
    out = {"fast_decode_cos_min": float(cos.min()), "fast_decode_cos_median": float(np.median(cos))}
    if fast_bf16(encoder32.device):
        encoder32.dtype = torch.bfloat16
        b = encoder32.embed(exact)
        encoder32.dtype = None
        out["bf16_cos_min"] = float(torch.nn.functional.cosine_similarity(e, b).min())
    if compiled.dtype is torch.bfloat16:  # as long builds run: compiled, explicit attention where kept
        c = compiled.embed(exact)
        out["bf16_compiled_cos_min"] = float(torch.nn.functional.cosine_similarity(e, c).min())
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("photos", type=Path)
    parser.add_argument("--weights", type=Path, required=True)
    parser.add_argument("--network", help="birder network name, for --birder-python (default: from the file name)")
    parser.add_argument("--batch-size", type=int, help="build's batch (default: its own); the others use 32")
    parser.add_argument("--workers", type=int)
    parser.add_argument("--copies", type=int, default=1,
                        help="run the end-to-end paths on K copies of each photo (same pixels, new bytes), so that "
                        "a run lasts long enough to reach its steady state")  # fmt: skip
    parser.add_argument("--birder-python", type=Path, help="a Python with birder installed, to run its own path")
    args = parser.parse_args()
    files = sorted(p for p in args.photos.iterdir() if p.suffix.lower() in EXTENSIONS)
    with tempfile.TemporaryDirectory() as tmp:
        run(args, files, copies(files, args.copies, Path(tmp)) if args.copies > 1 else args.photos)


def copies(files: list[Path], k: int, folder: Path) -> Path:
    """k copies of each photo with a few bytes appended after the image data: decoders ignore them, so each copy
    decodes to the same pixels at the same cost, while its new content hash keeps the build from reusing the
    first copy's embedding."""
    for f in files:
        data = f.read_bytes()
        for i in range(k):
            (folder / f"{f.stem}-{i}{f.suffix}").write_bytes(data + f"benchmark copy {i}".encode())
    return folder


def run(args: argparse.Namespace, files: list[Path], corpus: Path) -> None:
    fast_enc = load_backbone(weights=args.weights, precision="auto")
    exact_enc = load_backbone(weights=args.weights, precision="float32", sha256=fast_enc.info.sha256)
    size = fast_enc.info.preprocess.size
    flops = model_flops(exact_enc)
    used = torch.bfloat16 if fast_enc.dtype is torch.bfloat16 else torch.float32
    peak32 = peak_matmul(torch.float32)
    peak_used = peak_matmul(used) if used is not torch.float32 else peak32  # one figure per dtype: both paths share it
    times = f" (end to end: {args.copies} copies of each)" if args.copies > 1 else ""
    print(f"{len(files)} photos{times}, {fast_enc.info.name} at {size[0]}x{size[1]}, {usable_cores()} cores, "
          f"bf16 native: {fast_bf16(fast_enc.device)}; peak matmul {peak32 / 1e9:.0f} GFLOP/s float32"
          + (f", {peak_used / 1e9:.0f} bf16" if used is torch.bfloat16 else ""))  # fmt: skip
    fast_cs = decode_core_seconds(files, size, fast=True)
    batch = args.batch_size or default_batch_size(fast_enc.device)
    compiled_enc = load_backbone(weights=args.weights, precision="auto", sha256=fast_enc.info.sha256)
    compile_s = compiled_enc.compile(batch)
    tol = tolerances(exact_enc, files, compiled_enc)  # first, so that its precision check runs on the photos
    e2e_compiled, e2e_compile_s = end_to_end(corpus, args.weights, False, args.workers, args.batch_size, True)
    results = [
        PathResult("birder-index build (compiled: 2,000+ photos)", fast_cs,
                   model_images_per_second(compiled_enc, batch), flops, peak_used, str(used).removeprefix("torch."),
                   e2e_compiled),
        PathResult("birder-index build (eager: smaller runs)", fast_cs, model_images_per_second(fast_enc, batch),
                   flops, peak_used, str(used).removeprefix("torch."),
                   end_to_end(corpus, args.weights, False, args.workers, args.batch_size)[0]),
        PathResult("reference (PIL full decode, float32, no overlap)", decode_core_seconds(files, size, fast=False),
                   model_images_per_second(exact_enc), flops, peak32, "float32",
                   end_to_end(corpus, args.weights, True, 0, 32)[0]),
    ]  # fmt: skip
    print(f"\n{'path':<52} {'decode cs/img':>13} {'model img/s':>11} {'GFLOP/img':>9} {'peak GFLOP/s':>12} "
          f"{'limit img/s':>11} {'end-to-end':>10} {'of limit':>8}")  # fmt: skip
    for r in results:
        peak = f"{r.peak / 1e9:9.0f} {r.dtype[:4]:>2}"
        print(f"{r.name:<52} {r.decode_cs:13.4f} {r.model_ips:11.2f} {r.flops / 1e9:9.2f} {peak} "
              f"{r.limit:11.2f} {r.end_to_end:10.2f} {r.end_to_end / r.limit:8.2f}")  # fmt: skip
    compiled, eager, reference = results
    print(f"\ncompiling took {compile_s or float('nan'):.1f}s here, {e2e_compile_s:.1f}s in the build "
          "(not in its images/s)")  # fmt: skip
    print(f"end to end: compiled vs eager {compiled.end_to_end / eager.end_to_end:.2f}x, "
          f"compiled vs reference {compiled.end_to_end / reference.end_to_end:.2f}x, "
          f"eager vs reference {eager.end_to_end / reference.end_to_end:.2f}x")  # fmt: skip
    speeds = attention_speeds(args.weights, fast_enc.info.sha256, batch)
    if speeds:
        print(f"compiled model alone, alternated: explicit attention {speeds[0]:.2f} images/s, SDPA {speeds[1]:.2f} "
              f"({speeds[0] / speeds[1]:.2f}x)")  # fmt: skip
    print(f"colour signature (included in decode): {signature_seconds(files, size) * 1000:.2f} ms per image")
    print("tolerances: " + ", ".join(f"{k} {v:.5f}" for k, v in tol.items()))
    print(
        f"compiled: explicit attention {compiled_enc.explicit_attention}, {compiled_enc.dtype}; its precision "
        f"check on the first batch: cosine {compiled_enc.checked_cosine or float('nan'):.5f} to float32"
    )
    if args.birder_python:
        network = args.network or args.weights.stem.rsplit("_", 1)[0]
        for amp in [False, True] if fast_bf16(fast_enc.device) else [False]:
            cmd = [str(args.birder_python), str(Path(__file__).with_name("birder_path.py")), str(args.weights), network,
                   str(corpus), "--batch-size", "32"] + (["--amp"] if amp else [])  # fmt: skip
            out = json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.splitlines()[-1])
            theirs = out["images_per_second"]
            print(f"birder's own path ({'bf16' if amp else 'float32'}): {theirs:.2f} images/s; birder-index "
                  f"build is {compiled.end_to_end / theirs:.2f}x that compiled, "
                  f"{eager.end_to_end / theirs:.2f}x eager")  # fmt: skip


if __name__ == "__main__":
    main()
