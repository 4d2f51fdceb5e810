"""`birder-index serve` as a user runs it: the address it prints opens the page, Ctrl-C stops it, and each
mistake (no web extra, a port in use) is one line."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from click.testing import CliRunner

from birder_index.cli import cli


def test_serve_prints_an_address_that_works_and_stops_on_ctrl_c(collection: Path) -> None:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "birder_index", "serve", "--port", "0", "--read-only"],
        cwd=collection.parent, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        assert first == f"serving the index in {collection / '.birder-index'} (read-only)\n"  # found below the cwd
        url = proc.stdout.readline().split()[1]
        assert url.startswith("http://127.0.0.1:") and "/?token=" in url
        with urllib.request.urlopen(url, timeout=30) as r:
            assert r.status == 200 and "birder-index" in r.read().decode()
        base = url.split("/?")[0]
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(base + "/api/info", timeout=30)
        assert refused.value.code == 401
    finally:
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130 and err.endswith("Interrupted.\n") and "Traceback" not in err, err  # as any command


def test_serve_without_the_web_extra_says_how_to_install_it(collection: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "fastapi" else real(name, *a))
    result = CliRunner().invoke(cli, ["serve", "--index-dir", str(collection / ".birder-index")])
    assert result.exit_code == 1
    assert result.output == 'Error: the web app needs FastAPI and uvicorn: pip install "birder-index[web]"\n'


def test_a_port_in_use_is_one_line_and_another_host_warns(collection: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("0.0.0.0", 0))  # in use on every address: neither run below can start
        taken.listen()
        port = taken.getsockname()[1]
        result = CliRunner().invoke(
            cli, ["serve", "--port", str(port), "--index-dir", str(collection / ".birder-index")]
        )
        assert result.exit_code == 1
        assert result.output.endswith(f"cannot listen on 127.0.0.1:{port}: address already in use: pass another --port "
                                      "(0 picks a free one)\n")  # fmt: skip
        result = CliRunner().invoke(cli, ["serve", "--host", "0.0.0.0", "--port", str(port), "--index-dir",
                                          str(collection / ".birder-index")])  # fmt: skip
    assert result.output.startswith("Warning: listening on 0.0.0.0: anyone who can reach this machine")
    assert "see the photos and change labels, marks and files (--read-only refuses)" in result.output


def test_serve_with_no_index_here_or_below_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(cli, ["serve"])
    assert (
        result.exit_code == 1 and result.output.startswith("Error: no index found") and result.output.count("\n") == 1
    )
