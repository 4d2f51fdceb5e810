"""Names and files to a ready `Encoder`: `--model NAME` (published, downloaded once) or `--weights FILE`."""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from birder_index.backbone import registry
from birder_index.backbone.birder_models import birder_package
from birder_index.backbone.birder_models import fetch_pretrained
from birder_index.backbone.birder_models import is_network
from birder_index.backbone.birder_models import is_pretrained
from birder_index.backbone.birder_models import load_birder
from birder_index.backbone.birder_models import network_from_file
from birder_index.backbone.checkpoint import Checkpoint
from birder_index.backbone.checkpoint import read_checkpoint
from birder_index.backbone.checkpoint import read_config_json
from birder_index.backbone.download import fetch
from birder_index.backbone.download import sha256_file
from birder_index.backbone.encoder import Encoder
from birder_index.backbone.hardware import resolve_device
from birder_index.backbone.info import ModelInfo
from birder_index.backbone.info import Preprocess
from birder_index.backbone.vit import ViT
from birder_index.backbone.vit import infer_config
from birder_index.backbone.vit import load_vit
from birder_index.backbone.vit_config import merge_config
from birder_index.errors import CheckpointError

logger = logging.getLogger(__name__)


def load_backbone(
    model: str | None = None,
    *,
    weights: str | Path | None = None,
    size: int | tuple[int, int] | None = None,
    device: str | None = None,
    precision: str = "auto",
    sha256: str | None = None,
    progress: bool = True,
) -> Encoder:
    """Load a backbone for inference.

    - `model` alone: published weights by name (`vit_reg4_m16_rms_avg_i-jepa`), downloaded once into the cache.
    - `weights`: a local `.pt`, `.safetensors` or `.pt2` file; `model` may then name its architecture.
    - `size`: input size; for ViTs the position embedding is resized as birder's `adjust_size` does.
    - `sha256`: the file's known hash (skips re-hashing a large file whose identity is already established).

    The three ViT families birder-index implements load natively (vit.py); any other network of birder's registry
    loads through birder itself where the `birder` extra is installed (birder_models.py).
    """
    dev = resolve_device(device)
    new_size = (size, size) if isinstance(size, int) else size
    via_birder = _birder_route(model, weights, sha256, progress)
    if via_birder is not None:
        network, path, name, known = via_birder
        return load_birder(network, path, name=name, sha256=known or sha256_file(path), size=new_size, device=dev,
                           precision=precision)  # fmt: skip
    path, arch_hint, name, sha256 = _resolve_file(model, weights, sha256, progress)
    ckpt = read_checkpoint(path)
    if sha256 is None:
        sha256 = sha256_file(path)
    if ckpt.format == "pt2":
        return _pt2_encoder(ckpt, name, sha256, dev, precision, new_size)
    return _vit_encoder(ckpt, arch_hint, name, sha256, dev, precision, new_size)


def _birder_route(
    model: str | None, weights: str | Path | None, sha256: str | None, progress: bool
) -> tuple[str, Path, str, str | None] | None:
    """(network, file, name, known sha256) when birder, not birder-index, builds this model: a name only birder
    publishes, a network only birder implements, or a .pt/.safetensors file named after one. None otherwise."""
    native = model is not None and (registry.canonical_arch(model) is not None or registry.is_backbone(model))
    if native:
        return None
    if weights is None:
        if model is None or not is_pretrained(model):
            return None  # a file path, or unknown: the registry's own error names close matches
        path, published_network, known = fetch_pretrained(model, progress=progress)
        return published_network, path, model, known
    path = Path(weights).expanduser()
    if path.suffix.lower() not in (".pt", ".safetensors") or birder_package() is None:
        return None
    network = model if model and is_network(model) else None
    if network is None and model is None and registry.arch_from_filename(path.stem) is None:
        network = network_from_file(path)
    if network is None:
        return None
    return network, path, path.stem, sha256


def _resolve_file(
    model: str | None, weights: str | Path | None, sha256: str | None, progress: bool
) -> tuple[Path, str | None, str, str | None]:
    """(file, architecture hint, model name, known sha256)."""
    if weights is not None:
        path = Path(weights).expanduser()
        arch = None
        if model:
            arch = registry.canonical_arch(model) or registry.canonical_arch(registry.pretrained(model).arch)
        return path, arch, path.stem, sha256
    if not model:
        raise CheckpointError("no model given: use --model NAME (see `birder-index models`) or --weights FILE")
    if Path(model).suffix in (".pt", ".pt2", ".safetensors") and Path(model).is_file():
        return Path(model), None, Path(model).stem, sha256
    w = registry.pretrained(model)
    path = fetch(w.repo_id, w.filename, w.sha256, progress=progress)
    return path, registry.canonical_arch(w.arch), w.name, w.sha256


def _preprocess(ckpt: Checkpoint, size: tuple[int, int]) -> Preprocess:
    mean, std = ckpt.rgb_stats["mean"], ckpt.rgb_stats["std"]
    return Preprocess(size=size, mean=(mean[0], mean[1], mean[2]), std=(std[0], std[1], std[2]))


