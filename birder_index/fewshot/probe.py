"""Linear probes on frozen embeddings: multinomial logistic regression in torch.

Features are standardised (per-dimension mean and std of the training set). The L2 strength is chosen by k-fold
cross-validation over a grid, warm-starting along the grid. Sets that fit in memory are fitted full-batch with
L-BFGS; larger ones (the memory-mapped store of millions of rows) stream through Adam in batches, so memory stays
at the store's pages plus one batch. A probe file (safetensors) records the model's sha256, the embedding dimension
and the classes, and refuses to load against another model.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from birder_index.errors import BirderIndexError
from birder_index.errors import IndexMismatch

logger = logging.getLogger(__name__)

LAMBDAS = (1e-4, 1e-3, 1e-2, 1e-1)  # L2 strength per sample, weakest first for warm starts
FULL_BATCH_MAX = 200_000_000  # rows x dims above which fitting streams in batches


@dataclass
class LinearProbe:
    weight: torch.Tensor  # (C, D), on standardised features
    bias: torch.Tensor  # (C,)
    mean: torch.Tensor  # (D,)
    std: torch.Tensor  # (D,)
    classes: list[str]
    lam: float
    model_sha256: str = ""

    def logits(self, x: np.ndarray | torch.Tensor) -> torch.Tensor:
        xt = torch.as_tensor(np.asarray(x, np.float32)) if isinstance(x, np.ndarray) else x
        return ((xt - self.mean) / self.std) @ self.weight.T + self.bias

    def scores(self, xq: np.ndarray) -> np.ndarray:
        """Softmax probabilities (nq, C)."""
        with torch.inference_mode():
            return torch.softmax(self.logits(xq), dim=1).numpy()

    def save(self, path: Path) -> None:
        from safetensors.torch import save_file

        meta = {"classes": json.dumps(self.classes), "lam": str(self.lam), "model_sha256": self.model_sha256,
                "embedding_dim": str(self.weight.shape[1]), "format": "birder-index linear probe"}  # fmt: skip
        tensors = {"weight": self.weight, "bias": self.bias, "mean": self.mean, "std": self.std}
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(path), metadata=meta)

    @classmethod
    def load(cls, path: Path, model_sha256: str, dim: int) -> LinearProbe:
        from safetensors import safe_open

        try:
            with safe_open(str(path), framework="pt") as f:
                meta = f.metadata() or {}
                tensors = {k: f.get_tensor(k) for k in ("weight", "bias", "mean", "std")}
        except Exception as e:
            raise BirderIndexError(f"{path} is not a birder-index probe file ({type(e).__name__})") from None
        if meta.get("format") != "birder-index linear probe":
            raise BirderIndexError(f"{path} is not a birder-index probe file")
        if meta.get("model_sha256") != model_sha256 or int(meta.get("embedding_dim", -1)) != dim:
            raise IndexMismatch(
                f"{path} was fitted on embeddings of another model (sha256 {meta.get('model_sha256', '?')[:12]}, "
                f"{meta.get('embedding_dim')}-d); this index's model is {model_sha256[:12]}, {dim}-d"
            )
        return cls(tensors["weight"], tensors["bias"], tensors["mean"], tensors["std"],
                   json.loads(meta["classes"]), float(meta["lam"]), model_sha256)  # fmt: skip


def _balanced_weights(y: torch.Tensor, n_classes: int, balanced: bool) -> torch.Tensor | None:
    if not balanced:
        return None
    counts = torch.bincount(y, minlength=n_classes).float()
    return counts.sum() / (n_classes * counts.clamp(min=1))


def loss_and_grad(
    x: torch.Tensor, y: torch.Tensor, w: torch.Tensor, b: torch.Tensor, lam: float,
    *, class_weight: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:  # fmt: skip
    """The regularised (class-weighted) softmax cross-entropy and its gradients in w and b, in closed form:
    autograd's bookkeeping costs more than the arithmetic on a probe-sized problem."""
    row_weight = torch.full((len(y),), 1 / len(y)) if class_weight is None else class_weight[y] / class_weight[y].sum()
    logits = x @ w.T + b
    lse = torch.logsumexp(logits, 1)
    nll = lse - logits.gather(1, y[:, None])[:, 0]
    residual = torch.exp(logits - lse[:, None])  # softmax probabilities, minus the one-hot targets below
    residual[torch.arange(len(y)), y] -= 1
    residual *= row_weight[:, None]
    loss = (nll * row_weight).sum() + 0.5 * lam * (w * w).sum()
    return loss, torch.addmm(w, residual.T, x, beta=lam), residual.sum(0)


