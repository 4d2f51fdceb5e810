"""The Ray Data pipeline of `build --ray`: (id, path) rows -> `map_batches` with `EmbedActor` (the encoder loaded
once per actor; birder-index's own decoder, with EXIF, alpha and draft decoding) -> results streamed back to the
driver, which writes them.

Nothing is dropped silently. An unreadable photo, and any exception while one photo is read or embedded, comes
back as a row with its reason (Ray does not retry an exception in user code, and would drop the rows of a failed
block). The driver takes each planned id once (a repeat, from a block Ray ran again, is ignored) and sends the ids
that did not come back (a node lost with its blocks, a failed pipeline) through Ray again, up to ROUNDS times.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from dataclasses import field
from pathlib import Path
from typing import Any

import numpy as np

from birder_index.backbone.colour import SIGNATURE_DIM
from birder_index.backbone.read import Item
from birder_index.backbone.read import read_item
from birder_index.backbone.thumbnail import THUMB_DIM
from birder_index.distributed.cluster import Pool
from birder_index.distributed.cluster import RaySettings
from birder_index.distributed.cluster import plan_pool
from birder_index.distributed.cluster import require_ray
from birder_index.errors import BirderIndexError

logger = logging.getLogger(__name__)

ROUNDS = 3  # passes through Ray for ids that did not come back


@dataclass(frozen=True, kw_only=True)
class EncoderRecipe:
    """What every actor loads: the driver's encoder, at the driver's precision (decided once, on the driver)."""

    model: str | None  # published weights name, or None with `weights`
    weights: str | None  # a file every node reads at this path
    size: tuple[int, int]
    sha256: str  # what the driver loaded: an actor that loads other bytes refuses to embed
    precision: str  # "bf16" or "float32"
    checked_cosine: float | None
    device: str | None = None  # default: CUDA where Ray gave the actor a GPU


class EmbedActor:
    """Ray Data's callable class: one encoder per actor, photos decoded in `threads` threads, then embedded."""

    def __init__(self, *, root: str, recipe: EncoderRecipe, fast: bool, threads: int) -> None:
        import torch

        from birder_index.backbone.load import load_backbone

        torch.set_num_threads(threads)  # Ray sets one OpenMP thread for an actor with fractional CPUs
        self.root = Path(root)
        self.fast = fast
        self.threads = threads
        self.name = f"{socket.gethostname()}:{os.getpid()}"
        self.encoder = load_backbone(
            recipe.model,
            weights=recipe.weights,
            size=recipe.size,
            device=recipe.device,
            precision=recipe.precision,
            progress=False,
        )
        if self.encoder.info.sha256 != recipe.sha256:
            raise BirderIndexError(
                f"the model on {self.name} has sha256 {self.encoder.info.sha256[:12]}, not the driver's "
                f"{recipe.sha256[:12]}: every node must read the same weights"
            )
        self.encoder.accept_precision(recipe.checked_cosine)
        self.size = recipe.size

    def read(self, image_id: int, rel: str) -> Item:
        """One photo: bytes, sha256, pixels, colour signature and thumbnail (backbone/read.py)."""
        return read_item(self.root, image_id, rel, self.size, self.fast)

    def embed(self, pixels: np.ndarray) -> np.ndarray:
        """uint8 (n, 3, H, W) -> float32 (n, D)."""
        import torch

        return self.encoder.embed(torch.from_numpy(pixels)).numpy()

    def _read_safely(self, image_id: int, rel: str) -> Item:
        try:
            return self.read(image_id, rel)
        except Exception as e:  # a bug or an exotic file: this photo fails, the batch goes on
            return _failed(image_id, f"{type(e).__name__}: {e}")

    def _embed_safely(self, items: list[Item]) -> tuple[list[Item], np.ndarray]:
        """Vectors of the decoded items; where the batch raises, each photo alone, and those that raise fail."""
        dim = self.encoder.embedding_dim
        pixels = [it.pixels for it in items if it.pixels is not None]
        try:
            return items, self.embed(np.stack(pixels)) if pixels else np.zeros((0, dim), np.float32)
        except Exception:
            pass
        out_items, vectors = [], []
        for it in items:
            assert it.pixels is not None
            try:
                vectors.append(self.embed(it.pixels[None])[0])
                out_items.append(it)
            except Exception as e:
                out_items.append(_failed(it.id, f"{type(e).__name__}: {e}"))
        return out_items, np.stack(vectors) if vectors else np.zeros((0, dim), np.float32)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        rows = list(zip(batch["id"].tolist(), batch["path"].tolist(), strict=True))
        with ThreadPoolExecutor(self.threads) as pool:
            items = list(pool.map(lambda row: self._read_safely(*row), rows))
        decoded, vectors = self._embed_safely([it for it in items if it.pixels is not None])
        by_id = {it.id: it for it in decoded}
        items = [by_id.get(it.id, it) for it in items]
        return _columns(items, vectors, self.encoder.embedding_dim, self.name)


def _failed(image_id: int, reason: str) -> Item:
    return Item(image_id, None, reason, None, None, None, None, None)


