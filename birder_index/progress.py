"""How long work says what it is doing: library functions take a `progress` callback, the CLI shows it.

`progress(stage, done, total)`: `stage` names the step in a few words ("embedding", "calibrating: embedding
variants"), `done` counts what is finished of `total` (None when the total is unknown). A function calls it once
when a step starts (done 0) and then as it advances; the caller decides how to show it (cli/progress.py: a bar in
a terminal, a line every few seconds in a log, nothing with --quiet).
"""

from __future__ import annotations

from typing import Protocol


class Progress(Protocol):
    def __call__(self, stage: str, done: int, total: int | None) -> None: ...


def silent(stage: str, done: int, total: int | None) -> None:
    """The default: no progress shown."""
