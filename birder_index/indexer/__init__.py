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
from birder_index.indexer.refresh import reindex
from birder_index.indexer.verify import VerifyReport
from birder_index.indexer.verify import verify_index

__all__ = [
    "BuildOptions",
    "BuildReport",
    "Index",
    "ModelSpec",
    "VerifyReport",
    "build_index",
    "describe",
    "failed_files",
    "import_embeddings",
    "open_index",
    "reindex",
    "verify_index",
]
