"""The `birder-index` command: each command parses, calls one public function, and prints.

Library errors (BirderIndexError) become `Error: ...` and exit code 1 here and nowhere else. torch and FAISS are
imported inside commands so that `--help` stays fast.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any
from typing import ClassVar
from typing import TypeVar

import click

from birder_index.errors import BirderIndexError

F = TypeVar("F", bound=Callable[..., Any])
_FILE = click.Path(exists=True, dir_okay=False, path_type=Path)


class Cli(click.Group):
    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except BirderIndexError as e:
            raise click.ClickException(str(e)) from None
        except KeyboardInterrupt:
            click.echo("\nInterrupted.", err=True)
            sys.exit(130)


# -- shared options -------------------------------------------------------------------------------------------------


def index_dir_option(f: F) -> F:
    return click.option(
        "--index-dir",
        type=click.Path(file_okay=False, path_type=Path),
        help="Index folder (default: $BIRDER_INDEX_DIR, else the nearest .birder-index/ here or above).",
    )(f)


def db_option(f: F) -> F:
    return click.option("--db", metavar="URL", help="SQLAlchemy URL of the metadata database (default: SQLite).")(f)


def model_options(f: F) -> F:
    f = click.option(
        "--size", type=click.IntRange(16, 4096), help="Input size in pixels (ViTs resize their position embedding)."
    )(f)
    f = click.option("--weights", type=_FILE, help="Local weights: .pt, .safetensors or .pt2.")(f)
    return click.option(
        "--model",
        metavar="NAME",
        help="Published weights name (`birder-index models`), or the architecture of --weights.",
    )(f)


def device_options(f: F) -> F:
    f = click.option(
        "--exact", is_flag=True, help="birder's exact preprocessing in float32 (slower; bit-faithful parity)."
    )(f)
    return click.option("--device", metavar="DEVICE", help="cpu, cuda, cuda:1, mps (default: CUDA when present).")(f)


class ByteSize(click.ParamType):
    """A size such as 512MB, 4GB or 4GiB (in bytes)."""

    name = "size"
    _UNITS: ClassVar[dict[str, int]] = {
        "": 1,
        "B": 1,
        "KB": 10**3,
        "MB": 10**6,
        "GB": 10**9,
        "TB": 10**12,
        "KIB": 2**10,
        "MIB": 2**20,
        "GIB": 2**30,
        "TIB": 2**40,
    }

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        if isinstance(value, int):
            return value
        text = str(value).strip().upper().replace(" ", "")
        number = text.rstrip("KMGTIB")
        unit = text[len(number) :]
        try:
            return int(float(number) * self._UNITS[unit])
        except (ValueError, KeyError):
            self.fail(f"{value!r} is not a size like 512MB or 4GB", param, ctx)


def index_options(f: F) -> F:
    f = click.option(
        "--target-recall", type=click.FloatRange(0, 1, min_open=True), help="recall@10 to tune to (default 0.95)."
    )(f)
    return click.option(
        "--max-index-memory", type=ByteSize(), help="RAM the FAISS index may take, e.g. 4GB (default 4GiB)."
    )(f)


def json_option(f: F) -> F:
    return click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")(f)


@click.group(cls=Cli)
@click.version_option(package_name="birder-index")
@click.option("-v", "--verbose", count=True, help="-v: progress details, -vv: debug timings.")
def cli(verbose: int) -> None:
    """Embedding-based image similarity search with birder's image encoders, FAISS and SQLite."""
    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")


# -- build ----------------------------------------------------------------------------------------------------------


