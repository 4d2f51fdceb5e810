"""The GPU path measured on a GPU, in one run (issue 26): correctness, model throughput, the end-to-end build and
FAISS, printed as one table and written as JSON.

1. Correctness: a few dozen real photos embedded on the device in float32 and in bf16 autocast (the product's
   precision check included) against the CPU float32 path: min and median cosine (pass: >= 0.9999 float32,
   >= 0.999 bf16), and how many of each photo's top-k neighbours a Flat index of the device's embeddings shares
   with one of the CPU's.
2. Model throughput: vit_l16 at 224 px and vit_reg4_m16_rms_avg at 256 px (random weights in birder's .pt format,
   loaded through `load_backbone(weights=...)`), bf16, synthetic uint8 batches already on the device, the batch
   size doubled until the rate stops improving or memory runs out; then compiled (`Encoder.compile`) at the best
   batch. images/s, and the fraction of the bf16 peak (a large matmul, same run) that the analytic FLOPs imply.
3. End to end: `build_index` over camera-like JPEGs made here from the photos (random crops resized to 4-12 MP,
   sensor-like noise, quality 92; each copied with a few bytes appended, which decodes the same but hashes anew,
   so that the 15 decode workers of a GPU build, each filling whole batches of 256, reach their steady state).
   Stage by stage: decode alone (the build's `read_item` in a process pool), read + sha256 alone, host -> device
   copies, the model alone at the build's batch, the writes (the pipeline's per-batch DEBUG timings); and batched
   GPU JPEG decoding (`torchvision.io.decode_jpeg(..., device="cuda")`, not in the product) for comparison.
4. FAISS: 1M x 768 calibrated synthetic vectors (benchmarks/synthetic.py) through `import_embeddings`: the
   product's own index choice, training and tuning, on the CPU build of FAISS (the GPU build runs where one is
   installed: its wheel, faiss-gpu-cu12, is 46 MiB, needs CUDA 12's cuBLAS, and does not travel).

Sections run in the order 1, 2 (eager), 3, 4, 2 (compiled), each skipped with a line when the time budget is
spent; the JSON is rewritten after every section, so a run killed by `timeout` still leaves what it measured.
Random weights: speed does not depend on them; real pretrained weights can sit closer to bf16's limits.

Prepare here (downloads the wheels; writes an ignored folder, 34 MiB with the 54 photos and 5 wheels):

    python benchmarks/gpu_check.py prepare --photos /work/data/photos --out .gpu-bundle

On the GPU machine (run tool, carry [".gpu-bundle"]), first a short run (timeout_s 300):

    (python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .gpu-bundle/whl/*.whl \
      || for w in .gpu-bundle/whl/*.whl; do python3 -m zipfile -e "$w" /tmp/site; done) \
      && export PYTHONPATH=/tmp/site:$PWD \
      && python3 benchmarks/gpu_check.py run --quick --out $OUT/gpu_check_quick.json

then the full run, under 8 minutes (timeout_s 480):

    (python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .gpu-bundle/whl/*.whl \
      || for w in .gpu-bundle/whl/*.whl; do python3 -m zipfile -e "$w" /tmp/site; done) \
      && export PYTHONPATH=/tmp/site:$PWD \
      && timeout 450 python3 benchmarks/gpu_check.py run --budget 400 --out $OUT/gpu_check.json

(Unzipping a wheel installs it as pip would, for the case where that Python has no pip.) A section that failed or
was skipped can be run again alone: `run --only compile --budget 120 --out $OUT/gpu_check_compile.json`.
Here, on a CPU: `python benchmarks/gpu_check.py run --device cpu --quick --photos DIR` (tiny models, small data).
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import hashlib
import importlib
import importlib.metadata
import json
import logging
import math
import multiprocessing
import os
import platform
import random
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import tomllib
from collections.abc import Callable
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from dataclasses import dataclass
from dataclasses import field
from datetime import UTC
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from synthetic import Generator
from synthetic import Shape

from birder_index.backbone import load_backbone
from birder_index.backbone.cpu import usable_cores
from birder_index.backbone.encoder import Encoder
from birder_index.backbone.hardware import resolve_device
from birder_index.backbone.images import decode
from birder_index.backbone.images import open_upright
from birder_index.backbone.registry import architecture_config
from birder_index.backbone.vit import ViT
from birder_index.backbone.vit_config import ViTConfig
from birder_index.backbone.vit_config import merge_config

log = logging.getLogger("gpu_check")

PHOTO_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp"}
# What the GPU machine has of pyproject.toml's dependencies (issue 26); the others travel as wheels, and packaging,
# which faiss's loader imports (typing-extensions, which sqlalchemy needs, comes with torch; greenlet is optional
# since sqlalchemy 2.1).
ON_GPU_MACHINE = {"torch", "numpy", "pillow", "click", "tqdm", "safetensors", "pyarrow", "huggingface-hub"}
EXTRAS = ("cpu",)  # the extras the check needs: the CPU build of FAISS
ALSO_NEEDED = ("packaging",)
PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64")
BUNDLE_WARN_MIB = 50
FLOAT32_MIN_COSINE = 0.9999
BF16_MIN_COSINE = 0.999
VIT_L16_TARGET = 3000.0  # images/s, model only, vit_l16 at 224 px (the target)
BUILD_TARGET = 0.8  # of the model-only rate
NEIGHBOURS = 5
RGB_STATS = {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}
# The calibrated generator of docs/index.md (benchmarks/dedup.py GEN): the FAISS figures compare with its 1M x 768 row.
GEN = Generator(mean=3.0, spread=0.6875, rank=128, decay=0.5, noise=0.16, per_cluster=370, local_rank=8)
VECTOR_CHUNK = 16_384
TINY = {"num_layers": 2, "num_heads": 2, "hidden_dim": 64, "mlp_dim": 128}


@dataclass(frozen=True)
class Plan:
    """How big each section is: the full run on a GPU, or --quick (tiny models, small data) anywhere."""

    quick: bool  # the targets are for the full-size models only
    models: tuple[tuple[str, int], ...]  # (architecture, input size)
    overrides: dict[str, int] | None  # birder checkpoint `config` entry: None for the registered sizes
    first_batch: int
    max_batch: int
    min_seconds: float  # timed per measurement, after a warm-up call
    peak_sizes: tuple[int, ...]  # square bf16 matmuls
    distinct: int  # generated JPEGs
    copies: int  # files per generated JPEG
    megapixels: tuple[float, float]
    decode_sample: int  # files timed by the decode-alone pool
    gpu_decode_sample: int
    faiss_vectors: int
    faiss_dim: int
    budget: float  # seconds; a section that would start later is skipped
    build_min_seconds: float  # left at its start, else skipped
    faiss_min_seconds: float
    compile_min_seconds: float


FULL = Plan(
    quick=False,
    models=(("vit_l16", 224), ("vit_reg4_m16_rms_avg", 256)),
    overrides=None,
    first_batch=32,
    max_batch=4096,
    min_seconds=1.5,
    peak_sizes=(8192, 16384),
    distinct=3000,
    copies=4,
    megapixels=(4.0, 12.0),
    decode_sample=2000,
    gpu_decode_sample=512,
    faiss_vectors=1_000_000,
    faiss_dim=768,
    budget=400.0,
    build_min_seconds=60.0,
    faiss_min_seconds=100.0,
    compile_min_seconds=60.0,
)
QUICK = Plan(
    quick=True,
    models=(("vit_l16", 64), ("vit_reg4_m16_rms_avg", 64)),
    overrides=TINY,
    first_batch=2,
    max_batch=16,
    min_seconds=0.1,
    peak_sizes=(256,),
    distinct=24,
    copies=2,
    megapixels=(0.05, 0.2),
    decode_sample=48,
    gpu_decode_sample=48,
    faiss_vectors=20_000,
    faiss_dim=768,
    budget=240.0,
    build_min_seconds=0.0,
    faiss_min_seconds=0.0,
    compile_min_seconds=0.0,
)
SECTIONS = ("correctness", "throughput", "build", "faiss", "compile")


# -- the results: rows of one table, checks, the machine -----------------------------------------------------------


@dataclass
class Row:
    section: str
    name: str
    value: float | int | str | None
    unit: str = ""
    note: str = ""


@dataclass
class Check:
    name: str
    passed: bool
    kind: str  # "correctness": a failure fails the run; "target": the goal, reported
    detail: str


@dataclass
class Results:
    out: Path | None
    mode: str
    machine: dict[str, Any]
    deadline: float
    rows: list[Row] = field(default_factory=list)
    checks: list[Check] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)

    def add(self, section: str, name: str, value: Any, unit: str = "", note: str = "") -> None:
        if isinstance(value, (np.floating, np.integer)):
            value = value.item()
        self.rows.append(Row(section, name, value, unit, note))
        log.info("%s | %s: %s %s %s", section, name, fmt(value, unit), unit, note)

    def check(self, name: str, passed: bool, kind: str, detail: str) -> None:
        self.checks.append(Check(name, bool(passed), kind, detail))

    def left(self) -> float:
        return self.deadline - time.monotonic()

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.checks if c.kind == "correctness")

    def save(self) -> None:
        if self.out is None:
            return
        data = {
            "mode": self.mode,
            "machine": self.machine,
            "seconds": round(time.monotonic() - self.started, 1),
            "passed": self.passed,
            "checks": [asdict(c) for c in self.checks],
            "rows": [asdict(r) for r in self.rows],
        }
        self.out.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.out.with_name(self.out.name + ".tmp")
        tmp.write_text(json.dumps(data, indent=1) + "\n")
        os.replace(tmp, self.out)


def fmt(value: Any, unit: str = "") -> str:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return "-" if value is None else str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if unit == "cosine":
        return f"{value:.6f}"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:.3g}" if abs(value) < 1 else f"{value:.2f}"


def table(res: Results) -> str:
    rows = sorted(res.rows, key=lambda r: r.section)  # stable: each section's rows in the order measured
    cells = [(r.section, r.name, fmt(r.value, r.unit), r.unit, r.note) for r in rows]
    head = ("section", "figure", "value", "unit", "note")
    widths = [max(len(c[i]) for c in [head, *cells]) for i in range(4)]
    lines = []
    for c in [head, *cells]:
        lines.append(f"{c[0]:<{widths[0]}}  {c[1]:<{widths[1]}}  {c[2]:>{widths[2]}}  {c[3]:<{widths[3]}}  {c[4]}")
    for c in res.checks:
        lines.append(f"{'PASS' if c.passed else 'FAIL':<5} [{c.kind}] {c.name}: {c.detail}")
    return "\n".join(line.rstrip() for line in lines)


def machine_info(device: torch.device, plan_name: str) -> dict[str, Any]:
    info: dict[str, Any] = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "plan": plan_name,
        "device": str(device),
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "usable_cores": usable_cores(),
        "ram_gib": round(ram_bytes() / 2**30, 1),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "float32_matmul_precision": torch.get_float32_matmul_precision(),
        "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32,
    }
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info.update(
            gpu=props.name,
            gpu_memory_gib=round(props.total_memory / 2**30, 1),
            gpu_capability=f"{props.major}.{props.minor}",
            gpu_count=torch.cuda.device_count(),
        )
    info["packages"] = package_versions()
    info["nvidia_smi"] = nvidia_smi() if device.type == "cuda" else None
    return info


def nvidia_smi() -> str | None:
    """Driver, clocks and power limit as nvidia-smi reports them (None without it)."""
    query = "name,driver_version,clocks.max.sm,clocks.max.mem,power.limit,memory.total"
    try:
        done = subprocess.run(["nvidia-smi", f"--query-gpu={query}", "--format=csv,noheader"],
                              capture_output=True, text=True, timeout=20)  # fmt: skip
    except (OSError, subprocess.TimeoutExpired):
        return None
    return f"{query}: {done.stdout.strip()}" if done.returncode == 0 else None


def package_versions() -> dict[str, str]:
    """Version of each package the product and this check use, or why it does not import."""
    out = {}
    for dist, module in (("numpy", "numpy"), ("pillow", "PIL"), ("torchvision", "torchvision"),
                         ("faiss-cpu", "faiss"), ("sqlalchemy", "sqlalchemy"), ("pillow-heif", "pillow_heif"),
                         ("platformdirs", "platformdirs"), ("safetensors", "safetensors"), ("pyarrow", "pyarrow"),
                         ("click", "click"), ("tqdm", "tqdm"), ("packaging", "packaging")):  # fmt: skip
        try:
            importlib.import_module(module)
            out[dist] = importlib.metadata.version(dist)
        except Exception as e:  # ImportError, or a wheel that does not fit this machine (any error on import)
            out[dist] = f"not importable: {first_line(e)}"
    return out


def guard_heif() -> str:
    """pillow-heif travels as a wheel built for Pillow >= 11.1. The product registers it on its first decode and
    tolerates only its absence (ImportError); should it fail to import otherwise beside that machine's Pillow,
    every decode would raise, so registration is skipped for this run (no HEIC photo is used here)."""
    try:
        import pillow_heif  # noqa: F401

        return "pillow-heif imports"
    except ImportError as e:
        return f"pillow-heif missing ({first_line(e)}): the product decodes without HEIC support"
    except Exception as e:
        from birder_index.backbone import images

        images._heif_registered = True
        return f"pillow-heif broken ({first_line(e)}): not registered for this run"


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def ram_bytes() -> int:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0][:200]}" if text else type(e).__name__


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def free(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


# -- models: random weights in birder's format, and their FLOPs ------------------------------------------------------


@dataclass(frozen=True)
class Model:
    arch: str
    size: int
    cfg: ViTConfig
    path: Path
    sha256: str
    tiny: bool

    @property
    def label(self) -> str:
        return f"{self.arch}{' (tiny)' if self.tiny else ''} @{self.size}"

    def load(self, device: torch.device | str, precision: str) -> Encoder:
        """Through the product's loading path, as `--weights FILE --model ARCH` does."""
        return load_backbone(
            model=self.arch, weights=self.path, device=str(device), precision=precision, sha256=self.sha256
        )


