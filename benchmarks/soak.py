"""Soak: kill-and-resume trials of a real `build` (SIGKILL at random moments), each checked against an
uninterrupted build: every image indexed exactly once, `verify` healthy, identical search results.

    python benchmarks/soak.py [--trials 50] [--images 200] [--seed 0]
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # for tests.crash and tests.helpers

from birder_index.indexer import BuildOptions
from birder_index.indexer import ModelSpec
from birder_index.indexer import build_index
from tests.crash import check_against
from tests.crash import kill_and_resume
from tests.crash import make_corpus
from tests.helpers import save_vit


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=50)
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp())
    make_corpus(root / "photos", args.images)
    weights = save_vit(root, "vit_reg4_b16", "pt")
    build_index(
        root / "photos",
        index_dir=root / "reference",
        spec=ModelSpec(weights=weights),
        options=BuildOptions(workers=0, batch_size=2),
    )
    rng = random.Random(args.seed)
    passed, mid_build = 0, 0
    t0 = time.perf_counter()
    for trial in range(args.trials):
        index_dir = root / f"trial{trial:03d}"
        result = kill_and_resume(root / "photos", index_dir, weights, rng, kills=rng.randint(1, 3))
        try:
            assert result.final_rc == 0, f"resumed build exited {result.final_rc}"
            check_against(index_dir, root / "reference", args.images)
            passed += 1
            status = "ok"
        except AssertionError as e:
            status = f"FAILED: {e}"
        mid_build += sum(0 < n < args.images for n in result.kills)
        print(f"trial {trial + 1:3d}: killed at {result.kills} images indexed -> {status}", flush=True)
    print(
        f"{passed}/{args.trials} trials passed ({mid_build} kills landed mid-build) in {time.perf_counter() - t0:.0f}s"
    )
    raise SystemExit(0 if passed == args.trials else 1)


if __name__ == "__main__":
    main()
