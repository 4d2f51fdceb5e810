"""`birder-index dedup`: exact and near duplicates, their outputs, and safe actions on them (`dedup undo`,
`dedup plans`)."""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import TYPE_CHECKING

import click

from birder_index.cli.app import cli
from birder_index.cli.app import device_options
from birder_index.cli.app import emit_json
from birder_index.cli.app import index_dir_option
from birder_index.cli.app import json_file_option
from birder_index.cli.app import json_option
from birder_index.cli.app import open_for
from birder_index.cli.app import quiet_option
from birder_index.cli.app import ray_option
from birder_index.cli.progress import Reporter
from birder_index.output import printable

if TYPE_CHECKING:
    from birder_index.dedup import Action
    from birder_index.dedup import Calibration
    from birder_index.dedup import DedupResult
    from birder_index.dedup import Member
    from birder_index.dedup import Outcome
    from birder_index.indexer import Index

SHOWN = 20  # groups, or skipped files, listed in the text output


@cli.group(invoke_without_command=True)
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
@json_option
@json_file_option
@click.option("--csv", "csv_file", type=click.Path(dir_okay=False, path_type=Path), help="Write the groups as CSV.")
@click.option("--report", type=click.Path(dir_okay=False, path_type=Path), help="Write a self-contained HTML page.")
@click.option(
    "--move-to", type=click.Path(file_okay=False, path_type=Path), help="Move duplicates into this folder (with --yes)."
)
@click.option("--delete", is_flag=True, help="Delete duplicates (with --yes).")
@click.option(
    "--yes", is_flag=True, help="Carry out --move-to or --delete; without it only the plan is checked and shown."
)
@click.option("--plan", type=click.Path(dir_okay=False, path_type=Path), help="Where to write the plan's CSV export.")
@click.option("--undo", metavar="PLAN", hidden=True, help="Same as `dedup undo PLAN`.")
@device_options
@ray_option("Run the range joins (finding the pairs)")
@quiet_option
@click.pass_context
def dedup(
    ctx: click.Context,
    index_dir: Path | None,
    threshold: float | None,
    precision: float | None,
    recalibrate: bool,
    ignore_colour: bool,
    thumbnail_min: float | None,
    keep: str,
    against: Path | None,
    as_json: bool,
    json_file: Path | None,
    csv_file: Path | None,
    report: Path | None,
    move_to: Path | None,
    delete: bool,
    yes: bool,
    plan: Path | None,
    undo: str | None,
    device: str | None,
    exact: bool,
    ray: str | None,
    quiet: bool,
) -> None:
    """Exact and near duplicates: self-calibrated threshold, groups without chaining, safe actions.

    A move or delete checks each file and its group's keeper against the index right before acting on it
    (docs/robustness.md); `dedup undo PLAN` moves files back, `dedup plans` lists what was done.

    \b
    Example:
        birder-index dedup --report dups.html
        birder-index dedup --move-to ../duplicates --yes
        birder-index dedup undo 1
        birder-index dedup --index-dir test/.birder-index --against train/.birder-index --json
        birder-index dedup --ray head-node:6379 --json
    """
    from birder_index.dedup import COLOUR_MIN
    from birder_index.dedup import check_action_options
    from birder_index.dedup import find_duplicates
    from birder_index.dedup import resolve_threshold
    from birder_index.distributed import require_ray
    from birder_index.indexer import open_index

    if ctx.invoked_subcommand is not None:
        return
    if undo is not None:
        ctx.invoke(dedup_undo, plan=undo, index_dir=index_dir, quiet=quiet)
        return
    check_action_options(move_to=move_to, delete=delete)  # before any work
    if ray is not None:
        require_ray()
    colour_min = 0.0 if ignore_colour else COLOUR_MIN
    with Reporter(quiet=quiet) as progress, ExitStack() as stack:
        index = stack.enter_context(open_for(index_dir, reporter=progress))
        other = stack.enter_context(open_index(against)) if against is not None else None
        t, cal, fresh = resolve_threshold(
            index,
            threshold=threshold,
            precision=precision,
            recalibrate=recalibrate,
            device=device,
            colour_min=colour_min,
            against=other,
            progress=progress,
        )
        progress.close()
        if cal is not None:
            click.echo(calibration_text(cal, fresh=fresh), err=as_json)
        bar = thumbnail_min if thumbnail_min is not None else (cal.thumbnail_min if cal is not None else None)
        result = find_duplicates(
            index, t, keep=keep, against=other, colour_min=colour_min, thumbnail_min=bar, progress=progress, ray=ray
        )
        document = _outputs(result, as_json=as_json, json_file=json_file, csv_file=csv_file, report=report)
        if move_to is not None or delete:
            document["plan"] = _act(index, result, move_to=move_to, yes=yes, plan=plan, against=other, as_json=as_json)
    if as_json:
        emit_json(document)


