"""Re-running `build` over an unchanged folder: stat only, no model load, no embedding.

    python benchmarks/rerun.py [--files 10000] [--repeats 5]

Makes N small JPEGs, builds once with a tiny random-weight checkpoint, then times `birder-index build DIR` as a
user runs it (a fresh process each time, Python start-up included) and prints the median of the repeats.
"""

from __future__ import annotations

import argparse
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
    cmd = [sys.executable, "-m", "birder_index", "build", str(photos)]
    t0 = time.perf_counter()
    first = subprocess.run([*cmd, "--weights", str(weights)], capture_output=True, text=True, check=True)
    print(f"first build: {first.stdout.strip()} (wall {time.perf_counter() - t0:.1f}s)")
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


if __name__ == "__main__":
    main()