def _classes(ckpt: Checkpoint) -> tuple[str, ...]:
    by_index = sorted(ckpt.class_to_idx.items(), key=lambda kv: kv[1])
    return tuple(name for name, _ in by_index)


def _architecture(ckpt: Checkpoint, hint: str | None) -> str | None:
    if hint:
        return hint
    cfg = read_config_json(ckpt.path)
    if cfg is not None:
        name = cfg.get("registered_name") or cfg.get("alias") or cfg.get("name")
        if name and registry.canonical_arch(name):
            return registry.canonical_arch(name)
    return registry.arch_from_filename(ckpt.path.stem)


def _vit_encoder(
    ckpt: Checkpoint,
    arch_hint: str | None,
    name: str,
    sha256: str,
    device: torch.device,
    precision: str,
    new_size: tuple[int, int] | None,
) -> Encoder:
    assert ckpt.state is not None
    arch = _architecture(ckpt, arch_hint)
    if arch is not None:
        cfg = merge_config(registry.architecture_config(arch), ckpt.config)
    else:  # an unnamed file: read the architecture off the tensors
        from birder_index.backbone.vit import upgrade_legacy_keys

        cfg = merge_config(infer_config(upgrade_legacy_keys(ckpt.state)), ckpt.config)
        arch = "vit"
        logger.info("architecture of %s inferred from its tensors: %s", ckpt.path.name, cfg)
    net: ViT = load_vit(cfg, ckpt.state, ckpt.size, ckpt.num_classes, arch)
    if new_size is not None:
        net.adjust_size(new_size)
    net.to(device)
    info = ModelInfo(name, arch, sha256, cfg.hidden_dim, _preprocess(ckpt, net.size), _classes(ckpt))
    classify = net.classify if net.classifier is not None else None
    return Encoder(
        info,
        net.embedding,
        device,
        precision=precision,
        classify_fn=classify,
        set_explicit_attention=net.set_explicit_attention,
    )


def _pt2_encoder(
    ckpt: Checkpoint, name: str, sha256: str, device: torch.device, precision: str, new_size: tuple[int, int] | None
) -> Encoder:
    assert ckpt.program is not None
    if ckpt.num_classes > 0:
        raise CheckpointError(
            f"{ckpt.path.name} returns logits of {ckpt.num_classes} classes, not an embedding: export the encoder"
        )
    shape = _input_shape(ckpt.program)
    size = ckpt.size
    if new_size is not None and new_size != size:
        if isinstance(shape[2], int):
            raise CheckpointError(
                f"{ckpt.path.name} was exported for {size[0]}x{size[1]} inputs; --size cannot change it"
            )
        size = new_size
    module = ckpt.program.module().to(device)
    static_batch = shape[0] if isinstance(shape[0], int) else None
    out_shape = _output_shape(ckpt.program)
    if out_shape is None:  # no shape metadata: run one blank input
        with torch.inference_mode():
            out_shape = list(module(torch.zeros(static_batch or 1, 3, *size, device=device)).shape)
    if len(out_shape) != 2 or not isinstance(out_shape[1], int):
        shown = ", ".join(str(s) if isinstance(s, int) else "batch" for s in out_shape)
        raise CheckpointError(
            f"{ckpt.path.name} returns a tensor of shape ({shown}); an encoder export must return (batch, dim) "
            "embeddings: export the model's embedding() method"
        )
    dim = int(out_shape[1])
    info = ModelInfo(name, "pt2", sha256, dim, _preprocess(ckpt, size))
    micro = 8 if device.type == "cpu" else None
    # bf16 autocast moved the shared EfficientNet's embeddings far outside the 0.999 cosine a ViT keeps
    # (docs/throughput.md): an arbitrary export runs float32 unless bf16 is asked for.
    precision = "float32" if precision == "auto" else precision
    return Encoder(
        info, module, device, precision=precision, static_batch=static_batch, channels_last=True, micro_batch=micro
    )


def _input_shape(program: torch.export.ExportedProgram) -> list[int | torch.SymInt]:
    """The user input's shape from the exported graph: ints where static, SymInts where dynamic."""
    user_inputs = set(program.graph_signature.user_inputs)
    for node in program.graph.nodes:
        if node.op == "placeholder" and node.name in user_inputs and "val" in node.meta:
            return list(node.meta["val"].shape)
    raise CheckpointError("the .pt2 program has no tensor input")


def _output_shape(program: torch.export.ExportedProgram) -> list[int | torch.SymInt] | None:
    """The first output's shape from the exported graph (ints where static), or None without metadata."""
    for node in program.graph.nodes:
        if node.op == "output":
            outs = node.args[0]
            first = outs[0] if isinstance(outs, (list, tuple)) else outs
            val = getattr(first, "meta", {}).get("val")
            if val is not None:
                return list(val.shape)
    return None