def calibration_text(cal: Calibration, *, fresh: bool) -> str:
    recall = ", ".join(f"{k} {v:.2f}" for k, v in cal.recall.items())
    origin = "calibrated" if fresh else "stored calibration:"
    sample = f"{cal.sample} photos, {cal.positives} variant pairs, {cal.negatives} pairs of photos"
    if cal.duplicates:
        sample += f", about {cal.duplicates} of them duplicates already in the collection"
    thumbs = f" and thumbnail bar {cal.thumbnail_min:.3f}" if cal.thumbnail_min else " (thumbnails off)"
    return (
        f"{origin} threshold {cal.threshold:.4f}{thumbs} for precision {cal.precision} "
        f"(estimated {cal.estimated_precision:.3f} on {sample})\nestimated recall per variant: {recall}"
        + (f"\n{cal.advice}" if cal.advice else "")
    )


def _outputs(
    result: DedupResult, *, as_json: bool, json_file: Path | None, csv_file: Path | None, report: Path | None
) -> dict[str, object]:
    """Write the files asked for and, unless --json, the text summary; returns the JSON document."""
    from birder_index.dedup import write_groups_csv
    from birder_index.dedup import write_groups_json
    from birder_index.dedup import write_report

    if json_file is not None:
        write_groups_json(result, json_file)
    if csv_file is not None:
        write_groups_csv(result, csv_file)
    if report is not None:
        shown = write_report(result, report)
        click.echo(f"report: {printable(str(report))} ({shown} groups with thumbnails)", err=as_json)
    for note in result.notes():
        click.echo(f"note: {note}", err=True)
    if not as_json:
        click.echo(summary_text(result))
        if not (json_file or csv_file or report):
            click.echo(groups_text(result))
    return result.to_json()


def summary_text(result: DedupResult) -> str:
    n_dups = sum(len(g.duplicates) for g in result.groups)
    n_exact = sum(m.kind == "exact" for g in result.groups for m in g.duplicates)
    bar = f" or thumbnail {result.thumbnail_min:.3f}" if result.thumbnail_min else ""
    return (
        f"{len(result.groups)} groups, {n_dups} duplicates ({n_exact} exact, {n_dups - n_exact} near) "
        f"at threshold {result.threshold:.4f}{bar}"
    )


def groups_text(result: DedupResult) -> str:
    lines = []
    for g in result.groups[:SHOWN]:
        lines.append(f"keep {printable(g.keeper.path)}")
        lines += [f"  {m.score:.4f} {m.kind:<5} {printable(m.path)}{_by_thumbnail(m, result)}" for m in g.duplicates]
    if len(result.groups) > SHOWN:
        lines.append(f"... {len(result.groups) - SHOWN} more groups: use --json, --csv or --report")
    return "\n".join(lines)


def _by_thumbnail(m: Member, result: DedupResult) -> str:
    """Say so when a near duplicate is below the threshold: its thumbnail found it."""
    if m.kind != "near" or m.score >= result.threshold or m.thumbnail is None:
        return ""
    return f"  (thumbnail {m.thumbnail:.4f}{', mirrored' if m.mirrored else ''})"


def _act(
    index: Index, result: DedupResult, *, move_to: Path | None, yes: bool, plan: Path | None, against: Index | None,
    as_json: bool,
) -> dict[str, object]:  # fmt: skip
    """Check and show the plan (dry run), or carry it out and bring the index up to date."""
    from birder_index.dedup import apply_plan
    from birder_index.dedup import check_plan
    from birder_index.dedup import plan_actions

    actions = plan_actions(index, result, move_to=move_to, delete=move_to is None, against=against)
    verb = "moved" if move_to is not None else "deleted"
    if not yes:
        checked = check_plan(index, actions)
        if not as_json:
            click.echo(dry_run_text(checked, verb=verb))
        return {"dry_run": True, **_plan_json(checked)}
    outcome = apply_plan(index, actions, move_to=move_to, csv_file=plan)
    if not as_json:
        click.echo(outcome_text(outcome, verb=verb))
    if outcome.done:
        _refresh(index, quiet=as_json)
    results: list[tuple[Action, str | None]] = [(a, None) for a in outcome.done]
    results += outcome.skipped
    return {"dry_run": False, "id": outcome.plan_id, **_plan_json(results)}


