"""`birder-index models`, `classify` and `import`: published weights, the model's own head, outside vectors."""

from __future__ import annotations

import json
from pathlib import Path

import click

from birder_index.cli.app import _FILE
from birder_index.cli.app import cli
from birder_index.cli.app import device_options
from birder_index.cli.app import index_dir_option
from birder_index.cli.app import index_options
from birder_index.cli.app import json_option
from birder_index.cli.app import model_options
from birder_index.cli.app import store_dtype_option


@cli.command()
@click.argument("pattern", default="*")
def models(pattern: str) -> None:
    """List published weights that --model accepts (fnmatch PATTERN).

    \b
    Example:
        birder-index models 'vit_reg4*'
    """
    from birder_index.backbone import list_backbones
    from birder_index.backbone import pretrained

    for name in list_backbones(pattern):
        w = pretrained(name)
        click.echo(f"{name:<50} {w.arch:<22} {w.resolution:>4} px {w.size_mib:>7.1f} MiB")


@cli.command()
@click.argument("images", nargs=-1, required=True)
@click.option("-k", type=int, default=5, show_default=True, help="Classes per image.")
@model_options
@index_dir_option
@device_options
@json_option
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
) -> None:
    """Top-k classes of a fine-tuned model's own classifier head (default: the index's model).

    \b
    Example:
        birder-index classify bird.jpg --model vit_reg4_m16_rms_avg_i-jepa-imagenet21k
    """
    from birder_index.search import classify_images

    results = classify_images(
        list(images), k=k, model=model, weights=weights, size=size, index_dir=index_dir, device=device, exact=exact
    )
    for r in results:
        if as_json:
            click.echo(json.dumps(r))
        else:
            click.echo(f"{r['image']}\n" + "\n".join(f"  {p['probability']:.4f}  {p['class']}" for p in r["classes"]))


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
