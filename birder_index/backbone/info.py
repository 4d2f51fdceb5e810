"""What travels with the weights, torch-free so that the indexer can compare models without importing torch."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Preprocess:
    """Input size (H, W) and the checkpoint's rgb_stats; resizing is always birder's antialiased bicubic."""

    size: tuple[int, int]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]


@dataclass(frozen=True)
class ModelInfo:
    """Identity of the weights an index was built with; stored in the index and checked on every open."""

    name: str  # published weights name, or the weights file's stem
    arch: str  # vit_l16, vit_reg4_b16, vit_reg4_m16_rms_avg, "pt2", or "imported"
    sha256: str
    embedding_dim: int
    preprocess: Preprocess
    classes: tuple[str, ...] = ()  # the classifier head's classes, by index (empty for encoders)
