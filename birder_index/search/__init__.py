"""Queries over an index: nearest neighbours (knn.py), classification by the model's head (classify.py)."""

from birder_index.search.classify import classify_images
from birder_index.search.knn import Hit
from birder_index.search.knn import QueryResult
from birder_index.search.knn import nearest
from birder_index.search.knn import search_images
from birder_index.search.knn import search_vector_file
from birder_index.search.knn import search_vectors

__all__ = [
    "Hit",
    "QueryResult",
    "classify_images",
    "nearest",
    "search_images",
    "search_vector_file",
    "search_vectors",
]
