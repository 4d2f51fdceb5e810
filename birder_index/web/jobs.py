"""Long work (a calibration, a dedup of a large index, a probe's cross-validation, a plan carried out) runs in a
thread of its own; the page polls its progress, reported through the library's progress protocol
(birder_index/progress.py), and then reads its result. One job of a kind runs at a time."""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from dataclasses import field
from typing import Any

from birder_index.errors import BirderIndexError
from birder_index.errors import IndexBusy
from birder_index.progress import Progress

logger = logging.getLogger(__name__)

RUNNING, DONE, FAILED = "running", "done", "failed"
KEPT = 50  # finished jobs remembered (the newest), for pages that poll late


@dataclass
class Job:
    id: str
    kind: str
    state: str = RUNNING
    stage: str = "starting"
    done: int = 0
    total: int | None = None
    error: str | None = None
    busy: bool = False  # failed because another process holds the index (IndexBusy): try again later
    result: Any = None
    started: float = field(default_factory=time.time)
    finished: float | None = None

    def progress(self, stage: str, done: int, total: int | None) -> None:
        self.stage, self.done, self.total = stage, done, total

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "kind": self.kind,
            "state": self.state,
            "stage": self.stage,
            "done": self.done,
            "total": self.total,
            "error": self.error,
            "busy": self.busy,
            "seconds": round((self.finished or time.time()) - self.started, 2),
            "result": self.result if self.state == DONE else None,
        }


class Jobs:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._jobs: dict[str, Job] = {}
        self._threads: dict[str, threading.Thread] = {}

    def start(self, kind: str, work: Callable[[Progress], Any]) -> Job:
        """Run `work(progress)` in a thread; its return value (JSON-able) becomes the job's result. A library
        error becomes the job's one-line error; anything else is logged and reported as an internal error."""
        with self._lock:
            running = next((j for j in self._jobs.values() if j.kind == kind and j.state == RUNNING), None)
            if running is not None:
                raise BirderIndexError(f"a {kind} job is already running ({running.stage}); wait for it to finish")
            job = Job(uuid.uuid4().hex[:12], kind)
            self._jobs[job.id] = job
            finished = [j for j in self._jobs.values() if j.state != RUNNING]
            for old in sorted(finished, key=lambda j: j.started)[:-KEPT]:
                del self._jobs[old.id]
                self._threads.pop(old.id, None)

        def run() -> None:
            try:
                job.result = work(job.progress)
                job.state = DONE
            except BirderIndexError as e:
                job.error, job.busy, job.state = str(e), isinstance(e, IndexBusy), FAILED
            except Exception as e:
                logger.exception("%s job failed", kind)
                job.error, job.state = f"internal error: {type(e).__name__}: {e}", FAILED
            finally:
                job.finished = time.time()

        thread = threading.Thread(target=run, name=f"job-{kind}-{job.id}", daemon=True)
        self._threads[job.id] = thread
        thread.start()
        return job

    def get(self, job_id: str) -> Job | None:
        return self._jobs.get(job_id)

    def running(self) -> list[Job]:
        return [j for j in self._jobs.values() if j.state == RUNNING]

    def wait(self, *, kinds: tuple[str, ...], timeout: float | None = None) -> None:
        """Wait for the running jobs of these kinds (at shutdown: a move half done is finished, not abandoned)."""
        for job_id, thread in list(self._threads.items()):
            job = self._jobs.get(job_id)
            if job is not None and job.kind in kinds and job.state == RUNNING:
                thread.join(timeout)
