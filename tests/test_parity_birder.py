"""Parity with birder itself: birder builds its own networks with random weights and saves them as it saves them;
birder-index loads those files and must give the same embeddings (max abs difference <= 1e-4, float32).

Runs only where the `birder` package is importable (README: "Parity with birder"). With BIRDER_INDEX_PHOTOS set
to a folder of real photos (../shared/datasets/real-photos.sh), those are the pixels; otherwise synthetic ones.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

birder = pytest.importorskip(
    "birder",
    reason="birder is not installed here: the birder path and parity run where it is (README, Parity with birder)",
)

from birder.common import fs_ops  # noqa: E402
from birder.data.transforms.classification import inference_preset  # noqa: E402
from birder.model_registry import registry as birder_registry  # noqa: E402

from birder_index.backbone import load_backbone  # noqa: E402
from birder_index.backbone.images import decode  # noqa: E402

RGB_STATS = {"mean": (0.5248, 0.5372, 0.5086), "std": (0.2135, 0.2103, 0.2622)}
FAMILIES = ["vit_l16", "vit_reg4_b16", "vit_reg4_m16_rms_avg"]


def _photos(tmp_path: Path) -> list[Path]:
    folder = os.environ.get("BIRDER_INDEX_PHOTOS")
    if folder:
        paths = sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in (".jpg", ".png", ".webp"))
        return paths[:3]
    rng = np.random.default_rng(0)
    out = []
    for i in range(3):
        base = np.linspace(0, 255, 300 * 400 * 3).reshape(300, 400, 3)
        img = (base * (i + 1) % 255 + rng.normal(0, 20, base.shape)).clip(0, 255).astype(np.uint8)
        path = tmp_path / f"synthetic{i}.png"
        Image.fromarray(img).save(path)
        out.append(path)
    return out


def _birder_net(name: str, num_classes: int, size: int) -> torch.nn.Module:
    torch.manual_seed(0)
    net = birder_registry.net_factory(name, num_classes, 3, size=(size, size))
    with torch.no_grad():  # random everything, norms included, so no parameter is left at a neutral value
        for p in net.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return net.eval()


def _birder_embeddings(net: torch.nn.Module, photos: list[Path], size: int) -> tuple[torch.Tensor, torch.Tensor]:
    transform = inference_preset((size, size), RGB_STATS)
    x = torch.stack([transform(Image.open(p).convert("RGB")) for p in photos])
    with torch.inference_mode():
        return net.embedding(x), x


def _save_pt(net: torch.nn.Module, name: str, epoch: int, num_classes: int, size: int) -> Path:
    signature = {"inputs": [{"data_shape": [0, 3, size, size]}], "outputs": [{"data_shape": [0, num_classes]}]}
    classes = {f"class{i}": i for i in range(num_classes)}
    fs_ops.checkpoint_model(name, epoch, net, signature, classes, RGB_STATS, None, None, None, None)
    return fs_ops.model_path(name, epoch=epoch)


@pytest.fixture
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)  # birder writes to ./models
    (tmp_path / "models").mkdir()
    return tmp_path


@pytest.mark.parametrize("family", FAMILIES)
def test_pt_checkpoint_embeddings_equal_birder(family: str, in_tmp: Path) -> None:
    size = 224
    net = _birder_net(family, 0, size)
    photos = _photos(in_tmp)
    expected, birder_pixels = _birder_embeddings(net, photos, size)
    path = _save_pt(net, f"{family}_parity", 1, 0, size)

    enc = load_backbone(weights=path, precision="float32", device="cpu")
    pixels = torch.stack([torch.from_numpy(decode(p, enc.info.preprocess.size).pixels) for p in photos])
    assert (enc.normalize(pixels) - birder_pixels).abs().max().item() < 1e-6  # same preprocessing
    got = enc.embed(pixels)
    assert got.shape == expected.shape
    assert (got - expected).abs().max().item() <= 1e-4


@pytest.mark.parametrize("family", ["vit_reg4_b16", "vit_reg4_m16_rms_avg"])
def test_safetensors_and_head_equal_birder(family: str, in_tmp: Path) -> None:
    size, classes = 224, 7
    net = _birder_net(family, classes, size)
    photos = _photos(in_tmp)
    expected, x = _birder_embeddings(net, photos, size)
    with torch.inference_mode():
        expected_probs = torch.softmax(net(x), dim=1)
    signature = {"inputs": [{"data_shape": [0, 3, size, size]}], "outputs": [{"data_shape": [0, classes]}]}
    path = in_tmp / "models" / f"{family}_st.safetensors"
    fs_ops.save_st(net, str(path), "image_classification", {f"c{i}": i for i in range(classes)}, signature, RGB_STATS)

    enc = load_backbone(weights=path, precision="float32", device="cpu")
    pixels = torch.stack([torch.from_numpy(decode(p, (size, size)).pixels) for p in photos])
    assert (enc.embed(pixels) - expected).abs().max().item() <= 1e-4
    assert (enc.probabilities(pixels) - expected_probs).abs().max().item() <= 1e-5
    assert enc.info.classes == tuple(f"c{i}" for i in range(classes))


@pytest.mark.parametrize("family", ["vit_reg4_b16", "vit_reg4_m16_rms_avg"])
def test_size_override_equals_birder_adjust_size(family: str, in_tmp: Path) -> None:
    net = _birder_net(family, 0, 224)
    path = _save_pt(net, f"{family}_resize", 1, 0, 224)
    net.adjust_size((288, 288))
    photos = _photos(in_tmp)
    expected, _ = _birder_embeddings(net, photos, 288)

    enc = load_backbone(weights=path, size=288, precision="float32", device="cpu")
    assert enc.info.preprocess.size == (288, 288)
    pixels = torch.stack([torch.from_numpy(decode(p, (288, 288)).pixels) for p in photos])
    assert (enc.embed(pixels) - expected).abs().max().item() <= 1e-4


def test_legacy_key_checkpoint_equals_birder(in_tmp: Path) -> None:
    """A pre-0.4.0 file (ln1/ln2, MultiheadAttention keys) made from birder's current network by the documented
    rename: the same tensors under the old names must give birder's embedding."""
    net = _birder_net("vit_reg4_b16", 0, 224)
    photos = _photos(in_tmp)
    expected, _ = _birder_embeddings(net, photos, 224)
    legacy = {}
    for key, value in net.state_dict().items():
        key = key.replace(".norm1.", ".ln1.").replace(".norm2.", ".ln2.")
        key = key.replace(".attn.qkv.weight", ".self_attention.in_proj_weight")
        key = key.replace(".attn.qkv.bias", ".self_attention.in_proj_bias")
        key = key.replace(".attn.proj.", ".self_attention.out_proj.")
        legacy[key] = value
    signature = {"inputs": [{"data_shape": [0, 3, 224, 224]}], "outputs": [{"data_shape": [0, 0]}]}
    path = in_tmp / "models" / "vitreg4_b16_mim_200.pt"
    torch.save(
        {
            "state": legacy,
            "birder_version": "v0.3.0",
            "task": "image_classification",
            "signature": signature,
            "class_to_idx": {},
            "rgb_stats": RGB_STATS,
        },
        path,
    )

    enc = load_backbone(weights=path, precision="float32", device="cpu")
    assert enc.info.arch == "vit_reg4_b16"
    pixels = torch.stack([torch.from_numpy(decode(p, (224, 224)).pixels) for p in photos])
    assert (enc.embed(pixels) - expected).abs().max().item() <= 1e-4


