"""The embed loop of `build --ray`: the same driver as a local build (its plan, its store, its BatchWriter, one
committed batch at a time, so a killed driver resumes), with the decoding and embedding done by Ray actors
(distributed/embed.py) instead of this process.

The precision is decided here, once: a bf16 encoder is checked against float32 on the first photos, on the
driver, and every actor embeds at the precision the check left, so an index never mixes precisions.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from birder_index.distributed.cluster import RaySettings
from birder_index.distributed.cluster import plan_pool
from birder_index.distributed.cluster import ray_session
from birder_index.distributed.embed import EncoderRecipe
from birder_index.distributed.embed import embed_on_ray
from birder_index.distributed.readable import check_readable
from birder_index.indexer.decode import DecodedBatch
from birder_index.indexer.decode import PhotoDataset
from birder_index.indexer.decode import collate
from birder_index.indexer.index import Index
from birder_index.indexer.options import BuildOptions
from birder_index.indexer.pipeline import PipelineCounts
from birder_index.indexer.pipeline import default_batch_size
from birder_index.indexer.pipeline import record_setting
from birder_index.indexer.vectors import VectorStore
from birder_index.indexer.write import BatchWriter
from birder_index.progress import Progress

if TYPE_CHECKING:
    from birder_index.backbone.encoder import Encoder

logger = logging.getLogger(__name__)

CHECK_PHOTOS = 32  # photos the driver embeds to check bf16 against float32 (the encoder's own check size)


def run_ray_pipeline(
    index: Index,
    root: Path,
    todo: list[tuple[int, str]],
    encoder: Encoder,
    store: VectorStore,
    *,
    options: BuildOptions,
    settings: RaySettings,
    progress: Progress,
    stop: threading.Event,
) -> PipelineCounts:
    """Embed `todo` ((id, path) pairs) on Ray and write it here, one committed batch at a time."""
    counts = PipelineCounts()
    recipe = encoder_recipe(index, root, todo, encoder, fast=not options.exact)
    with ray_session(settings) as ray:
        check_readable(root, [p for _, p in todo], extra=[recipe.weights] if recipe.weights else [])
        pool = plan_pool(ray, settings)
        writer = BatchWriter(index, store)
        batch_size = options.batch_size or default_batch_size(torch.device("cuda" if pool.gpus else "cpu"))
        stage = f"embedding on Ray ({pool.actors} actors)"
        progress(stage, 0, len(todo))
        t0, done, path_of = time.perf_counter(), 0, dict(todo)
        per_actor: dict[str, int] = {}
        for rb in embed_on_ray(root, todo, recipe=recipe, settings=settings, batch_size=batch_size,
                               fast=not options.exact, stop=stop):  # fmt: skip
            batch = DecodedBatch(torch.empty(0, dtype=torch.uint8), rb.ok, rb.failed, rb.colours, rb.thumbs)
            writer.write(batch, rb.vectors[writer.needs_embedding(batch)])
            done += len(rb.ok) + len(rb.failed)
            for actor, n in rb.actors.items():
                per_actor[actor] = per_actor.get(actor, 0) + n
            counts.failures.extend((path_of[it.id], it.error or "") for it in rb.failed)
            progress(stage, done, len(todo))
            if stop.is_set():
                counts.interrupted = True
                break
        counts.embed_seconds = time.perf_counter() - t0
    counts.actors = dict(sorted(per_actor.items()))
    if writer.counts.indexed:
        record_setting(index, encoder, options)
    counts.indexed, counts.reused, counts.failed = writer.counts.indexed, writer.counts.reused, writer.counts.failed
    counts.failures.extend((path_of[i], reason) for i, reason in writer.failures)
    counts.pending = len(todo) - done
    if counts.pending and not counts.interrupted:
        logger.warning("%d photos did not come back from Ray; they stay pending for the next build", counts.pending)
    return counts


def encoder_recipe(
    index: Index, root: Path, todo: list[tuple[int, str]], encoder: Encoder, *, fast: bool
) -> EncoderRecipe:
    """What the actors load: the model the index records (a file every node reads at this path, or a published
    name), at the precision left by a check that runs here, once, on the first photos."""
    if not encoder.precision_checked:
        sample = PhotoDataset(root, todo[:CHECK_PHOTOS], encoder.info.preprocess.size, fast=fast)
        pixels = collate([sample[i] for i in range(len(sample))]).pixels
        if len(pixels):
            encoder.embed(pixels)
    row = index.model_row()
    is_file = Path(row.source).is_absolute()
    return EncoderRecipe(
        model=None if is_file else row.source,
        weights=row.source if is_file else None,
        size=(row.input_height, row.input_width),
        sha256=row.sha256,
        precision="bf16" if encoder.dtype == torch.bfloat16 else "float32",
        checked_cosine=encoder.checked_cosine,
    )