def write_checkpoint(folder: Path, arch: str, size: int, overrides: dict[str, int] | None, seed: int = 0) -> Model:
    """A random-weight ViT of a registered architecture saved as birder's `checkpoint_model` writes a `.pt` (the
    state dict under "state", signature, rgb_stats, and custom sizes in "config"), as tests/helpers.py does."""
    torch.manual_seed(seed)
    cfg = merge_config(architecture_config(arch), overrides)
    net = ViT(cfg, (size, size))
    path = folder / f"{arch}_random.pt"
    torch.save(
        {
            "state": {k: v.contiguous() for k, v in net.state_dict().items()},
            "birder_version": "v0.8.4",
            "task": "image_classification",
            "signature": {"inputs": [{"data_shape": [0, 3, size, size]}], "outputs": [{"data_shape": [0, 0]}]},
            "class_to_idx": {},
            "rgb_stats": RGB_STATS,
            "config": overrides,
        },
        path,
    )
    return Model(arch, size, cfg, path, sha256_of(path), overrides is not None)


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 24):
            h.update(chunk)
    return h.hexdigest()


def vit_flops(cfg: ViTConfig, size: tuple[int, int]) -> int:
    """FLOPs (2 per multiply-add) of one image's embedding: the patch embedding, and per block the QKV and output
    projections, the attention scores (q k^T and their product with v) and the MLP. Norms, softmax, GELU, biases
    and pooling are left out (well under 1 %). Equals torch's FlopCounterMode with explicit attention."""
    p, d = cfg.patch_size, cfg.hidden_dim
    patches = (size[0] // p) * (size[1] // p)
    t = patches + cfg.num_special_tokens
    block = 2 * t * d * 3 * d + 2 * t * d * d + 2 * 2 * t * t * d + 2 * 2 * t * d * cfg.mlp_dim
    return 2 * patches * 3 * p * p * d + cfg.num_layers * block


def peak_matmul(device: torch.device, n: int, reps: int = 10, trials: int = 5) -> float:
    """bf16 FLOP/s of the best of `trials` runs of `reps` (n x n) @ (n x n) products."""
    a = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    c = torch.empty(n, n, device=device, dtype=torch.bfloat16)
    torch.mm(a, b, out=c)
    sync(device)
    best = math.inf
    for _ in range(trials):
        t0 = time.perf_counter()
        for _ in range(reps):
            torch.mm(a, b, out=c)
        sync(device)
        best = min(best, (time.perf_counter() - t0) / reps)
    return 2 * n**3 / best


def measure_peak(res: Results, device: torch.device, plan: Plan) -> float:
    rates = {n: peak_matmul(device, n) for n in plan.peak_sizes}
    n, peak = max(rates.items(), key=lambda kv: kv[1])
    others = ", ".join(f"{k}: {v / 1e12:.1f}" for k, v in rates.items() if k != n)
    note = f"best of 5 x 10 products of {n} x {n}" + (f" (other sizes, TFLOP/s: {others})" if others else "")
    res.add("0 machine", "bf16 matmul peak (measured)", peak / 1e12, "TFLOP/s", note)
    return peak


# -- 1. correctness --------------------------------------------------------------------------------------------------


def photo_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in PHOTO_SUFFIXES and p.is_file())


