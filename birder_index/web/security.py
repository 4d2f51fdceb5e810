"""Who may talk to the server, checked on every request before any route runs (docs/web.md#security).

1. Host: the Host header must name the address the server is bound to (for loopback: 127.0.0.1, localhost or
   [::1]; for a wildcard bind: any IP literal), with its port, or a name given with --allow-host. A web page whose
   DNS name was rebound to 127.0.0.1 sends its own name and is refused: it cannot read the photos or the API.
2. Token: a secret made at launch (printed in the URL, as notebook servers do) guards every request, the page,
   its scripts, thumbnails and files included, so other users of a shared machine cannot read the photos through
   loopback. It is accepted in the query string of the page's address, which answers with the page and a cookie
   (HttpOnly, SameSite=Strict; the page's script then drops the token from the address bar and the history);
   then from that cookie, or from an `Authorization: Bearer` or `X-Birder-Token` header (scripts).
3. Changes: a request that changes anything is a POST with `Content-Type: application/json` (a cross-site form
   cannot send one) whose Origin is the server's own; a script that sends the token in a header and no Origin
   is accepted (a browser always sends Origin on a POST, and cannot add the header cross-site). No GET changes
   anything.
Every answer carries a Content-Security-Policy that allows only the server's own scripts and styles and no
framing, and no Referer leaves the page.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import secrets
from collections.abc import Awaitable
from collections.abc import Callable
from dataclasses import dataclass
from http.cookies import SimpleCookie
from urllib.parse import parse_qs

from starlette.types import ASGIApp
from starlette.types import Message
from starlette.types import Receive
from starlette.types import Scope
from starlette.types import Send

from birder_index.web.options import ServeOptions
from birder_index.web.options import is_loopback

TOKEN_HEADER = "x-birder-token"
UPLOAD_TYPES = ("application/octet-stream", "image/")  # uploads: raw bytes, which a cross-site form cannot send
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; connect-src 'self'; "
    "base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
SECURITY_HEADERS = [
    (b"content-security-policy", CSP.encode()),
    (b"referrer-policy", b"no-referrer"),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"cross-origin-resource-policy", b"same-origin"),
]
WILDCARDS = ("0.0.0.0", "::", "[::]")

NO_TOKEN_PAGE = """<!doctype html><html><head><meta charset="utf-8"><title>birder-index</title></head>
<body style="font-family:system-ui,sans-serif;max-width:40em;margin:4em auto;line-height:1.5">
<h1>birder-index</h1><p>This page needs the address that <code>birder-index serve</code> printed when it started:
it carries a token that keeps other users of this machine out. Open that address again (or restart the server
to get a new one).</p></body></html>"""


def new_token() -> str:
    return secrets.token_urlsafe(24)


@dataclass(frozen=True)
class Guard:
    """The checks, for one launch: its token, the port it listens on and the names its Host header may carry."""

    token: str
    port: int
    host: str
    allowed_hosts: tuple[str, ...] = ()

    @classmethod
    def of(cls, options: ServeOptions, *, port: int, token: str) -> Guard:
        return cls(token, port, options.host, tuple(h.lower() for h in options.allowed_hosts))

    @property
    def cookie(self) -> str:
        return f"birder_index_token_{self.port}"  # cookies ignore ports: one per server on this machine

    def host_allowed(self, header: str) -> bool:
        name, port = split_host(header)
        if name is None or port != self.port:
            return False
        if name in self.allowed_hosts:
            return True
        bound = self.host.lower().strip("[]")
        if is_loopback(self.host):
            return is_loopback(name)
        if self.host in WILDCARDS:
            return name == "localhost" or _is_ip(name)
        return name == bound or (_is_ip(name) and _is_ip(bound) and _same_ip(name, bound))

    def token_ok(self, given: str | None) -> bool:
        return given is not None and hmac.compare_digest(given.encode(), self.token.encode())


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
        return True
    except ValueError:
        return False


def _same_ip(a: str, b: str) -> bool:
    return ipaddress.ip_address(a) == ipaddress.ip_address(b)


def split_host(header: str) -> tuple[str | None, int | None]:
    """("name" lower-cased, without IPv6 brackets, port) of a Host header; (None, None) when it is malformed."""
    header = header.strip().lower()
    if not header or any(c in header for c in "/\\@ \t?#"):
        return None, None
    if header.startswith("["):
        end = header.find("]")
        if end < 0:
            return None, None
        name, rest = header[1:end], header[end + 1 :]
        port_text = rest[1:] if rest.startswith(":") else (None if not rest else "x")
    else:
        name, _, port_text = header.partition(":")
        port_text = port_text or None
    if port_text is None:
        return name, 80
    return (name, int(port_text)) if port_text.isdigit() and len(port_text) <= 5 else (None, None)


class SecurityMiddleware:
    """The checks of the module docstring, as ASGI middleware around the whole application."""

    def __init__(self, app: ASGIApp, *, guard: Guard) -> None:
        self.app = app
        self.guard = guard

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":  # the app has none: nothing gets past the checks this way either
            await send({"type": "websocket.close", "code": 1008})
            return
        if scope["type"] != "http":  # lifespan
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        refusal = self.refusal(scope, headers)
        if refusal is not None:
            await refusal(send)
            return
        entry = self.entry(scope)  # its token was checked above
        cookie = f"{self.guard.cookie}={self.guard.token}; HttpOnly; SameSite=Strict; Path=/".encode()

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                if entry is not None:  # the cookie, and the answer never cached (its address carries the token)
                    headers = [(k, v) for k, v in headers if k.lower() != b"cache-control"]
                    headers += [(b"set-cookie", cookie), (b"cache-control", b"no-store")]
                message["headers"] = [*headers, *SECURITY_HEADERS]
            await send(message)

        await self.app(scope, receive, send_with_headers)

    @staticmethod
    def entry(scope: Scope) -> str | None:
        """The token given in the page's address (`GET /?token=...`), or None for any other request."""
        if scope["method"] != "GET" or scope["path"] != "/":
            return None
        given = parse_qs(scope.get("query_string", b"").decode("latin-1")).get("token")
        return given[0] if given else None

    def refusal(self, scope: Scope, headers: dict[str, str]) -> Callable[[Send], Awaitable[None]] | None:
        """What to answer instead of the application, or None to let the request through."""
        g = self.guard
        if not g.host_allowed(headers.get("host", "")):
            return _answer(400, "this server answers only to its own address (the Host header names another)")
        path = scope["path"]
        from_header = _bearer(headers.get("authorization")) or headers.get(TOKEN_HEADER)
        from_cookie = _cookie(headers.get("cookie", ""), g.cookie)
        entry = self.entry(scope)
        if entry is not None:
            # the page itself, with the cookie; its script drops the token from the address bar and the history
            return None if g.token_ok(entry) else _answer(401, NO_TOKEN_PAGE, html=True)
        if not (g.token_ok(from_header) or g.token_ok(from_cookie)):
            if path.startswith("/api/"):
                return _answer(401, "this server needs its token: open the address `birder-index serve` printed")
            return _answer(401, NO_TOKEN_PAGE, html=True)
        if scope["method"] not in ("GET", "HEAD"):
            return self._change_refusal(scope, headers, token_in_header=g.token_ok(from_header))
        return None

    def _change_refusal(
        self, scope: Scope, headers: dict[str, str], *, token_in_header: bool
    ) -> Callable[[Send], Awaitable[None]] | None:
        if scope["method"] != "POST":
            return _answer(405, f"{scope['method']} is not accepted: changes are POST requests")
        kind = headers.get("content-type", "").split(";")[0].strip().lower()
        upload = scope["path"] == "/api/uploads"
        if not (kind.startswith(UPLOAD_TYPES) if upload else kind == "application/json"):
            wanted = "the image bytes (Content-Type image/... or application/octet-stream)" if upload else "JSON"
            return _answer(415, f"this request must send {wanted}, not {kind or 'nothing'}")
        origin = headers.get("origin")
        if origin is None:
            return None if token_in_header else _answer(403, "a change needs an Origin header (or the token header)")
        host = headers.get("host", "").lower()
        if origin.lower() not in (f"http://{host}", f"https://{host}"):
            return _answer(403, "a change must come from this server's own page (the Origin header names another)")
        return None


def _bearer(value: str | None) -> str | None:
    if value and value.lower().startswith("bearer "):
        return value[7:].strip()
    return None


def _cookie(header: str, name: str) -> str | None:
    jar: SimpleCookie = SimpleCookie()
    try:
        jar.load(header)
    except Exception:  # a malformed Cookie header is no token
        return None
    return jar[name].value if name in jar else None


def _answer(status: int, text: str, *, html: bool = False) -> Callable[[Send], Awaitable[None]]:
    body = text.encode() if html else json.dumps({"detail": text}).encode()
    kind = b"text/html; charset=utf-8" if html else b"application/json"

    async def respond(send: Send) -> None:
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", kind), (b"content-length", str(len(body)).encode()),
                                *SECURITY_HEADERS]})  # fmt: skip
        await send({"type": "http.response.body", "body": body})

    return respond
