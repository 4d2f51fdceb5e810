"""Labels and what they teach: label sets (labels.py), few-shot classifiers over frozen embeddings
(classifiers.py), `lookup` (lookup.py), linear probes with their cross-validation (probe.py) and how well a set
can be learned (evaluate.py).

Names are exported lazily (`__init__.pyi` lists them; docs/api.md says why).
"""

import lazy_loader

__getattr__, __dir__, __all__ = lazy_loader.attach_stub(__name__, __file__)
