"""A photo collection to rows, vectors and a FAISS index: scan, decode, embed, write (see build.py)."""

from birder_index.indexer.build import BuildOptions
from birder_index.indexer.build import BuildReport
from birder_index.indexer.build import build_index
from birder_index.indexer.importer import import_embeddings
from birder_index.indexer.index import Index
from birder_index.indexer.index import open_index
from birder_index.indexer.info import describe
from birder_index.indexer.info import failed_files
from birder_index.indexer.model import ModelSpec

__all__ = [
    "BuildOptions",
    "BuildReport",
    "Index",
    "ModelSpec",
    "build_index",
    "describe",
    "failed_files",
    "import_embeddings",
    "open_index",
]
