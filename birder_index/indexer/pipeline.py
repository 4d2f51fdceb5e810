"""The embed loop: decoders (reader) -> encoder (mapper) -> BatchWriter (writer), one committed batch at a time.

On a CPU, decode threads and the model take turns, each with every core (faster than a decode process beside the
model: docs/throughput.md); on a GPU, worker processes decode beside the model, with the cores to themselves.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from dataclasses import field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from birder_index.backbone.hardware import usable_cores
from birder_index.db import queries as q
from birder_index.db.engine import session_scope
from birder_index.db.models import MetaKey
from birder_index.indexer.decode import DecodedBatch
from birder_index.indexer.decode import PhotoDataset
from birder_index.indexer.decode import batches
from birder_index.indexer.decode import batches_between
from birder_index.indexer.index import Index
from birder_index.indexer.options import BuildOptions
from birder_index.indexer.vectors import VectorStore
from birder_index.indexer.write import BatchWriter
from birder_index.progress import Progress

if TYPE_CHECKING:
    from birder_index.backbone.encoder import Encoder

logger = logging.getLogger(__name__)


def default_batch_size(device: torch.device) -> int:
    # A CPU runs a ViT as efficiently at 16 as at 32, and smaller batches fill the decode pipeline sooner.
    return 256 if device.type == "cuda" else 16


# torch.compile makes a ViT faster on a CPU but costs seconds to compile: it pays from about this many photos
# (the measured speed-up and compile time: docs/benchmarks.md#embedding-throughput). On a GPU it is only used
# when asked for (not measured there).
COMPILE_MIN_IMAGES = 2000


def should_compile(choice: bool | None, device: torch.device, n_images: int) -> bool:
    if choice is not None:
        return choice
    return device.type == "cpu" and n_images >= COMPILE_MIN_IMAGES


def reader(dataset: PhotoDataset, device: torch.device, batch_size: int, workers: int | None) -> Iterable[DecodedBatch]:
    """The reader stage. On a CPU, by default, decode threads take turns with the model (`batches_between`: a
    decoder beside the model's matmuls stalls them); on a GPU, or with `workers` given, worker processes decode
    beside the model."""
    if workers is None and device.type == "cpu":
        return batches_between(dataset, batch_size, usable_cores())
    if workers is None:
        # A forked worker starts in well under a second, but a handful of photos decode faster in this process.
        workers = 0 if len(dataset) < 16 else max(1, min(usable_cores() - 1, 16))
    return batches(dataset, batch_size, workers, pin_memory=device.type == "cuda")


@dataclass
class PipelineCounts:
    """What one run of the loop did."""

    indexed: int = 0  # rows written (embedded, or copied from identical content)
    reused: int = 0  # of those, copied from identical content
    failed: int = 0  # new failures found while decoding
    pending: int = 0  # left to do when stopped
    interrupted: bool = False
    embed_seconds: float = 0.0  # from the first batch on (compiling and checking the model not included)
    compile_seconds: float = 0.0
    failures: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)
    actors: dict[str, int] = field(default_factory=dict)  # with Ray: photos per actor


def run_pipeline(
    index: Index,
    root: Path,
    todo: list[tuple[int, str]],
    encoder: Encoder,
    store: VectorStore,
    *,
    options: BuildOptions,
    progress: Progress,
    stop: threading.Event,
) -> PipelineCounts:
    """Decode, embed and write `todo` ((id, path) pairs), one committed batch at a time, until done or `stop`."""
    counts = PipelineCounts()
    batch_size = options.batch_size or default_batch_size(encoder.device)
    if should_compile(options.compile, encoder.device, len(todo)):
        progress("compiling the model (--no-compile skips it)", 0, None)
        counts.compile_seconds = encoder.compile(batch_size) or 0.0
    dataset = PhotoDataset(root, todo, encoder.info.preprocess.size, fast=not options.exact)
    loader = reader(dataset, encoder.device, batch_size, options.workers)
    writer = BatchWriter(index, store)
    progress("embedding", 0, len(todo))
    t0, checked_before = time.perf_counter(), encoder.check_seconds
    done = 0
    for batch in loader:
        t_batch = time.perf_counter()
        need = writer.needs_embedding(batch)
        pixels = batch.pixels[torch.from_numpy(need)] if len(batch.ok) else batch.pixels
        vectors = encoder.embed(pixels).numpy() if len(pixels) else np.zeros((0, encoder.embedding_dim), np.float32)
        t_embed = time.perf_counter()
        writer.write(batch, vectors)
        done += len(batch.ok) + len(batch.failed)
        counts.failures.extend((dataset.path_of[it.id], it.error or "") for it in batch.failed)
        logger.debug(
            "batch of %d: embed %.3fs, write %.3fs", len(batch.ok), t_embed - t_batch, time.perf_counter() - t_embed
        )
        progress("embedding", done, len(todo))
        if stop.is_set():
            counts.interrupted = True
            break
    # The precision check is a one-off start-up cost, like compiling: not in the images/s.
    counts.embed_seconds = time.perf_counter() - t0 - (encoder.check_seconds - checked_before)
    if writer.counts.indexed:
        record_setting(index, encoder, options)
    counts.indexed, counts.reused, counts.failed = writer.counts.indexed, writer.counts.reused, writer.counts.failed
    counts.failures.extend((dataset.path_of[i], reason) for i, reason in writer.failures)
    counts.pending = len(todo) - done
    return counts


def record_setting(index: Index, encoder: Encoder, options: BuildOptions) -> None:
    """What the last build embedded with (precision after its check, attention, compiled, decode): for `info`."""
    setting = {**encoder.setting(), "decode": "exact" if options.exact else "fast"}
    with session_scope(index.engine) as s:
        q.set_json(s, MetaKey.LAST_EMBEDDING, setting)
