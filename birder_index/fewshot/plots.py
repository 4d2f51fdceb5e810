"""The figures of `probe eval --plot DIR`, drawn with matplotlib (an extra: `pip install "birder-index[plots]"`):
a confusion matrix with class names, a colour scale and every count legible, and the k-shot curves. Each figure is
written as PNG and SVG."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from birder_index.errors import BirderIndexError


def _pyplot() -> Any:
    try:
        import matplotlib
    except ImportError:
        raise BirderIndexError('plots need matplotlib: pip install "birder-index[plots]"') from None
    matplotlib.use("Agg")  # files only, never a window
    import matplotlib.pyplot as plt

    plt.rcParams["svg.fonttype"] = "none"  # text stays text in the SVG: selectable, searchable, small
    return plt


def plot_evaluation(
    confusion: np.ndarray, kshot: dict[str, dict[int, tuple[float, float]]], classes: list[str], folder: Path
) -> list[Path]:
    """confusion.png/.svg and kshot.png/.svg in `folder` (created); returns the files written."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise BirderIndexError(f"cannot write plots to {folder}: {(e.strerror or str(e)).lower()}") from None
    return [*plot_confusion(confusion, classes, folder / "confusion"), *plot_kshot(kshot, folder / "kshot")]


def plot_confusion(confusion: np.ndarray, classes: list[str], stem: Path) -> list[Path]:
    """Row-normalised rates as colour, the counts written in every cell in a colour that reads on it."""
    plt = _pyplot()
    n = len(classes)
    rates = confusion / np.maximum(confusion.sum(1, keepdims=True), 1)
    side = min(max(4.0, 0.45 * n + 2.5), 40.0)
    fig, ax = plt.subplots(figsize=(side + 1.2, side), layout="constrained")
    image = ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(n), [c[:30] for c in classes], rotation=90 if n > 6 else 0)
    ax.set_yticks(range(n), [c[:30] for c in classes])
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(f"Cross-validated probe: confusion ({int(confusion.sum())} photos)")
    size = max(5.0, min(11.0, 200 / max(n, 1)))
    for i in range(n):
        for j in range(n):
            if confusion[i, j]:
                colour = "white" if rates[i, j] > 0.55 else "black"
                ax.text(j, i, str(confusion[i, j]), ha="center", va="center", fontsize=size, color=colour)
    fig.colorbar(image, ax=ax, shrink=0.8, label="share of the true class")
    return _save(plt, fig, stem)


def plot_kshot(kshot: dict[str, dict[int, tuple[float, float]]], stem: Path) -> list[Path]:
    """Accuracy against labelled photos per class, mean and standard deviation over draws, one line per method."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4), layout="constrained")
    for method, curve in kshot.items():
        shots = sorted(curve)
        means = np.array([curve[s][0] for s in shots])
        stds = np.array([curve[s][1] for s in shots])
        ax.errorbar(shots, means, yerr=stds, marker="o", capsize=3, label=method)
    ax.set_xscale("log")
    ax.set_xticks(
        sorted({s for c in kshot.values() for s in c}), [str(s) for s in sorted({s for c in kshot.values() for s in c})]
    )
    ax.set_xlabel("labelled photos per class")
    ax.set_ylabel("accuracy on the other photos")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend()
    ax.set_title("k-shot accuracy (mean and std over draws)")
    return _save(plt, fig, stem)


def _save(plt: Any, fig: Any, stem: Path) -> list[Path]:
    paths = [stem.with_suffix(".png"), stem.with_suffix(".svg")]
    try:
        for path in paths:
            fig.savefig(path, dpi=120)
    except OSError as e:
        raise BirderIndexError(f"cannot write {stem}: {(e.strerror or str(e)).lower()}") from None
    finally:
        plt.close(fig)
    return paths
