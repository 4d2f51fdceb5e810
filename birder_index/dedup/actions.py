"""Acting on duplicates: move them aside or delete them, never the keepers, always from a recorded plan.

The plan CSV (action, src, dst) is written and fsynced before any file is touched, so every move can be undone
(`dedup --undo PLAN.csv`), even after an interruption.
"""

from __future__ import annotations

import csv
import os
import shutil
from dataclasses import dataclass
from datetime import UTC
from datetime import datetime
from pathlib import Path

from birder_index.dedup.find import DedupResult
from birder_index.errors import BirderIndexError


@dataclass(frozen=True)
class Action:
    action: str  # "move" or "delete"
    src: Path
    dst: Path | None


def plan_actions(result: DedupResult, root: Path | None, move_to: Path | None, delete: bool) -> list[Action]:
    """One action per duplicate; a keeper is never in the plan."""
    if bool(move_to) == bool(delete):
        raise BirderIndexError("choose one of --move-to DIR and --delete")
    if move_to is not None and root is not None:
        _check_out_of_the_scan(move_to, root)
    keepers = {g.keeper.path for g in result.groups}
    actions = []
    for g in result.groups:
        for m in g.duplicates:
            src = Path(m.path)
            if m.path in keepers:
                continue  # a keeper of another group (possible with --against): never touched
            if move_to is None:
                actions.append(Action("delete", src, None))
                continue
            if root is None:
                raise BirderIndexError("--move-to needs the photo folder; this index holds imported vectors")
            try:
                rel = src.resolve().relative_to(root.resolve())
            except ValueError:
                raise BirderIndexError(f"{src} is not inside the photo folder {root}") from None
            actions.append(Action("move", src, move_to / rel))
    return actions


def _check_out_of_the_scan(move_to: Path, root: Path) -> None:
    """Refuse a destination the next build would scan: the moved files would be indexed (and found) again."""
    try:
        inside = move_to.resolve().relative_to(root.resolve())
    except ValueError:
        return
    if not any(part.startswith(".") for part in inside.parts):  # hidden folders are not scanned
        raise BirderIndexError(
            f"--move-to {move_to} is inside the photo folder, where the next build would index the moved files "
            f"again: use a folder outside it, or a hidden one such as {root / '.duplicates'}"
        )


def default_plan_path(folder: Path) -> Path:
    return folder / f"birder-index-dedup-{datetime.now(UTC).strftime('%Y%m%dT%H%M%SZ')}.csv"


def write_plan(actions: list[Action], plan_file: Path) -> None:
    plan_file.parent.mkdir(parents=True, exist_ok=True)
    with open(plan_file, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["action", "src", "dst"])
        for a in actions:
            writer.writerow([a.action, str(a.src), str(a.dst) if a.dst else ""])
        f.flush()
        os.fsync(f.fileno())


def apply_plan(actions: list[Action], plan_file: Path) -> int:
    """Record the plan, then carry it out; returns how many files were moved or deleted."""
    write_plan(actions, plan_file)
    done = 0
    for a in actions:
        if not a.src.exists():
            continue
        if a.action == "move" and a.dst is not None:
            if a.dst.exists():
                raise BirderIndexError(f"{a.dst} already exists; nothing was overwritten (plan: {plan_file})")
            a.dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(a.src, a.dst)
        else:
            a.src.unlink()
        done += 1
    return done


def undo_plan(plan_file: Path) -> int:
    """Move back every file a plan moved (deletions cannot be undone); returns how many were restored."""
    try:
        with open(plan_file, newline="") as f:
            rows = list(csv.DictReader(f))
    except OSError as e:
        raise BirderIndexError(f"cannot read plan {plan_file}: {e.strerror}") from None
    if rows and set(rows[0]) != {"action", "src", "dst"}:
        raise BirderIndexError(f"{plan_file} is not a birder-index dedup plan")
    restored = 0
    for row in rows:
        src, dst = Path(row["src"]), Path(row["dst"]) if row["dst"] else None
        if row["action"] == "move" and dst is not None and dst.exists() and not src.exists():
            src.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(dst, src)
            restored += 1
    return restored
