"""birder-index: embedding-based image similarity search with birder's image encoders, FAISS and SQLite.

    from birder_index import ModelSpec, build_index, open_index, search_images
    build_index("photos/", spec=ModelSpec(weights=Path("model.pt2")))
    with open_index("photos/.birder-index") as index:
        results = search_images(index, ["photo.jpg"], k=5)

Names are exported lazily (`__init__.pyi` lists them): `import birder_index` loads neither torch nor FAISS until
a name that needs them is used (docs/api.md).
"""

import lazy_loader

__getattr__, __dir__, __all__ = lazy_loader.attach_stub(__name__, __file__)
