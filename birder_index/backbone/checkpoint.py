"""Read birder's weight files: `.pt` checkpoints, `.safetensors` with birder's metadata, `.pt2` exports.

Formats: docs/models.md §4.1-4.5. The format is sniffed from the bytes, not the file name, and a `.pt`
is only ever read with `torch.load(weights_only=True)`.
"""

from __future__ import annotations

import json
import pickle
import zipfile
from dataclasses import dataclass
from dataclasses import field
from pathlib import Path
from typing import Any
from typing import Literal

import torch

from birder_index.backbone.pt2_safety import check_archive
from birder_index.backbone.pt2_safety import check_program
from birder_index.errors import CheckpointError

Format = Literal["pt", "safetensors", "pt2"]


@dataclass
class Checkpoint:
    path: Path
    format: Format
    signature: dict[str, Any]
    rgb_stats: dict[str, list[float]]
    class_to_idx: dict[str, int] = field(default_factory=dict)
    task: str = "image_classification"
    birder_version: str | None = None
    config: dict[str, Any] | None = None  # birder's custom model-config overrides
    state: dict[str, torch.Tensor] | None = None  # .pt / .safetensors
    program: torch.export.ExportedProgram | None = None  # .pt2

    @property
    def size(self) -> tuple[int, int]:
        shape = self.signature["inputs"][0]["data_shape"]
        return int(shape[2]), int(shape[3])

    @property
    def num_classes(self) -> int:
        if "num_labels" in self.signature:
            return int(self.signature["num_labels"])
        return int(self.signature["outputs"][0]["data_shape"][1])


def sniff_format(path: Path) -> Format:
    try:
        with open(path, "rb") as f:
            head = f.read(16)
    except OSError as e:
        raise CheckpointError(f"cannot read {path}: {e.strerror}") from None
    if head[:2] == b"PK":
        try:
            with zipfile.ZipFile(path) as z:
                names = z.namelist()
        except zipfile.BadZipFile:
            raise CheckpointError(f"{path} is not a birder checkpoint: damaged zip archive") from None
        if any(n.endswith("/archive_format") or n == "archive_format" for n in names):
            return "pt2"
        if any(n.endswith("data.pkl") for n in names):
            return "pt"
        raise CheckpointError(f"{path} is a zip archive but neither a torch checkpoint nor a .pt2 export")
    if len(head) >= 9 and head[8:9] == b"{":
        return "safetensors"  # 8-byte little-endian header length, then the JSON header
    raise CheckpointError(f"{path} is not a birder checkpoint (.pt, .safetensors or .pt2)")


