"""`birder-index search`: nearest neighbours of images, indexed paths or raw vectors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from birder_index.cli.app import _FILE
from birder_index.cli.app import cli
from birder_index.cli.app import device_options
from birder_index.cli.app import index_dir_option
from birder_index.cli.app import json_option


@cli.command()
@click.argument("queries", nargs=-1)
@click.option("-k", type=int, default=10, show_default=True, help="Neighbours per query.")
@click.option("--vectors", type=_FILE, help="Query raw vectors from a .npy file (n, d).")
@click.option("--nprobe", type=click.IntRange(1), help="IVF lists to visit (default: the tuned value).")
@click.option("--k-factor", type=click.IntRange(1), help="Re-rank k x this many candidates (default: tuned).")
@index_dir_option
@device_options
@json_option
def search(
    queries: tuple[str, ...],
    k: int,
    vectors: Path | None,
    nprobe: int | None,
    k_factor: int | None,
    index_dir: Path | None,
    device: str | None,
    exact: bool,
    as_json: bool,
) -> None:
    """Nearest neighbours of images, folders of images, or paths already in the index.

    \b
    Example:
        birder-index search photo.jpg -k 5
        birder-index search holiday/ --json
    """
    from birder_index.indexer import open_index
    from birder_index.search import search_images
    from birder_index.search import search_vector_file

    if not queries and vectors is None:
        raise click.UsageError("give QUERY images (or folders) or --vectors FILE.npy")
    with open_index(index_dir) as index:
        if vectors is not None:
            results = search_vector_file(index, vectors, k=k, nprobe=nprobe, k_factor=k_factor)
        else:
            results = search_images(
                index, list(queries), k=k, nprobe=nprobe, k_factor=k_factor, exact=exact, device=device
            )
    for r in results:
        click.echo(_json(r) if as_json else _table(r))


def _json(r: Any) -> str:
    hits = [{"path": h.path, "score": round(h.score, 6), "id": h.id} for h in r.hits]
    return json.dumps({"query": r.query, "results": hits})


def _table(r: Any) -> str:
    lines = [f"query: {r.query}", "  rank   score  path"]
    lines += [f"  {rank:>4}  {h.score:.4f}  {h.path}" for rank, h in enumerate(r.hits, 1)]
    return "\n".join(lines)
