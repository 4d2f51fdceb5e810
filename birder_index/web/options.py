"""What `birder-index serve` is asked to do."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from birder_index.errors import BirderIndexError

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000
MAX_UPLOAD_BYTES = 64 * 2**20  # an uploaded query photo (a phone's HEIC or a camera JPEG fits many times over)


@dataclass(frozen=True, kw_only=True)
class ServeOptions:
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT  # 0: any free port
    read_only: bool = False  # refuse every change to the index, its labels, marks and photos
    token: str | None = None  # the per-launch secret; None: a new random one
    allowed_hosts: tuple[str, ...] = ()  # more names the Host header may carry (a reverse proxy, a LAN name)
    max_upload_bytes: int = MAX_UPLOAD_BYTES

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise BirderIndexError(f"--port must be 0 to 65535, got {self.port}")
        if not self.host:
            raise BirderIndexError("--host must name an address, e.g. 127.0.0.1")
        if self.token is not None and len(self.token) < 16:
            raise BirderIndexError("a token must have at least 16 characters")
        if self.max_upload_bytes < 1:
            raise BirderIndexError(f"the upload limit must be positive, got {self.max_upload_bytes}")

    @property
    def loopback(self) -> bool:
        """Bound to this machine only (127.0.0.0/8, ::1, localhost)."""
        return is_loopback(self.host)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False