def photo_pixels(files: list[Path], size: int) -> torch.Tensor:
    """uint8 (n, 3, size, size) through the product's decode (the build's fast path)."""
    return torch.stack([torch.from_numpy(decode(f, (size, size), fast=True).pixels) for f in files])


def neighbours(x: np.ndarray, k: int) -> np.ndarray:
    """(n, k) ids of each vector's k nearest others by cosine, from the product's Flat index where FAISS imports."""
    xb = np.ascontiguousarray(x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12), np.float32)
    ids = np.arange(len(xb), dtype=np.int64)
    try:
        from birder_index.indexer import ann

        index = ann.new_index("Flat", xb.shape[1])
        ann.add(index, ids, xb)
        _, I = ann.search(index, xb, k + 1)
    except Exception:  # no FAISS here (or a wheel that does not load): exact search in numpy, the same answer
        I = np.argsort(-(xb @ xb.T), axis=1, kind="stable")[:, : k + 1]
    return np.stack([row[row != i][:k] for i, row in enumerate(I)])


def check_correctness(res: Results, model: Model, device: torch.device, files: list[Path]) -> None:
    section = f"1 correctness {model.label}"
    x = photo_pixels(files, model.size)
    reference = model.load("cpu", "float32").embed(x)
    k = min(NEIGHBOURS, len(files) - 1)
    ref_nn = neighbours(reference.numpy(), k)
    for precision, bar in (("float32", FLOAT32_MIN_COSINE), ("bf16", BF16_MIN_COSINE)):
        enc = model.load(device, precision)
        got = enc.embed(x)  # bf16: the product's precision check runs on this first call
        cos = torch.nn.functional.cosine_similarity(got, reference)
        low, mid = float(cos.min()), float(cos.median())
        res.add(section, f"{precision} on {device.type}: cosine to CPU float32, min", low, "cosine",
                f"{len(files)} photos; pass >= {bar}")  # fmt: skip
        res.add(section, f"{precision} on {device.type}: cosine to CPU float32, median", mid, "cosine")
        res.check(f"{model.label} {precision} on {device}", low >= bar, "correctness", f"min cosine {low:.6f}")
        if precision == "bf16":
            setting = enc.setting()
            res.add(section, "bf16: setting after the product's precision check", str(setting["dtype"]), "",
                    f"its first-batch cosine to float32 on {device.type}: {enc.checked_cosine or 0:.6f}")  # fmt: skip
        dev_nn = neighbours(got.numpy(), k)
        shared = np.mean([len(np.intersect1d(a, b)) / k for a, b in zip(ref_nn, dev_nn, strict=True)])
        differ = int(sum(set(a) != set(b) for a, b in zip(ref_nn, dev_nn, strict=True)))
        res.add(section, f"{precision}: top-{k} neighbours shared with the CPU index", float(shared), "fraction",
                "the same for every photo" if differ == 0 else f"{differ} photos differ")  # fmt: skip
        del enc
        free(device)


# -- 2. model throughput ---------------------------------------------------------------------------------------------


def images_per_second(enc: Encoder, x: torch.Tensor, min_seconds: float) -> float:
    """`enc.embed` on the same batch. embed returns on the CPU, so each call ends synchronised."""
    return rate_of(lambda: enc.embed(x), len(x), min_seconds)


