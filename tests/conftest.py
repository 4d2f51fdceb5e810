from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import make_photos
from tests.helpers import save_vit
from tests.postgres import Server
from tests.postgres import running_server
from tests.postgres import server_binaries


@pytest.fixture(autouse=True)
def _isolated_env(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """No test reads the user's cache or index settings, and none may download: the Hugging Face hub's client is
    offline and its cache is a fresh folder (tests/backbone/test_download.py serves a local mirror)."""
    monkeypatch.setenv("BIRDER_INDEX_HOME", str(tmp_path_factory.mktemp("home")))
    monkeypatch.setenv("HF_HOME", str(tmp_path_factory.mktemp("hf")))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("BIRDER_INDEX_DIR", raising=False)
    monkeypatch.delenv("BIRDER_INDEX_DB", raising=False)


@pytest.fixture(scope="session")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("checkpoints")
    save_vit(folder, "vit_reg4_b16", "pt")
    save_vit(folder, "vit_reg4_m16_rms_avg", "pt")
    save_vit(folder, "vit_l16", "pt", num_classes=5, name="vit_l16_tiny_head")
    save_vit(folder, "vit_reg4_b16", "pt2")
    return folder


@pytest.fixture
def tiny_pt(checkpoints: Path) -> Path:
    return checkpoints / "vit_reg4_b16_tiny.pt"


@pytest.fixture
def tiny_pt2(checkpoints: Path) -> Path:
    return checkpoints / "vit_reg4_b16_tiny.pt2"


@pytest.fixture
def photos(tmp_path: Path) -> Path:
    folder = tmp_path / "photos"
    make_photos(folder)
    return folder


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[Server]:
    """One throwaway PostgreSQL server for the session (tests/postgres.py); skipped only where its binaries are
    missing (CI installs Debian's `postgresql`)."""
    bindir = server_binaries()
    if bindir is None:
        pytest.skip("PostgreSQL server binaries not found (apt-get install postgresql; .ci/run does)")
    with running_server(bindir) as server:
        yield server


@pytest.fixture
def postgres_url(postgres_server: Server) -> str:
    """A fresh, empty PostgreSQL database for one test."""
    return postgres_server.create_database()
