"""Reader stage of the build: file -> bytes -> sha256 + decoded pixels + colour signature + thumbnail, in threads or
processes.

Each file is read once: the same bytes are hashed and decoded. A file that cannot be read or decoded becomes a
failure with its reason and never stops the run. Batches are typed (`DecodedBatch`), not string-keyed dicts.
"""

from __future__ import annotations

import hashlib
import os
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
from birder_index.backbone.colour import colour_signature
from birder_index.backbone.images import decode
from birder_index.backbone.thumbnail import THUMB_DIM
from birder_index.backbone.thumbnail import thumbnail
from birder_index.errors import ImageError


@dataclass(frozen=True)
class Item:
    id: int
    pixels: np.ndarray | None  # uint8 (3, H, W), None on failure
    error: str | None
    sha256: str | None
    size: int | None
    mtime_ns: int | None
    width: int | None
    height: int | None
    colour: np.ndarray | None = None  # uint8 (SIGNATURE_DIM,), backbone/colour.py
    thumb: np.ndarray | None = None  # uint8 (THUMB_DIM,), backbone/thumbnail.py


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


def read_item(root: Path, image_id: int, rel: str, size: tuple[int, int], fast: bool) -> Item:
    try:
        with open(root / rel, "rb") as f:
            st = os.fstat(f.fileno())
            data = f.read()
    except OSError as e:
        return Item(image_id, None, (e.strerror or str(e)).lower(), None, None, None, None, None)
    sha = hashlib.sha256(data).hexdigest()
    if not data:
        return Item(image_id, None, "empty file", sha, 0, st.st_mtime_ns, None, None)
    try:
        d = decode(data, size, fast=fast)
    except ImageError as e:
        return Item(image_id, None, str(e), sha, st.st_size, st.st_mtime_ns, None, None)
    colour = colour_signature(d.pixels)  # here, in the worker: it overlaps the model like the decode
    thumb = thumbnail(d.pixels)
    return Item(image_id, d.pixels, None, sha, st.st_size, st.st_mtime_ns, d.width, d.height, colour, thumb)


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
