"""Reader stage of the build: files read (backbone/read.py: bytes -> sha256, pixels, colour signature, thumbnail)
in threads or processes, and collated into typed batches (`DecodedBatch`), not string-keyed dicts. A file that
cannot be read or decoded becomes a failure with its reason and never stops the run.
"""

from __future__ import annotations

import signal
from collections.abc import Iterable
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader
from torch.utils.data import Dataset

from birder_index.backbone.colour import SIGNATURE_DIM
from birder_index.backbone.read import Item
from birder_index.backbone.read import read_item
from birder_index.backbone.thumbnail import THUMB_DIM


@dataclass(frozen=True)
class DecodedBatch:
    pixels: torch.Tensor  # uint8 (n_ok, 3, H, W)
    ok: list[Item]  # decoded, in the order of `pixels`
    failed: list[Item]
    colours: np.ndarray  # uint8 (n_ok, SIGNATURE_DIM)
    thumbs: np.ndarray  # uint8 (n_ok, THUMB_DIM)

    def pin_memory(self) -> DecodedBatch:
        """Called by the DataLoader for CUDA: page-locked pixels copy to the GPU asynchronously."""
        return DecodedBatch(self.pixels.pin_memory(), self.ok, self.failed, self.colours, self.thumbs)


class PhotoDataset(Dataset[Item]):
    def __init__(self, root: Path, todo: list[tuple[int, str]], size: tuple[int, int], fast: bool) -> None:
        self.root = root
        self.todo = todo
        self.path_of = dict(todo)
        self.size = size
        self.fast = fast

    def __len__(self) -> int:
        return len(self.todo)

    def __getitem__(self, i: int) -> Item:
        image_id, rel = self.todo[i]
        return read_item(self.root, image_id, rel, self.size, self.fast)


def collate(items: list[Item]) -> DecodedBatch:
    ok = [it for it in items if it.pixels is not None]
    failed = [it for it in items if it.pixels is None]
    arrays = [it.pixels for it in ok if it.pixels is not None]
    pixels = torch.from_numpy(np.stack(arrays)) if arrays else torch.empty(0, dtype=torch.uint8)
    colours = np.zeros((len(ok), SIGNATURE_DIM), np.uint8)
    thumbs = np.zeros((len(ok), THUMB_DIM), np.uint8)
    for i, it in enumerate(ok):
        if it.colour is not None:
            colours[i] = it.colour
        if it.thumb is not None:
            thumbs[i] = it.thumb
    return DecodedBatch(pixels, ok, failed, colours, thumbs)


def _worker_init(_worker_id: int) -> None:
    # Ctrl-C reaches the whole process group: workers ignore it and the main process stops after its batch.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    torch.set_num_threads(1)  # decode is single-threaded per worker; torch threads would only compete


def batches(
    dataset: PhotoDataset, batch_size: int, workers: int, *, pin_memory: bool = False
) -> Iterable[DecodedBatch]:
    """Batches in order, decoded `workers` processes ahead of the caller (0: in this process)."""
    loader: Iterable[DecodedBatch] = DataLoader(
        dataset,
        batch_size=batch_size,
        num_workers=workers,
        collate_fn=collate,
        worker_init_fn=_worker_init if workers else None,
        pin_memory=pin_memory,
        prefetch_factor=4 if workers else None,
        persistent_workers=False,
    )
    return loader


def batches_between(dataset: PhotoDataset, batch_size: int, threads: int) -> Iterator[DecodedBatch]:
    """Batches decoded by `threads` threads of this process while the caller waits: decoding happens between the
    caller's batches, not beside them (Pillow, hashlib and numpy release the GIL, so the threads share the cores).

    On a CPU the model's matmuls use every core, and a decoder running beside them preempts one of the model's
    threads, which stalls all of them at the next barrier; taking turns, each stage has every core to itself.
    """
    with ThreadPoolExecutor(threads, thread_name_prefix="decode") as pool:
        for start in range(0, len(dataset), batch_size):
            yield collate(list(pool.map(dataset.__getitem__, range(start, min(start + batch_size, len(dataset))))))