# -- birder's other networks, built by birder itself (the birder extra) ---------------------------------------------

OTHER = ["resnet_v1_18", "mobilenet_v4_s"]  # a CNN and a mobile net: nothing birder-index implements itself


@pytest.mark.parametrize("network", OTHER)
def test_other_birder_networks_load_through_birder(network: str, in_tmp: Path) -> None:
    size = 224
    net = _birder_net(network, 0, size)
    photos = _photos(in_tmp)
    expected, _ = _birder_embeddings(net, photos, size)
    path = _save_pt(net, f"{network}_parity", 3, 0, size)
    for enc in (
        load_backbone(network, weights=path, precision="float32", device="cpu"),  # the network named
        load_backbone(weights=path, precision="float32", device="cpu"),  # read off birder's file name
    ):
        assert enc.info.arch == network and enc.embedding_dim == expected.shape[1]
        pixels = torch.stack([torch.from_numpy(decode(p, enc.info.preprocess.size).pixels) for p in photos])
        got = enc.embed(pixels)  # CNN features run to the thousands: a relative tolerance
        assert ((got - expected).abs().max() / expected.abs().max()).item() <= 1e-6


def test_a_birder_network_indexes_and_searches(in_tmp: Path) -> None:
    from click.testing import CliRunner

    from birder_index.cli import cli

    net = _birder_net("resnet_v1_18", 0, 224)
    path = _save_pt(net, "resnet_v1_18_parity", 3, 0, 224)
    photos = in_tmp / "photos"
    photos.mkdir()
    for p in _photos(in_tmp):
        (photos / p.name).write_bytes(p.read_bytes())
    built = CliRunner().invoke(cli, ["build", str(photos), "--weights", str(path), "--workers", "0"])
    assert built.exit_code == 0 and built.stdout.startswith("3 indexed"), built.output
    first = sorted(p for p in photos.iterdir() if p.is_file())[0]
    found = CliRunner().invoke(cli, ["search", str(first), "-k", "1", "--json"])  # a stored vector: no model
    assert found.exit_code == 0 and json.loads(found.stdout)[0]["results"][0]["score"] > 0.9999, found.output
    copy = in_tmp / "copy.png"
    copy.write_bytes(first.read_bytes())
    again = CliRunner().invoke(
        cli, ["search", str(copy), "-k", "1", "--json", "--index-dir", str(photos / ".birder-index")]
    )
    assert again.exit_code == 0, again.output  # a new file: the model is loaded again, by birder, from the record
    assert json.loads(again.stdout)[0]["results"][0]["path"] == str(first)


def test_birder_published_names_are_listed_with_their_loader() -> None:
    from click.testing import CliRunner

    from birder_index.cli import cli

    out = CliRunner().invoke(cli, ["models", "resnet_v1_*", "--json"]).stdout
    rows = json.loads(out)
    assert rows and all(r["path"] == "birder" and r["sha256"] for r in rows)
