"""`birder-index build`: scan, embed and index a folder, with a progress bar and a summary."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from birder_index.cli.app import cli
from birder_index.cli.app import db_option
from birder_index.cli.app import device_options
from birder_index.cli.app import index_dir_option
from birder_index.cli.app import index_options
from birder_index.cli.app import model_options
from birder_index.cli.app import quiet_option
from birder_index.cli.app import store_dtype_option
from birder_index.cli.progress import Reporter

if TYPE_CHECKING:
    from birder_index.indexer import BuildReport


@cli.command()
@click.argument("photos", type=click.Path(file_okay=False, path_type=Path))
@index_dir_option
@model_options
@device_options
@click.option("--batch-size", type=int, help="Images per batch (default 16 on CPU, 256 on GPU).")
@click.option(
    "--workers",
    type=int,
    help="Decode processes beside the model (default: on a CPU, threads between its batches; on a GPU, the cores).",
)
@click.option(
    "--compile/--no-compile",
    "compile_model",
    default=None,
    help="torch.compile the model: faster embedding after a compile step of seconds (default: on a CPU for 2,000 "
    "photos or more).",
)
@click.option("--retry-failed", is_flag=True, help="Try files that failed before again even if unchanged.")
@click.option("--wait", type=float, default=0.0, help="Seconds to wait for another build of the same index.")
@index_options
@store_dtype_option
@db_option
@click.option(
    "--ray",
    is_flag=False,
    flag_value="auto",
    default=None,
    metavar="[auto|ADDRESS]",
    help="Embed on a Ray cluster: `auto` (alone: --ray) finds or starts one, or a cluster's address; the photos must "
    "be on a filesystem every node mounts at the same path (docs/scale.md).",
)
@quiet_option
def build(
    photos: Path,
    index_dir: Path | None,
    model: str | None,
    weights: Path | None,
    size: int | None,
    device: str | None,
    exact: bool,
    batch_size: int | None,
    workers: int | None,
    compile_model: bool | None,
    retry_failed: bool,
    wait: float,
    max_index_memory: int | None,
    target_recall: float | None,
    store_dtype: str,
    db: str | None,
    ray: str | None,
    quiet: bool,
) -> None:
    """Embed and index a folder of photos, incrementally: only new and changed files are embedded.

    \b
    Example:
        birder-index build photos/ --model vit_reg4_m16_rms_avg_i-jepa-imagenet21k
        birder-index build photos/ --weights my_model.pt2
        birder-index build /shared/photos --ray head-node:6379 --db postgresql://me@dbhost/photos
    """
    from birder_index.indexer import BuildOptions
    from birder_index.indexer import ModelSpec
    from birder_index.indexer import build_index

    spec = ModelSpec(model=model, weights=weights, size=size, device=device, precision="float32" if exact else "auto")
    options = BuildOptions(
        batch_size=batch_size, workers=workers, exact=exact, retry_failed=retry_failed, wait=wait, db=db,
        max_index_memory=max_index_memory, target_recall=target_recall, compile=compile_model,
        store_dtype=store_dtype,
    )  # fmt: skip
    with Reporter(quiet=quiet) as progress:
        report = build_index(photos, index_dir=index_dir, spec=spec, options=options, progress=progress, ray=ray)
    click.echo(build_summary(report))
    if report.interrupted:
        sys.exit(130)


def build_summary(r: BuildReport) -> str:
    parts = [f"{r.indexed} indexed" + (f" ({r.reused} identical copies reused)" if r.reused else "")]
    parts += [f"{n} {what}" for n, what in ((r.moved, "moved"), (r.removed, "removed"), (r.failed, "failed")) if n]
    # A copied or touched file has a new mtime but, rehashed, the same content: unchanged too, and said so.
    retimed = f" ({r.touched} with a new timestamp, same content)" if r.touched else ""
    parts.append(f"{r.unchanged + r.touched} unchanged{retimed}")
    rate = f", {r.images_per_second:.1f} images/s" if r.indexed else ""
    compiling = f" (model compiled in {r.compile_seconds:.1f}s)" if r.compile_seconds else ""
    line = f"{', '.join(parts)} in {r.seconds:.1f}s{compiling}{rate}"
    if r.actors:
        line += f"\non Ray: {len(r.actors)} actors embedded " + ", ".join(str(n) for n in r.actors.values()) + " photos"
    if r.interrupted:
        line += f"\nInterrupted: {r.pending} photos left; run the same command again to resume."
    if r.failed:
        line += f"\nWarning: {r.failed} files could not be indexed; `birder-index info --failed` lists them."
    if r.scanned == 0:
        line += "\nWarning: no images found in the folder (JPEG, PNG, WebP, BMP, GIF, TIFF, HEIC, AVIF)."
    return line
