"""What a build is asked to do and what it reports: `BuildOptions` and `BuildReport`."""

from __future__ import annotations

from dataclasses import dataclass
from dataclasses import field
from pathlib import Path

from birder_index.errors import BirderIndexError
from birder_index.indexer.select import check_index_options
from birder_index.indexer.vectors import DEFAULT_STORE_DTYPE
from birder_index.indexer.vectors import STORE_DTYPES


@dataclass(frozen=True, kw_only=True)
class BuildOptions:
    batch_size: int | None = None  # default: 16 on CPU, 256 on GPU
    workers: int | None = None  # decode processes beside the model; default: threads between batches on a CPU
    exact: bool = False  # birder's exact preprocessing and float32 (no DCT-domain JPEG downscaling, no bf16)
    retry_failed: bool = False
    wait: float = 0.0  # seconds to wait for another writer
    store_dtype: str = DEFAULT_STORE_DTYPE  # a new index's embedding store; an existing one keeps its own
    db: str | None = None  # SQLAlchemy URL; default: SQLite inside the index folder
    max_index_memory: int | None = None  # bytes of RAM the FAISS index may take (recorded for later builds)
    target_recall: float | None = None  # recall@10 the FAISS index is tuned to (recorded for later builds)
    compile: bool | None = None  # torch.compile the model; default: on a CPU, for runs of COMPILE_MIN_IMAGES+

    def __post_init__(self) -> None:
        if self.batch_size is not None and self.batch_size < 1:
            raise BirderIndexError(f"--batch-size must be >= 1, got {self.batch_size}")
        if self.workers is not None and self.workers < 0:
            raise BirderIndexError(f"--workers must be >= 0, got {self.workers}")
        if self.store_dtype not in STORE_DTYPES:
            raise BirderIndexError(f"--store-dtype must be float16 or float32, got {self.store_dtype}")
        check_index_options(self.max_index_memory, self.target_recall)


@dataclass
class BuildReport:
    index_dir: Path
    scanned: int = 0
    indexed: int = 0  # embedded (or copied from identical content) in this run
    reused: int = 0  # of those, copied from identical content
    moved: int = 0
    touched: int = 0
    removed: int = 0
    failed: int = 0  # new failures in this run
    unchanged: int = 0
    pending: int = 0  # left to do when interrupted
    interrupted: bool = False
    seconds: float = 0.0
    embed_seconds: float = 0.0  # from the first batch on (compiling and checking the model not included)
    compile_seconds: float = 0.0
    failures: list[tuple[str, str]] = field(default_factory=list)
    actors: dict[str, int] = field(default_factory=dict)  # with --ray: photos per actor ("host:pid")

    @property
    def images_per_second(self) -> float:
        return self.indexed / self.embed_seconds if self.embed_seconds > 0 else 0.0
