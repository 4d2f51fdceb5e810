"""Every guard of the web app, each with a request it must refuse (and, beside it, the same request passing once
the guard is satisfied, so that the refusal is the guard's doing): token, Host, Origin and Content-Type of
changes, no change on GET, --read-only, files only from inside the photo folder, uploads limited and decoded."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from birder_index.indexer import open_index
from birder_index.web import ServeOptions
from birder_index.web import create_app
from birder_index.web.security import Guard
from birder_index.web.security import split_host
from tests.web.conftest import BASE
from tests.web.conftest import PORT
from tests.web.conftest import TOKEN
from tests.web.conftest import Client
from tests.web.conftest import image_id


def bare(collection: Path, **options: object) -> TestClient:
    """A client with no token, no Origin: a stranger."""
    app = create_app(open_index(collection / ".birder-index"), ServeOptions(**options), token=TOKEN, port=PORT)  # type: ignore[arg-type]
    return TestClient(app, base_url=BASE, follow_redirects=False)


def test_every_request_needs_the_token(collection: Path) -> None:
    c = bare(collection)
    for path in ("/", "/static/js/main.js", "/api/info", "/api/thumb/1", "/api/original/1", "/api/openapi.json"):
        r = c.get(path)
        assert r.status_code == 401, path
    assert "needs its token" in c.get("/api/info").json()["detail"]
    assert "birder-index serve" in c.get("/").text  # the page says where the address is
    assert c.get("/api/info", headers={"x-birder-token": "wrong" * 8}).status_code == 401
    assert c.get("/api/info", headers={"x-birder-token": TOKEN}).status_code == 200
    assert c.get("/api/info", headers={"authorization": f"Bearer {TOKEN}"}).status_code == 200
    assert c.get(f"/api/info?token={TOKEN}").status_code == 401  # the query string opens the page only


def test_the_address_with_the_token_sets_a_cookie(collection: Path) -> None:
    c = bare(collection)
    assert c.get("/?token=nope").status_code == 401
    r = c.get(f"/?token={TOKEN}")
    assert r.status_code == 200 and r.headers["cache-control"] == "no-store"
    cookie = r.headers["set-cookie"]
    assert (
        cookie.startswith(f"birder_index_token_{PORT}={TOKEN};")
        and "HttpOnly" in cookie
        and "SameSite=Strict" in cookie
    )
    assert c.get("/static/js/main.js").status_code == 200  # the client kept the cookie
    assert "set-cookie" not in c.get("/static/js/main.js").headers
    assert "set-cookie" not in c.get("/?xtoken=1").headers  # only the entry address sets it
    assert bare(collection).get("/?xtoken=" + TOKEN).status_code == 401
    page = c.get("/")
    assert page.status_code == 200 and '<script type="module" src="/static/js/main.js">' in page.text
    csp = page.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp and "default-src 'none'" in csp
    assert page.headers["referrer-policy"] == "no-referrer" and page.headers["x-content-type-options"] == "nosniff"


@pytest.mark.parametrize(
    "host",
    ["evil.example:8000", "evil.example", "127.0.0.1:8001", "127.0.0.1.evil.example:8000", "", "localhost:80",
     "10.0.0.5:8000", "[::1]:9000", "127.0.0.1:8000@evil.example"],
)  # fmt: skip
def test_a_foreign_host_header_is_refused_dns_rebinding(collection: Path, host: str) -> None:
    c = bare(collection)
    r = c.get("/api/info", headers={"host": host, "x-birder-token": TOKEN})
    assert r.status_code == 400 and "own address" in r.json()["detail"]


@pytest.mark.parametrize("host", ["127.0.0.1:8000", "localhost:8000", "[::1]:8000", "LOCALHOST:8000"])
def test_the_loopback_names_are_accepted(collection: Path, host: str) -> None:
    c = bare(collection)
    assert c.get("/api/info", headers={"host": host, "x-birder-token": TOKEN}).status_code == 200


def test_host_rules_for_other_binds() -> None:
    wildcard = Guard(TOKEN, 8000, "0.0.0.0")
    assert wildcard.host_allowed("192.168.1.7:8000") and wildcard.host_allowed("[fe80::1]:8000")
    assert not wildcard.host_allowed("photos.lan:8000")  # a name can be rebound; an IP literal cannot
    named = Guard(TOKEN, 8000, "0.0.0.0", ("photos.lan",))
    assert named.host_allowed("photos.lan:8000") and not named.host_allowed("photos.lan:8001")
    one = Guard(TOKEN, 8000, "192.168.1.7")
    assert one.host_allowed("192.168.1.7:8000") and not one.host_allowed("192.168.1.8:8000")
    assert split_host("[::1]:8000") == ("::1", 8000) and split_host("a:b") == (None, None)


def test_changes_need_json_and_the_servers_own_origin(client: Client) -> None:
    c = client()
    body = {"set": "birds", "ids": [image_id(c, "photo01.jpg")], "label": "robin"}
    form = c.post(
        "/api/labels/assign", data={"set": "birds"}, headers={"content-type": "application/x-www-form-urlencoded"}
    )
    assert form.status_code == 415  # what a cross-site <form> can send
    plain = c.post("/api/labels/assign", content=b'{"set": "birds"}', headers={"content-type": "text/plain"})
    assert plain.status_code == 415
    foreign = c.post("/api/labels/assign", json=body, headers={"origin": "http://evil.example"})
    assert foreign.status_code == 403 and "own page" in foreign.json()["detail"]
    null = c.post("/api/labels/assign", json=body, headers={"origin": "null"})
    assert null.status_code == 403
    no_origin = TestClient(c.app, base_url=BASE)  # the cookie, but no Origin: what a browser never sends
    no_origin.cookies.set(f"birder_index_token_{PORT}", TOKEN)
    assert no_origin.post("/api/labels/assign", json=body).status_code == 403
    scripted = no_origin.post("/api/labels/assign", json=body, headers={"x-birder-token": TOKEN})
    assert scripted.status_code == 200  # a script with the token in a header needs no Origin
    assert c.post("/api/labels/assign", json=body).status_code == 200
    assert c.put("/api/labels/assign", json=body).status_code == 405


def test_no_get_changes_anything(client: Client) -> None:
    c = client()
    for path in ("/api/labels/assign", "/api/dedup/not-duplicates", "/api/dedup/apply", "/api/dedup/undo",
                 "/api/labels/remove", "/api/dedup/unmark", "/api/dedup/plan", "/api/dedup/run"):  # fmt: skip
        assert c.get(path).status_code == 405, path
    openapi = c.get("/api/openapi.json").json()
    changing = {p for p, ops in openapi["paths"].items() if set(ops) - {"get"}}
    assert all(set(openapi["paths"][p]) == {"post"} for p in changing)


def test_read_only_refuses_every_change(client: Client, collection: Path) -> None:
    c = client(read_only=True)
    assert c.get("/api/info").json()["read_only"] is True
    one = image_id(c, "photo01.jpg")
    for path, body in [
        ("/api/labels/assign", {"set": "s", "ids": [1], "label": "a"}),
        ("/api/labels/remove", {"set": "s", "ids": [1]}),
        ("/api/dedup/not-duplicates", {"ids": [1, 2]}),
        ("/api/dedup/unmark", {"ids": [1, 2]}),
        ("/api/dedup/apply", {"token": "x", "confirm": True}),
        ("/api/dedup/undo", {"plan": 1}),
    ]:
        r = c.post(path, json=body)
        assert r.status_code == 403 and "--read-only" in r.json()["detail"], path
    writable = client()
    assert writable.post("/api/labels/assign", json={"set": "s", "ids": [one], "label": "a"}).status_code == 200


def test_files_only_from_inside_the_photo_folder(client: Client, collection: Path, tmp_path: Path) -> None:
    secret = tmp_path / "secret.jpg"
    (collection / "photo03.jpg").rename(secret)  # a photo outside the collection...
    os.symlink(secret, collection / "photo03.jpg")  # ...reached through a symlink inside it (the build follows it)
    from birder_index.indexer import BuildOptions
    from birder_index.indexer import build_index

    build_index(collection, options=BuildOptions(workers=0))
    c = client()
    ok = c.get("/api/file", params={"path": "photo02.png"})
    assert ok.status_code == 200 and ok.content == (collection / "photo02.png").read_bytes()
    assert ok.headers["content-type"] == "image/png"
    for path in ["../secret.jpg", "sub/../../secret.jpg", "..", "/etc/passwd", str(secret), "C:/Windows/win.ini",
                 "..\\secret.jpg"]:  # fmt: skip
        r = c.get("/api/file", params={"path": path})
        assert r.status_code == 403 and "not served" in r.json()["detail"], path
    encoded = c.get("/api/file?path=%2e%2e/secret.jpg")
    assert encoded.status_code == 403
    double = c.get("/api/file?path=%252e%252e/secret.jpg")  # decoded once: a literal %2e%2e, no such photo
    assert double.status_code == 404
    assert c.get("/api/file", params={"path": ".birder-index/index.db"}).status_code == 404  # not a photo
    link = c.get("/api/lookup", params={"path": "photo03.jpg"}).json()
    for url in (f"/api/thumb/{link['id']}", f"/api/original/{link['id']}", "/api/file?path=photo03.jpg"):
        r = c.get(url)
        assert r.status_code == 403 and "symlink" in r.json()["detail"], url
    # a preview made of it while it was inside (as a cache from before the link) is not handed out either
    from birder_index.indexer.previews import PreviewCache

    cache = PreviewCache(collection / ".birder-index" / "thumbs-cache")
    cache.get(str(secret), os.stat(secret))
    refused = c.get("/api/thumbs", params={"ids": str(link["id"])})
    assert refused.content == b"" and refused.headers["x-missing"] == str(link["id"])
    assert c.get("/static/../index.db").status_code == 404
    assert c.get("/static/%2e%2e/%2e%2e/__init__.py").status_code == 404


def test_uploads_are_limited_and_must_be_images(collection: Path, client: Client) -> None:
    index = open_index(collection / ".birder-index")
    app = create_app(index, ServeOptions(max_upload_bytes=2000), token=TOKEN, port=PORT)
    c = TestClient(app, base_url=BASE, headers={"origin": BASE, "x-birder-token": TOKEN})
    big = (collection / "photo02.png").read_bytes()
    assert len(big) > 2000
    r = c.post("/api/uploads", content=big, headers={"content-type": "image/png"})
    assert r.status_code == 413 and "upload limit" in r.json()["detail"]
    r = c.post("/api/uploads", content=b"GIF89a not really", headers={"content-type": "image/gif"})
    assert r.status_code == 400 and r.json()["detail"].startswith("cannot read query image (uploaded):")
    r = c.post(
        "/api/uploads",
        content=(collection / "broken.jpg").read_bytes(),
        headers={"content-type": "image/jpeg", "x-file-name": "broken.jpg"},
    )
    assert r.status_code == 400 and "broken.jpg (uploaded)" in r.json()["detail"]
    assert c.post("/api/uploads", content=b"", headers={"content-type": "image/jpeg"}).status_code == 422
    assert c.post("/api/uploads", json={"a": 1}).status_code == 415  # JSON is not an image upload
    index.close()


def test_websockets_are_closed(collection: Path) -> None:
    from starlette.websockets import WebSocketDisconnect

    c = bare(collection)
    with (
        pytest.raises(WebSocketDisconnect) as closed,
        c.websocket_connect("/api/info", headers={"x-birder-token": TOKEN}),
    ):
        pass
    assert closed.value.code == 1008
