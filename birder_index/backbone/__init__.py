"""Images to embeddings: birder's ViTs and .pt2 encoders. Knows nothing of FAISS or the database.

Where a photo is decoded: `images.decode`; where it is embedded: `Encoder.embed`; names and files become encoders
in `load.load_backbone`. Names are exported lazily (`__init__.pyi` lists them; docs/api.md says why), so
`import birder_index` does not import torch.
"""

import lazy_loader

__getattr__, __dir__, __all__ = lazy_loader.attach_stub(__name__, __file__)
