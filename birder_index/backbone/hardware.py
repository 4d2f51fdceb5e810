"""Device, precision and thread choices, detected rather than assumed."""

from __future__ import annotations

import torch

from birder_index.backbone.cpu import cpu_flags
from birder_index.backbone.cpu import usable_cores
from birder_index.errors import BirderIndexError

__all__ = ["autocast_dtype", "cpu_flags", "fast_bf16", "resolve_device", "usable_cores"]


def resolve_device(device: str | None) -> torch.device:
    """`None`/"auto" -> CUDA when present, else CPU; anything else must be a device torch knows and has."""
    if device in (None, "", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise BirderIndexError(f"--device {device!r} is not a torch device (cpu, cuda, cuda:1, mps)") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise BirderIndexError(f"--device {device}: CUDA is not available on this machine")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        n = torch.cuda.device_count()  # else the model's .to(dev) fails later, with a traceback
        which = "cuda:0" if n == 1 else f"cuda:0 to cuda:{n - 1}"
        raise BirderIndexError(f"--device {device}: this machine has {n} CUDA device{'s' * (n != 1)} ({which})")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise BirderIndexError(f"--device {device}: MPS is not available on this machine")
    return dev


def fast_bf16(device: torch.device) -> bool:
    """True where bfloat16 matrix work runs natively: AVX512-BF16 or AMX on x86 CPUs, bf16-capable CUDA GPUs."""
    if device.type == "cuda":
        return bool(torch.cuda.is_bf16_supported())
    if device.type == "cpu":
        return bool(cpu_flags() & {"avx512_bf16", "amx_bf16"})
    return False


def autocast_dtype(device: torch.device, precision: str) -> torch.dtype | None:
    """The autocast dtype for a precision setting: "float32" -> None, "bf16" -> bfloat16, "auto" -> detected."""
    if precision == "float32":
        return None
    if precision == "bf16":
        return torch.bfloat16
    if precision == "auto":
        return torch.bfloat16 if fast_bf16(device) else None
    raise BirderIndexError(f"--precision must be auto, bf16 or float32, got {precision!r}")