def _columns(items: list[Item], vectors: np.ndarray, dim: int, actor: str) -> dict[str, np.ndarray]:
    """One row per item; a failed row has its reason in `error` and zeros for its arrays."""
    n = len(items)
    out_vectors = np.zeros((n, dim), np.float32)
    colours = np.zeros((n, SIGNATURE_DIM), np.uint8)
    thumbs = np.zeros((n, THUMB_DIM), np.uint8)
    ok = iter(vectors)
    for i, it in enumerate(items):
        if it.pixels is not None and it.error is None:
            out_vectors[i] = next(ok)
            if it.colour is not None:
                colours[i] = it.colour
            if it.thumb is not None:
                thumbs[i] = it.thumb

    def ints(values: list[int | None]) -> np.ndarray:
        return np.array([-1 if v is None else v for v in values], np.int64)

    return {
        "id": np.array([it.id for it in items], np.int64),
        "error": np.array(["" if it.pixels is not None and it.error is None else it.error or "?" for it in items]),
        "sha256": np.array([it.sha256 or "" for it in items]),
        "size": ints([it.size for it in items]),
        "mtime_ns": ints([it.mtime_ns for it in items]),
        "width": ints([it.width for it in items]),
        "height": ints([it.height for it in items]),
        "vector": out_vectors,
        "colour": colours,
        "thumb": thumbs,
        "actor": np.array([actor] * n),
    }


@dataclass
class RayBatch:
    """Results as they come back: `ok` items (no pixels) with their vectors, colours and thumbnails in order."""

    ok: list[Item]
    failed: list[Item]
    vectors: np.ndarray  # float32 (len(ok), D)
    colours: np.ndarray  # uint8 (len(ok), SIGNATURE_DIM)
    thumbs: np.ndarray  # uint8 (len(ok), THUMB_DIM)
    actors: dict[str, int] = field(default_factory=dict)  # photos per actor in this batch


def _batch(out: dict[str, np.ndarray], remaining: dict[int, str]) -> RayBatch | None:
    """The rows of an output batch whose ids are still awaited (each id is taken once), or None."""
    keep: list[int] = []
    ok: list[Item] = []
    failed: list[Item] = []
    actors: dict[str, int] = {}
    for i, image_id in enumerate(out["id"].tolist()):
        if remaining.pop(image_id, None) is None:
            continue  # a repeat
        actor = str(out["actor"][i])
        actors[actor] = actors.get(actor, 0) + 1

        error = str(out["error"][i])
        size, mtime, width, height = (_known(out[col][i]) for col in ("size", "mtime_ns", "width", "height"))
        item = Item(image_id, None, error or None, str(out["sha256"][i]) or None, size, mtime, width, height)
        if error:
            failed.append(item)
        else:
            ok.append(item)
            keep.append(i)
    if not ok and not failed:
        return None
    idx = np.array(keep, np.int64)
    vectors = np.asarray(out["vector"], np.float32)[idx]
    return RayBatch(ok, failed, vectors, np.asarray(out["colour"], np.uint8)[idx],
                    np.asarray(out["thumb"], np.uint8)[idx], actors)  # fmt: skip


def _known(value: np.integer) -> int | None:
    return None if int(value) < 0 else int(value)


def embed_on_ray(
    root: Path,
    todo: list[tuple[int, str]],
    *,
    recipe: EncoderRecipe,
    settings: RaySettings,
    batch_size: int,
    fast: bool,
    stop: threading.Event,
) -> Iterator[RayBatch]:
    """Each (id, path) of `todo` embedded on the connected Ray cluster, yielded once, in batches as they arrive.
    Ids still missing after ROUNDS passes are not yielded (the caller leaves them pending)."""
    ray = require_ray()
    pool = plan_pool(ray, settings)
    logger.info("Ray: %d actors of %g CPUs, %g GPUs, %d threads each", pool.actors, pool.cpus, pool.gpus, pool.threads)
    remaining = dict(todo)
    for attempt in range(ROUNDS):
        if not remaining or stop.is_set():
            return
        if attempt:
            logger.warning("%d photos did not come back from Ray: sending them again", len(remaining))
        before = len(remaining)
        try:
            for out in _dataset(ray, root, remaining, recipe, settings, pool, batch_size, fast).iter_batches(
                batch_size=None, batch_format="numpy", prefetch_batches=1
            ):
                batch = _batch(out, remaining)
                if batch is not None:
                    yield batch
                if stop.is_set():
                    return
        except ray.exceptions.RayError as e:
            if len(remaining) == before:  # nothing came back: a lasting fault (a node without the model file...)
                raise BirderIndexError(f"--ray: the embedding pipeline failed: {_first_line(e)}") from None
            logger.warning("the Ray pipeline failed after %d photos: %s", before - len(remaining), _first_line(e))


def _first_line(e: BaseException) -> str:
    lines = [line for line in str(e).splitlines() if line.strip()]
    return lines[-1] if lines else type(e).__name__


def _dataset(
    ray: Any,
    root: Path,
    remaining: dict[int, str],
    recipe: EncoderRecipe,
    settings: RaySettings,
    pool: Pool,
    batch_size: int,
    fast: bool,
) -> Any:
    rows = [{"id": i, "path": p} for i, p in sorted(remaining.items())]
    blocks = max(1, min(len(rows), -(-len(rows) // batch_size)))  # about one batch a block: results stream back
    ds = ray.data.from_items(rows, override_num_blocks=blocks)
    return ds.map_batches(
        settings.embedder or EmbedActor,
        fn_constructor_kwargs={"root": str(root), "recipe": recipe, "fast": fast, "threads": pool.threads},
        batch_size=batch_size,
        batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=pool.actors),
        num_cpus=pool.cpus,
        num_gpus=pool.gpus or None,
    )  # Ray Data spreads the actors over the nodes (DataContext.scheduling_strategy, SPREAD by default)
