"""Device, precision and thread choices, detected rather than assumed."""

from __future__ import annotations

import functools
import os
from pathlib import Path

import torch

from birder_index.errors import BirderIndexError


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
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise BirderIndexError(f"--device {device}: MPS is not available on this machine")
    return dev


@functools.cache
def cpu_flags() -> frozenset[str]:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


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


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1
