"""Loading birder's files: every format and key layout gives the same network; bad files are one-line errors."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest
import torch

from birder_index.backbone import load_backbone
from birder_index.backbone.checkpoint import read_checkpoint
from birder_index.errors import CheckpointError
from birder_index.errors import UnknownBackbone
from tests.helpers import RGB_STATS
from tests.helpers import save_vit
from tests.helpers import tiny_vit


def _pixels(n: int = 3, size: int = 32) -> torch.Tensor:
    return torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))


def _reference(arch: str, pixels: torch.Tensor, num_classes: int = 0) -> torch.Tensor:
    net = tiny_vit(arch, num_classes=num_classes)
    mean = torch.tensor(RGB_STATS["mean"]).view(1, 3, 1, 1)
    std = torch.tensor(RGB_STATS["std"]).view(1, 3, 1, 1)
    with torch.inference_mode():
        return net.embedding((pixels.float() / 255 - mean) / std)


@pytest.mark.parametrize("arch", ["vit_l16", "vit_reg4_b16", "vit_reg4_m16_rms_avg"])
@pytest.mark.parametrize("fmt,legacy", [("pt", False), ("pt", True), ("safetensors", False), ("pt2", False)])
def test_every_format_gives_the_same_embedding(tmp_path: Path, arch: str, fmt: str, legacy: bool) -> None:
    path = save_vit(tmp_path, arch, fmt, legacy=legacy)
    enc = load_backbone(weights=path, precision="float32", device="cpu")
    pixels = _pixels()
    assert torch.allclose(enc.embed(pixels), _reference(arch, pixels), atol=1e-5)
    assert enc.info.preprocess.size == (32, 32)
    assert enc.info.preprocess.mean == tuple(RGB_STATS["mean"])
    assert enc.info.arch == ("pt2" if fmt == "pt2" else arch)
    assert enc.embedding_dim == 32


def test_architecture_from_shapes_when_the_name_says_nothing(tmp_path: Path) -> None:
    path = save_vit(tmp_path, "vit_reg4_m16_rms_avg", "pt", name="my_model")
    enc = load_backbone(weights=path, precision="float32")
    assert enc.info.arch == "vit" and enc.info.name == "my_model"
    pixels = _pixels()
    assert torch.allclose(enc.embed(pixels), _reference("vit_reg4_m16_rms_avg", pixels), atol=1e-5)


def test_model_names_the_architecture_of_weights(tmp_path: Path) -> None:
    path = save_vit(tmp_path, "vit_l16", "pt", name="renamed")
    assert load_backbone("vit_l16", weights=path).info.arch == "vit_l16"
    with pytest.raises(CheckpointError, match="weights do not fit vit_reg4_b16: missing reg_tokens"):
        load_backbone("vit_reg4_b16", weights=path)


def test_config_json_beside_the_weights_names_the_architecture(tmp_path: Path) -> None:
    path = save_vit(tmp_path, "vit_reg4_b16", "pt", name="run42")
    (tmp_path / "run42.pt_config.json").write_text('{"name": "vit", "registered_name": "vitreg4_b16"}')
    assert load_backbone(weights=path).info.arch == "vit_reg4_b16"


def test_classifier_head_is_kept(tmp_path: Path) -> None:
    path = save_vit(tmp_path, "vit_l16", "pt", num_classes=5)
    enc = load_backbone(weights=path, precision="float32")
    assert enc.has_head and enc.info.classes == tuple(f"class_{i}" for i in range(5))
    probs = enc.probabilities(_pixels())
    assert probs.shape == (3, 5) and torch.allclose(probs.sum(1), torch.ones(3))


def test_size_override_resizes_the_position_embedding(tmp_path: Path) -> None:
    enc = load_backbone(weights=save_vit(tmp_path, "vit_reg4_b16", "pt"), size=64)
    assert enc.info.preprocess.size == (64, 64)
    assert enc.embed(_pixels(2, 64)).shape == (2, 32)


def test_pt2_static_batch_is_padded(tmp_path: Path) -> None:
    import json

    net = tiny_vit("vit_reg4_b16")

    class Embedder(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return net.embedding(x)

    program = torch.export.export(Embedder(), (torch.randn(4, 3, 32, 32),))  # batch fixed at 4
    sig = {"inputs": [{"data_shape": [4, 3, 32, 32]}], "outputs": [{"data_shape": [0, 0]}]}
    path = tmp_path / "static.pt2"
    torch.export.save(
        program,
        path,
        extra_files={
            "signature": json.dumps(sig),
            "rgb_stats": json.dumps(RGB_STATS),
            "class_to_idx": "{}",
            "task": "image_classification",
        },
    )
    enc = load_backbone(weights=path, precision="float32")
    pixels = _pixels(7)
    assert torch.allclose(enc.embed(pixels), _reference("vit_reg4_b16", pixels), atol=1e-5)


@pytest.mark.parametrize(
    "content,message",
    [
        (b"", "not a birder checkpoint"),
        (b"\x00" * 100, "not a birder checkpoint"),
        (b"PK\x03\x04 broken zip", "damaged zip archive"),
    ],
)
def test_garbage_files_are_one_line_errors(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "bad.pt"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match=message):
        load_backbone(weights=path)


def test_truncated_checkpoint(tmp_path: Path) -> None:
    path = save_vit(tmp_path, "vit_reg4_b16", "pt")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError):
        load_backbone(weights=path)


def test_torch_file_without_birder_metadata(tmp_path: Path) -> None:
    path = tmp_path / "plain.pt"
    torch.save(tiny_vit().state_dict(), path)
    with pytest.raises(CheckpointError, match="not a birder checkpoint \\(no 'state' entry\\)"):
        load_backbone(weights=path)


class _Evil:
    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (print, ("unpickled!",))


def test_pickled_objects_are_never_loaded(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "evil.pt"
    torch.save({"state": {}, "payload": _Evil()}, path)
    with pytest.raises(CheckpointError, match="cannot read"):
        read_checkpoint(path)
    assert "unpickled!" not in capsys.readouterr().out
    assert zipfile.is_zipfile(path)


def test_missing_file_and_unknown_model(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="weights file not found"):
        load_backbone(weights=tmp_path / "nope.pt")
    with pytest.raises(UnknownBackbone, match="unknown model"):
        load_backbone("vit_nope_123")


def test_pt2_with_a_classifier_output_is_refused(tmp_path: Path) -> None:
    import json

    net = tiny_vit("vit_l16", num_classes=5)
    program = torch.export.export(net, (torch.randn(1, 3, 32, 32),))
    sig = {"inputs": [{"data_shape": [1, 3, 32, 32]}], "outputs": [{"data_shape": [0, 5]}]}
    path = tmp_path / "classifier.pt2"
    torch.export.save(program, path, extra_files={"signature": json.dumps(sig), "rgb_stats": json.dumps(RGB_STATS)})
    with pytest.raises(CheckpointError, match="returns logits of 5 classes, not an embedding"):
        load_backbone(weights=path)
