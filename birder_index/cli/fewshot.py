"""`birder-index label`, `lookup` and `probe`: labelled photos, few-shot lookup and linear probes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import click

from birder_index.cli.app import _FILE
from birder_index.cli.app import F
from birder_index.cli.app import cli
from birder_index.cli.app import emit_json
from birder_index.cli.app import index_dir_option
from birder_index.cli.app import json_option
from birder_index.cli.app import jsonl_option
from birder_index.cli.app import model_options
from birder_index.cli.app import open_for
from birder_index.cli.app import quiet_option
from birder_index.cli.progress import Reporter
from birder_index.output import printable

if TYPE_CHECKING:
    from birder_index.fewshot import Lookup
    from birder_index.fewshot import ProbeEval


def set_option(f: F) -> F:
    return click.option("--set", "set_name", default="labels", show_default=True, help="Label set name.")(f)


@cli.group()
def label() -> None:
    """Label sets: classes of photos, for lookup and probes."""


@label.command("import")
@click.argument("source", type=click.Path(exists=True, path_type=Path))
@set_option
@index_dir_option
@model_options
@quiet_option
def label_import(source: Path, set_name: str, index_dir: Path | None, model: str | None, weights: Path | None,
                 size: int | None, quiet: bool) -> None:  # fmt: skip
    """Label photos from a folder per class (SOURCE/<class>/<photo>) or a CSV `path,label`.

    Photos of a folder tree that are not indexed yet are indexed first; the index is the one whose photo folder
    holds SOURCE (or --index-dir).

    \b
    Example:
        birder-index label import photos/species/ --set birds
        birder-index label import labels.csv --set birds
    """
    from birder_index.fewshot import label_folder_or_csv
    from birder_index.indexer import ModelSpec
    from birder_index.indexer import found_here

    spec = ModelSpec(model=model, weights=weights, size=size)
    with Reporter(quiet=quiet) as progress:
        report, folder = label_folder_or_csv(source, set_name, index_dir=index_dir, spec=spec, progress=progress)
    if index_dir is None and not found_here(folder):
        click.echo(f"using the index in {printable(str(folder))}", err=True)
    click.echo(f"{report.labelled} photos labelled in {report.classes} classes (set {report.set_name!r})")
    for name in report.empty_classes:
        click.echo(f"Warning: class {printable(name)!r} has no images", err=True)
    if report.unknown:
        shown = ", ".join(printable(p) for p in report.unknown[:3]) + (", ..." if len(report.unknown) > 3 else "")
        click.echo(f"Warning: {len(report.unknown)} paths are not in the index: {shown}", err=True)


@label.command("list")
@click.option("--set", "set_name", help="Only this set.")
@index_dir_option
@json_option
def label_list(set_name: str | None, index_dir: Path | None, as_json: bool) -> None:
    """Label sets with the number of photos per class.

    \b
    Example:
        birder-index label list --set birds
    """
    from birder_index.fewshot import label_summary

    with open_for(index_dir) as index:
        rows = label_summary(index, set_name=set_name)
    if as_json:
        emit_json([{"set": s, "label": lab, "images": n} for s, lab, n in rows])
        return
    for s, lab, n in rows:
        click.echo(f"{printable(s)}\t{printable(lab)}\t{n}")


@label.command("remove")
@click.option("--set", "set_name", required=True, help="Label set name.")
@click.option("--label", "label_name", help="Only this class (default: the whole set).")
@index_dir_option
def label_remove(set_name: str, label_name: str | None, index_dir: Path | None) -> None:
    """Remove a label set, or one class of it.

    \b
    Example:
        birder-index label remove --set birds --label sparrow
    """
    from birder_index.fewshot import remove_labels

    with open_for(index_dir) as index:
        n = remove_labels(index, set_name, label=label_name)
    click.echo(f"{n} labels removed")


def lookup_options(f: F) -> F:
    f = click.option("--probe", "probe_file", type=_FILE, help="A probe file from `probe fit` (--method probe).")(f)
    f = click.option("--min-score", type=float, help="Open-set threshold (default: calibrated by leave-one-out).")(f)
    f = click.option(
        "--neighbours", "--neighbors", "neighbours", type=click.IntRange(1), default=10, show_default=True,
        help="Labelled photos that vote in --method knn.",
    )(f)  # fmt: skip
    return click.option("--method", type=click.Choice(["knn", "prototype", "probe", "head"]), default="knn",
                        show_default=True, help="How to decide.")(f)  # fmt: skip


@cli.command()
@click.argument("queries", nargs=-1)
@set_option
@lookup_options
@click.option(
    "-k", type=click.IntRange(1), default=5, show_default=True,
    help="Classes listed per query (classes, where search's -k counts photos).",
)  # fmt: skip
@click.option("--all", "all_", is_flag=True, help="Label every unlabelled photo of the index (store and --csv).")
@click.option("--csv", "csv_file", type=click.Path(dir_okay=False, path_type=Path), help="With --all: CSV output.")
@index_dir_option
@click.option("--exact", is_flag=True, help="birder's exact preprocessing in float32 for query images.")
@json_option
@jsonl_option
@quiet_option
def lookup(queries: tuple[str, ...], set_name: str, method: str, neighbours: int, min_score: float | None,
           probe_file: Path | None, k: int, all_: bool, csv_file: Path | None, index_dir: Path | None, exact: bool,
           as_json: bool, as_jsonl: bool, quiet: bool) -> None:  # fmt: skip
    """Few-shot lookup: the labelled classes a photo most likely shows, or `unknown`.

    \b
    Example:
        birder-index lookup photos/bird.jpg --set birds
        birder-index lookup --all --set birds --csv predictions.csv
    """
    from birder_index.fewshot import lookup as lookup_
    from birder_index.fewshot import lookup_all

    if bool(queries) == all_:
        raise click.UsageError("give QUERY images or --all (not both)")
    with Reporter(quiet=quiet) as progress, open_for(index_dir, paths=queries, reporter=progress) as index:
        if all_:
            n, unknown, t = lookup_all(
                index, set_name, method=method, neighbours=neighbours, min_score=min_score, csv_file=csv_file,
                probe_file=probe_file,
            )  # fmt: skip
            click.echo(f"{n} photos predicted ({unknown} unknown below score {t:.4f}) with {method}")
            return
        results = lookup_(
            index, list(queries), set_name, method=method, k=k, neighbours=neighbours, min_score=min_score,
            probe_file=probe_file, exact=exact, progress=progress,
        )  # fmt: skip
    if as_json:
        emit_json([r.to_json() for r in results])
        return
    for r in results:
        click.echo(json.dumps(r.to_json()) if as_jsonl else lookup_text(r))


def lookup_text(r: Lookup) -> str:
    head = f"{printable(r.query)}: " + ("unknown (best: " if r.unknown else "") + printable(r.predictions[0][0])
    head += f" {r.predictions[0][1]:.3f}" + (")" if r.unknown else "")
    lines = [head] + [
        f"  {score:.3f}  {printable(lab):<24} e.g. {', '.join(printable(s) for s in sup[:2])}"
        for lab, score, sup in r.predictions
    ]
    return "\n".join(lines)


@cli.group()
def probe() -> None:
    """Linear probes: logistic regression on the frozen embeddings of a label set."""


@probe.command("fit")
@set_option
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True, help="Probe file to write.")
@click.option("--balanced", is_flag=True, help="Weight classes inversely to their size.")
@click.option("--lambda", "lam", type=float, help="L2 strength (default: chosen by cross-validation).")
@index_dir_option
def probe_fit(set_name: str, out: Path, balanced: bool, lam: float | None, index_dir: Path | None) -> None:
    """Fit a probe on a label set and save it (safetensors; bound to the index's model).

    \b
    Example:
        birder-index probe fit --set birds --out birds.probe
    """
    from birder_index.fewshot import fit_set_probe

    with open_for(index_dir) as index:
        p, seconds = fit_set_probe(index, set_name, balanced=balanced, lam=lam)
    p.save(out)
    click.echo(f"probe of {len(p.classes)} classes fitted in {seconds:.2f}s (lambda {p.lam:g}); written to {out}")


@probe.command("eval")
@set_option
@click.option(
    "--folds", type=click.IntRange(2), default=5, show_default=True,
    help="Cross-validation folds (at most the number of photos of the smallest class).",
)  # fmt: skip
@click.option("--balanced", is_flag=True, help="Weight classes inversely to their size.")
@click.option(
    "--plot", "plot_dir", type=click.Path(file_okay=False, path_type=Path),
    help="Write the confusion matrix and the k-shot curves as PNG and SVG into this folder (needs matplotlib).",
)  # fmt: skip
@index_dir_option
@json_option
def probe_eval(set_name: str, folds: int, balanced: bool, plot_dir: Path | None, index_dir: Path | None,
               as_json: bool) -> None:  # fmt: skip
    """Cross-validated accuracy, per-class recall, confusion matrix, and k-shot curves for kNN and prototypes.

    \b
    Example:
        birder-index probe eval --set birds --plot figures/
    """
    from birder_index.fewshot import evaluate_set

    with open_for(index_dir) as index:
        ev = evaluate_set(index, set_name, folds=folds, balanced=balanced, plot_dir=plot_dir)
    if as_json:
        emit_json({"top1": ev.top1, "top5": ev.top5 if len(ev.per_class_recall) > 5 else None,
                   "per_class_recall": ev.per_class_recall, "lambda": ev.lam, "kshot": ev.kshot,
                   "confusion": ev.confusion.tolist()})  # fmt: skip
        return
    click.echo(evaluation_text(ev, folds=folds))


def evaluation_text(ev: ProbeEval, *, folds: int) -> str:
    top5 = f", top-5 {ev.top5:.3f}" if len(ev.per_class_recall) > 5 else ""  # meaningless with 5 classes or fewer
    lines = [f"probe ({folds}-fold cross-validation, lambda {ev.lam:g}): top-1 {ev.top1:.3f}{top5}"]
    lines.append("recall per class: " + ", ".join(f"{printable(c)} {r:.2f}" for c, r in ev.per_class_recall.items()))
    lines.append("k-shot accuracy (mean +- std over draws):  shots " + " ".join(f"{k:>13}" for k in ev.kshot["knn"]))
    for method, curve in ev.kshot.items():
        lines.append(f"  {method:<38}" + " ".join(f"{m:6.3f} +-{s:5.3f}" for m, s in curve.values()))
    lines += [f"figure: {printable(str(path))}" for path in ev.figures]
    return "\n".join(lines)
