"""Which files the server may read: only photos the index holds, only inside its photo folder.

A path from a request is refused before anything is read when it is absolute or climbs (`..`, whatever its
encoding: the framework decodes `%2e%2e` first); a stored path is looked up in the index (so neither the index's
own files nor anything else in the photo folder can be asked for); and the file's real path, every symlink
resolved, must lie inside the photo folder's real path, or it is refused (a symlink pointing out of the
collection is not followed out of it).
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from pathlib import PurePosixPath


class Refused(Exception):
    """A path that may not be served: outside the photo folder, or not a plain file."""


def check_relative(path: str) -> str:
    """A requested path as stored paths are written (relative, "/"-separated), or Refused."""
    if not path or "\0" in path:
        raise Refused("an empty path")
    posix = path.replace("\\", "/")
    pure = PurePosixPath(posix)
    if pure.is_absolute() or os.path.isabs(path) or (len(posix) > 1 and posix[1] == ":"):
        raise Refused("an absolute path: give it relative to the photo folder")
    if ".." in pure.parts:
        raise Refused("a path that leaves the photo folder")
    return str(pure)


def photo_file(root: Path, rel: str) -> tuple[str, os.stat_result]:
    """(real path, stat) of the photo stored as `rel`, checked to lie inside `root` once every link is resolved;
    Refused otherwise; FileNotFoundError when it is gone."""
    rel = check_relative(rel)
    real_root = os.path.realpath(root)
    real = os.path.realpath(os.path.join(real_root, rel))
    if not real.startswith(real_root.rstrip(os.sep) + os.sep):
        raise Refused("its real path is outside the photo folder (a symlink pointing out of it)")
    st = os.stat(real)
    if not stat.S_ISREG(st.st_mode):
        raise Refused("not a regular file")
    return real, st
