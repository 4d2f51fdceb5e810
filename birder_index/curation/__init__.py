"""Curation signals over the embeddings a collection already holds: suspect labels (audit.py), outliers
(outliers.py) and representative photos (representatives.py); the neighbours they read (neighbours.py) and a
photo's own copies, found as dedup finds them (copies.py).

Names are exported lazily (`__init__.pyi` lists them; docs/api.md says why).
"""

import lazy_loader

__getattr__, __dir__, __all__ = lazy_loader.attach_stub(__name__, __file__)