@cli.command()
@click.argument("photos", type=click.Path(file_okay=False, path_type=Path))
@index_dir_option
@model_options
@device_options
@click.option("--batch-size", type=int, help="Images per batch (default 16 on CPU, 256 on GPU).")
@click.option("--workers", type=int, help="Decode processes (default from the device and cores).")
@click.option("--retry-failed", is_flag=True, help="Try files that failed before again even if unchanged.")
@click.option("--wait", type=float, default=0.0, help="Seconds to wait for another build of the same index.")
@index_options
@db_option
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
    retry_failed: bool,
    wait: float,
    max_index_memory: int | None,
    target_recall: float | None,
    db: str | None,
) -> None:
    """Embed and index a folder of photos, incrementally: only new and changed files are embedded.

    \b
    Example:
        birder-index build photos/ --model vit_reg4_m16_rms_avg_i-jepa-imagenet21k
        birder-index build photos/ --weights my_model.pt2
    """
    from birder_index.indexer import BuildOptions
    from birder_index.indexer import ModelSpec
    from birder_index.indexer import build_index

    spec = ModelSpec(model, weights, size, device, "float32" if exact else "auto")
    options = BuildOptions(
        batch_size,
        workers,
        exact,
        retry_failed,
        wait,
        db=db,
        max_index_memory=max_index_memory,
        target_recall=target_recall,
    )
    with _ProgressBar() as bar:
        report = build_index(photos, index_dir, spec, options, progress=bar)
    click.echo(_build_summary(report))
    if report.interrupted:
        sys.exit(130)


def _build_summary(r: Any) -> str:
    parts = [f"{r.indexed} indexed" + (f" ({r.reused} identical copies reused)" if r.reused else "")]
    parts += [f"{n} {what}" for n, what in ((r.moved, "moved"), (r.removed, "removed"), (r.failed, "failed")) if n]
    parts.append(f"{r.unchanged} unchanged")
    rate = f", {r.images_per_second:.1f} images/s" if r.indexed else ""
    line = f"{', '.join(parts)} in {r.seconds:.1f}s{rate}"
    if r.interrupted:
        line += f"\nInterrupted: {r.pending} photos left; run the same command again to resume."
    if r.failed:
        line += f"\nWarning: {r.failed} files could not be indexed; `birder-index info --failed` lists them."
    return line


class _ProgressBar:
    """tqdm bar fed by build_index's progress callback; silent when stderr is not a terminal."""

    def __enter__(self) -> _ProgressBar:
        self.bar: Any = None
        return self

    def __call__(self, event: str, value: int) -> None:
        from tqdm import tqdm

        if event == "total":
            self.bar = tqdm(total=value, unit="img", desc="embedding", disable=not sys.stderr.isatty())
        elif self.bar is not None:
            self.bar.update(value)

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.close()


# -- search ---------------------------------------------------------------------------------------------------------


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
            results = search_vector_file(index, vectors, k, nprobe, k_factor)
        else:
            results = search_images(index, list(queries), k, nprobe, k_factor, exact=exact, device=device)
    for r in results:
        click.echo(_json(r) if as_json else _table(r))


def _json(r: Any) -> str:
    hits = [{"path": h.path, "score": round(h.score, 6), "id": h.id} for h in r.hits]
    return json.dumps({"query": r.query, "results": hits})


def _table(r: Any) -> str:
    lines = [f"query: {r.query}", "  rank   score  path"]
    lines += [f"  {rank:>4}  {h.score:.4f}  {h.path}" for rank, h in enumerate(r.hits, 1)]
    return "\n".join(lines)


# -- info -----------------------------------------------------------------------------------------------------------


@cli.command()
@index_dir_option
@click.option("--failed", is_flag=True, help="List the files that could not be indexed, with the reason.")
@json_option
def info(index_dir: Path | None, failed: bool, as_json: bool) -> None:
    """Counts, model, FAISS index type and measured recall, sizes on disk.

    \b
    Example:
        birder-index info
        birder-index info --failed
    """
    from birder_index.indexer import describe
    from birder_index.indexer import failed_files
    from birder_index.indexer import open_index

    with open_index(index_dir) as index:
        data = describe(index)
        if failed:
            data["failed_files"] = [{"path": p, "error": e} for p, e in failed_files(index)]
    click.echo(json.dumps(data, indent=2) if as_json else _info_text(data))


