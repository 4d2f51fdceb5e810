"""birder's own inference path, for side-by-side throughput: its DataLoader over the files (torchvision decode),
its inference transform and `infer_dataloader`. Run with a Python that has birder installed:

    /path/to/birder-venv/bin/python benchmarks/birder_path.py WEIGHTS.pt NETWORK PHOTOS [--amp]

Prints one JSON line: {"images": n, "seconds": s, "images_per_second": r, "amp": bool}.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from birder.common import fs_ops
from birder.data.datasets.directory import ImageListDataset
from birder.data.datasets.directory import tv_rgb_loader
from birder.data.transforms.classification import inference_preset
from birder.inference.classification import infer_dataloader


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("weights", type=Path)
    parser.add_argument("network")
    parser.add_argument("photos", type=Path)
    parser.add_argument("--amp", action="store_true", help="bf16 autocast")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    device = torch.device("cpu")
    net, info = fs_ops.load_model(device, args.network, path=args.weights, inference=True)
    size = tuple(info.signature["inputs"][0]["data_shape"][2:4])
    paths = sorted(str(p) for p in args.photos.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png", ".webp"))
    dataset = ImageListDataset(
        [(p, 0) for p in paths], transforms=inference_preset(size, info.rgb_stats), loader=tv_rgb_loader
    )
    loader = torch.utils.data.DataLoader(dataset, batch_size=args.batch_size, num_workers=args.workers)
    t0 = time.perf_counter()
    infer_dataloader(device, net, loader, return_embedding=True, amp=args.amp, amp_dtype=torch.bfloat16)
    seconds = time.perf_counter() - t0
    print(
        json.dumps(
            {"images": len(paths), "seconds": seconds, "images_per_second": len(paths) / seconds, "amp": args.amp}
        )
    )


if __name__ == "__main__":
    main()
