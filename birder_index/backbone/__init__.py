"""Images to embeddings: birder's ViTs and .pt2 encoders. Knows nothing of FAISS or the database.

Where a photo is decoded: `images.decode`; where it is embedded: `Encoder.embed`; names and files become encoders
in `load.load_backbone`. Attributes are imported on first use, so `import birder_index` does not import torch.
"""

from __future__ import annotations

import importlib
from typing import Any

from birder_index.backbone.info import ModelInfo
from birder_index.backbone.info import Preprocess

_LAZY = {
    "Encoder": "birder_index.backbone.encoder",
    "Decoded": "birder_index.backbone.images",
    "decode": "birder_index.backbone.images",
    "load_backbone": "birder_index.backbone.load",
    "is_backbone": "birder_index.backbone.registry",
    "list_architectures": "birder_index.backbone.registry",
    "list_backbones": "birder_index.backbone.registry",
    "pretrained": "birder_index.backbone.registry",
}

__all__ = ["ModelInfo", "Preprocess", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