def _info_text(d: dict[str, Any]) -> str:
    lines = [f"index:   {d['index_dir']}", f"photos:  {d['root'] or '(imported embeddings)'}"]
    lines.append(f"images:  {d['images']} ({d['indexed']} indexed, {d['pending']} pending, {d['failed']} failed)")
    if d["model"]:
        m = d["model"]
        size = "x".join(map(str, m["input_size"]))
        if m["arch"] == "imported":  # no network: only the dimension is known
            lines.append(f"model:   none ({m['embedding_dim']}-d imported embeddings)")
        else:
            lines.append(
                f"model:   {m['name']} ({m['arch']}, {m['embedding_dim']}-d, {size} px, sha256 {m['sha256'][:12]})"
            )
    if d["index"]:
        ix = d["index"]
        params = ", ".join(f"{k}={v}" for k, v in ix["params"].items())
        lines.append(f"faiss:   {ix['type']}, {ix['vectors']} vectors" + (f" ({params})" if params else ""))
        if ix["recall_at_10"] is not None:
            lines.append(
                f"         recall@10 {ix['recall_at_10']:.3f} at {ix['queries_per_second']:.0f} queries/s, "
                f"{ix['bytes_per_vector']:.0f} bytes/vector in RAM"
            )
    lines.append(f"disk:    {sum(d['disk_bytes'].values()) / 1e6:.1f} MB")
    for f in d.get("failed_files", []):
        lines.append(f"failed:  {f['path']}: {f['error']}")
    return "\n".join(lines)


# -- verify, reindex -------------------------------------------------------------------------------------------------


@cli.command()
@index_dir_option
@click.option("--deep", is_flag=True, help="Also rehash every file and compare with the recorded sha256.")
@click.option("--repair", is_flag=True, help="Fix what can be fixed (re-queue, drop orphans, rewrite FAISS).")
@json_option
def verify(index_dir: Path | None, deep: bool, repair: bool, as_json: bool) -> None:
    """Check that database, embedding store, FAISS index and files agree; exit code 1 if not.

    \b
    Example:
        birder-index verify --deep
        birder-index verify --repair
    """
    from birder_index.indexer import open_index
    from birder_index.indexer import verify_index

    with open_index(index_dir) as index:
        report = verify_index(index, deep=deep, repair=repair)
    click.echo(json.dumps({**report.__dict__, "healthy": report.healthy}) if as_json else _verify_text(report))
    if not report.healthy and not repair:
        sys.exit(1)


def _verify_text(r: Any) -> str:
    def listed(items: list[Any]) -> str:
        return f"{len(items)}" + (
            f" ({', '.join(map(str, items[:5]))}{', ...' if len(items) > 5 else ''})" if items else ""
        )

    lines = [
        f"images:          {r.indexed} indexed, {r.pending} pending, {r.failed} failed",
        f"embedding store: {r.store_rows} rows committed, {r.torn_tail_bytes} bytes of torn tail",
        f"bad store rows:  {listed(r.bad_vector_rows)}",
        f"colour store:    {r.colour_rows_lost} committed signatures missing",
        f"faiss:           {listed(r.faiss_missing)} missing, {listed(r.faiss_orphans)} orphans",
        f"files:           {listed(r.files_missing)} missing, {listed(r.files_changed)} changed",
    ]
    lines += [f"repaired:        {what}" for what in r.repaired]
    lines.append(
        "healthy" if r.healthy else ("repaired" if r.repaired else "NOT healthy: `birder-index verify --repair`")
    )
    return "\n".join(lines)


@cli.command()
@index_dir_option
@index_options
def reindex(index_dir: Path | None, max_index_memory: int | None, target_recall: float | None) -> None:
    """Choose, train and tune the FAISS index again from the stored embeddings (no image is re-embedded).

    \b
    Example:
        birder-index reindex
    """
    from birder_index.indexer import open_index
    from birder_index.indexer import reindex as reindex_

    with open_index(index_dir) as index:
        report = reindex_(index, max_index_memory, target_recall)
    click.echo(
        f"{report.factory} index of {report.vectors} vectors: trained in {report.train_seconds:.1f}s, filled in "
        f"{report.add_seconds:.1f}s, tuned in {report.tune_seconds:.1f}s; recall@10 {report.recall:.3f} at "
        f"{report.qps:.0f} queries/s"
    )


