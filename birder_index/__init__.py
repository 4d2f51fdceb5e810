"""birder-index: embedding-based image similarity search with birder's image encoders, FAISS and SQLite.

from birder_index import ModelSpec, build_index, open_index, search_images
build_index("photos/", spec=ModelSpec(weights=Path("model.pt2")))
with open_index("photos/.birder-index") as index:
    results = search_images(index, ["photo.jpg"], k=5)
"""

from typing import Any

from birder_index.backbone import list_backbones
from birder_index.indexer import BuildOptions
from birder_index.indexer import ModelSpec
from birder_index.indexer import build_index
from birder_index.indexer import import_embeddings
from birder_index.indexer import open_index
from birder_index.search import nearest
from birder_index.search import search_images
from birder_index.search import search_vectors

__all__ = [
    "BuildOptions",
    "ModelSpec",
    "build_index",
    "import_embeddings",
    "list_backbones",
    "load_backbone",
    "nearest",
    "open_index",
    "search_images",
    "search_vectors",
]


def __getattr__(name: str) -> Any:
    if name == "load_backbone":  # imports torch: only on first use
        from birder_index.backbone.load import load_backbone

        return load_backbone
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
