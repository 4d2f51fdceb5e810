"""`classify_images`: the top-k classes of a fine-tuned model's own classifier head."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from birder_index.errors import BirderIndexError
from birder_index.errors import ImageError
from birder_index.progress import Progress
from birder_index.progress import silent

NO_HEAD = (
    "it is an encoder; to name what photos show, label a few with `birder-index label import` and use "
    "`birder-index lookup` or `birder-index probe`"
)


def _check_head(model: str | None, weights: Path | None, index_dir: Path | None, images: list[str]) -> None:
    """Refuse an encoder from what is known without loading it: the index's record, the registry, file metadata."""
    from birder_index.backbone.checkpoint import peek_classes
    from birder_index.backbone.registry import pretrained
    from birder_index.indexer.index import open_index

    if weights is not None:
        classes: int | None = peek_classes(Path(weights))
        name = Path(weights).name
    elif model:
        classes, name = pretrained(model).head_classes, model
    else:
        with open_index(index_dir, paths=images) as index:
            row = index.model_row()
            classes, name = row.classes, row.name
    if classes == 0:
        raise BirderIndexError(f"{name} has no classifier head: {NO_HEAD}")


def classify_images(
    images: list[str],
    *,
    k: int = 5,
    model: str | None = None,
    weights: Path | None = None,
    size: int | None = None,
    index_dir: Path | None = None,
    device: str | None = None,
    exact: bool = False,
    progress: Progress = silent,
) -> list[dict[str, Any]]:
    """[{"image": path, "classes": [{"class": name, "probability": p}, ...]}] per image, best first.

    The model is `model`/`weights` when given, else the index's own (the one whose photo folder holds `images`,
    layout.find_index_dir). An encoder without a head is refused before its weights are loaded.
    """
    import torch

    from birder_index.backbone.images import decode
    from birder_index.backbone.load import load_backbone
    from birder_index.indexer.index import open_index
    from birder_index.search.knn import expand_queries

    if k < 1:
        raise BirderIndexError(f"-k must be >= 1, got {k}")
    precision = "float32" if exact else "auto"
    _check_head(model, weights, index_dir, images)
    progress("loading the model", 0, None)
    if model or weights:
        encoder = load_backbone(model, weights=weights, size=size, device=device, precision=precision)
    else:
        with open_index(index_dir, paths=images) as index:
            encoder = index.load_encoder(device=device, precision=precision)
    if not encoder.has_head:
        raise BirderIndexError(f"{encoder.info.name} has no classifier head: {NO_HEAD}")
    out = []
    for f in expand_queries(list(images)):
        try:
            pixels = torch.from_numpy(decode(Path(f), encoder.info.preprocess.size, fast=not exact).pixels)
        except ImageError as e:
            raise BirderIndexError(f"cannot read image {f}: {e}") from None
        probs = encoder.probabilities(pixels[None])[0]
        top = torch.topk(probs, min(k, probs.numel()))
        classes = [{"class": encoder.info.classes[int(i)], "probability": float(p)} for p, i in zip(*top, strict=True)]
        out.append({"image": f, "classes": classes})
    return out
