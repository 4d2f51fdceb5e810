"""`birder-index label audit`, `outliers` and `representatives`: the curation signals (docs/curation.md)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import click

from birder_index.cli.app import F
from birder_index.cli.app import cli
from birder_index.cli.app import emit_json
from birder_index.cli.app import index_dir_option
from birder_index.cli.app import json_option
from birder_index.cli.app import open_for
from birder_index.cli.app import quiet_option
from birder_index.cli.fewshot import label
from birder_index.cli.fewshot import set_option
from birder_index.cli.progress import Reporter
from birder_index.output import printable

if TYPE_CHECKING:
    from birder_index.curation import Audit
    from birder_index.curation import Outliers
    from birder_index.curation import Representatives


def report_option(f: F) -> F:
    return click.option(
        "--report", type=click.Path(dir_okay=False, path_type=Path), help="Write a self-contained HTML page."
    )(f)


def copy_option(f: F) -> F:
    return click.option(
        "--copy-min", type=click.FloatRange(0, 1, min_open=True),
        help="Similarity at or above which two photos count as copies of one (default: dedup's stored "
        "calibration, else 0.99).",
    )(f)  # fmt: skip


def top_option(default: int, what: str) -> Callable[[F], F]:
    return click.option("--top", type=click.IntRange(1), default=default, show_default=True, help=f"{what} listed.")


@label.command("audit")
@set_option
@top_option(20, "Suspect photos")
@click.option("-k", type=click.IntRange(1), default=10, show_default=True, help="Labelled neighbours that vote.")
@copy_option
@index_dir_option
@json_option
@report_option
@quiet_option
def label_audit(set_name: str, top: int, k: int, copy_min: float | None, index_dir: Path | None, as_json: bool,
                report: Path | None, quiet: bool) -> None:  # fmt: skip
    """Labelled photos whose label their neighbours and the class prototypes outvote, most suspicious first.

    Each photo is judged without itself and without its own copies (same bytes, or near copies as dedup finds
    them).

    \b
    Example:
        birder-index label audit --set birds --top 20 --report audit.html
    """
    from birder_index.curation import audit_labels
    from birder_index.curation import write_audit_report

    with Reporter(quiet=quiet) as progress, open_for(index_dir, reporter=progress) as index:
        audit = audit_labels(index, set_name, k=k, top=top, copy_min=copy_min, progress=progress)
    if report is not None:
        write_audit_report(audit, report)
        click.echo(f"report: {printable(str(report))}", err=True)
    if as_json:
        emit_json(audit.to_json())
        return
    click.echo(audit_text(audit))


def audit_text(audit: Audit) -> str:
    lines = [
        f"set {printable(audit.set_name)!r}: {audit.flagged} of {audit.labelled} labelled photos outvoted "
        f"({len(audit.classes)} classes, k {audit.k}, copies at similarity >= {audit.copy_min:.4f} left out)"
    ]
    for s in audit.suspects:
        copies = f"; {s.copies} copies left out" if s.copies else ""
        lines.append(
            f"{s.confidence:.3f}  {printable(s.path)}: labelled {printable(s.label)}, looks like "
            f"{printable(s.looks_like)} (label {s.label_score:.3f}, kNN {s.knn:.2f}, "
            f"prototype {s.prototype:.2f}{copies})"
        )
        lines += [f"         {n.similarity:.4f}  {printable(n.path)} ({printable(n.label)})" for n in s.nearest]
    return "\n".join(lines)


@cli.command()
@top_option(20, "Photos")
@click.option("-k", type=click.IntRange(1), default=20, show_default=True, help="Neighbours averaged.")
@copy_option
@index_dir_option
@json_option
@report_option
@quiet_option
def outliers(top: int, k: int, copy_min: float | None, index_dir: Path | None, as_json: bool, report: Path | None,
             quiet: bool) -> None:  # fmt: skip
    """Photos far from everything else: lowest mean similarity to their k nearest (copies left out) first.

    \b
    Example:
        birder-index outliers --top 20 --report outliers.html
    """
    from birder_index.curation import find_outliers
    from birder_index.curation import write_outliers_report

    with Reporter(quiet=quiet) as progress, open_for(index_dir, reporter=progress) as index:
        result = find_outliers(index, top=top, k=k, copy_min=copy_min, progress=progress)
    if report is not None:
        write_outliers_report(result, report)
        click.echo(f"report: {printable(str(report))}", err=True)
    if as_json:
        emit_json(result.to_json())
        return
    click.echo(outliers_text(result))


def outliers_text(result: Outliers) -> str:
    if result.photos < 2:
        return f"{result.photos} photos: nothing to compare"
    lines = [
        f"{len(result.outliers)} most isolated of {result.photos} photos: mean similarity to their {result.k} "
        f"nearest (median photo {result.median:.4f})"
    ]
    for o in result.outliers:
        near = ", ".join(f"{printable(Path(p).name)} {s:.3f}" for _, p, s in o.nearest)
        lines.append(f"{o.score:.4f}  {printable(o.path)}  (nearest: {near})")
    return "\n".join(lines)


@cli.command()
@click.option("--label", "label_name", help="Only the photos with this label (in --set).")
@set_option
@top_option(10, "Representatives")
@copy_option
@index_dir_option
@json_option
@report_option
@quiet_option
def representatives(label_name: str | None, set_name: str, top: int, copy_min: float | None, index_dir: Path | None,
                    as_json: bool, report: Path | None, quiet: bool) -> None:  # fmt: skip
    """N typical photos that together cover the collection or a class: k-medoids, outliers skipped.

    \b
    Example:
        birder-index representatives --top 12 --report reps.html
        birder-index representatives --label sparrow --set birds --top 5
    """
    from birder_index.curation import find_representatives
    from birder_index.curation import write_representatives_report

    with Reporter(quiet=quiet) as progress, open_for(index_dir, reporter=progress) as index:
        result = find_representatives(
            index, top=top, label=label_name, set_name=set_name, copy_min=copy_min, progress=progress
        )
    if report is not None:
        write_representatives_report(result, report)
        click.echo(f"report: {printable(str(report))}", err=True)
    if as_json:
        emit_json(result.to_json())
        return
    click.echo(representatives_text(result))


def representatives_text(result: Representatives) -> str:
    lines = [
        f"{len(result.representatives)} representatives of {result.photos} photos ({result.skipped} outliers "
        f"skipped, {result.iterations} k-medoids rounds): photos each stands for, their mean similarity to it"
    ]
    lines += [f"{r.members:6d}  {r.mean_similarity:.4f}  {printable(r.path)}" for r in result.representatives]
    return "\n".join(lines)
