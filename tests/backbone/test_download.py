from __future__ import annotations

import hashlib
import http.server
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from birder_index.backbone.download import download
from birder_index.errors import DownloadError

PAYLOAD = b"birder weights " * 1000


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        if self.path == "/truncated":  # promises more bytes than it sends
            self.send_header("Content-Length", str(len(PAYLOAD) * 2))
        else:
            self.send_header("Content-Length", str(len(PAYLOAD)))
        self.end_headers()
        self.wfile.write(PAYLOAD)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[str]:
    httpd = http.server.HTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_port}"
    httpd.shutdown()


def test_download_verifies_and_renames(server: str, tmp_path: Path) -> None:
    sha = hashlib.sha256(PAYLOAD).hexdigest()
    dest = tmp_path / "models" / "w.pt"
    assert download(f"{server}/w.pt", dest, sha, progress=False) == dest
    assert dest.read_bytes() == PAYLOAD
    assert download("http://127.0.0.1:9/unused", dest, sha, progress=False) == dest  # cached: no network


def test_wrong_sha256_leaves_nothing(server: str, tmp_path: Path) -> None:
    dest = tmp_path / "w.pt"
    with pytest.raises(DownloadError, match="has sha256 .*, expected 0000"):
        download(f"{server}/w.pt", dest, "0" * 64, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_truncated_download_is_an_error(server: str, tmp_path: Path) -> None:
    with pytest.raises(DownloadError, match="truncated|cannot download"):
        download(f"{server}/truncated", tmp_path / "w.pt", hashlib.sha256(PAYLOAD).hexdigest(), progress=False)
    assert list(tmp_path.iterdir()) == []


def test_unreachable_host_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(DownloadError, match="cannot download http://127.0.0.1:9/x"):
        download("http://127.0.0.1:9/x", tmp_path / "x.pt", "0" * 64, progress=False)


def test_existing_file_with_other_hash_is_refused(tmp_path: Path) -> None:
    dest = tmp_path / "w.pt"
    dest.write_bytes(b"something else")
    with pytest.raises(DownloadError, match="exists but its sha256"):
        download("http://127.0.0.1:9/x", dest, hashlib.sha256(PAYLOAD).hexdigest(), progress=False)
