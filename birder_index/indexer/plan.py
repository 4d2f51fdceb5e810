"""What a build has to do: a fresh scan diffed against the database.

- new path: embed (unless it is a moved file: same size and content hash as a path that disappeared; then the
  row is renamed and keeps its id, vector and labels);
- same path, same size and mtime: nothing;
- same path, other size or mtime: hashed; same content -> only the stat is updated, else embedded again;
- path gone: its row and vector are removed.
"""

from __future__ import annotations

import hashlib
import logging
from collections import defaultdict
from dataclasses import dataclass
from dataclasses import field
from pathlib import Path

from birder_index.db.models import FAILED
from birder_index.db.models import INDEXED
from birder_index.db.models import PENDING
from birder_index.db.queries import Known
from birder_index.indexer.scan import FileStat
from birder_index.indexer.scan import ScanResult

logger = logging.getLogger(__name__)


@dataclass
class Plan:
    new: list[FileStat] = field(default_factory=list)
    reembed: list[tuple[int, FileStat]] = field(default_factory=list)  # (id, new stat): content changed
    touched: list[tuple[int, FileStat]] = field(default_factory=list)  # (id, new stat): same content
    moved: list[tuple[int, FileStat]] = field(default_factory=list)  # (id, new path and stat)
    gone: list[int] = field(default_factory=list)
    problems: list[tuple[str, str]] = field(default_factory=list)  # new or changed failures found by the scan
    unchanged: int = 0

    @property
    def changes_rows(self) -> bool:
        return bool(self.new or self.reembed or self.touched or self.moved or self.gone or self.problems)


def hash_file(path: Path) -> str | None:
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            while chunk := f.read(1 << 20):
                digest.update(chunk)
    except OSError:
        return None
    return digest.hexdigest()


def make_plan(root: Path, scanned: ScanResult, known: dict[str, Known], *, retry_failed: bool = False) -> Plan:
    plan = Plan()
    seen: set[str] = set()
    for f in scanned.files:
        seen.add(f.path)
        k = known.get(f.path)
        if k is None:
            plan.new.append(f)
        elif (k.size, k.mtime_ns) == (f.size, f.mtime_ns) and not (retry_failed and k.status == FAILED):
            if k.status != PENDING:  # an interrupted build's rows: this build embeds them, they are not "unchanged"
                plan.unchanged += 1
        elif k.status == INDEXED and k.sha256 is not None and hash_file(root / f.path) == k.sha256:
            plan.touched.append((k.id, f))
        else:
            plan.reembed.append((k.id, f))
    for path, reason in scanned.problems:
        seen.add(path)
        k = known.get(path)
        if k is None or k.status != FAILED:
            plan.problems.append((path, reason))
        else:
            plan.unchanged += 1
    gone = {path: k for path, k in known.items() if path not in seen}
    _find_moves(root, plan, gone)
    plan.gone = sorted(k.id for k in gone.values())
    return plan


def _find_moves(root: Path, plan: Plan, gone: dict[str, Known]) -> None:
    """Pair new paths with vanished indexed rows of the same size and content hash (renamed or moved files)."""
    by_size: dict[int, list[Known]] = defaultdict(list)
    for k in gone.values():
        if k.status == INDEXED and k.sha256 is not None and k.size is not None:
            by_size[k.size].append(k)
    if not by_size:
        return
    path_of = {k.id: path for path, k in gone.items()}
    still_new = []
    for f in plan.new:
        candidates = by_size.get(f.size)
        sha = hash_file(root / f.path) if candidates else None
        match = next((k for k in candidates or [] if k.sha256 == sha), None)
        if match is None:
            still_new.append(f)
            continue
        candidates.remove(match)  # type: ignore[union-attr]
        plan.moved.append((match.id, f))
        del gone[path_of[match.id]]
    plan.new = still_new
    logger.debug("moves found: %d", len(plan.moved))
