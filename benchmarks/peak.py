"""Peak resident memory of this process alone.

`ru_maxrss` is not that for a child process: Linux carries the parent's resident size at fork over the exec, so
a small dedup run started by a benchmark holding 2 GB of vectors reported 2 GB. VmHWM belongs to the new image.
"""

from __future__ import annotations

import resource


def peak_rss_mb() -> float:
    try:
        with open("/proc/self/status") as f:
            line = next(line for line in f if line.startswith("VmHWM:"))
        return int(line.split()[1]) / 1024
    except (OSError, StopIteration):  # not Linux
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
