"""cleanlab's label issues for benchmarks/curation.py, run in a side environment (cleanlab is not a birder-index
dependency): `python cleanlab_side.py DIR` reads DIR/labels.npy (n,) and DIR/probs.npy (n, C) (out-of-sample
probabilities) and writes DIR/cleanlab.json: the issues find_label_issues flags, ranked by self-confidence, the
self-confidence of every row (the ranking used for the top 5 %), and the seconds it took."""

import json
import sys
import time
from pathlib import Path

import numpy as np
from cleanlab.filter import find_label_issues
from cleanlab.rank import get_label_quality_scores

folder = Path(sys.argv[1])
labels, probs = np.load(folder / "labels.npy"), np.load(folder / "probs.npy")
t0 = time.perf_counter()
issues = find_label_issues(labels, probs, return_indices_ranked_by="self_confidence")
quality = get_label_quality_scores(labels, probs, method="self_confidence")
seconds = time.perf_counter() - t0
(folder / "cleanlab.json").write_text(
    json.dumps({"issues": [int(i) for i in issues], "quality": quality.tolist(), "seconds": seconds})
)