def _lbfgs(
    x: torch.Tensor, y: torch.Tensor, n_classes: int, lam: float, init: tuple[torch.Tensor, torch.Tensor] | None,
    class_weight: torch.Tensor | None, max_iter: int = 100,
) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    """Full-batch L-BFGS. It stops, as scikit-learn's lbfgs does by default, when no gradient entry exceeds 1e-4:
    past that, accuracy no longer moves and iterations only cost time."""
    w = torch.zeros(n_classes, x.shape[1]) if init is None else init[0].clone()
    b = torch.zeros(n_classes) if init is None else init[1].clone()
    opt = torch.optim.LBFGS([w, b], lr=1, max_iter=max_iter, history_size=20, line_search_fn="strong_wolfe",
                            tolerance_grad=1e-4, tolerance_change=1e-9)  # fmt: skip

    def closure() -> torch.Tensor:
        loss, w.grad, b.grad = loss_and_grad(x, y, w, b, lam, class_weight=class_weight)
        return loss

    with torch.no_grad():
        opt.step(closure)
    return w, b


def _folds(n: int, k: int, seed: int) -> list[np.ndarray]:
    return np.array_split(np.random.default_rng(seed).permutation(n), k)


def choose_lambda(x: torch.Tensor, y: torch.Tensor, n_classes: int, folds: int, balanced: bool) -> float:
    """The L2 strength with the best k-fold held-out accuracy (log-loss breaks ties), warm-starting along LAMBDAS."""
    best = (-1.0, 0.0, LAMBDAS[0])
    parts = _folds(len(y), folds, 0)
    scores = {lam: [0.0, 0.0] for lam in LAMBDAS}
    for part in parts:
        train = np.setdiff1d(np.arange(len(y)), part)
        cw = _balanced_weights(y[train], n_classes, balanced)
        init = None
        for lam in LAMBDAS:
            init = _lbfgs(x[train], y[train], n_classes, lam, init, cw, max_iter=50)
            logits = x[part] @ init[0].T + init[1]
            scores[lam][0] += float((logits.argmax(1) == y[part]).float().sum())
            scores[lam][1] -= float(F.cross_entropy(logits, y[part], reduction="sum"))
    for lam, (acc, nll) in scores.items():
        if (acc, nll) > best[:2]:
            best = (acc, nll, lam)
    return best[2]


def fit_probe(
    x: np.ndarray, labels: np.ndarray, classes: list[str], *, lam: float | None = None, balanced: bool = False,
    folds: int = 5, model_sha256: str = "",
) -> LinearProbe:  # fmt: skip
    """Fit on an in-memory (N, D) array; `lam` None chooses it by cross-validation."""
    if len(classes) < 2:
        raise BirderIndexError("a probe needs at least 2 classes")
    if x.shape[0] * x.shape[1] > FULL_BATCH_MAX:
        return fit_probe_streaming(
            lambda rows: x[rows], len(x), labels, classes, lam=lam, balanced=balanced, model_sha256=model_sha256
        )
    t0 = time.perf_counter()
    xt = torch.from_numpy(np.ascontiguousarray(x, np.float32))
    mean, std = xt.mean(0), xt.std(0).clamp(min=1e-6)
    xs = (xt - mean) / std
    y = torch.from_numpy(np.asarray(labels, np.int64))
    if lam is None:
        lam = choose_lambda(xs, y, len(classes), min(folds, int(np.bincount(labels).min()) or 2), balanced)
    w, b = _lbfgs(xs, y, len(classes), lam, None, _balanced_weights(y, len(classes), balanced), max_iter=200)
    logger.info("probe fitted on %d x %d, lambda %g, in %.2fs", *x.shape, lam, time.perf_counter() - t0)
    return LinearProbe(w, b, mean, std, classes, lam, model_sha256)


