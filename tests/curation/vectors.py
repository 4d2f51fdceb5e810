"""Collections of known shape for the curation tests, imported as embeddings (no model: fast)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from birder_index.indexer import import_embeddings


def clusters(classes: int = 3, per: int = 30, d: int = 32, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Well-separated classes (within-class cosine about 0.9, across about 0): vectors (n, d), classes (n,)."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((classes, d)) * 3
    x = np.concatenate([c + rng.standard_normal((per, d)) for c in centres]).astype(np.float32)
    return x, np.repeat(np.arange(classes), per)


def imported(folder: Path, x: np.ndarray, labels: list[str] | None = None, *, set_name: str = "labels") -> Path:
    """An index of vectors x, photo i named p{i:03d}.jpg, labelled (when given) in `set_name`; returns its folder."""
    folder.mkdir(parents=True, exist_ok=True)
    header = "sample," + ("label," if labels is not None else "") + ",".join(str(i) for i in range(x.shape[1]))
    rows = [
        f"p{i:03d}.jpg," + (f"{labels[i]}," if labels is not None else "") + ",".join(f"{v:.6f}" for v in xi)
        for i, xi in enumerate(x)
    ]
    (folder / "e.csv").write_text("\n".join([header, *rows]) + "\n")
    import_embeddings(folder / "e.csv", folder / "idx", label_set=set_name if labels is not None else None)
    return folder / "idx"
