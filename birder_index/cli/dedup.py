"""`birder-index dedup`: exact and near duplicates, their outputs and the actions on them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from birder_index.cli.app import cli
from birder_index.cli.app import device_options
from birder_index.cli.app import index_dir_option


@cli.command()
@index_dir_option
@click.option("--threshold", type=click.FloatRange(0, 1, min_open=True), help="Cosine similarity; default: calibrated.")
@click.option(
    "--precision",
    type=click.FloatRange(0, 1, min_open=True, max_open=True),
    help="Calibrate the threshold to this precision (default 0.99).",
)
@click.option("--recalibrate", is_flag=True, help="Calibrate again instead of reusing the stored threshold.")
@click.option(
    "--ignore-colour",
    "--ignore-color",
    "ignore_colour",
    is_flag=True,
    help="Near duplicates may differ in colour (greyscale or recoloured copies).",
)
@click.option(
    "--thumbnail",
    "thumbnail_min",
    type=click.FloatRange(0, 1),
    help="Also a duplicate: 16 x 16 thumbnails correlating at least this much (0: off); default: calibrated, "
    "or 0.98 with --threshold.",
)
@click.option(
    "--keep",
    type=click.Choice(["largest", "smallest", "oldest", "newest", "first"]),
    default="largest",
    show_default=True,
    help="Which image of a group is kept.",
)
@click.option(
    "--against",
    type=click.Path(file_okay=False, path_type=Path),
    help="Only pairs across this and another index (same model); keepers come from the other.",
)
@click.option("--json", "json_file", metavar="FILE", help="Write the groups as JSON (- for stdout).")
@click.option(
    "--csv", "csv_file", type=click.Path(dir_okay=False, path_type=Path), help="Write the groups as CSV rows."
)
@click.option("--report", type=click.Path(dir_okay=False, path_type=Path), help="Write a self-contained HTML page.")
@click.option(
    "--move-to", type=click.Path(file_okay=False, path_type=Path), help="Move duplicates into this folder (with --yes)."
)
@click.option("--delete", is_flag=True, help="Delete duplicates (with --yes).")
@click.option("--yes", is_flag=True, help="Carry out --move-to or --delete; without it only the plan is printed.")
@click.option("--plan", type=click.Path(dir_okay=False, path_type=Path), help="Where to write the plan CSV.")
@click.option(
    "--undo", type=click.Path(exists=True, dir_okay=False, path_type=Path), help="Move back the files a plan moved."
)
@device_options
def dedup(
    index_dir: Path | None,
    threshold: float | None,
    precision: float | None,
    recalibrate: bool,
    ignore_colour: bool,
    thumbnail_min: float | None,
    keep: str,
    against: Path | None,
    json_file: str | None,
    csv_file: Path | None,
    report: Path | None,
    move_to: Path | None,
    delete: bool,
    yes: bool,
    plan: Path | None,
    undo: Path | None,
    device: str | None,
    exact: bool,
) -> None:
    """Exact and near duplicates: self-calibrated threshold, groups without chaining, safe actions.

    \b
    Example:
        birder-index dedup --report dups.html
        birder-index dedup --move-to ../duplicates --yes
        birder-index dedup --index-dir test/.birder-index --against train/.birder-index --json -
    """
    from birder_index.dedup import COLOUR_MIN
    from birder_index.dedup import THUMBNAIL_MIN
    from birder_index.dedup import find_duplicates
    from birder_index.dedup import resolve_threshold
    from birder_index.dedup import undo_plan
    from birder_index.indexer import open_index

    if undo is not None:
        click.echo(f"{undo_plan(undo)} files moved back; `birder-index build` indexes them again")
        return
    quiet = json_file == "-"
    colour_min = 0.0 if ignore_colour else COLOUR_MIN
    with open_index(index_dir) as index:
        t, cal, fresh = resolve_threshold(
            index,
            threshold=threshold,
            precision=precision,
            recalibrate=recalibrate,
            device=device,
            colour_min=colour_min,
        )
        if cal is not None:
            click.echo(_calibration_text(cal, fresh), err=quiet)
        if thumbnail_min is None:
            thumbnail_min = cal.thumbnail_min if cal is not None else THUMBNAIL_MIN
        other = open_index(against) if against else None
        result = find_duplicates(index, t, keep=keep, against=other, colour_min=colour_min, thumbnail_min=thumbnail_min)
        _dedup_outputs(result, json_file, csv_file, report, quiet)
        done = _dedup_act(result, index.root, move_to, delete, yes, plan) if move_to or delete else 0
        root, folder = index.root, index.dir
        db = index.engine.url.render_as_string(hide_password=False)  # the same metadata database, wherever it is
    if done and root is not None:  # drop the moved or deleted files from the index, as a build would
        from birder_index.cli.build import build_summary
        from birder_index.indexer import BuildOptions
        from birder_index.indexer import build_index

        click.echo(f"index updated: {build_summary(build_index(root, index_dir=folder, options=BuildOptions(db=db)))}")


def _calibration_text(cal: Any, fresh: bool) -> str:
    recall = ", ".join(f"{k} {v:.2f}" for k, v in cal.recall.items())
    origin = "calibrated" if fresh else "stored calibration:"
    sample = f"{cal.sample} photos, {cal.positives} variant pairs, {cal.negatives} pairs of photos"
    if cal.duplicates:
        sample += f", about {cal.duplicates} of them duplicates already in the collection"
    thumbs = f" and thumbnail bar {cal.thumbnail_min:.3f}" if cal.thumbnail_min else " (thumbnails off)"
    return (
        f"{origin} threshold {cal.threshold:.4f}{thumbs} for precision {cal.precision} "
        f"(estimated {cal.estimated_precision:.3f} on {sample})\nestimated recall per variant: {recall}"
    )


def _dedup_outputs(result: Any, json_file: str | None, csv_file: Path | None, report: Path | None, quiet: bool) -> None:
    import csv

    n_dups = sum(len(g.duplicates) for g in result.groups)
    n_exact = sum(m.kind == "exact" for g in result.groups for m in g.duplicates)
    click.echo(
        f"{len(result.groups)} groups, {n_dups} duplicates ({n_exact} exact, {n_dups - n_exact} near) "
        f"at threshold {result.threshold:.4f}"
        + (f" or thumbnail {result.thumbnail_min:.3f}" if result.thumbnail_min else ""),
        err=quiet,
    )
    if result.unsigned:
        click.echo(
            f"note: {result.unsigned} images have no colour signature (imported embeddings, or indexed before "
            "signatures existed): the colour check let their pairs through (a new index built from the photos "
            "has them)",
            err=True,
        )
    if result.no_thumbnail:
        click.echo(
            f"note: {result.no_thumbnail} images have no thumbnail (imported embeddings, indexed before thumbnails "
            "existed, or lost from the store): only their embeddings were compared (a new index built from the photos "
            "has them)",
            err=True,
        )
    if json_file:
        text = json.dumps(result.to_json(), indent=None if quiet else 1)
        click.echo(text) if quiet else Path(json_file).write_text(text)
    if csv_file:
        with open(csv_file, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["group", "keeper", "path", "score", "kind", "thumbnail", "mirrored"])
            for n, g in enumerate(result.groups, 1):
                w.writerows([n, g.keeper.path, m.path, f"{m.score:.6f}", m.kind, _thumb(m), "yes" if m.mirrored else ""]
                            for m in g.duplicates)  # fmt: skip
    if report:
        from birder_index.dedup import write_report

        shown = write_report(result, report)
        click.echo(f"report: {report} ({shown} groups)", err=quiet)
    if not (json_file or csv_file or report):
        for g in result.groups[:20]:
            click.echo(f"keep {g.keeper.path}")
            click.echo(
                "\n".join(f"  {m.score:.4f} {m.kind:<5} {m.path}{_by_thumbnail(m, result)}" for m in g.duplicates)
            )
        if len(result.groups) > 20:
            click.echo(f"... {len(result.groups) - 20} more groups: use --json, --csv or --report")


def _thumb(m: Any) -> str:
    return "" if m.thumbnail is None else f"{m.thumbnail:.4f}"


def _by_thumbnail(m: Any, result: Any) -> str:
    """Say so when a near duplicate is below the threshold: its thumbnail found it."""
    if m.kind != "near" or m.score >= result.threshold or m.thumbnail is None:
        return ""
    return f"  (thumbnail {m.thumbnail:.4f}{', mirrored' if m.mirrored else ''})"


def _dedup_act(result: Any, root: Path | None, move_to: Path | None, delete: bool, yes: bool, plan: Path | None) -> int:
    """Print the plan (dry run) or apply it; returns the number of files moved or deleted."""
    from birder_index.dedup import apply_plan
    from birder_index.dedup import default_plan_path
    from birder_index.dedup import plan_actions

    actions = plan_actions(result, root, move_to, delete)
    plan_file = plan or default_plan_path(move_to or Path.cwd())
    verb = "move" if move_to else "delete"
    if not yes:
        for a in actions[:50]:
            click.echo(f"would {verb} {a.src}" + (f" -> {a.dst}" if a.dst else ""))
        click.echo(f"dry run: {len(actions)} files would be {verb}d (keepers are never touched); add --yes to do it")
        return 0
    done = apply_plan(actions, plan_file)
    undo = f"; undo with: birder-index dedup --undo {plan_file}" if move_to else ""
    click.echo(f"{done} files {verb}d; plan: {plan_file}{undo}")
    return done
