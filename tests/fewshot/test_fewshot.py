"""Few-shot lookup and probes: each method on synthetic data with known answers, the open-set threshold, probe
files bound to their model, and the CLI path on a real folder tree."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from birder_index.cli import cli
from birder_index.errors import BirderIndexError
from birder_index.errors import IndexMismatch
from birder_index.fewshot.classifiers import KnnClassifier
from birder_index.fewshot.classifiers import PrototypeClassifier
from birder_index.fewshot.classifiers import fit_classes
from birder_index.fewshot.classifiers import l2
from birder_index.fewshot.classifiers import open_set_threshold
from birder_index.fewshot.evaluate import kshot_curves
from birder_index.fewshot.evaluate import sample_k_shot
from birder_index.fewshot.plots import plot_confusion
from birder_index.fewshot.plots import plot_kshot
from birder_index.fewshot.probe import LinearProbe
from birder_index.fewshot.probe import fit_probe
from birder_index.fewshot.probe import fit_probe_streaming
from birder_index.fewshot.probe import loss_and_grad
from tests.helpers import photo


def clusters(n_per: int = 20, d: int = 32, classes: int = 3, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((classes, d)) * 3
    x = np.concatenate([c + rng.standard_normal((n_per, d)) for c in centres]).astype(np.float32)
    return x + 5.0, np.repeat(np.arange(classes), n_per)  # a common offset, as real embeddings have


def test_knn_votes_with_softmax_weights() -> None:
    x, y = clusters()
    knn = KnnClassifier.fit(x, y, ["a", "b", "c"], k=5)
    scores = knn.scores(x[[0, 25, 45]] + 0.01)
    assert scores.argmax(1).tolist() == [0, 1, 2] and np.allclose(scores.sum(1), 1)
    # by hand, for one query: softmax(top-5 cosine / 0.07), summed per class
    sims = l2(x[:1]) @ l2(x).T
    top = np.argsort(-sims[0])[:5]
    w = np.exp(sims[0, top] / 0.07)
    expected = np.bincount(y[top], weights=w / w.sum(), minlength=3)
    assert np.allclose(knn.scores(x[:1])[0], expected, atol=1e-5)


def test_prototype_is_simpleshot() -> None:
    x, y = clusters(seed=1)
    proto = PrototypeClassifier.fit(x, y, ["a", "b", "c"])
    xq = x[::7] + 0.3
    mean = x.mean(0)
    z, zq = l2(x - mean), l2(xq - mean)
    centroids = np.stack([z[y == c].mean(0) for c in range(3)])
    nearest = np.argmin(((zq[:, None] - centroids[None]) ** 2).sum(-1), axis=1)
    assert proto.scores(xq).argmax(1).tolist() == nearest.tolist()


def test_open_set_threshold_rejects_what_is_far() -> None:
    x, y = clusters(seed=2)
    knn = KnnClassifier.fit(x, y, ["a", "b", "c"], k=5)
    t = open_set_threshold(knn.scores(x, exclude=np.arange(len(x))))
    proto = PrototypeClassifier.fit(x, y, ["a", "b", "c"])
    tp = open_set_threshold(proto.loo_scores(x, y))
    far = np.random.default_rng(9).standard_normal((5, 32)).astype(np.float32) * 3 - 5.0
    assert (proto.scores(far).max(1) < tp).all() and (proto.scores(x[::5]).max(1) >= tp).mean() >= 0.9
    assert 0 < t <= 1


def test_probe_fits_saves_and_refuses_another_model(tmp_path: Path) -> None:
    x, y = clusters(30, seed=3)
    probe = fit_probe(x, y, ["a", "b", "c"], model_sha256="f" * 64)
    assert (probe.scores(x).argmax(1) == y).mean() >= 0.95 and probe.lam in (1e-4, 1e-3, 1e-2, 1e-1)
    probe.save(tmp_path / "p.probe")
    again = LinearProbe.load(tmp_path / "p.probe", "f" * 64, 32)
    assert np.allclose(again.scores(x), probe.scores(x)) and again.classes == ["a", "b", "c"]
    with pytest.raises(IndexMismatch, match="fitted on embeddings of another model"):
        LinearProbe.load(tmp_path / "p.probe", "0" * 64, 32)
    (tmp_path / "bad.probe").write_bytes(b"junk")
    with pytest.raises(BirderIndexError, match="not a birder-index probe file"):
        LinearProbe.load(tmp_path / "bad.probe", "f" * 64, 32)


@pytest.mark.parametrize("weighted", [False, True])
def test_probe_gradient_is_autograds(weighted: bool) -> None:
    rng = np.random.default_rng(6)
    x, y = torch.from_numpy(rng.standard_normal((50, 8)).astype(np.float32)), torch.from_numpy(rng.integers(0, 3, 50))
    w, b = torch.randn(3, 8, requires_grad=True), torch.randn(3, requires_grad=True)
    cw = torch.tensor([0.5, 1.0, 2.0]) if weighted else None
    loss, gw, gb = loss_and_grad(x, y, w.detach(), b.detach(), 0.1, class_weight=cw)
    ref = torch.nn.functional.cross_entropy(x @ w.T + b, y, weight=cw) + 0.05 * (w * w).sum()
    ref.backward()
    assert w.grad is not None and b.grad is not None
    assert torch.allclose(loss, ref.detach(), atol=1e-6)
    assert torch.allclose(gw, w.grad, atol=1e-6) and torch.allclose(gb, b.grad, atol=1e-6)


def test_streaming_probe_learns_from_batches() -> None:
    x, y = clusters(200, seed=4)
    order = np.argsort(y)  # rows in class order, as a store often is: batches must be shuffled
    probe = fit_probe_streaming(lambda rows: x[order][rows], len(x), y[order], ["a", "b", "c"], lam=1e-3, batch=64)
    assert (probe.scores(x).argmax(1) == y).mean() >= 0.95


def test_kshot_sampler_and_curves() -> None:
    x, y = clusters(12, seed=5)
    picked = sample_k_shot(y, 2, np.random.default_rng(0))
    assert np.bincount(y[picked]).tolist() == [2, 2, 2]
    curves = kshot_curves(x, y, ["a", "b", "c"], draws=3)
    assert set(curves) == {"knn", "prototype"} and set(curves["knn"]) == {1, 2, 5, 10}
    assert curves["prototype"][10][0] >= 0.9


def test_confusion_and_kshot_figures(tmp_path: Path) -> None:
    confusion = np.array([[5, 1, 0], [0, 6, 2], [3, 0, 9]])
    png, svg = plot_confusion(confusion, ["sparrow", "wren", "robin"], tmp_path / "c")
    assert Image.open(png).size[0] >= 400
    text = svg.read_text()
    for word in ("sparrow", "wren", "robin", "predicted class", "true class", "share of the true class"):
        assert word in text, word
    assert all(f">{n}<" in text for n in (5, 6, 9, 3, 2))  # every count written in its cell
    kpng, ksvg = plot_kshot({"knn": {1: (0.5, 0.1), 5: (0.8, 0.05)}, "prototype": {1: (0.6, 0.1), 5: (0.85, 0.02)}},
                            tmp_path / "k")  # fmt: skip
    assert kpng.exists() and "labelled photos per class" in ksvg.read_text()


@pytest.fixture
def species(tmp_path: Path, tiny_pt: Path) -> Path:
    """A folder-per-class tree of three 'species', photos of each alike; indexed on the way by label import."""
    root = tmp_path / "species"
    for c, name in enumerate(["robin", "wren", "finch"]):
        (root / name).mkdir(parents=True)
        for i in range(6):
            base = photo(100 * c, (64, 48))
            arr = np.asarray(base).astype(np.int16) + np.random.default_rng(i + 10 * c).integers(-25, 25, (48, 64, 3))
            Image.fromarray(arr.clip(0, 255).astype(np.uint8)).save(root / name / f"{i}.png")
    (root / "empty_class").mkdir()
    result = CliRunner().invoke(cli, ["label", "import", str(root), "--set", "birds", "--weights", str(tiny_pt)])
    assert result.exit_code == 0, result.output
    assert "18 photos labelled in 3 classes (set 'birds')" in result.output
    assert "Warning: class 'empty_class' has no images" in result.output
    return root


@pytest.mark.parametrize("method", ["knn", "prototype", "probe"])
def test_lookup_cli(species: Path, method: str) -> None:
    query = str(species / "wren" / "3.png")
    out = CliRunner().invoke(cli, ["lookup", query, "--set", "birds", "--method", method, "--json",
                                   "--index-dir", str(species / ".birder-index")])  # fmt: skip
    assert out.exit_code == 0, out.output
    (data,) = json.loads(out.stdout)  # one document: a list, one entry per query
    assert set(data) == {"query", "predictions", "unknown"} and data["query"] == query
    assert data["predictions"][0]["label"] == "wren" and not data["unknown"]
    assert all(p.endswith(".png") for p in data["predictions"][0]["support"])
    assert query not in data["predictions"][0]["support"]  # a labelled query is scored without itself


@pytest.mark.parametrize("method", ["knn", "prototype"])
def test_a_labelled_query_is_scored_without_itself(species: Path, method: str) -> None:
    idx = str(species / ".birder-index")
    copy = species / "unsorted" / "wren-copy.png"  # the same pixels, indexed but not labelled
    copy.parent.mkdir()
    copy.write_bytes((species / "wren" / "3.png").read_bytes())
    assert CliRunner().invoke(cli, ["build", str(species)]).exit_code == 0
    labelled, unlabelled = (
        json.loads(CliRunner().invoke(cli, ["lookup", str(q), "--set", "birds", "--method", method, "--json",
                                            "--index-dir", idx]).stdout)[0]["predictions"][0]
        for q in (species / "wren" / "3.png", copy)
    )  # fmt: skip
    assert labelled["label"] == unlabelled["label"] == "wren"
    assert str(species / "wren" / "3.png") in unlabelled["support"]  # the copy finds the labelled original...
    assert str(species / "wren" / "3.png") not in labelled["support"]  # ...the original does not find itself
    assert labelled["score"] < unlabelled["score"]


def test_lookup_all_csv_and_labels(species: Path, tmp_path: Path) -> None:
    idx = str(species / ".birder-index")
    extra = species / "unsorted"
    extra.mkdir()
    Image.open(species / "finch" / "2.png").save(extra / "new.png")
    CliRunner().invoke(cli, ["build", str(species)])
    out = CliRunner().invoke(
        cli, ["lookup", "--all", "--set", "birds", "--csv", str(tmp_path / "p.csv"), "--index-dir", idx]
    )
    assert out.exit_code == 0 and out.output.startswith("1 photos predicted")
    rows = (tmp_path / "p.csv").read_text().splitlines()
    assert rows[0] == "path,label,score,method" and rows[1].split(",")[1] in ("finch", "unknown")
    listed = CliRunner().invoke(cli, ["label", "list", "--index-dir", idx]).output.splitlines()
    assert listed == ["birds\tfinch\t6", "birds\trobin\t6", "birds\twren\t6"]
    csv_file = tmp_path / "more.csv"
    csv_file.write_text(f"path,label\n{species / 'robin' / '0.png'},bird\nnot/there.jpg,bird\n")
    imported = CliRunner().invoke(cli, ["label", "import", str(csv_file), "--set", "any", "--index-dir", idx])
    assert "1 photos labelled in 1 classes" in imported.output and "1 paths are not in the index" in imported.output
    csv_file.write_text(f"path,label\n\n{species / 'robin' / '0.png'},bird\n{species / 'robin' / '1.png'}\n")
    bad = CliRunner().invoke(cli, ["label", "import", str(csv_file), "--set", "any", "--index-dir", idx])
    assert (
        bad.exit_code == 1 and bad.output == f"Error: {csv_file}: line 4 is not `path,label`\n"
    )  # as an editor counts
    assert (
        CliRunner().invoke(cli, ["label", "remove", "--set", "birds", "--label", "wren", "--index-dir", idx]).output
        == "6 labels removed\n"
    )


def test_probe_fit_eval_and_file(species: Path, tmp_path: Path) -> None:
    idx = str(species / ".birder-index")
    fit = CliRunner().invoke(
        cli, ["probe", "fit", "--set", "birds", "--out", str(tmp_path / "b.probe"), "--index-dir", idx]
    )
    assert fit.exit_code == 0 and "probe of 3 classes fitted" in fit.output
    ev = CliRunner().invoke(cli, ["probe", "eval", "--set", "birds", "--folds", "3", "--plot", str(tmp_path / "fig"),
                                  "--index-dir", idx])  # fmt: skip
    assert ev.exit_code == 0 and "top-1" in ev.output and "prototype" in ev.output
    assert "top-5" not in ev.output  # 3 classes: every photo is in its top 5
    figures = sorted(p.name for p in (tmp_path / "fig").iterdir())
    assert figures == ["confusion.png", "confusion.svg", "kshot.png", "kshot.svg"]
    too_many = CliRunner().invoke(cli, ["probe", "eval", "--set", "birds", "--folds", "100", "--index-dir", idx])
    assert too_many.exit_code == 1 and "--folds 100 needs at least 100 photos in every class" in too_many.output
    look = CliRunner().invoke(cli, ["lookup", str(species / "robin" / "1.png"), "--set", "birds", "--method", "probe",
                                    "--probe", str(tmp_path / "b.probe"), "--index-dir", idx])  # fmt: skip
    assert look.exit_code == 0 and "robin" in look.stdout.splitlines()[0]


def test_lookup_errors(species: Path) -> None:
    idx = str(species / ".birder-index")
    out = CliRunner().invoke(cli, ["lookup", str(species / "wren" / "1.png"), "--set", "nope", "--index-dir", idx])
    assert out.exit_code == 1 and "label set 'nope' is empty or does not exist" in out.output
    out = CliRunner().invoke(cli, ["lookup", str(species / "wren" / "1.png"), "--set", "birds", "--method", "head",
                                   "--index-dir", idx])  # fmt: skip
    assert out.exit_code == 1 and "has no classifier head" in out.output
    assert fit_classes(["b", "a", "b"])[1] == ["a", "b"]
