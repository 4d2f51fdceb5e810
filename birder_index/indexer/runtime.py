"""What this installation runs on, for `birder-index doctor`: torch and its device, FAISS and the distribution it
came from, the optional parts, the caches. Knows nothing of an index."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
from dataclasses import dataclass

# the pyproject.toml extra that provides each optional module
OPTIONAL = {
    "pyarrow": "parquet",
    "matplotlib": "plots",
    "ray": "ray",
    "psycopg": "postgres",
    "fastapi": "web",
    "birder": "birder",
}
FAISS_DISTRIBUTIONS = ("faiss-cpu", "faiss-gpu", "faiss-gpu-cu11", "faiss-gpu-cu12")


@dataclass(frozen=True, kw_only=True)
class Runtime:
    torch: str
    device: str  # what `--device auto` picks, with the GPU's name
    bf16: bool  # bf16 matrix work runs natively there
    faiss: str | None  # version, None when FAISS cannot be imported
    faiss_gpus: int  # GPUs the FAISS build can use (0: a CPU build, or no GPU)
    faiss_distributions: list[str]  # the installed distributions that provide the `faiss` package
    optional: dict[str, bool]  # extra -> installed
    cache: str
    hf_offline: bool

    @property
    def problems(self) -> list[str]:
        out = []
        if self.faiss is None:
            out.append('FAISS is not installed: pip install "birder-index[cpu]" (or "birder-index[gpu]")')
        if len(self.faiss_distributions) > 1:
            shown = ", ".join(self.faiss_distributions)
            out.append(f"several FAISS builds are installed ({shown}); they overwrite each other: keep one")
        if self.device.startswith("cuda") and self.faiss is not None and not self.faiss_gpus:
            out.append('torch uses CUDA but FAISS is a CPU build: pip install "birder-index[gpu]" for GPU search')
        return out


def runtime() -> Runtime:
    import torch

    from birder_index.backbone.download import cache_dir
    from birder_index.backbone.hardware import fast_bf16
    from birder_index.backbone.hardware import resolve_device

    device = resolve_device(None)
    name = f"{device} ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else str(device)
    try:
        import faiss

        version: str | None = faiss.__version__
        gpus = faiss.get_num_gpus() if hasattr(faiss, "get_num_gpus") else 0
    except ImportError:
        version, gpus = None, 0
    return Runtime(
        torch=torch.__version__,
        device=name,
        bf16=fast_bf16(device),
        faiss=version,
        faiss_gpus=gpus,
        faiss_distributions=[d for d in FAISS_DISTRIBUTIONS if _installed(d)],
        optional={extra: importlib.util.find_spec(module) is not None for module, extra in OPTIONAL.items()},
        cache=str(cache_dir()),
        hf_offline=os.environ.get("HF_HUB_OFFLINE", "0") not in ("", "0", "false", "False"),
    )


def _installed(distribution: str) -> bool:
    try:
        importlib.metadata.distribution(distribution)
        return True
    except importlib.metadata.PackageNotFoundError:
        return False
