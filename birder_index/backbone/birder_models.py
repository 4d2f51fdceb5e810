"""Any birder model through birder's own API, where the `birder` package is installed (the `birder` extra).

birder-index implements three ViT families itself (vit.py: lighter, faster, parity-tested); every other network
birder's registry knows, and every pretrained weight it publishes, is built and loaded by birder
(`birder.common.fs_ops.load_model`) and wrapped in the same `Encoder`: birder's `embedding()` is what is stored.
Only `.pt` (read by birder with `torch.load(weights_only=True)`) and `.safetensors` files go this way; `.pt2`
exports keep the checked path of pt2_safety.py, and TorchScript files are not read.
"""

from __future__ import annotations

import logging
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import Any

import torch

from birder_index.backbone.download import fetch
from birder_index.backbone.encoder import Encoder
from birder_index.backbone.info import ModelInfo
from birder_index.backbone.info import Preprocess
from birder_index.errors import BirderIndexError
from birder_index.errors import CheckpointError

logger = logging.getLogger(__name__)

INSTALL = 'models beyond the three native ViT families need birder: pip install "birder-index[birder]"'
_HF_PREFIX = "https://huggingface.co/"


@cache
def birder_package() -> ModuleType | None:
    """birder, or None where it is not installed (or does not import)."""
    try:
        import birder
    except Exception:  # not installed, or installed beside an incompatible torch/torchvision
        return None
    return birder


def require_birder() -> ModuleType:
    package = birder_package()
    if package is None:
        raise BirderIndexError(INSTALL)
    return package


def is_pretrained(name: str) -> bool:
    """A weights name birder publishes (its model registry), where birder is installed."""
    package = birder_package()
    return package is not None and name in set(package.list_pretrained_models())


def is_network(name: str) -> bool:
    """A network (architecture) name birder's registry can build, where birder is installed."""
    if birder_package() is None:
        return False
    from birder.model_registry import registry

    return name in set(registry.list_models())


def pretrained_names(pattern: str) -> list[str]:
    import fnmatch

    package = birder_package()
    return sorted(n for n in package.list_pretrained_models() if fnmatch.fnmatch(n, pattern)) if package else []


def pretrained_metadata(name: str) -> dict[str, Any]:
    from birder.model_registry import registry

    meta: dict[str, Any] = registry.get_pretrained_metadata(name)
    return meta


def fetch_pretrained(name: str, *, progress: bool = True) -> tuple[Path, str, str]:
    """(file, network, sha256) of birder's published weights: through huggingface_hub where birder hosts them on the
    hub, else with birder's own downloader into birder-index's cache folder; verified by sha256 either way."""
    meta = pretrained_metadata(name)
    if "pt" not in meta["formats"]:
        raise CheckpointError(f"birder publishes {name} only as {', '.join(meta['formats'])}, not as a .pt checkpoint")
    sha256 = meta["formats"]["pt"]["sha256"]
    network = meta["net"]["network"]
    base = meta.get("url", "")
    if base.startswith(_HF_PREFIX):  # https://huggingface.co/<org>/<repo>/resolve/main
        repo_id = "/".join(base[len(_HF_PREFIX) :].split("/")[:2])
        return fetch(repo_id, f"{name}.pt", sha256, progress=progress), network, sha256
    from birder.common.fs_ops import download_model_by_weights

    from birder_index.backbone.download import cache_dir

    dest = cache_dir() / "models" / f"{name}.pt"
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        download_model_by_weights(name, dst=dest, file_format="pt", progress_bar=progress)
    except Exception as e:  # birder's downloader raises what urllib raises
        raise BirderIndexError(f"cannot download {name} with birder ({str(e).splitlines()[0][:160]})") from None
    return dest, network, sha256


def network_from_file(path: Path) -> str | None:
    """birder names checkpoints `<network>_<tag>_<epoch>.pt`: the longest network name the file name starts with."""
    from birder.model_registry import registry

    stem = path.stem
    known = [n for n in registry.list_models() if stem == n or stem.startswith(n + "_")]
    return max(known, key=len) if known else None


def load_birder(
    network: str,
    path: Path,
    *,
    name: str,
    sha256: str,
    size: tuple[int, int] | None,
    device: torch.device,
    precision: str,
) -> Encoder:
    """birder's network `network` with the weights of `path` (.pt or .safetensors), as an `Encoder`."""
    require_birder()
    from birder.common import fs_ops

    if path.suffix.lower() not in (".pt", ".safetensors"):
        raise CheckpointError(f"{path.name}: birder models are read from .pt or .safetensors files here")
    try:
        net, info = fs_ops.load_model(
            device, network, path=path, inference=True, new_size=size, st=path.suffix.lower() == ".safetensors"
        )
    except Exception as e:  # birder raises what torch and its factories raise for a file of another network
        first = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"birder cannot load {path.name} as {network}: {first}") from None
    h, w = size or (
        int(info.signature["inputs"][0]["data_shape"][2]),
        int(info.signature["inputs"][0]["data_shape"][3]),
    )
    mean, std = info.rgb_stats["mean"], info.rgb_stats["std"]
    preprocess = Preprocess(size=(h, w), mean=(mean[0], mean[1], mean[2]), std=(std[0], std[1], std[2]))
    classes = tuple(c for c, _ in sorted(info.class_to_idx.items(), key=lambda kv: kv[1]))
    model_info = ModelInfo(name, network, sha256, int(net.embedding_size), preprocess, classes)
    classify = net.classify if classes else None
    return Encoder(model_info, net.embedding, device, precision=precision, classify_fn=classify)
