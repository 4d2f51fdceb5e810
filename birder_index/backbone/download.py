"""Published weights are downloaded once into a cache, to a temporary name, verified, then renamed."""

from __future__ import annotations

import hashlib
import logging
import os
import urllib.error
import urllib.request
import uuid
from pathlib import Path

from birder_index.errors import DownloadError

logger = logging.getLogger(__name__)

_CHUNK = 1 << 20


def cache_dir() -> Path:
    """`$BIRDER_INDEX_HOME`, else the user's cache folder (e.g. ~/.cache/birder-index)."""
    home = os.environ.get("BIRDER_INDEX_HOME")
    if home:
        return Path(home).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir("birder-index"))


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def download(url: str, dest: Path, sha256: str, *, progress: bool = True) -> Path:
    """Fetch `url` to `dest` unless a file with the right sha256 is already there.

    The bytes go to `dest.<uuid>.partial` and are renamed only once the sha256 matches, so an interrupted or
    corrupted download never sits under the final name.
    """
    if dest.exists():
        if sha256_file(dest) == sha256:
            return dest
        raise DownloadError(f"{dest} exists but its sha256 is not {sha256}; delete it to download again")
    dest.parent.mkdir(parents=True, exist_ok=True)
    partial = dest.with_name(f"{dest.name}.{uuid.uuid4().hex[:8]}.partial")
    try:
        digest, received, expected = _fetch(url, partial, progress, dest.name)
        if expected is not None and received != expected:
            raise DownloadError(f"download of {url} was truncated: {received} of {expected} bytes")
        if digest != sha256:
            raise DownloadError(f"download of {url} has sha256 {digest}, expected {sha256}")
        os.replace(partial, dest)
    finally:
        partial.unlink(missing_ok=True)
    logger.info("downloaded %s (%d bytes)", dest, received)
    return dest


def _fetch(url: str, partial: Path, progress: bool, label: str) -> tuple[str, int, int | None]:
    from tqdm import tqdm

    request = urllib.request.Request(url, headers={"User-Agent": "birder-index"})
    digest = hashlib.sha256()
    received = 0
    try:
        with urllib.request.urlopen(request, timeout=60) as response, open(partial, "wb") as out:
            length = response.headers.get("Content-Length")
            expected = int(length) if length else None
            with tqdm(total=expected, unit="B", unit_scale=True, desc=label, disable=not progress) as bar:
                while chunk := response.read(_CHUNK):
                    out.write(chunk)
                    digest.update(chunk)
                    received += len(chunk)
                    bar.update(len(chunk))
            out.flush()
            os.fsync(out.fileno())
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        raise DownloadError(f"cannot download {url}: {reason}") from None
    return digest.hexdigest(), received, expected
