"""imagededup's CNN.find_duplicates on given encodings (its N x N cosine-similarity path), for benchmarks/dedup.py.
Run with a Python that has imagededup installed:

    /path/to/venv/bin/python benchmarks/imagededup_run.py VECTORS.npy THRESHOLD PAIRS.json

The encoder is never used (encodings are given), so a stand-in module avoids downloading its pretrained weights.
Prints one JSON line {"seconds", "peak_mb", "pairs"} and writes the pairs (i < j) found.
"""

from __future__ import annotations

import json
import sys
import time

import numpy as np
import torch
from imagededup.methods import CNN
from imagededup.utils.models import CustomModel
from peak import peak_rss_mb


def main() -> None:
    x = np.load(sys.argv[1])
    threshold = float(sys.argv[2])
    cnn = CNN(verbose=False, model_config=CustomModel(name="given-encodings", model=torch.nn.Identity(),
                                                      transform=lambda img: img))  # fmt: skip
    encodings = {str(i): x[i] for i in range(len(x))}
    t0 = time.perf_counter()
    found = cnn.find_duplicates(encoding_map=encodings, min_similarity_threshold=threshold, num_sim_workers=0)
    seconds = time.perf_counter() - t0
    pairs = sorted({tuple(sorted((int(a), int(b)))) for a, dups in found.items() for b in dups})
    with open(sys.argv[3], "w") as f:
        json.dump(pairs, f)
    peak = peak_rss_mb()
    print(json.dumps({"seconds": seconds, "peak_mb": peak, "pairs": len(pairs)}))


if __name__ == "__main__":
    main()
