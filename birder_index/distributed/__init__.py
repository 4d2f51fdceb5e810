"""Ray for `build --ray`, `reindex --ray` and `dedup --ray` (docs/scale.md).

Below the indexer: it knows photos, encoders and Ray, never the index. The indexer's driver scans, plans and owns
the store exactly as in a local build and hands this package the (id, path) pairs to embed; cluster.py connects
to Ray and sizes the actor pool, readable.py checks that every node sees the photos, embed.py runs the Ray Data
pipeline (one encoder per actor, birder-index's own decoder) and yields each photo's result once, re-queueing any
that did not come back. tasks.py runs plain Ray tasks with results in order, for the work the indexer (the
FAISS add) and dedup (the range joins) cut into pieces. Ray is an extra (`pip install "birder-index[ray]"`):
nothing here imports it at import time.
"""

import lazy_loader

__getattr__, __dir__, __all__ = lazy_loader.attach_stub(__name__, __file__)
