"""Which FAISS index for N vectors of dimension d within a memory budget. The rules and where the numbers come
from: docs/index.md.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from birder_index.errors import BirderIndexError

FLAT_MAX = 50_000  # exact search up to here: recall 1.0, and IVF would lack training points (39 per centroid)
HNSW_COARSE_MIN = 20_000_000  # tens of millions: a flat coarse quantizer's own search becomes the bottleneck
LISTS_PER_SQRT_N = 2  # nlist: the coarse quantizer's cost and RAM halve against 4 sqrt(N); docs/index.md
POINTS_PER_CENTROID = 50  # within FAISS's advice of 39..256; training time grows linearly with it
DEFAULT_MEMORY = 4 << 30  # --max-index-memory default: 4 GiB, a laptop's spare RAM
GPU_PQ_M = (1, 2, 3, 4, 8, 12, 16, 20, 24, 28, 32, 40, 48, 56, 64, 96)  # sub-quantizers GpuIndexIVFPQ accepts
ID_BYTES = 8  # int64 id per vector in the inverted lists
MAX_CODE_BYTES = 64  # PQ128x4fs: longer codes cost memory and scan time that re-ranking makes unnecessary


def check_index_options(max_index_memory: int | None, target_recall: float | None) -> None:
    if max_index_memory is not None and max_index_memory < 1 << 20:
        raise BirderIndexError(f"--max-index-memory must be at least 1MB, got {max_index_memory} bytes")
    if target_recall is not None and not 0 < target_recall <= 1:
        raise BirderIndexError(f"--target-recall must be in (0, 1], got {target_recall}")


@dataclass(frozen=True)
class IndexPlan:
    factory: str  # FAISS index_factory string
    nlist: int = 0
    m: int = 0  # PQ sub-quantizers
    nbits: int = 0  # bits per sub-quantizer code
    training_points: int = 0

    @property
    def exact(self) -> bool:
        return self.nlist == 0

    def bytes_per_vector(self, d: int) -> float:
        """Expected RAM per vector: the code, its id, and (fast-scan) lists padded to blocks of 32."""
        if self.exact:
            return 4 * d + 2 * ID_BYTES  # IndexIDMap2: float32 vector, id, and the reverse map
        code = self.m * self.nbits / 8
        return code * (1.05 if self.nbits == 4 else 1.0) + ID_BYTES


def choose_index(n: int, d: int, *, max_memory: int = DEFAULT_MEMORY, gpu: bool = False) -> IndexPlan:
    """Exact search for small N; IVF with PQ codes above, sized to the budget; an HNSW coarse quantizer at 20M+."""
    flat = IndexPlan("Flat")
    if n <= FLAT_MAX and n * flat.bytes_per_vector(d) <= max_memory:
        return flat
    nlist = _next_pow2(LISTS_PER_SQRT_N * math.sqrt(max(n, 1)))
    budget = max_memory / max(n, 1) - ID_BYTES
    m, nbits = _pq_size(d, budget, gpu)
    coarse = "_HNSW32" if n >= HNSW_COARSE_MIN else ""
    codes = f"PQ{m}" if nbits == 8 else f"PQ{m}x4fs"
    points = min(n, POINTS_PER_CENTROID * nlist)
    return IndexPlan(f"IVF{nlist}{coarse},{codes}", nlist, m, nbits, points)


def _pq_size(d: int, budget: float, gpu: bool) -> tuple[int, int]:
    """(M, bits): the most sub-quantizers that fit `budget` bytes per code, dividing d.

    CPU: 4-bit fast-scan codes (SIMD lookup tables, several times faster to scan than 8-bit), at most one
    sub-quantizer per 4 dimensions and 64 bytes of code: past that, the re-ranking from the store recovers recall
    for less memory and scan time than longer codes (measured in docs/index.md).
    GPU: 8-bit codes (the GPU has no fast-scan), M from the values GpuIndexIVFPQ accepts.
    """
    if gpu:
        fits = [m for m in GPU_PQ_M if d % m == 0 and m <= budget]
        return (max(fits) if fits else min(m for m in GPU_PQ_M if d % m == 0)), 8
    fits = [m for m in range(2, min(d // 4, MAX_CODE_BYTES * 2) + 1, 2) if d % m == 0 and m / 2 * 1.05 <= budget]
    return (max(fits) if fits else min(m for m in range(2, d + 1, 2) if d % m == 0)), 4


def _next_pow2(x: float) -> int:
    return 1 << max(0, math.ceil(math.log2(x)))


def needs_retraining(factory: str, trained_on: int, n: int, d: int, max_memory: int, *, gpu: bool = False) -> bool:
    """Retrain when the rules now pick another kind of index (N crossed FLAT_MAX), or when an IVF index's
    collection has grown 4x since training (its centroids and nlist were sized for far fewer vectors)."""
    planned = choose_index(n, d, max_memory=max_memory, gpu=gpu)
    if planned.exact != (factory == "Flat"):
        return True
    return not planned.exact and n >= 4 * max(trained_on, 1)
