"""Queries over an index: nearest neighbours (knn.py), what a query becomes as a vector (queries.py), and
classification by the model's own head (classify.py).

Names are exported lazily (`__init__.pyi` lists them; docs/api.md says why): importing the package loads
neither torch nor FAISS until a name is used.
"""

import lazy_loader

__getattr__, __dir__, __all__ = lazy_loader.attach_stub(__name__, __file__)
