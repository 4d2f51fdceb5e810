"""ViT hyper-parameters as birder names them (docs/models.md §1.1); torch-free so names resolve fast."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from birder_index.errors import CheckpointError


@dataclass(frozen=True)
class ViTConfig:
    num_layers: int
    num_heads: int
    hidden_dim: int
    mlp_dim: int
    patch_size: int = 16
    num_reg_tokens: int = 0
    class_token: bool = True
    norm_layer_type: str = "LayerNorm"  # or "RMSNorm"
    norm_layer_eps: float = 1e-6

    @property
    def num_special_tokens(self) -> int:
        return self.num_reg_tokens + int(self.class_token)


# birder config keys that change nothing at inference, and keys whose default is the only supported value.
_INFERENCE_IRRELEVANT = {"drop_path_rate", "dropout", "attention_dropout", "out_indices"}
_FIXED_DEFAULTS: dict[str, Any] = {
    "abs_pos_embed": True,
    "pos_embed_special_tokens": True,
    "layer_scale_init_value": None,
    "pre_norm": False,
    "post_norm": True,
    "norm_after_pool": False,
    "qkv_bias": True,
    "qk_norm": False,
    "attn_norm": False,
    "attn_pool_head": False,
    "mlp_layer_type": "FFN",
    "act_layer_type": None,
    "stem_type": "patchify",
    "head_bias": True,
    "mlp_head": False,
    # Only used for dynamic-size inference, which birder-index does not do (inputs always match the pos-embed).
    "pos_embed_interpolation_mode": "bicubic",
    "pos_embed_antialias": False,
}


def merge_config(base: ViTConfig, overrides: dict[str, Any] | None) -> ViTConfig:
    """Apply a checkpoint's `config` dict over a registered config, refusing options this implementation lacks."""
    if not overrides:
        return base
    fields = {f.name for f in dataclasses.fields(ViTConfig)}
    known: dict[str, Any] = {}
    for key, value in overrides.items():
        if key in fields:
            known[key] = value
        elif key in _FIXED_DEFAULTS:
            if value != _FIXED_DEFAULTS[key] and not (key == "act_layer_type" and value in ("GELU", "gelu")):
                raise CheckpointError(f"unsupported ViT option in checkpoint config: {key}={value!r}")
        elif key not in _INFERENCE_IRRELEVANT:
            raise CheckpointError(f"unknown ViT option in checkpoint config: {key}={value!r}")
    return dataclasses.replace(base, **known)
