"""What the CLI shows of long work, on stderr: a bar per step in a terminal; where stderr is not a terminal (a log,
CI), a line once a step has run a second, every few seconds while it runs and when it ends; nothing with --quiet.
Steps shorter than a second show nothing."""

from __future__ import annotations

import sys
import threading
import time
from typing import Any
from typing import TextIO

DELAY = 1.0  # a step says what it is doing once it has run this long
INTERVAL = 5.0  # seconds between lines when stderr is not a terminal


class Reporter:
    """A `birder_index.progress.Progress` for the command line."""

    def __init__(
        self, *, quiet: bool = False, stream: TextIO | None = None, delay: float = DELAY, interval: float = INTERVAL
    ) -> None:
        self.quiet = quiet
        self.stream = stream or sys.stderr
        self.delay, self.interval = delay, interval
        self.tty = self.stream.isatty()
        self._lock = threading.Lock()
        self._stage: str | None = None
        self._done: int = 0
        self._total: int | None = None
        self._bar: Any = None
        self._t0 = self._last = 0.0
        self._shown = False
        self._stop = threading.Event()
        self._ticker: threading.Thread | None = None

    def __call__(self, stage: str, done: int, total: int | None) -> None:
        if self.quiet:
            return
        with self._lock:
            if stage != self._stage:
                self._start(stage)
            self._done, self._total = done, total
            if self._bar is not None:
                self._bar.total = total
                self._bar.update(done - self._bar.n)
            elif self._shown and total is not None and done >= total and done:
                self._line(time.monotonic())
                self._shown = False  # said it ended; a later call of the same step starts over

    def _start(self, stage: str) -> None:
        self._end()
        self._stage, self._t0, self._shown = stage, time.monotonic(), False
        if self._ticker is None:
            self._ticker = threading.Thread(target=self._tick, name="progress", daemon=True)
            self._ticker.start()

    def _tick(self) -> None:
        step = max(0.01, min(0.2, self.delay / 2, self.interval / 2))
        while not self._stop.wait(step):
            with self._lock:
                if self._stage is None:
                    continue
                now = time.monotonic()
                if not self._shown and now - self._t0 >= self.delay:
                    self._announce(now)
                elif self._shown and self._bar is None and now - self._last >= self.interval:
                    self._line(now)

    def _announce(self, now: float) -> None:
        self._shown, self._last = True, now
        if self.tty and self._total:
            from tqdm import tqdm

            self._bar = tqdm(total=self._total, desc=self._stage, file=self.stream, leave=False, dynamic_ncols=True)
            self._bar.update(self._done)
        else:
            self.stream.write(f"{self._stage}...\n")
            self.stream.flush()

    def _line(self, now: float) -> None:
        self._last = now
        elapsed = now - self._t0
        done, total = self._done, self._total
        rate = f", {done / elapsed:.1f}/s" if elapsed > 0 and done else ""
        of = f"{done}/{total} ({100 * done / total:.0f}%)" if total else (f"{done}" if done else "working")
        self.stream.write(f"{self._stage}: {of} after {elapsed:.0f}s{rate}\n")
        self.stream.flush()

    def _end(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        self._stage, self._shown = None, False

    def note(self, text: str) -> None:
        """A one-off line (what is about to happen), unless quiet."""
        if not self.quiet:
            self.close()
            self.stream.write(text + "\n")
            self.stream.flush()

    def close(self) -> None:
        """End the current step (before printing results)."""
        with self._lock:
            self._end()

    def __enter__(self) -> Reporter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
        self._stop.set()
