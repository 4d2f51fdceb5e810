"""`birder-index serve`: a local web app over an index (search by photo, browse, review duplicates, label photos,
fit probes), calling the same library functions as the CLI. Needs the `web` extra (FastAPI, uvicorn).

Names are exported lazily (`__init__.pyi` lists them): importing the package loads neither FastAPI nor the index.
"""

import lazy_loader

__getattr__, __dir__, __all__ = lazy_loader.attach_stub(__name__, __file__)
