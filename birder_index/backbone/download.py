"""Published weights come from the Hugging Face hub through `huggingface_hub`, verified by sha256.

Through the hub's own client a user gets its cache, shared with their other tools, `HF_HUB_OFFLINE=1`, mirrors
(`HF_ENDPOINT`) for sites without internet access, tokens and resumable downloads. Weights that earlier versions of
birder-index downloaded into `$BIRDER_INDEX_HOME/models/` are used where they are, without a download. Whatever the
source, a file is used only once its sha256 matches the registry's; a file hashed once is not hashed again while its
size and mtime stay the same (a record in `$BIRDER_INDEX_HOME/verified/`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path

from birder_index.errors import DownloadError

logger = logging.getLogger(__name__)

_CHUNK = 1 << 20
OFFLINE_HINT = (
    "without network access, pass --weights FILE (a local .pt, .safetensors or .pt2), or set HF_ENDPOINT to a mirror"
)


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


def fetch(repo_id: str, filename: str, sha256: str, *, progress: bool = True) -> Path:
    """The local file of published weights: a verified earlier download in `$BIRDER_INDEX_HOME/models/`, else the
    hub's cache or the hub itself (`hf_hub_download`), checked against `sha256`."""
    legacy = cache_dir() / "models" / filename
    if legacy.is_file() and verified(legacy, sha256):
        return legacy
    path = _hub_download(repo_id, filename, progress=progress)
    if not verified(path, sha256):
        raise DownloadError(
            f"{filename} from the Hugging Face hub ({path}) does not have the expected sha256 {sha256[:12]}...: "
            "delete it from the hub's cache (huggingface-cli delete-cache) and try again"
        )
    return path


def cached(repo_id: str, filename: str) -> Path | None:
    """Where published weights already are on this machine (an earlier version's folder, or the hub's cache),
    without asking the network; None when they are not."""
    legacy = cache_dir() / "models" / filename
    if legacy.is_file():
        return legacy
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return None
    found = try_to_load_from_cache(repo_id, filename)
    return Path(found) if isinstance(found, str) else None


def _hub_download(repo_id: str, filename: str, *, progress: bool) -> Path:
    try:
        import huggingface_hub
        from huggingface_hub.utils import disable_progress_bars
        from huggingface_hub.utils import enable_progress_bars
    except ImportError:
        raise DownloadError("downloads need huggingface_hub: pip install huggingface_hub") from None
    (enable_progress_bars if progress else disable_progress_bars)()
    try:
        return Path(huggingface_hub.hf_hub_download(repo_id, filename))
    except Exception as e:  # the hub client raises many types: offline, not found, HTTP and network errors
        reason = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
        raise DownloadError(
            f"cannot download {filename} from the Hugging Face hub ({reason}); {OFFLINE_HINT}"
        ) from None


def verified(path: Path, sha256: str) -> bool:
    """Whether the file's sha256 is `sha256`: from the record of an earlier check while the file's size and mtime
    are unchanged, else by hashing it (and recording the answer when it matches)."""
    st = path.stat()
    record = cache_dir() / "verified" / f"{sha256}.json"
    mark = {"path": str(path.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns}
    try:
        if json.loads(record.read_text()) == mark:
            return True
    except (OSError, ValueError):
        pass
    if sha256_file(path) != sha256:
        return False
    try:
        record.parent.mkdir(parents=True, exist_ok=True)
        tmp = record.with_name(f"{record.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(mark))
        os.replace(tmp, record)
    except OSError:  # a read-only cache: the file is simply hashed again next time
        pass
    return True
