"""Running the application: one process, one port, until Ctrl-C (`serve`), or in a thread for tests and
benchmarks (`running`)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

from birder_index.errors import BirderIndexError
from birder_index.indexer import Index
from birder_index.web.options import ServeOptions
from birder_index.web.security import new_token

if TYPE_CHECKING:
    import uvicorn


@dataclass(frozen=True)
class Address:
    host: str
    port: int
    token: str

    @property
    def base(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        if host in ("0.0.0.0", "[::]"):
            host = socket.gethostname()
        return f"http://{host}:{self.port}"

    @property
    def url(self) -> str:
        """The address to open: it carries the token."""
        return f"{self.base}/?token={self.token}"


def listen(options: ServeOptions) -> socket.socket:
    """The listening socket, bound before anything else starts: a port in use is a one-line error."""
    family = socket.AF_INET6 if ":" in options.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((options.host.strip("[]"), options.port))
    except OSError as e:
        sock.close()
        why = (e.strerror or str(e)).lower()
        hint = ": pass another --port (0 picks a free one)" if options.port else ""
        raise BirderIndexError(f"cannot listen on {options.host}:{options.port}: {why}{hint}") from None
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


def _server(index: Index, options: ServeOptions, sock: socket.socket) -> tuple[uvicorn.Server, Address]:
    import uvicorn

    from birder_index.web.app import create_app

    port = sock.getsockname()[1]
    address = Address(options.host, port, options.token or new_token())
    app = create_app(index, options, token=address.token, port=port)
    config = uvicorn.Config(app, log_level="warning", access_log=False, timeout_graceful_shutdown=5)
    return uvicorn.Server(config), address


def serve(index: Index, options: ServeOptions, *, ready: Callable[[Address], None]) -> None:
    """Serve until interrupted; `ready(address)` is called once the socket listens (to print the URL)."""
    sock = listen(options)
    server, address = _server(index, options, sock)
    ready(address)
    server.run(sockets=[sock])
    # Serving ends only on a signal. uvicorn raises the Ctrl-C it caught again once it has shut down, but inside
    # asyncio.run, whose own SIGINT handler can turn it into a cancellation of a task that then finishes anyway:
    # `serve` exited 0 instead of 130 in one CI run. Raised here, Ctrl-C ends `serve` as it ends every command.
    raise KeyboardInterrupt


@contextmanager
def running(index: Index, options: ServeOptions) -> Iterator[Address]:
    """The server in a thread of this process (tests, benchmarks), stopped on leaving the block."""
    sock = listen(options)
    server, address = _server(index, options, sock)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise BirderIndexError("the server did not start")
        time.sleep(0.02)
    try:
        yield address
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()
