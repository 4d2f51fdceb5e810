"""What the server holds for its lifetime: the open index (kept in step with other processes' commits), the model
(loaded once, on the first query by image), uploaded queries, previews on disk, the latest dedup result and the
plans shown but not yet carried out, and the label suggestions computed so far."""

from __future__ import annotations

import hashlib
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from dataclasses import field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from birder_index.errors import BirderIndexError
from birder_index.indexer import Index
from birder_index.indexer.previews import PreviewCache
from birder_index.indexer.previews import preview_cache_dir
from birder_index.web.jobs import Jobs
from birder_index.web.options import ServeOptions

if TYPE_CHECKING:
    from birder_index.backbone import Encoder
    from birder_index.dedup import Action
    from birder_index.dedup import DedupResult
    from birder_index.fewshot import Suggestions

UPLOADS_KEPT = 256  # uploaded queries kept (the oldest go first) ...
UPLOAD_BYTES_KEPT = 512 * 2**20  # ... and at most this many bytes of them


class IndexHolder:
    """The server's open index. Requests that read its caches (FAISS, row maps, the store) hold `lock` through
    `use()`, which first catches up with what a build or another process committed (`Index.sync`); long jobs work
    on an Index of their own (`fresh`), so a dedup of a million photos does not stop searches."""

    def __init__(self, index: Index) -> None:
        self.index = index
        self.lock = threading.RLock()
        self._root: Path | None = None
        self.generation = 0  # bumped whenever sync saw a change: caches keyed on it are stale

    @contextmanager
    def use(self) -> Iterator[Index]:
        with self.lock:
            if self.index.sync():
                self._root = None
                self.generation += 1
            yield self.index

    def fresh(self) -> Index:
        """Another Index over the same folder and database (its own caches), for work in another thread."""
        return Index(self.index.dir, self.index.engine)

    @property
    def root(self) -> Path | None:
        """The photo folder (resolved), or None for imported embeddings."""
        if self._root is None:
            with self.use() as index:
                root = index.root
            self._root = root.resolve() if root is not None else None
        return self._root


@dataclass
class Upload:
    """A query photo sent by the page: kept in memory, never written to the photo folder."""

    key: str  # sha256 of its bytes: the same photo uploaded twice is one upload
    name: str
    data: bytes
    width: int
    height: int
    vector: np.ndarray  # raw embedding (d,)
    preview: bytes | None = None


class Uploads:
    def __init__(self) -> None:
        self._items: OrderedDict[str, Upload] = OrderedDict()
        self._lock = threading.Lock()

    @staticmethod
    def key_of(data: bytes) -> str:
        return hashlib.sha256(data).hexdigest()

    def add(self, upload: Upload) -> None:
        with self._lock:
            self._items[upload.key] = upload
            self._items.move_to_end(upload.key)
            while len(self._items) > UPLOADS_KEPT or sum(len(u.data) for u in self._items.values()) > UPLOAD_BYTES_KEPT:
                if len(self._items) == 1:
                    break
                self._items.popitem(last=False)

    def get(self, key: str) -> Upload:
        with self._lock:
            found = self._items.get(key)
            if found is not None:
                self._items.move_to_end(key)
        if found is None:
            raise LookupError(
                "this uploaded photo is no longer in the server's memory (it restarted?): upload it again"
            )
        return found


@dataclass
class DedupSession:
    """The latest dedup result shown in the page; `version` changes with every change to its groups, so a page
    acting on an older version is told to reload instead of acting on groups it has not seen."""

    result: DedupResult
    keep: str
    version: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    made: float = field(default_factory=time.time)
    # keepers chosen by hand, by the group's members: kept when the group comes back unchanged after a regroup
    chosen: dict[frozenset[int], int] = field(default_factory=dict)


@dataclass
class PendingPlan:
    """A plan shown to the page (checked, a dry run) and not yet carried out: `apply` carries out exactly it."""

    token: str
    actions: list[Action]
    move_to: Path | None
    made: float = field(default_factory=time.time)


class AppState:
    def __init__(self, index: Index, options: ServeOptions) -> None:
        self.options = options
        self.holder = IndexHolder(index)
        self.jobs = Jobs()
        self.uploads = Uploads()
        self.previews = PreviewCache(preview_cache_dir(index.dir))
        self.dedup: DedupSession | None = None
        self.dedup_lock = threading.Lock()
        self.plans: dict[str, PendingPlan] = {}
        # set -> (its suggestions, the ids labelled in it since they were computed)
        self.suggestions: dict[str, tuple[Suggestions, set[int]]] = {}
        self._encoder: Encoder | None = None
        self._encoder_lock = threading.Lock()
        self._folders: tuple[int, dict[str, int]] | None = None
        self._among: dict[tuple[int, str], np.ndarray] = {}

    @property
    def read_only(self) -> bool:
        return self.options.read_only

    def encoder(self) -> Encoder:
        """The index's model, loaded on first use (a search by a stored photo never needs it)."""
        with self._encoder_lock:
            if self._encoder is None:
                with self.holder.use() as index:
                    self._encoder = index.load_encoder(progress=False)
            return self._encoder

    @contextmanager
    def embedding(self) -> Iterator[Encoder]:
        """The model, held by one request at a time (its buffers are not shared between threads)."""
        encoder = self.encoder()
        with self._encoder_lock:
            yield encoder

    def model_loaded(self) -> bool:
        return self._encoder is not None

    def folders(self) -> dict[str, int]:
        """Folders of the collection with their image counts, read again only after the index changed."""
        from birder_index.search import folders

        with self.holder.use():
            generation = self.holder.generation
        if self._folders is None or self._folders[0] != generation:
            self._folders = (generation, folders(self.holder.index))
        return self._folders[1]

    def labelled(self, set_name: str, ids: list[int]) -> None:
        """Photos labelled in a set: no longer suggestions to review."""
        if set_name in self.suggestions:
            found, taken = self.suggestions[set_name]
            ours = np.asarray(ids, np.int64)
            taken.update(ours[np.isin(ours, found.ids)].tolist())

    def unlabelled(self, set_name: str, ids: list[int]) -> None:
        if set_name in self.suggestions:
            self.suggestions[set_name][1].difference_update(int(i) for i in ids)

    def among(self, index: Index, *, folder: str | None, label: tuple[str, str] | None) -> np.ndarray | None:
        """The ids a filtered search may return (`matching_ids`). A folder's are kept until the index changes (a
        folder of 10,000 in a million takes about 80 ms to read, a search within it about 40); a class's are read
        each time (the CLI may have labelled photos meanwhile, which changes no generation)."""
        from birder_index.search import matching_ids

        if not folder:
            return matching_ids(index, label=label)
        key = (self.holder.generation, folder)
        found = self._among.get(key)
        if found is None:
            found = matching_ids(index, folder=folder)
            assert found is not None
            self._among = {k: v for k, v in self._among.items() if k[0] == key[0]}
            if len(self._among) >= 32:
                self._among.pop(next(iter(self._among)))
            self._among[key] = found
        labelled = matching_ids(index, label=label) if label is not None else None
        return found if labelled is None else np.intersect1d(found, labelled)

    def add_plan(self, actions: list[Action], move_to: Path | None) -> PendingPlan:
        plan = PendingPlan(uuid.uuid4().hex[:16], actions, move_to)
        self.plans = {plan.token: plan}  # one pending plan: a new review replaces the one before
        return plan

    def take_plan(self, token: str) -> PendingPlan:
        plan = self.plans.pop(token, None)
        if plan is None:
            raise BirderIndexError(
                "this plan is no longer pending (carried out, or replaced by a newer one): review it again"
            )
        return plan
