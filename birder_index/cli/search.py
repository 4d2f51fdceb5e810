"""`birder-index search`: nearest neighbours of images, indexed paths or raw vectors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import click

from birder_index.cli.app import _FILE
from birder_index.cli.app import cli
from birder_index.cli.app import device_options
from birder_index.cli.app import emit_json
from birder_index.cli.app import index_dir_option
from birder_index.cli.app import json_option
from birder_index.cli.app import jsonl_option
from birder_index.cli.app import open_for
from birder_index.cli.app import quiet_option
from birder_index.cli.progress import Reporter
from birder_index.output import printable

if TYPE_CHECKING:
    from birder_index.search import QueryResult


@cli.command()
@click.argument("queries", nargs=-1)
@click.option("-k", type=click.IntRange(1), default=10, show_default=True, help="Neighbours per query.")
@click.option("--vectors", type=_FILE, help="Query raw vectors from a .npy file (n, d).")
@click.option("--nprobe", type=click.IntRange(1), help="IVF lists to visit (default: the tuned value).")
@click.option("--k-factor", type=click.IntRange(1), help="Re-rank k x this many candidates (default: tuned).")
@index_dir_option
@device_options
@json_option
@jsonl_option
@quiet_option
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
    as_jsonl: bool,
    quiet: bool,
) -> None:
    """Nearest neighbours of images, folders of images, or paths already in the index.

    \b
    Example:
        birder-index search photos/bird.jpg -k 5
        birder-index search holiday/ --json
    """
    from birder_index.search import search_images
    from birder_index.search import search_vector_file

    if bool(queries) == (vectors is not None):
        raise click.UsageError("give QUERY images (or folders), or --vectors FILE.npy, not both")
    with Reporter(quiet=quiet) as progress, open_for(index_dir, paths=queries, reporter=progress) as index:
        if vectors is not None:
            results = search_vector_file(index, vectors, k=k, nprobe=nprobe, k_factor=k_factor)
        else:
            results = search_images(
                index, list(queries), k=k, nprobe=nprobe, k_factor=k_factor, exact=exact, device=device,
                progress=progress,
            )  # fmt: skip
    if as_json:
        emit_json([result_json(r) for r in results])
        return
    for r in results:
        click.echo(json.dumps(result_json(r)) if as_jsonl else result_text(r))


def result_json(r: QueryResult) -> dict[str, object]:
    return {"query": r.query, "results": [{"path": h.path, "score": round(h.score, 6), "id": h.id} for h in r.hits]}


def result_text(r: QueryResult) -> str:
    lines = [f"query: {printable(r.query)}", "  rank   score  path"]
    lines += [f"  {rank:>4}  {h.score:.4f}  {printable(h.path)}" for rank, h in enumerate(r.hits, 1)]
    return "\n".join(lines)
