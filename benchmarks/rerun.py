"""Re-running `build` over an unchanged folder: stat only, no model load, no embedding. Also the first build's
peak resident memory at N/10 and N photos, which should not grow with N (the build streams).

    python benchmarks/rerun.py [--files 10000] [--repeats 5]

Makes N small JPEGs, builds once with a tiny random-weight checkpoint, then times `birder-index build DIR` as a
user runs it (a fresh process each time, Python start-up included) and prints the median of the repeats.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # for tests.helpers (tiny checkpoints, photos)

from tests.helpers import photo
from tests.helpers import save_vit


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp())
    photos = root / "photos"
    for i in range(args.files):
        folder = photos / f"album{i // 500:03d}"
        folder.mkdir(parents=True, exist_ok=True)
        photo(i, (32, 24)).save(folder / f"img{i:05d}.jpg", quality=80)
    weights = save_vit(root, "vit_reg4_b16", "pt")
    small = root / "small"
    for path in sorted(photos.rglob("*.jpg"))[: args.files // 10]:
        (small / path.parent.name).mkdir(parents=True, exist_ok=True)
        os.link(path, small / path.parent.name / path.name)
    # Both without compiling, so that they differ only in N; then N as a default build runs it (compiled).
    peak, out = _first_build(small, weights, "--no-compile")
    print(f"first build, --no-compile: {out} (peak memory {peak:.0f} MB)")
    peak, out = _first_build(photos, weights, "--no-compile")
    print(f"first build, --no-compile: {out} (peak memory {peak:.0f} MB)")
    shutil.rmtree(photos / ".birder-index")
    t0 = time.perf_counter()
    peak, out = _first_build(photos, weights)
    print(f"first build: {out} (wall {time.perf_counter() - t0:.1f}s, peak memory {peak:.0f} MB)")
    cmd = [sys.executable, "-m", "birder_index", "build", str(photos)]
    times = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip()
        times.append(time.perf_counter() - t0)
    print(f"re-run over {args.files} unchanged files: {out}")
    print(
        f"wall time of `birder-index build` (fresh process): median {statistics.median(times):.2f}s, "
        f"min {min(times):.2f}s, max {max(times):.2f}s over {args.repeats} runs"
    )
    start = subprocess.run([sys.executable, "-c", "import birder_index.cli"], capture_output=True)
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import birder_index.cli, birder_index.indexer"], check=True)
    print(f"of which Python start-up and imports: {time.perf_counter() - t0:.2f}s (rc {start.returncode})")


def _first_build(folder: Path, weights: Path, *options: str) -> tuple[float, str]:
    """(peak resident MB, summary line) of a first build in a fresh process. A helper process runs it, so that
    the peak of one build is not mixed with another's (RUSAGE_CHILDREN keeps the maximum over all children)."""
    code = (
        "import resource, subprocess, sys; r = subprocess.run([sys.executable, '-m', 'birder_index', 'build', "
        f"{str(folder)!r}, '--weights', {str(weights)!r}, *{list(options)!r}], check=True, capture_output=True, "
        "text=True); "
        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024); print(r.stdout.strip())"
    )
    lines = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.splitlines()
    return float(lines[0]), lines[1]


if __name__ == "__main__":
    main()
