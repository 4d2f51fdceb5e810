"""`birder-index models`, `classify` and `import`: published weights, the model's own head, outside vectors."""

from __future__ import annotations

from pathlib import Path

import click

from birder_index.cli.app import _FILE
from birder_index.cli.app import cli
from birder_index.cli.app import device_options
from birder_index.cli.app import emit_json
from birder_index.cli.app import index_dir_option
from birder_index.cli.app import index_options
from birder_index.cli.app import json_option
from birder_index.cli.app import model_options
from birder_index.cli.app import quiet_option
from birder_index.cli.app import store_dtype_option
from birder_index.cli.progress import Reporter
from birder_index.output import printable


@cli.command()
@click.argument("pattern", default="*")
@click.option("--long", "long_", is_flag=True, help="Also each file's URL and sha256.")
@json_option
def models(pattern: str, long_: bool, as_json: bool) -> None:
    """Published weights that --model accepts (fnmatch PATTERN): architecture, input size, file size, classifier
    head, whether it is downloaded already; `*` marks the default model of a first build.

    \b
    Example:
        birder-index models 'vit_reg4*' --long
    """
    from birder_index.backbone import model_catalogue

    rows = model_catalogue(pattern)
    if not rows:
        raise click.ClickException(f"no published weights match {pattern!r}; `birder-index models` lists them all")
    if as_json:
        emit_json([row.__dict__ for row in rows])
        return
    click.echo(f"  {'name':<50} {'architecture':<22} {'size':>6} {'MiB':>7}  {'head':>6}  downloaded  loaded by")
    for r in rows:
        head = "?" if r.head_classes is None else (str(r.head_classes) if r.head_classes else "-")
        mark, by = ("*" if r.default else " "), ("birder-index" if r.path == "native" else "birder")
        click.echo(f"{mark} {r.name:<50} {r.arch:<22} {r.resolution:>4}px {r.size_mib:>7.1f}  {head:>6}  "
                   f"{'yes' if r.downloaded else 'no':<10}  {by}")  # fmt: skip
        if long_:
            click.echo(f"    {r.url}\n    sha256 {r.sha256}")
    click.echo("* the default model of a first build without --model or --weights; head: classes of a fine-tuned head")
    if not any(r.path == "birder" for r in rows):
        click.echo(
            'birder\'s other published models are listed too with the birder extra: pip install "birder-index[birder]"'
        )


@cli.command()
@click.argument("images", nargs=-1, required=True)
@click.option("-k", type=click.IntRange(1), default=5, show_default=True, help="Classes per image.")
@model_options
@index_dir_option
@device_options
@json_option
@quiet_option
def classify(
    images: tuple[str, ...],
    k: int,
    model: str | None,
    weights: Path | None,
    size: int | None,
    index_dir: Path | None,
    device: str | None,
    exact: bool,
    as_json: bool,
    quiet: bool,
) -> None:
    """Top-k classes of a fine-tuned model's own classifier head (default: the index's model).

    \b
    Example:
        birder-index classify bird.jpg --model vit_reg4_m16_rms_avg_i-jepa-imagenet21k
    """
    from birder_index.search import classify_images

    with Reporter(quiet=quiet) as progress:
        results = classify_images(
            list(images), k=k, model=model, weights=weights, size=size, index_dir=index_dir, device=device,
            exact=exact, progress=progress,
        )  # fmt: skip
    if as_json:
        emit_json(results)
        return
    for r in results:
        click.echo(
            f"{printable(r['image'])}\n" + "\n".join(f"  {p['probability']:.4f}  {p['class']}" for p in r["classes"])
        )


@cli.command(name="import")
@click.argument("embeddings", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--paths", type=_FILE, help="For .npy: a text file with one path per row.")
@click.option("--model", metavar="NAME", help="Published weights that made them (lets `search` embed images).")
@click.option("--weights", type=_FILE, help="Local weights that made them.")
@click.option("--set", "--label-set", "label_set", metavar="NAME", help="Store a `label` column as this label set.")
@click.option("--index-dir", type=click.Path(file_okay=False, path_type=Path), required=True, help="Index to extend.")
@index_options
@store_dtype_option
def import_(
    embeddings: Path,
    paths: Path | None,
    model: str | None,
    weights: Path | None,
    label_set: str | None,
    index_dir: Path,
    max_index_memory: int | None,
    target_recall: float | None,
    store_dtype: str,
) -> None:
    """Index embeddings saved by birder-predict (--save-embeddings: parquet or CSV) or a .npy with --paths.

    \b
    Example:
        birder-index import results/vit_l16_mim_0_e400_224px_crop1.0_5000_embeddings.parquet --index-dir idx
        birder-index import vectors.npy --paths paths.txt --index-dir idx
    """
    from birder_index.indexer import import_embeddings

    report = import_embeddings(
        embeddings,
        index_dir,
        paths_file=paths,
        model=model,
        weights=weights,
        label_set=label_set,
        max_index_memory=max_index_memory,
        target_recall=target_recall,
        store_dtype=store_dtype,
    )
    click.echo(
        f"{report.imported} embeddings imported ({report.dim}-d) in {report.seconds:.1f}s; index {report.factory}"
    )
