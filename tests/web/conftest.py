"""A small collection with duplicates, built with a tiny model, and clients of the web app over it."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image

from birder_index.indexer import BuildOptions
from birder_index.indexer import ModelSpec
from birder_index.indexer import build_index
from birder_index.indexer import open_index
from tests.helpers import make_photos

try:  # the web extra is part of `dev`: without it these tests fail, they are not skipped
    from fastapi.testclient import TestClient
except ImportError as e:  # pragma: no cover - a broken install must fail loudly
    raise ImportError(f'the web tests need the web extra: pip install -e ".[dev]" ({e})') from None

from birder_index.web import ServeOptions
from birder_index.web import create_app

TOKEN = "t" * 32
PORT = 8000
BASE = f"http://127.0.0.1:{PORT}"


def make_collection(folder: Path) -> Path:
    """12 distinct photos (a subfolder, a corrupt file), an identical copy of one, a half-size copy of another."""
    make_photos(folder, n=12)
    shutil.copy(folder / "photo00.jpg", folder / "copy_of_00.jpg")
    with Image.open(folder / "photo01.jpg") as img:
        img.resize((img.width // 2, img.height // 2)).save(folder / "small_01.jpg", quality=95)
    return folder


@pytest.fixture
def collection(tmp_path: Path, tiny_pt: Path) -> Path:
    """The photo folder, built (its index in photos/.birder-index)."""
    photos = make_collection(tmp_path / "photos")
    build_index(photos, spec=ModelSpec(weights=tiny_pt), options=BuildOptions(workers=0))
    return photos


Client = Callable[..., TestClient]


@pytest.fixture
def client(collection: Path) -> Iterator[Client]:
    """`client(read_only=False)`: a TestClient of the app as the page talks to it (the cookie, same-origin
    Origin on changes)."""
    opened = []

    def make(*, read_only: bool = False) -> TestClient:
        index = open_index(collection / ".birder-index")
        opened.append(index)
        app = create_app(index, ServeOptions(read_only=read_only), token=TOKEN, port=PORT)
        c = TestClient(app, base_url=BASE, headers={"origin": BASE})
        c.cookies.set(f"birder_index_token_{PORT}", TOKEN)
        return c

    yield make
    for index in opened:
        index.close()


def image_id(c: TestClient, path: str) -> int:
    r = c.get("/api/lookup", params={"path": path})
    assert r.status_code == 200, r.text
    return int(r.json()["id"])
