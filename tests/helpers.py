"""Test data made on the fly: tiny random-weight checkpoints in birder's formats, and small photo folders."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from birder_index.backbone import registry
from birder_index.backbone.vit import ViT
from birder_index.backbone.vit_config import merge_config

# A tiny member of each family: the registered config with a few layers overridden through birder's checkpoint
# `config` entry, as a checkpoint trained with custom hyper-parameters carries it.
TINY = {"num_layers": 2, "num_heads": 2, "hidden_dim": 32, "mlp_dim": 64}
RGB_STATS = {"mean": [0.5191, 0.5306, 0.4877], "std": [0.2316, 0.2304, 0.2588]}
# torch.compile (inductor) builds C++ on a CPU; without a compiler `Encoder.compile` falls back to eager.
needs_cxx = pytest.mark.skipif(
    not any(shutil.which(c) for c in ("g++", "c++", "clang++")), reason="torch.compile needs a C++ compiler"
)

SHARED = Path(__file__).resolve().parents[2] / "shared"
SHARED_PT2 = SHARED / "models" / "efficientnet_lite0_imagenet.pt2"


def signature(size: int, num_classes: int) -> dict[str, list[dict[str, list[int]]]]:
    return {"inputs": [{"data_shape": [0, 3, size, size]}], "outputs": [{"data_shape": [0, num_classes]}]}


def tiny_vit(arch: str = "vit_reg4_b16", size: int = 32, num_classes: int = 0, seed: int = 0) -> ViT:
    torch.manual_seed(seed)
    cfg = merge_config(registry.architecture_config(arch), TINY)
    net = ViT(cfg, (size, size), num_classes=num_classes)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    return net.eval()


def legacy_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out = {}
    for key, value in state.items():
        key = key.replace(".norm1.", ".ln1.").replace(".norm2.", ".ln2.")
        key = key.replace(".attn.qkv.weight", ".self_attention.in_proj_weight")
        key = key.replace(".attn.qkv.bias", ".self_attention.in_proj_bias")
        key = key.replace(".attn.proj.", ".self_attention.out_proj.")
        out[key] = value
    return out


def save_vit(
    folder: Path,
    arch: str = "vit_reg4_b16",
    fmt: str = "pt",
    size: int = 32,
    num_classes: int = 0,
    legacy: bool = False,
    seed: int = 0,
    name: str | None = None,
) -> Path:
    """A checkpoint as birder writes it: .pt (checkpoint_model's dict), .safetensors (save_st) or .pt2 (save_pt2)."""
    net = tiny_vit(arch, size, num_classes, seed)
    classes = {f"class_{i}": i for i in range(num_classes)}
    sig = signature(size, num_classes)
    path = folder / f"{name or arch + '_tiny'}.{fmt}"
    state = {k: v.contiguous() for k, v in net.state_dict().items()}
    if fmt == "pt":
        torch.save(
            {
                "state": legacy_state(state) if legacy else state,
                "birder_version": "v0.8.4",
                "task": "image_classification",
                "signature": sig,
                "class_to_idx": classes,
                "rgb_stats": RGB_STATS,
                "config": TINY,
            },
            path,
        )
    elif fmt == "safetensors":
        from safetensors.torch import save_file

        meta = {
            "birder_version": "v0.8.4",
            "task": "image_classification",
            "class_to_idx": json.dumps(classes),
            "signature": json.dumps(sig),
            "rgb_stats": json.dumps(RGB_STATS),
            "config": json.dumps(TINY),
        }
        save_file(state, str(path), metadata=meta)
    elif fmt == "pt2":

        class Embedder(torch.nn.Module):  # birder exports encoders whose forward returns the embedding
            def __init__(self) -> None:
                super().__init__()
                self.net = net

            def forward(self, x: torch.Tensor) -> torch.Tensor:
                return self.net.embedding(x)

        batch = torch.export.Dim("batch", min=1, max=1024)
        program = torch.export.export(
            Embedder().eval(), (torch.randn(2, 3, size, size),), dynamic_shapes={"x": {0: batch}}
        )
        extra = {
            "birder_version": "v0.8.4",
            "task": "image_classification",
            "class_to_idx": json.dumps(classes),
            "signature": json.dumps(sig),
            "rgb_stats": json.dumps(RGB_STATS),
        }
        torch.export.save(program, path, extra_files=extra)
    else:
        raise ValueError(fmt)
    return path


def gradient(seed: int) -> Image.Image:
    """A smooth grey gradient: heavy JPEG bands it, which moves a recognition encoder more than its pixels."""
    yy, xx = np.mgrid[0:240, 0:320] / 320
    a, b = np.random.default_rng(seed).uniform(1, 4, 2)
    grey = 100 + 50 * np.sin(a * xx + b * yy) + 8 * np.sin(7 * xx * yy)
    return Image.fromarray(np.repeat(grey[..., None], 3, -1).clip(0, 255).astype(np.uint8))


def photo(seed: int, size: tuple[int, int] = (96, 72)) -> Image.Image:
    """A distinct, photo-like picture (smooth colour fields plus texture) for each seed."""
    rng = np.random.default_rng(seed)
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w] / max(w, h)
    channels = []
    for _ in range(3):
        a, b, c = rng.uniform(-3, 3, 3)
        channels.append(np.sin(a * xx * 6 + b * yy * 6 + c) * 0.5 + 0.5)
    img = np.stack(channels, -1) * 200 + rng.normal(0, 12, (h, w, 3)) + 20
    return Image.fromarray(img.clip(0, 255).astype(np.uint8))


def make_photos(folder: Path, n: int = 8, corrupt: bool = True) -> list[Path]:
    """n photos (JPEG and PNG, one in a subfolder) and, with `corrupt`, one truncated JPEG."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "sub").mkdir(exist_ok=True)
    paths = []
    for i in range(n):
        path = folder / ("sub" if i == n - 1 else "") / f"photo{i:02d}.{'png' if i % 3 == 2 else 'jpg'}"
        photo(i).save(path, quality=90)
        paths.append(path)
    if corrupt:
        good = (folder / "photo00.jpg").read_bytes()
        (folder / "broken.jpg").write_bytes(good[: len(good) // 3])
    return paths
