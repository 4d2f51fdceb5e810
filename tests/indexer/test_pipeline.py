"""The build's choices on a (pretend) CUDA device: batch size, decode workers beside the model, pinned memory."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from birder_index.backbone.colour import SIGNATURE_DIM
from birder_index.backbone.thumbnail import THUMB_DIM
from birder_index.indexer import pipeline
from birder_index.indexer.decode import DecodedBatch
from birder_index.indexer.decode import Item
from birder_index.indexer.decode import PhotoDataset
from birder_index.indexer.decode import collate
from birder_index.indexer.pipeline import default_batch_size
from birder_index.indexer.pipeline import reader

CUDA = torch.device("cuda")
CPU = torch.device("cpu")


def _dataset(n: int) -> PhotoDataset:
    return PhotoDataset(Path("/nowhere"), [(i, f"{i}.jpg") for i in range(n)], (32, 32), fast=True)


@pytest.fixture
def loaders(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, dict[str, object]]]:
    """The reader's calls to the two loaders, recorded instead of run."""
    calls: list[tuple[str, dict[str, object]]] = []

    def batches(dataset: PhotoDataset, batch_size: int, workers: int, pin_memory: bool = False) -> list[object]:
        calls.append(("processes", {"batch": batch_size, "workers": workers, "pin_memory": pin_memory}))
        return []

    def batches_between(dataset: PhotoDataset, batch_size: int, threads: int) -> list[object]:
        calls.append(("threads", {"batch": batch_size, "threads": threads}))
        return []

    monkeypatch.setattr(pipeline, "batches", batches)
    monkeypatch.setattr(pipeline, "batches_between", batches_between)
    return calls


def test_default_batch_size_is_larger_on_a_gpu() -> None:
    assert default_batch_size(CUDA) == default_batch_size(torch.device("cuda", 1)) == 256
    assert default_batch_size(CPU) == 16


@pytest.mark.parametrize("cores,workers", [(1, 1), (2, 1), (16, 15), (64, 16)])
def test_on_a_gpu_worker_processes_decode_beside_the_model_into_pinned_memory(
    loaders: list[tuple[str, dict[str, object]]], monkeypatch: pytest.MonkeyPatch, cores: int, workers: int
) -> None:
    monkeypatch.setattr(pipeline, "usable_cores", lambda: cores)
    reader(_dataset(1000), CUDA, 256, None)
    assert loaders == [("processes", {"batch": 256, "workers": workers, "pin_memory": True})]


def test_on_a_gpu_a_handful_of_photos_decode_in_the_process(
    loaders: list[tuple[str, dict[str, object]]], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pipeline, "usable_cores", lambda: 16)
    reader(_dataset(15), CUDA, 256, None)
    reader(_dataset(16), CUDA, 256, None)
    assert [c[1]["workers"] for c in loaders] == [0, 15]


def test_workers_asked_for_are_taken_on_any_device(
    loaders: list[tuple[str, dict[str, object]]], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pipeline, "usable_cores", lambda: 16)
    reader(_dataset(1000), CUDA, 64, 3)
    reader(_dataset(1000), CPU, 16, 2)
    assert loaders == [
        ("processes", {"batch": 64, "workers": 3, "pin_memory": True}),
        ("processes", {"batch": 16, "workers": 2, "pin_memory": False}),  # pinning is for copies to a GPU
    ]


def test_on_a_cpu_decode_threads_take_turns_with_the_model(
    loaders: list[tuple[str, dict[str, object]]], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pipeline, "usable_cores", lambda: 2)
    reader(_dataset(1000), CPU, 16, None)
    assert loaders == [("threads", {"batch": 16, "threads": 2})]


def _item(i: int, ok: bool) -> Item:
    pixels = np.full((3, 4, 4), i, np.uint8) if ok else None
    colour = np.full(SIGNATURE_DIM, i, np.uint8) if ok else None
    thumb = np.full(THUMB_DIM, i, np.uint8) if ok else None
    return Item(i, pixels, None if ok else "broken", f"sha{i}", 10, 1, 4, 4, colour, thumb)


def test_pinning_a_batch_keeps_its_items(monkeypatch: pytest.MonkeyPatch) -> None:
    """The DataLoader pins a batch through its `pin_memory()` (torch's pin_memory helper, as its pinning thread
    calls it): only the pixels move to page-locked memory; the items, failures, colours and thumbnails stay."""
    from torch.utils.data._utils.pin_memory import pin_memory as loader_pin

    pinned: list[torch.Tensor] = []

    def fake_pin(self: torch.Tensor, *args: object, **kwargs: object) -> torch.Tensor:  # no GPU: no page locking
        pinned.append(self.clone())
        return pinned[-1]

    monkeypatch.setattr(torch.Tensor, "pin_memory", fake_pin)
    batch = collate([_item(1, True), _item(2, False), _item(3, True)])
    out = loader_pin(batch)
    assert isinstance(out, DecodedBatch)
    assert len(pinned) == 1 and out.pixels is pinned[0] and out.pixels is not batch.pixels
    assert torch.equal(out.pixels, batch.pixels) and out.pixels.dtype == torch.uint8
    assert [it.id for it in out.ok] == [1, 3] and [it.id for it in out.failed] == [2]
    assert out.ok == batch.ok and out.failed == batch.failed
    assert out.colours is batch.colours and out.thumbs is batch.thumbs
    assert out.colours[:, 0].tolist() == [1, 3] and out.thumbs[:, 0].tolist() == [1, 3]