def _plan_json(checked: Sequence[tuple[Action, str | None]]) -> dict[str, object]:
    return {
        "actions": [
            {
                "action": a.kind,
                "path": str(a.path),
                "dst": str(a.dst) if a.dst else None,
                "keeper": str(a.keeper),
                "skipped": reason,
            }
            for a, reason in checked
        ]
    }


def dry_run_text(checked: list[tuple[Action, str | None]], *, verb: str) -> str:
    go = [a for a, reason in checked if reason is None]
    lines = [f"would be {verb}: {printable(str(a.path))}" + (f" -> {printable(str(a.dst))}" if a.dst else "")
             for a in go[:50]]  # fmt: skip
    lines += _skipped_lines([(a, r) for a, r in checked if r is not None], would=True)
    lines.append(
        f"dry run: {len(go)} files would be {verb}, {len(checked) - len(go)} skipped (each file and its keeper are "
        "checked again right before acting; keepers are never touched); add --yes to do it"
    )
    return "\n".join(lines)


def outcome_text(outcome: Outcome, *, verb: str) -> str:
    lines = _skipped_lines(outcome.skipped, would=False)
    undo = f"; undo with: birder-index dedup undo {outcome.plan_id}" if verb == "moved" and outcome.done else ""
    lines.append(f"{len(outcome.done)} files {verb}, {len(outcome.skipped)} skipped; plan {outcome.plan_id}{undo}")
    if outcome.csv is not None:
        lines.append(f"plan exported to {printable(str(outcome.csv))}")
    return "\n".join(lines)


def _skipped_lines(skipped: list[tuple[Action, str]], *, would: bool) -> list[str]:
    word = "would skip" if would else "skipped"
    lines = [f"{word} {printable(str(a.path))}: {printable(reason)}" for a, reason in skipped[:SHOWN]]
    if len(skipped) > SHOWN:
        lines.append(f"... {len(skipped) - SHOWN} more skipped (--json lists them all)")
    return lines


def _refresh(index: Index, *, quiet: bool) -> None:
    """Bring the index up to date after files moved (as a build would), in the same metadata database."""
    from birder_index.cli.build import build_summary
    from birder_index.dedup import refresh_index

    report = refresh_index(index)
    if report is not None:
        click.echo(f"index updated: {build_summary(report)}", err=quiet)


@dedup.command("undo")
@click.argument("plan")
@index_dir_option
@quiet_option
def dedup_undo(plan: str, index_dir: Path | None, quiet: bool) -> None:
    """Move back the files a recorded plan moved (PLAN: its number, or its CSV export), each only if it is still
    the file that was moved and its place is free. Deletions cannot be undone.

    \b
    Example:
        birder-index dedup plans
        birder-index dedup undo 3
    """
    from birder_index.dedup import undo

    with open_for(index_dir, paths=[plan] if not plan.isdigit() else []) as index:
        outcome = undo(index, plan)
        lines = _skipped_lines(outcome.skipped, would=False)
        gone = f"; {outcome.deletions_left} deleted files cannot be brought back" if outcome.deletions_left else ""
        click.echo("\n".join([*lines, f"{len(outcome.done)} files moved back, {len(outcome.skipped)} skipped{gone}"]))
        if outcome.done:
            _refresh(index, quiet=quiet)
    if outcome.skipped:
        raise click.ClickException(f"{len(outcome.skipped)} files could not be moved back (listed above)")


@dedup.command("plans")
@index_dir_option
@json_option
def dedup_plans(index_dir: Path | None, as_json: bool) -> None:
    """The dedup plans recorded in the index: what each did, and its number for `dedup undo`.

    \b
    Example:
        birder-index dedup plans
    """
    from birder_index.dedup import list_plans

    with open_for(index_dir) as index:
        plans = list_plans(index)
    if as_json:
        emit_json([{"id": p.id, "kind": p.kind, "created": p.created.isoformat(timespec="seconds") + "Z",
                    "move_to": p.move_to, "csv": p.csv, "states": p.states} for p in plans])  # fmt: skip
        return
    for p in plans:
        states = ", ".join(f"{n} {state}" for state, n in sorted(p.states.items()))
        where = f" to {printable(p.move_to)}" if p.move_to else ""
        click.echo(f"{p.id:>4}  {p.created:%Y-%m-%d %H:%M}  {p.kind}{where}: {states}")
    if not plans:
        click.echo("no dedup plans recorded in this index")