def read_checkpoint(path: Path) -> Checkpoint:
    if not path.is_file():
        raise CheckpointError(f"weights file not found: {path}")
    fmt = sniff_format(path)
    reader = {"pt": _read_pt, "safetensors": _read_safetensors, "pt2": _read_pt2}[fmt]
    from safetensors import SafetensorError

    try:
        return reader(path)
    except CheckpointError:
        raise
    except SafetensorError as e:
        raise CheckpointError(f"{path} is a damaged safetensors file ({str(e).splitlines()[0][:120]})") from None
    except (KeyError, TypeError, ValueError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{path} lacks birder's metadata or has it malformed ({type(e).__name__}: {e})") from None
    except (RuntimeError, OSError, EOFError, zipfile.BadZipFile, pickle.UnpicklingError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"cannot read {path}: {first}") from None


def _read_pt(path: Path) -> Checkpoint:
    # weights_only: never unpickle arbitrary objects; mmap: a 1.2 GB file is paged in, not copied.
    data = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    if not isinstance(data, dict) or "state" not in data:
        raise CheckpointError(f"{path} is not a birder checkpoint (no 'state' entry)")
    return Checkpoint(
        path=path,
        format="pt",
        signature=data["signature"],
        rgb_stats=_rgb_stats(data["rgb_stats"]),
        class_to_idx=dict(data.get("class_to_idx") or {}),
        task=str(data.get("task", "image_classification")),
        birder_version=data.get("birder_version"),
        config=data.get("config") or None,
        state=dict(data["state"]),
    )


def _read_safetensors(path: Path) -> Checkpoint:
    from safetensors import safe_open
    from safetensors.torch import load_file

    with safe_open(str(path), framework="pt", device="cpu") as f:
        meta = f.metadata() or {}
    if "signature" not in meta or "rgb_stats" not in meta:
        raise CheckpointError(f"{path} has no birder metadata (signature, rgb_stats)")
    config = json.loads(meta["config"]) if meta.get("config") else None
    return Checkpoint(
        path=path,
        format="safetensors",
        signature=json.loads(meta["signature"]),
        rgb_stats=_rgb_stats(json.loads(meta["rgb_stats"])),
        class_to_idx=json.loads(meta.get("class_to_idx") or "{}"),
        task=meta.get("task", "image_classification"),
        birder_version=meta.get("birder_version"),
        config=config,
        state=load_file(str(path)),
    )


def _read_pt2(path: Path) -> Checkpoint:
    check_archive(path)  # before torch reads it: loading a .pt2 can otherwise run code from it (pt2_safety.py)
    extra = {"birder_version": "", "task": "", "class_to_idx": "", "signature": "", "rgb_stats": ""}
    program = torch.export.load(path, extra_files=extra)
    check_program(path, program)
    if not extra["signature"] or not extra["rgb_stats"]:
        raise CheckpointError(f"{path} is a torch.export program without birder's metadata (signature, rgb_stats)")
    return Checkpoint(
        path=path,
        format="pt2",
        signature=json.loads(extra["signature"]),
        rgb_stats=_rgb_stats(json.loads(extra["rgb_stats"])),
        class_to_idx=json.loads(extra["class_to_idx"] or "{}"),
        task=extra["task"] or "image_classification",
        birder_version=extra["birder_version"] or None,
        program=program,
    )


def _rgb_stats(raw: Any) -> dict[str, list[float]]:
    stats = {"mean": [float(v) for v in raw["mean"]], "std": [float(v) for v in raw["std"]]}
    if len(stats["mean"]) != 3 or len(stats["std"]) != 3 or min(stats["std"]) <= 0:
        raise CheckpointError(f"malformed rgb_stats: {raw}")
    return stats


def peek_classes(path: Path) -> int:
    """The size of a checkpoint's classifier head from its metadata alone, without building the model (0: an
    encoder). A `.pt` is memory-mapped, so even a large file costs little."""
    fmt = sniff_format(path)
    try:
        if fmt == "pt2":
            with zipfile.ZipFile(path) as z:
                name = next((n for n in z.namelist() if n.endswith("extra/signature")), None)
                signature = json.loads(z.read(name)) if name else {}
        elif fmt == "safetensors":
            from safetensors import safe_open

            with safe_open(str(path), framework="pt", device="cpu") as f:
                signature = json.loads((f.metadata() or {}).get("signature", "{}"))
        else:
            data = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
            signature = data.get("signature", {}) if isinstance(data, dict) else {}
        if "num_labels" in signature:
            return int(signature["num_labels"])
        return int(signature["outputs"][0]["data_shape"][1]) if signature else 0
    except Exception as e:  # damaged metadata: the full read says precisely what is wrong
        raise CheckpointError(f"{path} lacks birder's metadata or has it malformed ({type(e).__name__})") from None


def read_config_json(weights: Path) -> dict[str, Any] | None:
    """birder's model-config JSON beside a weights file (`<file>_config.json` or `<network>.json`), if any."""
    candidates = [weights.with_name(weights.name + "_config.json"), weights.with_suffix(".json")]
    stem = weights.stem
    if stem.rsplit("_", 1)[-1].isdigit():  # vit_l16_mim_400.pt -> vit_l16_mim.json (epoch dropped)
        candidates.append(weights.with_name(stem.rsplit("_", 1)[0] + ".json"))
    for candidate in candidates:
        if candidate.is_file():
            try:
                cfg = json.loads(candidate.read_text())
            except (OSError, json.JSONDecodeError) as e:
                raise CheckpointError(f"cannot read model config {candidate}: {e}") from None
            if isinstance(cfg, dict) and ("registered_name" in cfg or "alias" in cfg or "name" in cfg):
                return cfg
    return None