def fit_probe_streaming(
    rows_of: Callable[[np.ndarray], np.ndarray], n: int, labels: np.ndarray, classes: list[str],
    *, lam: float | None = None, balanced: bool = False, model_sha256: str = "", batch: int = 8192, epochs: int = 4,
    lr: float = 3e-3,
) -> LinearProbe:  # fmt: skip
    """Fit by streaming `rows_of(indices) -> float (len, D)` in batches (the memory-mapped store): Adam with a
    cosine learning rate. The L2 strength, unless given, is cross-validated on a 20,000-row subsample."""
    t0 = time.perf_counter()
    rng = np.random.default_rng(0)
    mean, std = _streamed_moments(rows_of, n, batch)
    y_all = torch.from_numpy(np.asarray(labels, np.int64))
    if lam is None:
        sub = np.sort(rng.choice(n, min(n, 20_000), replace=False))
        xs = (torch.from_numpy(np.asarray(rows_of(sub), np.float32)) - mean) / std
        lam = choose_lambda(xs, y_all[sub], len(classes), 3, balanced)
    d = len(mean)
    w = torch.zeros(len(classes), d, requires_grad=True)
    b = torch.zeros(len(classes), requires_grad=True)
    opt = torch.optim.Adam([w, b], lr=lr)
    steps = epochs * ((n + batch - 1) // batch)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    cw = _balanced_weights(y_all, len(classes), balanced)
    for _epoch in range(epochs):
        order = rng.permutation(n)  # shuffled batches: a store in class order would otherwise ruin SGD
        for start in range(0, n, batch):
            block = np.sort(order[start : start + batch])  # sorted rows read the memory map in order
            xb = (torch.from_numpy(np.asarray(rows_of(block), np.float32)) - mean) / std
            loss = F.cross_entropy(xb @ w.T + b, y_all[block], weight=cw) + 0.5 * lam * (w * w).sum()
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    logger.info("probe streamed %d x %d for %d epochs in %.1fs", n, d, epochs, time.perf_counter() - t0)
    return LinearProbe(w.detach(), b.detach(), mean, std, classes, lam, model_sha256)


def _streamed_moments(rows_of: Callable[[np.ndarray], np.ndarray], n: int, batch: int) -> tuple[Any, Any]:
    total = sq = None
    for start in range(0, n, batch):
        x = torch.from_numpy(np.asarray(rows_of(np.arange(start, min(start + batch, n))), np.float64))
        total = x.sum(0) if total is None else total + x.sum(0)
        sq = (x * x).sum(0) if sq is None else sq + (x * x).sum(0)
    assert total is not None and sq is not None
    mean = total / n
    std = (sq / n - mean**2).clamp(min=1e-12).sqrt()
    return mean.float(), std.float().clamp(min=1e-6)


def cross_val_scores(x: np.ndarray, y: np.ndarray, classes: list[str], *, folds: int = 5, lam: float | None = None,
                     balanced: bool = False) -> np.ndarray:  # fmt: skip
    """Held-out probe probabilities for every row, by stratified k-fold cross-validation."""
    folds = max(2, min(folds, int(np.bincount(y, minlength=len(classes)).min()) or 2))
    out = np.zeros((len(x), len(classes)), np.float32)
    for part in stratified_folds(y, folds, seed=0):
        train = np.setdiff1d(np.arange(len(x)), part)
        present = np.unique(y[train])
        remap = np.full(len(classes), -1)
        remap[present] = np.arange(len(present))
        probe = fit_probe(x[train], remap[y[train]], [classes[c] for c in present], lam=lam, balanced=balanced)
        out[np.ix_(part, present)] = probe.scores(x[part])
    return out


def stratified_folds(y: np.ndarray, k: int, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    parts: list[list[int]] = [[] for _ in range(k)]
    for c in np.unique(y):
        members = rng.permutation(np.flatnonzero(y == c))
        for n, i in enumerate(members):
            parts[n % k].append(int(i))
    return [np.sort(np.array(p, np.int64)) for p in parts if p]