# -- dedup --------------------------------------------------------------------------------------------------------


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
    from birder_index.indexer import open_index
    from birder_index.search import dedup_actions
    from birder_index.search.calibrate import resolve_threshold
    from birder_index.search.dedup import COLOUR_MIN
    from birder_index.search.dedup import find_duplicates

    if undo is not None:
        click.echo(f"{dedup_actions.undo_plan(undo)} files moved back")
        return
    quiet = json_file == "-"
    colour_min = 0.0 if ignore_colour else COLOUR_MIN
    with open_index(index_dir) as index:
        t, cal, fresh = resolve_threshold(index, threshold, precision, recalibrate, device, colour_min)
        if cal is not None:
            click.echo(_calibration_text(cal, fresh), err=quiet)
        other = open_index(against) if against else None
        result = find_duplicates(index, t, keep, against=other, colour_min=colour_min)
        _dedup_outputs(result, json_file, csv_file, report, quiet)
        if move_to or delete:
            _dedup_act(result, index.root, move_to, delete, yes, plan)


def _calibration_text(cal: Any, fresh: bool) -> str:
    recall = ", ".join(f"{k} {v:.2f}" for k, v in cal.recall.items())
    origin = "calibrated" if fresh else "stored calibration:"
    sample = f"{cal.sample} photos, {cal.positives} variant pairs, {cal.negatives} pairs of photos"
    if cal.duplicates:
        sample += f", about {cal.duplicates} of them duplicates already in the collection"
    return (
        f"{origin} threshold {cal.threshold:.4f} for precision {cal.precision} "
        f"(estimated {cal.estimated_precision:.3f} on {sample})\nestimated recall per variant: {recall}"
    )


def _dedup_outputs(result: Any, json_file: str | None, csv_file: Path | None, report: Path | None, quiet: bool) -> None:
    import csv

    n_dups = sum(len(g.duplicates) for g in result.groups)
    n_exact = sum(m.kind == "exact" for g in result.groups for m in g.duplicates)
    click.echo(
        f"{len(result.groups)} groups, {n_dups} duplicates ({n_exact} exact, {n_dups - n_exact} near) "
        f"at threshold {result.threshold:.4f}",
        err=quiet,
    )
    if result.unsigned:
        click.echo(
            f"note: {result.unsigned} images have no colour signature (imported embeddings, or indexed before "
            "signatures existed): the colour check let their pairs through (a new index built from the photos "
            "has them)",
            err=True,
        )
    if json_file:
        text = json.dumps(result.to_json(), indent=None if quiet else 1)
        click.echo(text) if quiet else Path(json_file).write_text(text)
    if csv_file:
        with open(csv_file, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["group", "keeper", "path", "score", "kind"])
            for n, g in enumerate(result.groups, 1):
                w.writerows([n, g.keeper.path, m.path, f"{m.score:.6f}", m.kind] for m in g.duplicates)
    if report:
        from birder_index.search.report import write_report

        shown = write_report(result, report)
        click.echo(f"report: {report} ({shown} groups)", err=quiet)
    if not (json_file or csv_file or report):
        for g in result.groups[:20]:
            click.echo(f"keep {g.keeper.path}")
            click.echo("\n".join(f"  {m.score:.4f} {m.kind:<5} {m.path}" for m in g.duplicates))
        if len(result.groups) > 20:
            click.echo(f"... {len(result.groups) - 20} more groups: use --json, --csv or --report")


def _dedup_act(
    result: Any, root: Path | None, move_to: Path | None, delete: bool, yes: bool, plan: Path | None
) -> None:
    from birder_index.search import dedup_actions

    actions = dedup_actions.plan_actions(result, root, move_to, delete)
    plan_file = plan or dedup_actions.default_plan_path(move_to or Path.cwd())
    verb = "move" if move_to else "delete"
    if not yes:
        for a in actions[:50]:
            click.echo(f"would {verb} {a.src}" + (f" -> {a.dst}" if a.dst else ""))
        click.echo(f"dry run: {len(actions)} files would be {verb}d (keepers are never touched); add --yes to do it")
        return
    done = dedup_actions.apply_plan(actions, plan_file)
    undo = f"; undo with: birder-index dedup --undo {plan_file}" if move_to else ""
    click.echo(f"{done} files {verb}d; plan: {plan_file}{undo}")