def rate_of(step: Callable[[], object], images: int, min_seconds: float) -> float:
    """images/s of `step` (which handles `images`) called until `min_seconds` and 2 calls have passed, after one
    warm-up call (an encoder's first runs its precision check)."""
    step()
    calls, t0 = 0, time.perf_counter()
    while calls < 2 or time.perf_counter() - t0 < min_seconds:
        step()
        calls += 1
    return calls * images / (time.perf_counter() - t0)


def random_batch(n: int, size: int, device: torch.device | str) -> torch.Tensor:
    return torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, device=device)


def batch_curve(
    enc: Encoder, model: Model, device: torch.device, plan: Plan, res: Results
) -> tuple[list[tuple[int, float]], str]:
    """images/s at batch sizes doubling from plan.first_batch; stops when a doubling gains under 3 %, memory runs
    out, plan.max_batch is reached or the budget is spent. Returns [(batch, images/s)] and why it stopped."""
    curve: list[tuple[int, float]] = []
    batch = plan.first_batch
    while True:
        try:
            rate = images_per_second(enc, random_batch(batch, model.size, device), plan.min_seconds)
        except torch.OutOfMemoryError:
            free(device)
            return curve, f"out of memory at {batch}"
        best = max((r for _, r in curve), default=0.0)
        curve.append((batch, rate))
        if best and rate < 1.03 * best:
            return curve, f"under 3 % gain at {batch}"
        if batch * 2 > plan.max_batch:
            return curve, f"largest batch tried ({plan.max_batch})"
        if res.left() < 0:
            return curve, "time budget spent"
        batch *= 2


def check_throughput(res: Results, model: Model, device: torch.device, plan: Plan, peak: float) -> tuple[int, float]:
    """Eager bf16 images/s at the best batch size; returns (batch, images/s)."""
    section = f"2 throughput {model.label}"
    flops = vit_flops(model.cfg, (model.size, model.size))
    res.add(section, "FLOPs per image (analytic)", flops / 1e9, "GFLOP", "patch embedding, QKV, scores, proj, MLP")
    enc = model.load(device, "bf16")
    curve, why = batch_curve(enc, model, device, plan, res)
    if not curve:
        res.add(section, "eager bf16, model only", "failed", "", why)
        return 0, 0.0
    batch, rate = max(curve, key=lambda c: c[1])
    steps = ", ".join(f"{b}: {r:,.0f}" for b, r in curve)
    res.add(section, "eager bf16, model only", rate, "images/s",
            f"best batch {batch}; images/s by batch {steps}; stopped: {why}")  # fmt: skip
    res.add(section, "eager bf16: fraction of the bf16 peak", rate * flops / peak, "fraction",
            f"{rate * flops / 1e12:.1f} TFLOP/s of {peak / 1e12:.1f} measured")  # fmt: skip
    res.add(section, "eager bf16: setting", str(enc.setting()["dtype"]), "", f"attention {enc.setting()['attention']}")
    if model.arch == "vit_l16" and not plan.quick:
        res.check("vit_l16 @224 model only >= 3,000 images/s (eager)", rate >= VIT_L16_TARGET, "target",
                  f"{rate:,.0f} images/s at batch {batch}")  # fmt: skip
    del enc
    free(device)
    return batch, rate


@contextmanager
def captured(logger_name: str, level: int) -> Iterator[list[logging.LogRecord]]:
    """The records a product logger emits meanwhile (DEBUG ones are kept from the console)."""
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    logger = logging.getLogger(logger_name)
    handler, old_level, old_propagate = Keep(level), logger.level, logger.propagate
    logger.addHandler(handler)
    logger.setLevel(level)
    logger.propagate = level >= logging.INFO
    try:
        yield records
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)
        logger.propagate = old_propagate


def check_compiled(
    res: Results, model: Model, device: torch.device, plan: Plan, peak: float, best: tuple[int, float]
) -> None:
    batch, eager = best
    if not batch:
        return  # the eager model did not run: nothing to compile at
    section = f"2 throughput {model.label}"
    enc = model.load(device, "bf16")
    with captured("birder_index.backbone.encoder", logging.WARNING) as warnings:
        seconds = enc.compile(batch)
    if seconds is None:
        why = "; ".join(r.getMessage() for r in warnings) or "no reason logged"
        res.add(section, "compiled bf16, model only", "failed", "", why)
        return
    rate = images_per_second(enc, random_batch(batch, model.size, device), plan.min_seconds)
    flops = vit_flops(model.cfg, (model.size, model.size))
    res.add(section, "compile time (Encoder.compile)", seconds, "s", f"batch {batch}, inductor with freezing")
    res.add(section, "compiled bf16, model only", rate, "images/s",
            f"batch {batch} (the eager best: each batch size compiles anew); {rate / eager:.2f}x eager")  # fmt: skip
    res.add(section, "compiled bf16: fraction of the bf16 peak", rate * flops / peak, "fraction",
            f"{rate * flops / 1e12:.1f} TFLOP/s")  # fmt: skip
    if model.arch == "vit_l16" and not plan.quick:
        res.check("vit_l16 @224 model only >= 3,000 images/s (compiled)", rate >= VIT_L16_TARGET, "target",
                  f"{rate:,.0f} images/s at batch {batch}")  # fmt: skip
    del enc
    free(device)


# -- 3. end to end ---------------------------------------------------------------------------------------------------

_NOISE: np.ndarray | None = None


