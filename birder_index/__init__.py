"""birder-index: embedding-based image similarity search with birder's image encoders, FAISS and SQLite.

    from birder_index import ModelSpec, build_index, open_index, search_images
    build_index("photos/", spec=ModelSpec(weights=Path("model.pt2")))
    with open_index("photos/.birder-index") as index:
        results = search_images(index, ["photo.jpg"], k=5)

Names are exported lazily (`__init__.pyi` lists them): `import birder_index` loads neither torch nor FAISS until
a name that needs them is used (docs/api.md).
"""

import os

import lazy_loader

# OpenMP threads (FAISS's, torch's) sleep when idle instead of spinning: a spinning FAISS thread fought the
# re-rank, the web app and the user's other work for the cores (docs/benchmarks.md#search-speed). Read when each
# runtime loads, so it must be set before FAISS or torch is imported; a value the user set wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__getattr__, __dir__, __all__ = lazy_loader.attach_stub(__name__, __file__)
