"""Published weights through huggingface_hub: a local mirror (HF_ENDPOINT) stands in for the hub, so the tests
download nothing from outside; offline, cached and earlier-version downloads; sha256 always checked."""

from __future__ import annotations

import hashlib
import http.server
import importlib
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from birder_index.backbone import download
from birder_index.backbone.download import fetch
from birder_index.errors import DownloadError

PAYLOAD = b"birder weights " * 1000
SHA = hashlib.sha256(PAYLOAD).hexdigest()
REQUESTS: list[str] = []


class _Hub(http.server.BaseHTTPRequestHandler):
    """Answers as the hub does for one file, birder-project/w/resolve/main/w.pt."""

    def _headers(self) -> bool:
        REQUESTS.append(f"{self.command} {self.path}")
        if not self.path.startswith("/birder-project/w/resolve/main/w.pt"):
            self.send_response(404)
            self.send_header("X-Error-Code", "EntryNotFound")
            self.end_headers()
            return False
        self.send_response(200)
        self.send_header("X-Repo-Commit", "a" * 40)
        self.send_header("ETag", f'"{SHA}"')
        self.send_header("Content-Length", str(len(PAYLOAD)))
        self.end_headers()
        return True

    def do_HEAD(self) -> None:
        self._headers()

    def do_GET(self) -> None:
        if self._headers():
            self.wfile.write(PAYLOAD)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def mirror(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Hub)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    endpoint = f"http://127.0.0.1:{httpd.server_port}"
    monkeypatch.setenv("HF_ENDPOINT", endpoint)
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    _reload_hub()  # huggingface_hub reads its environment when imported
    REQUESTS.clear()
    yield endpoint
    httpd.shutdown()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("HF_ENDPOINT")
    _reload_hub()


def _reload_hub() -> None:
    import huggingface_hub.constants

    importlib.reload(huggingface_hub.constants)


def test_a_download_comes_from_the_hub_and_is_verified(mirror: str, monkeypatch: pytest.MonkeyPatch) -> None:
    path = fetch("birder-project/w", "w.pt", SHA, progress=False)
    assert path.read_bytes() == PAYLOAD and "models--birder-project--w" in str(path)  # the hub's own cache
    assert any(r.startswith("GET /birder-project/w/resolve/main/w.pt") for r in REQUESTS)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    _reload_hub()
    REQUESTS.clear()
    assert fetch("birder-project/w", "w.pt", SHA, progress=False) == path  # offline: from the cache
    assert REQUESTS == []


def test_a_file_with_another_hash_is_refused(mirror: str) -> None:
    with pytest.raises(DownloadError, match="does not have the expected sha256 000000000000"):
        fetch("birder-project/w", "w.pt", "0" * 64, progress=False)


def test_a_missing_file_is_one_line(mirror: str) -> None:
    with pytest.raises(DownloadError, match="cannot download nope.pt from the Hugging Face hub .*--weights FILE"):
        fetch("birder-project/w", "nope.pt", SHA, progress=False)


def test_offline_without_a_cache_says_how_to_work_offline() -> None:
    with pytest.raises(DownloadError) as info:
        fetch("birder-project/w", "w.pt", SHA, progress=False)
    message = str(info.value)
    assert "cannot download w.pt" in message and "--weights FILE" in message and "HF_ENDPOINT" in message
    assert "\n" not in message


def test_weights_an_earlier_version_downloaded_are_used_without_network(tmp_path: Path) -> None:
    legacy = download.cache_dir() / "models" / "w.pt"
    legacy.parent.mkdir(parents=True)
    legacy.write_bytes(PAYLOAD)
    assert fetch("birder-project/w", "w.pt", SHA, progress=False) == legacy  # HF_HUB_OFFLINE=1 here
    legacy.write_bytes(PAYLOAD[:-1] + b"!")  # damaged since: not used, and offline there is nothing else
    with pytest.raises(DownloadError, match="cannot download"):
        fetch("birder-project/w", "w.pt", SHA, progress=False)