def _camera_jpeg(job: tuple[str, str, int, tuple[float, float]]) -> tuple[int, int]:
    """One camera-like JPEG from a photo: a random crop (half to all of each side) resized to a random size in
    the megapixel range, with sensor-like noise (a tiled grain, sigma 3 grey levels), quality 92.
    Returns (pixels, bytes)."""
    global _NOISE
    source, dest, seed, (low, high) = job
    if _NOISE is None:
        _NOISE = np.random.default_rng(0).normal(0, 3, (1024, 1024, 3)).astype(np.int16)
    rng = random.Random(seed)
    with Image.open(source) as img:
        photo = img.convert("RGB")
    w, h = photo.size
    cw, ch = max(16, int(w * rng.uniform(0.5, 1))), max(16, int(h * rng.uniform(0.5, 1)))
    x0, y0 = rng.randint(0, w - cw), rng.randint(0, h - ch)
    scale = math.sqrt(rng.uniform(low, high) * 1e6 / (cw * ch))
    out = photo.crop((x0, y0, x0 + cw, y0 + ch)).resize(
        (round(cw * scale), round(ch * scale)), Image.Resampling.BICUBIC
    )
    a = np.asarray(out, dtype=np.int16)
    reps = (-(-a.shape[0] // 1024), -(-a.shape[1] // 1024), 1)
    a = a + np.tile(_NOISE, reps)[: a.shape[0], : a.shape[1]]
    Image.fromarray(a.clip(0, 255).astype(np.uint8)).save(dest, quality=92)
    return out.width * out.height, Path(dest).stat().st_size


@dataclass(frozen=True)
class Corpus:
    folder: Path
    names: list[str]  # the generated files first, then their copies
    distinct: int
    megapixels: float  # mean of the generated files
    mib: float
    seconds: float


def make_corpus(files: list[Path], folder: Path, plan: Plan, processes: int) -> Corpus:
    """plan.distinct camera-like JPEGs, each then copied plan.copies - 1 times with a few bytes appended (decoders
    ignore them: same pixels and decode cost, a new sha256, so the build embeds every copy)."""
    t0 = time.perf_counter()
    folder.mkdir(parents=True)
    jobs = [(str(files[i % len(files)]), str(folder / f"cam{i:05d}.jpg"), i, plan.megapixels)
            for i in range(plan.distinct)]  # fmt: skip
    with multiprocessing.get_context("fork").Pool(processes) as pool:
        made = pool.map(_camera_jpeg, jobs, chunksize=4)
    names = [Path(j[1]).name for j in jobs]
    for name in list(names):
        data = (folder / name).read_bytes()
        for c in range(1, plan.copies):
            copy = f"{name[:-4]}-{c}.jpg"
            (folder / copy).write_bytes(data + f"copy {c}".encode())
            names.append(copy)
    megapixels, mib = float(np.mean([m for m, _ in made])) / 1e6, float(np.mean([b for _, b in made])) / 2**20
    return Corpus(folder, names, plan.distinct, megapixels, mib, time.perf_counter() - t0)


def _decode_one(job: tuple[str, str, tuple[int, int]]) -> tuple[float, bool]:
    from birder_index.indexer.decode import read_item  # what a build's decode worker runs, file by file

    t0 = time.perf_counter()
    item = read_item(Path(job[0]), 0, job[1], job[2], True)
    return time.perf_counter() - t0, item.pixels is not None


def _hash_one(path: str) -> float:
    t0 = time.perf_counter()
    with open(path, "rb") as f:
        hashlib.sha256(f.read()).hexdigest()
    return time.perf_counter() - t0


def _worker_start(_: int) -> int:
    return os.getpid()


def _default_signals() -> None:
    # A forked worker inherits its parent's signal handlers: a parent that ran Ray (whose driver handles SIGTERM)
    # would leave workers that Pool.terminate cannot stop, and the pool's exit would wait forever.
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def pool_rate(fn: Callable[[Any], Any], jobs: list[Any], processes: int) -> tuple[float, list[Any]]:
    """images/s of `fn` over `jobs` in a process pool (its start-up not timed), and the results."""
    # spawn, not fork: a worker forked from a process whose torch threads hold locks can deadlock in its first op
    pool = multiprocessing.get_context("spawn").Pool(processes, initializer=_default_signals)
    try:
        pool.map(_worker_start, range(processes))
        t0 = time.perf_counter()
        out = pool.map(fn, jobs, chunksize=4)
        seconds = time.perf_counter() - t0
        pool.close()  # the workers finish and exit on their own
    finally:
        pool.terminate()
        pool.join()
    return len(jobs) / seconds, out


def build_decoders(device: torch.device, n: int) -> int:
    """How many decoders a build runs, as indexer/pipeline.py `reader` chooses: threads taking turns with the model
    on a CPU (every core), worker processes beside it on a GPU (cores - 1, at most 16; none below 16 photos)."""
    if device.type == "cpu":
        return usable_cores()
    return 0 if n < 16 else max(1, min(usable_cores() - 1, 16))


def transfer_rate(device: torch.device, batch: int, size: int, pinned: bool) -> float:
    """Host -> device images/s of one uint8 batch copied as the build copies it (non_blocking), one at a time."""
    x = random_batch(batch, size, "cpu")
    x = x.pin_memory() if pinned else x

    def copy() -> None:
        x.to(device, non_blocking=True)
        sync(device)

    return rate_of(copy, batch, 0.5)


def check_stages(res: Results, model: Model, device: torch.device, plan: Plan, corpus: Corpus) -> dict[str, float]:
    """The build's stages alone: decode, read + sha256, copies to the device, the model at the build's batch."""
    from birder_index.indexer.pipeline import default_batch_size

    section = "3 build stages"
    size = (model.size, model.size)
    decoders = max(1, build_decoders(device, len(corpus.names)))
    sample = corpus.names[: min(plan.decode_sample, corpus.distinct)]
    rate, out = pool_rate(_decode_one, [(str(corpus.folder), n, size) for n in sample], decoders)
    core_ms = 1000 * float(np.mean([s for s, _ in out]))
    res.add(section, f"decode alone, {decoders} processes", rate, "images/s",
            f"read_item (read, sha256, DCT-domain decode, resize, signatures) over {len(sample)} files; "
            f"{core_ms:.1f} core-ms per image")  # fmt: skip
    hashed, _ = pool_rate(_hash_one, [str(corpus.folder / n) for n in sample], decoders)
    res.add(section, f"read + sha256 alone, {decoders} processes", hashed, "images/s",
            "the CPU work left per file if decoding moved to the GPU (signatures aside)")  # fmt: skip
    stages = {"decode": rate, "hash": hashed}
    batch = default_batch_size(device)
    if device.type == "cuda":
        for pinned in (True, False):
            copied = transfer_rate(device, batch, model.size, pinned)
            res.add(section, f"host -> device copy, {'pinned' if pinned else 'pageable'}", copied,
                    "images/s", f"{copied * 3 * model.size**2 / 1e9:.1f} GB/s, batches of {batch}")  # fmt: skip
    else:
        res.add(section, "host -> device", "n/a", "", "the device is the CPU")
    stages.update(model_rates(res, model.load(device, "auto"), device, batch, plan))  # loaded as the build does
    free(device)
    stages.update(decoders=float(decoders), batch=float(batch))
    return stages


def model_rates(res: Results, enc: Encoder, device: torch.device, batch: int, plan: Plan) -> dict[str, float]:
    """The model at the build's batch: input already on the device, copied from pinned memory, and masked first
    as the pipeline does (batch.pixels[mask] is a new, pageable tensor, even when every photo is selected)."""
    section = "3 build stages"
    size = enc.info.preprocess.size[0]
    on_device = images_per_second(enc, random_batch(batch, size, device), plan.min_seconds)
    host = random_batch(batch, size, "cpu")
    host = host.pin_memory() if device.type == "cuda" else host
    from_host = images_per_second(enc, host, plan.min_seconds)
    mask = torch.ones(batch, dtype=torch.bool)
    masked = rate_of(lambda: enc.embed(host[mask]), batch, plan.min_seconds)
    res.add(section, f"model alone, batch {batch}, input on the device", on_device,
            "images/s", f"precision auto: {enc.setting()['dtype']}")  # fmt: skip
    res.add(section, "model, input copied from pinned memory", from_host, "images/s",
            "embed(pinned batch): copy, normalise, model, embeddings back")  # fmt: skip
    res.add(section, "model, input masked first (as the pipeline)", masked, "images/s",
            "embed(batch.pixels[mask]) with every photo selected")  # fmt: skip
    return {"model": on_device, "model_from_host": from_host, "model_masked": masked}


@dataclass(frozen=True)
class BatchTimes:
    created: float  # when the pipeline logged the batch (after its write)
    images: int
    embed: float
    write: float


def batch_times(records: list[logging.LogRecord]) -> list[BatchTimes]:
    """The pipeline's DEBUG line per batch, "batch of %d: embed %.3fs, write %.3fs", as numbers."""
    out = []
    for r in records:
        if isinstance(r.msg, str) and r.msg.startswith("batch of") and isinstance(r.args, tuple) and len(r.args) == 3:
            n, embed, write = r.args
            out.append(BatchTimes(r.created, int(str(n)), float(str(embed)), float(str(write))))
    return out


def steady_rate(times: list[BatchTimes], wave: int) -> float | None:
    """images/s after the first wave of batches (each decode worker fills a whole batch before the first one
    arrives, so the first `wave` come at once, late)."""
    if len(times) < wave + 3:
        return None
    later = times[wave:]
    return sum(b.images for b in later[1:]) / max(later[-1].created - later[0].created, 1e-9)


def check_build(res: Results, model: Model, device: torch.device, plan: Plan, files: list[Path], work: Path) -> None:
    from birder_index.indexer import BuildOptions
    from birder_index.indexer import ModelSpec
    from birder_index.indexer import build_index
    from birder_index.indexer import describe
    from birder_index.indexer import open_index

    section = "3 build"
    corpus = make_corpus(files, work / "corpus", plan, usable_cores())
    names = corpus.names
    res.add(section, "corpus: camera-like JPEGs", len(names), "files",
            f"{corpus.distinct} made in {corpus.seconds:.1f}s with {usable_cores()} processes, x{plan.copies} "
            f"copies; mean {corpus.megapixels:.1f} MP, {corpus.mib:.2f} MiB")  # fmt: skip
    stages = check_stages(res, model, device, plan, corpus)
    spec = ModelSpec(model=model.arch, weights=model.path, device=str(device))
    with captured("birder_index.indexer.pipeline", logging.DEBUG) as records:
        report = build_index(corpus.folder, index_dir=work / "index", spec=spec, options=BuildOptions())
    with open_index(work / "index") as index:
        setting = describe(index)["last_embedding"]
    res.add(section, f"build {model.label}, its own figure", report.images_per_second,
            "images/s", f"{report.indexed:,} indexed, {report.failed} failed, from the first batch on; "
            f"embedding setting {setting}")  # fmt: skip
    res.add(section, "build: total seconds", report.seconds, "s",
            "scan, model load and check, embedding, FAISS refresh and tuning")  # fmt: skip
    res.check("build indexed every file", report.indexed == len(names) and report.failed == 0, "correctness",
              f"{report.indexed} of {len(names)} indexed, {report.failed} failed")  # fmt: skip
    explain_build(res, batch_times(records), stages, report.images_per_second, device, plan.quick)
    check_gpu_decode(res, device, plan, corpus, model.size, stages)
    shutil.rmtree(corpus.folder, ignore_errors=True)
    free(device)


def explain_build(
    res: Results, times: list[BatchTimes], stages: dict[str, float], overall: float, device: torch.device, quick: bool
) -> None:
    """What bounds the build: the decoders, or the main thread's embed + write per batch (beside each other on a
    GPU; on a CPU they take turns, so their times add up)."""
    section = "3 build"
    if not times:
        res.add(section, "per-batch timings", "not captured", "", "the pipeline's DEBUG line changed?")
        return
    batch = int(stages["batch"])
    full = [b for b in times[1:] if b.images == batch] or times  # the first batch also ran the precision check
    embed, write = statistics.median(b.embed for b in full), statistics.median(b.write for b in full)
    main = stages["main"] = batch / (embed + write)
    res.add(section, "build: embed per batch (copy + model), median", embed, "s",
            f"{batch / embed:,.0f} images/s; {len(times)} batches")  # fmt: skip
    res.add(section, "build: write per batch, median", write, "s",
            f"{batch / write:,.0f} images/s: store, signatures, database")  # fmt: skip
    res.add(section, "build: main thread (embed + write) alone", main, "images/s", "the bound if decoding were free")
    steady = steady_rate(times, int(stages["decoders"]))
    res.add(section, "build: steady state, after the first wave of batches", steady, "images/s",
            f"from the {int(stages['decoders']) + 1}th batch on" if steady else "too few batches")  # fmt: skip
    rate = steady or overall
    decode = stages["decode"]
    if device.type == "cpu":
        bound, expected, how = "both", 1 / (1 / decode + 1 / main), "in turns on a CPU"
    else:
        bound, expected = ("decoding", decode) if decode < main else ("main thread", main)
        how = "beside each other on a GPU"
    res.add(section, "build: bound by", bound, "", f"decode alone {decode:,.0f} images/s, main thread (embed + "
            f"write) {main:,.0f}, {how}; model alone {stages['model']:,.0f}")  # fmt: skip
    res.add(section, "build: expected from the stages alone", expected, "images/s",
            f"the build reached {rate / expected:.2f} of it")  # fmt: skip
    fraction = rate / stages["model"]
    res.add(section, "build / model alone at the build's batch", fraction, "fraction", "target >= 0.8")
    if not quick:
        res.check(f"build >= {BUILD_TARGET} of the model-only rate", fraction >= BUILD_TARGET, "target",
                  f"{rate:,.0f} of {stages['model']:,.0f} images/s; bound by {bound}")  # fmt: skip


def check_gpu_decode(
    res: Results, device: torch.device, plan: Plan, corpus: Corpus, size: int, stages: dict[str, float]
) -> None:
    """Batched GPU JPEG decoding, for comparison with the build's CPU decoders (not in the product)."""
    section = "3 build stages"
    name = "GPU JPEG decode (torchvision, batches of 64)"
    if device.type != "cuda":
        res.add(section, name, "not available", "", f"no CUDA device ({device})")
        return
    try:
        from torchvision.io import ImageReadMode
        from torchvision.io import decode_jpeg
    except Exception as e:
        res.add(section, name, "not available", "", f"torchvision: {first_line(e)}")
        return
    files = [corpus.folder / n for n in corpus.names[: min(plan.gpu_decode_sample, corpus.distinct)]]
    data = [torch.frombuffer(bytearray(f.read_bytes()), dtype=torch.uint8) for f in files]
    chunks = [data[i : i + 64] for i in range(0, len(data), 64)]

    def run(resize: bool) -> float:
        t0 = time.perf_counter()
        for chunk in chunks:
            images = decode_jpeg(chunk, mode=ImageReadMode.RGB, device=device)
            if resize:  # to the model's input, as the product's decode: antialiased bicubic, uint8
                for img in images:
                    x = torch.nn.functional.interpolate(img[None].float(), (size, size), mode="bicubic", antialias=True)
                    x.clamp_(0, 255).to(torch.uint8)
        sync(device)
        return len(data) / (time.perf_counter() - t0)

    try:
        run(True)  # warm-up: nvjpeg's handles and buffers
        decoded, resized = run(False), run(True)
    except Exception as e:
        res.add(section, name, "failed", "", first_line(e))
        return
    res.add(section, name, decoded, "images/s", f"{len(data)} distinct files, full size, bytes "
            f"already in memory; {decoded * corpus.megapixels:,.0f} MP/s")  # fmt: skip
    res.add(section, "GPU JPEG decode + resize to the input size", resized, "images/s",
            "per-image antialiased bicubic on the GPU")  # fmt: skip
    if "main" in stages:
        left = {"GPU decode + resize": resized, "read + sha256": stages["hash"], "main thread": stages["main"]}
        name, rate = min(left.items(), key=lambda kv: kv[1])
        figures = ", ".join(f"{k} {v:,.0f}" for k, v in left.items())
        note = f"the slowest: {name}, of {figures}; signatures aside"
        res.add("3 build", "bound if the GPU decoded (estimate)", rate, "images/s", note)


# -- 4. FAISS --------------------------------------------------------------------------------------------------------

_SHAPE: Shape | None = None  # the collection's shared draws, inherited by forked vector workers


def _fill_vectors(job: tuple[str, int, int, int]) -> int:
    path, start, m, seed = job
    assert _SHAPE is not None
    out = np.load(path, mmap_mode="r+")
    out[start : start + m] = GEN.draw(_SHAPE, m, np.random.default_rng([seed, start]))
    out.flush()
    return m


def write_vectors(folder: Path, n: int, d: int, processes: int, seed: int = 0) -> tuple[Path, Path]:
    """n x d vectors of the calibrated generator into a .npy (chunks drawn in parallel, each with its own seed),
    and a text file of n sample names, as `import_embeddings` reads them."""
    global _SHAPE
    _SHAPE = GEN.shape(n, d, np.random.default_rng(seed))
    path = folder / "vectors.npy"
    np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(n, d)).flush()
    jobs = [(str(path), s, min(VECTOR_CHUNK, n - s), seed) for s in range(0, n, VECTOR_CHUNK)]
    with multiprocessing.get_context("fork").Pool(processes) as pool:
        pool.map(_fill_vectors, jobs)
    names = folder / "samples.txt"
    names.write_text("".join(f"v{i:07d}\n" for i in range(n)))
    return path, names


def check_faiss(res: Results, plan: Plan, work: Path) -> None:
    section = "4 FAISS"
    try:
        import faiss

        from birder_index.indexer import ann
        from birder_index.indexer import describe
        from birder_index.indexer import import_embeddings
        from birder_index.indexer import open_index
    except Exception as e:  # not installed, or a wheel that does not load here
        res.add(section, "FAISS", "skipped", "", f"faiss cannot be imported: {first_line(e)}")
        return
    gpu = ann.gpu_available()
    has_gpu = hasattr(faiss, "StandardGpuResources")
    res.add(section, "faiss", faiss.__version__, "", f"{'GPU' if has_gpu else 'CPU'} build, {usable_cores()} threads")
    why = "trains on the GPU" if gpu else "no GPU visible to FAISS" if has_gpu else (
        "a CPU build: the GPU wheel (faiss-gpu-cu12, 46 MiB) needs CUDA 12's cuBLAS and does not travel")  # fmt: skip
    res.add(section, "GPU FAISS", "ran" if gpu else "not run", "", why)
    n, d = plan.faiss_vectors, plan.faiss_dim
    t0 = time.perf_counter()
    vectors, samples = write_vectors(work, n, d, usable_cores())
    res.add(section, "synthetic vectors", n, "vectors", f"{d} dims, calibrated generator, made in "
            f"{time.perf_counter() - t0:.1f}s")  # fmt: skip
    report = import_embeddings(vectors, index_dir=work / "faiss-index", paths_file=samples)
    ann_report = report.index
    with open_index(work / "faiss-index") as index:
        info = describe(index)["index"]
    res.add(section, "import_embeddings: total", report.seconds, "s", "rows, float16 store, train, add, tune")
    res.add(section, "rows and store", report.seconds - ann_report.seconds, "s", "SQLite rows, float16 store")
    res.add(section, "index chosen", ann_report.factory, "", f"params {info['params']}")
    res.add(section, "train", ann_report.train_seconds, "s")
    res.add(section, "add", ann_report.add_seconds, "s")
    res.add(section, "tune", ann_report.tune_seconds, "s", "exact neighbours of 1,000 queries, nprobe x k_factor")
    res.add(section, "recall@10, tuned", ann_report.recall, "", "held-out collection queries, against exact search")
    res.add(section, "search, tuned: queries/s", ann_report.qps, "queries/s", "one batch of 1,000, with re-ranking")
    res.add(section, "index size", info["bytes_per_vector"], "bytes/vector", "the FAISS file")
    vectors.unlink()


# -- the run ---------------------------------------------------------------------------------------------------------


def run(args: argparse.Namespace) -> int:
    plan = QUICK if args.quick else FULL
    if args.budget is not None:
        plan = dataclasses.replace(plan, budget=args.budget)
    device = resolve_device(args.device)
    photos = args.photos or args.bundle / "photos"
    files = photo_files(photos)
    if len(files) < 2:
        raise SystemExit(f"no photos in {photos}: run `prepare` first, or give --photos DIR")
    only = set(args.only.split(",")) if args.only else set(SECTIONS)
    if only - set(SECTIONS):
        raise SystemExit(f"--only: unknown sections {sorted(only - set(SECTIONS))}; choose from {','.join(SECTIONS)}")
    if args.no_compile:
        only.discard("compile")
    res = Results(args.out, "quick" if args.quick else "full", machine_info(device, "quick" if args.quick else "full"),
                  time.monotonic() + plan.budget)  # fmt: skip
    res.machine["photos"] = f"{len(files)} from {photos}"
    res.machine["heic"] = guard_heif()
    describe_machine(res, device)
    with tempfile.TemporaryDirectory(prefix="gpu-check-", dir=args.workdir) as tmp:
        work = Path(tmp)
        os.environ.setdefault("BIRDER_INDEX_HOME", str(work / "home"))  # no user cache read or written
        peak = measure_peak(res, device, plan) if only & {"throughput", "compile"} else 0.0
        models = []  # 1.2 GB for vit_l16: written only where a section loads it
        if only - {"faiss"}:
            models = [write_checkpoint(work, arch, size, plan.overrides) for arch, size in plan.models]
        res.save()
        run_sections(res, plan, device, models, files, work, only, peak)
    print(table(res))
    res.save()
    return 0 if res.passed else 1


def describe_machine(res: Results, device: torch.device) -> None:
    """The machine in the table's first rows (all of it is in the JSON): the device, and what imports."""
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else res.machine["cpu"]
    smi = res.machine.get("nvidia_smi")
    note = f"{usable_cores()} usable cores, torch {torch.__version__}" + (f"; nvidia-smi {smi}" if smi else "")
    res.add("0 machine", "device", name, "", note)
    packages = res.machine["packages"]
    broken = sorted(k for k, v in packages.items() if v.startswith("not importable"))
    res.add("0 machine", "packages", f"{len(broken)} not importable" if broken else "all import", "",
            "; ".join(f"{k} {v}" for k, v in packages.items()))  # fmt: skip


def run_sections(
    res: Results,
    plan: Plan,
    device: torch.device,
    models: list[Model],
    files: list[Path],
    work: Path,
    only: set[str],
    peak: float,
) -> None:
    if "correctness" in only:
        for model in models:
            guarded(res, device, f"1 correctness {model.label}", check_correctness, res, model, device, files)
    best: dict[str, tuple[int, float]] = {}
    if "throughput" in only or "compile" in only:
        for model in models:
            section = f"2 throughput {model.label}"
            best[model.arch] = guarded(res, device, section, check_throughput, res, model, device, plan, peak) or (0, 0)
    if "build" in only and skip_unless(res, "3 build", plan.build_min_seconds):
        guarded(res, device, "3 build", check_build, res, models[0], device, plan, files, work)
    if "faiss" in only and skip_unless(res, "4 FAISS", plan.faiss_min_seconds):
        guarded(res, device, "4 FAISS", check_faiss, res, plan, work)
    if "compile" in only:
        for model in models:
            section = f"2 throughput {model.label}"
            if skip_unless(res, section, plan.compile_min_seconds, "compiled"):
                guarded(res, device, section, check_compiled, res, model, device, plan, peak, best[model.arch])


def guarded(res: Results, device: torch.device, section: str, fn: Callable[..., Any], *args: Any) -> Any:
    """Run one section; an exception becomes a failed check and a line in the table, and the run goes on to the
    next section (on a GPU lent for minutes, one crash must not cost the rest). The JSON is saved either way."""
    try:
        return fn(*args)
    except Exception as e:
        log.exception("%s failed", section)
        res.add(section, "section", "crashed", "", first_line(e))
        res.check(f"{section} ran", False, "correctness", first_line(e))
        free(device)
        return None
    finally:
        res.save()


def skip_unless(res: Results, section: str, needed: float, what: str = "section") -> bool:
    """False, with a line in the table, when less than `needed` seconds of the budget are left."""
    if res.left() >= needed:
        return True
    res.add(section, what, "skipped", "", f"{max(res.left(), 0):.0f}s of the time budget left, {needed:.0f}s needed")
    return False


# -- prepare (here, before the GPU run) ------------------------------------------------------------------------------


def prepare(photos: Path, out: Path, wheels: bool, longest: int = 1024) -> None:
    """The photos re-encoded small, and the wheels the GPU machine lacks, into an ignored folder."""
    for sub in ("photos", "whl"):
        shutil.rmtree(out / sub, ignore_errors=True)
    (out / "photos").mkdir(parents=True)
    names = []
    for f in photo_files(photos):
        img, _, _ = open_upright(f)  # upright RGB, transparency over grey, as the product decodes it
        img.thumbnail((longest, longest), Image.Resampling.BICUBIC)
        dest = out / "photos" / f"{f.stem}.jpg"
        img.save(dest, quality=90)
        names.append(dest.name)
    downloaded = download_wheels(out / "whl") if wheels else []
    manifest = {"made": datetime.now(UTC).isoformat(timespec="seconds"), "photos": names,
                "wheels": downloaded, "longest_side": longest, "jpeg_quality": 90}  # fmt: skip
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    mib = sum(p.stat().st_size for p in out.rglob("*") if p.is_file()) / 2**20
    print(f"{out}: {len(names)} photos, {len(downloaded)} wheels, {mib:.1f} MiB")
    if mib > BUNDLE_WARN_MIB:
        print(f"warning: over {BUNDLE_WARN_MIB} MiB; the working tree and the bundle travel within 64 MiB")


def travelling_wheels(pyproject: Path = PYPROJECT) -> list[str]:
    """The distributions the GPU machine lacks: pyproject.toml's dependencies (and those of EXTRAS) but those it has,
    and ALSO_NEEDED."""
    project = tomllib.loads(pyproject.read_text())["project"]
    deps = project["dependencies"] + [d for e in EXTRAS for d in project.get("optional-dependencies", {}).get(e, [])]
    names = [re.split(r"[\s<>=!~;\[]", dep, maxsplit=1)[0] for dep in deps]
    return [n for n in names if n.lower().replace("_", "-") not in ON_GPU_MACHINE] + list(ALSO_NEEDED)


def download_wheels(folder: Path) -> list[str]:
    """Python 3.12 manylinux x86_64 wheels of what the GPU machine lacks, at the versions installed here (the ones
    tested)."""
    folder.mkdir(parents=True)
    for name in travelling_wheels():
        version = importlib.metadata.version(name)
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--python-version",
               "3.12", "--implementation", "cp", *(f"--platform={p}" for p in PLATFORMS), "-q", "-d", str(folder),
               f"{name}=={version}"]  # fmt: skip
        subprocess.run(cmd, check=True)
    return sorted(p.name for p in folder.glob("*.whl"))


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("prepare", help="photos and wheels for the GPU machine, into an ignored folder")
    p.add_argument("--photos", type=Path, required=True)
    p.add_argument("--out", type=Path, default=Path(".gpu-bundle"))
    p.add_argument("--no-wheels", action="store_true", help="photos only")
    r = sub.add_parser("run", help="the check: one table on stdout, JSON with --out")
    r.add_argument("--bundle", type=Path, default=Path(".gpu-bundle"))
    r.add_argument("--photos", type=Path, help="photo folder (default: the bundle's)")
    r.add_argument("--device", default="auto")
    r.add_argument("--quick", action="store_true", help="tiny models and small data: a minute on a CPU")
    r.add_argument("--out", type=Path, help="write the results as JSON (rewritten after every section)")
    r.add_argument("--only", help=f"comma-separated sections: {','.join(SECTIONS)}")
    r.add_argument("--no-compile", action="store_true")
    r.add_argument("--budget", type=float, help="seconds; later sections are skipped (default: 400, quick 240)")
    r.add_argument("--workdir", type=Path, help="where the temporary data goes (default: the system's temp)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    handler = logging.StreamHandler(sys.stderr)
    handler.setLevel(logging.INFO)
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s: %(message)s", "%H:%M:%S"))
    if not logging.getLogger().handlers:  # a script run; under pytest, its own handlers stay
        logging.basicConfig(level=logging.INFO, handlers=[handler])
    if args.command == "prepare":
        prepare(args.photos, args.out, wheels=not args.no_wheels)
        return 0
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