# -- labels, lookup, probes ----------------------------------------------------------------------------------------


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
def label_import(source: Path, set_name: str, index_dir: Path | None, model: str | None, weights: Path | None,
                 size: int | None) -> None:  # fmt: skip
    """Label photos from a folder per class (SOURCE/<class>/<photo>) or a CSV `path,label`.

    Photos of a folder tree that are not indexed yet are indexed first.

    \b
    Example:
        birder-index label import species/ --set birds
        birder-index label import labels.csv --set birds
    """
    from birder_index.indexer import ModelSpec
    from birder_index.search.labels import label_folder_or_csv

    report, _ = label_folder_or_csv(source, set_name, index_dir, ModelSpec(model, weights, size))
    click.echo(f"{report.labelled} photos labelled in {report.classes} classes (set {report.set_name!r})")
    for name in report.empty_classes:
        click.echo(f"Warning: class {name!r} has no images", err=True)
    if report.unknown:
        shown = ", ".join(report.unknown[:3]) + (", ..." if len(report.unknown) > 3 else "")
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
    from birder_index.indexer import open_index
    from birder_index.search.labels import label_summary

    with open_index(index_dir) as index:
        rows = label_summary(index, set_name)
    if as_json:
        click.echo(json.dumps([{"set": s, "label": lab, "images": n} for s, lab, n in rows]))
    for s, lab, n in [] if as_json else rows:
        click.echo(f"{s}\t{lab}\t{n}")


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
    from birder_index.indexer import open_index
    from birder_index.search.labels import remove_labels

    with open_index(index_dir) as index:
        n = remove_labels(index, set_name, label_name)
    click.echo(f"{n} labels removed")


def lookup_options(f: F) -> F:
    f = click.option("--probe", "probe_file", type=_FILE, help="A probe file from `probe fit` (--method probe).")(f)
    f = click.option("--min-score", type=float, help="Open-set threshold (default: calibrated by leave-one-out).")(f)
    f = click.option("--neighbours", type=click.IntRange(1), default=10, show_default=True, help="k of the kNN vote.")(
        f
    )
    return click.option("--method", type=click.Choice(["knn", "prototype", "probe", "head"]), default="knn",
                        show_default=True, help="How to decide.")(f)  # fmt: skip


@cli.command()
@click.argument("queries", nargs=-1)
@set_option
@lookup_options
@click.option("-k", type=click.IntRange(1), default=5, show_default=True, help="Classes per query.")
@click.option("--all", "all_", is_flag=True, help="Label every unlabelled photo of the index (store and --csv).")
@click.option("--csv", "csv_file", type=click.Path(dir_okay=False, path_type=Path), help="With --all: CSV output.")
@index_dir_option
@click.option("--exact", is_flag=True, help="birder's exact preprocessing in float32 for query images.")
@json_option
def lookup(queries: tuple[str, ...], set_name: str, method: str, neighbours: int, min_score: float | None,
           probe_file: Path | None, k: int, all_: bool, csv_file: Path | None, index_dir: Path | None, exact: bool,
           as_json: bool) -> None:  # fmt: skip
    """Few-shot lookup: the labelled classes a photo most likely shows, or `unknown`.

    \b
    Example:
        birder-index lookup bird.jpg --set birds
        birder-index lookup --all --set birds --csv predictions.csv
    """
    from birder_index.indexer import open_index
    from birder_index.search.lookup import lookup as lookup_
    from birder_index.search.lookup import lookup_all

    if bool(queries) == all_:
        raise click.UsageError("give QUERY images or --all (not both)")
    with open_index(index_dir) as index:
        if all_:
            n, unknown, t = lookup_all(index, set_name, method, neighbours, min_score, csv_file, probe_file)
            click.echo(f"{n} photos predicted ({unknown} unknown below score {t:.4f}) with {method}")
            return
        results = lookup_(index, list(queries), set_name, method, k, neighbours, min_score, probe_file, exact)
    for r in results:
        click.echo(json.dumps(r.to_json()) if as_json else _lookup_text(r))


