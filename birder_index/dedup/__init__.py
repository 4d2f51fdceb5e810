"""Duplicates of a collection: find them (find.py: exact by content, near by the exact range joins of pairs.py and
thumbnail_pairs.py), choose the threshold (calibrate.py), show them (report.py) and act on them safely
(actions.py).

Names are exported lazily (`__init__.pyi` lists them; docs/api.md says why).
"""

import lazy_loader

__getattr__, __dir__, __all__ = lazy_loader.attach_stub(__name__, __file__)
