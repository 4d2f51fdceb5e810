"""A photo collection to rows, vectors and a FAISS index.

The build (build.py) runs scan.py -> plan.py -> decode.py (reader) -> pipeline.py (mapper) -> write.py (writer) ->
refresh.py (FAISS: select.py rules, tune.py recall); index.py is an open index, vectors.py the embedding store,
signatures.py the colour and thumbnail stores, ann.py the FAISS functions. Names are exported lazily
(`__init__.pyi` lists them; docs/api.md says why).
"""

import lazy_loader

__getattr__, __dir__, __all__ = lazy_loader.attach_stub(__name__, __file__)