def _lookup_text(r: Any) -> str:
    head = f"{r.query}: " + ("unknown (best: " if r.unknown else "") + f"{r.predictions[0][0]}"
    head += f" {r.predictions[0][1]:.3f}" + (")" if r.unknown else "")
    lines = [head] + [f"  {score:.3f}  {lab:<24} e.g. {', '.join(sup[:2])}" for lab, score, sup in r.predictions]
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
    from birder_index.indexer import open_index
    from birder_index.search.probe_eval import fit_set_probe

    with open_index(index_dir) as index:
        p, seconds = fit_set_probe(index, set_name, balanced, lam)
    p.save(out)
    click.echo(f"probe of {len(p.classes)} classes fitted in {seconds:.2f}s (lambda {p.lam:g}); written to {out}")


@probe.command("eval")
@set_option
@click.option("--folds", type=click.IntRange(2), default=5, show_default=True)
@click.option("--balanced", is_flag=True, help="Weight classes inversely to their size.")
@click.option("--png", type=click.Path(dir_okay=False, path_type=Path), help="Write the confusion matrix picture.")
@index_dir_option
@json_option
def probe_eval(set_name: str, folds: int, balanced: bool, png: Path | None, index_dir: Path | None,
               as_json: bool) -> None:  # fmt: skip
    """Cross-validated accuracy, per-class recall, confusion matrix, and k-shot curves for kNN and prototypes.

    \b
    Example:
        birder-index probe eval --set birds --png confusion.png
    """
    from birder_index.indexer import open_index
    from birder_index.search.probe_eval import evaluate_set

    with open_index(index_dir) as index:
        ev = evaluate_set(index, set_name, folds, balanced, png)
    if as_json:
        click.echo(json.dumps({"top1": ev.top1, "top5": ev.top5, "per_class_recall": ev.per_class_recall,
                               "lambda": ev.lam, "kshot": ev.kshot, "confusion": ev.confusion.tolist()}))  # fmt: skip
        return
    click.echo(f"probe ({folds}-fold cross-validation, lambda {ev.lam:g}): top-1 {ev.top1:.3f}, top-5 {ev.top5:.3f}")
    click.echo("recall per class: " + ", ".join(f"{c} {r:.2f}" for c, r in ev.per_class_recall.items()))
    click.echo("k-shot accuracy (mean +- std over draws):  shots " + " ".join(f"{k:>13}" for k in ev.kshot["knn"]))
    for method, curve in ev.kshot.items():
        click.echo(f"  {method:<38}" + " ".join(f"{m:6.3f} +-{s:5.3f}" for m, s in curve.values()))
    if png:
        click.echo(f"confusion matrix: {png}")


# -- models, classify, import ---------------------------------------------------------------------------------------


@cli.command()
@click.argument("pattern", default="*")
def models(pattern: str) -> None:
    """List published weights that --model accepts (fnmatch PATTERN).

    \b
    Example:
        birder-index models 'vit_reg4*'
    """
    from birder_index.backbone.registry import list_backbones
    from birder_index.backbone.registry import pretrained

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

    results = classify_images(list(images), k, model, weights, size, index_dir, device, exact)
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
@click.option("--label-set", metavar="NAME", help="Store a `label` column as this label set.")
@click.option("--index-dir", type=click.Path(file_okay=False, path_type=Path), required=True, help="Index to extend.")
@index_options
def import_(
    embeddings: Path,
    paths: Path | None,
    model: str | None,
    weights: Path | None,
    label_set: str | None,
    index_dir: Path,
    max_index_memory: int | None,
    target_recall: float | None,
) -> None:
    """Index embeddings saved by birder-predict (--save-embeddings: parquet or CSV) or a .npy with --paths.

    \b
    Example:
        birder-index import results/vit_l16_mim_0_e400_224px_crop1.0_5000_embeddings.parquet --index-dir idx
        birder-index import vectors.npy --paths paths.txt --index-dir idx
    """
    from birder_index.indexer import import_embeddings

    report = import_embeddings(embeddings, index_dir, paths, model, weights, label_set, max_index_memory, target_recall)
    click.echo(
        f"{report.imported} embeddings imported ({report.dim}-d) in {report.seconds:.1f}s; index {report.factory}"
    )
