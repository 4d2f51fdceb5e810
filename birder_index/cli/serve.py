"""`birder-index serve`: the local web app over an index."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from birder_index.cli.app import cli
from birder_index.cli.app import index_dir_option
from birder_index.output import printable

if TYPE_CHECKING:
    from birder_index.web import Address

WEB_EXTRA = 'the web app needs FastAPI and uvicorn: pip install "birder-index[web]"'


@cli.command()
@index_dir_option
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on (another than loopback "
              "lets anyone who can reach this machine and has the token see the photos).")  # fmt: skip
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True, help="0: any free port.")
@click.option("--read-only", is_flag=True, help="Refuse every change: labels, marks, moves and deletions.")
@click.option("--open", "open_browser", is_flag=True, help="Open the page in the default browser.")
@click.option("--allow-host", multiple=True, metavar="NAME",
              help="Another name the page may be reached by (a LAN name, a reverse proxy); repeatable.")  # fmt: skip
def serve(index_dir: Path | None, host: str, port: int, read_only: bool, open_browser: bool,
          allow_host: tuple[str, ...]) -> None:  # fmt: skip
    """A local web app: search by photo, browse, review duplicates, label photos, fit probes.

    One process serves the page and its JSON API (under /api) over the index; the model is loaded on the first
    search by an uploaded photo. The printed address carries a token that every request needs.

    \b
    Example:
        birder-index serve
        birder-index serve --index-dir photos/.birder-index --port 8080 --read-only --open
    """
    import importlib.util

    if importlib.util.find_spec("fastapi") is None or importlib.util.find_spec("uvicorn") is None:
        raise click.ClickException(WEB_EXTRA)
    from birder_index.indexer import open_index
    from birder_index.web import ServeOptions
    from birder_index.web import serve as run

    options = ServeOptions(host=host, port=port, read_only=read_only, allowed_hosts=allow_host)
    if not options.loopback:
        click.echo(
            f"Warning: listening on {host}: anyone who can reach this machine there and has the address below can "
            "see the photos"
            + ("" if read_only else " and change labels, marks and files (--read-only refuses)")
            + "; the connection is not encrypted",
            err=True,
        )
    with open_index(index_dir, below=True) as index:

        def ready(address: Address) -> None:
            mode = " (read-only)" if read_only else ""
            click.echo(f"serving the index in {printable(str(index.dir))}{mode}")
            click.echo(f"open {address.url}")
            click.echo("Ctrl-C to stop", err=True)
            if open_browser:
                import webbrowser

                webbrowser.open(address.url)

        run(index, options, ready=ready)
