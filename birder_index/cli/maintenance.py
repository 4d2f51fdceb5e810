"""`birder-index info`, `verify` and `reindex`: what an index holds, whether it is sound, rebuilding it."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING
from typing import Any

import click

from birder_index.cli.app import cli
from birder_index.cli.app import emit_json
from birder_index.cli.app import index_dir_option
from birder_index.cli.app import index_options
from birder_index.cli.app import json_option
from birder_index.cli.app import open_for
from birder_index.cli.app import quiet_option
from birder_index.cli.app import ray_option
from birder_index.cli.progress import Reporter
from birder_index.output import printable

if TYPE_CHECKING:
    from birder_index.indexer import VerifyReport


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

    with open_for(index_dir) as index:
        data = describe(index)
        if failed:
            data["failed_files"] = [{"path": p, "error": e} for p, e in failed_files(index)]
    if as_json:
        emit_json(data)
    else:
        click.echo(_info_text(data))


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
    if d.get("last_embedding"):
        lines.append(f"embed:   {_setting_text(d['last_embedding'])} (last build)")
    if d["index"]:
        ix = d["index"]
        params = ", ".join(f"{k}={v}" for k, v in ix["params"].items() if k != "timing")
        lines.append(f"faiss:   {ix['type']}, {ix['vectors']} vectors" + (f" ({params})" if params else ""))
        if ix["recall_at_10"] is not None:
            lines.append(
                f"         recall@10 {ix['recall_at_10']:.3f} at {ix['queries_per_second']:,.0f} queries/s"
                f"{_timing_text(ix['params'].get('timing'))}, {ix['bytes_per_vector']:.0f} bytes/vector in RAM"
            )
    lines.append(f"disk:    {sum(d['disk_bytes'].values()) / 1e6:.1f} MB")
    for f in d.get("failed_files", []):
        lines.append(f"failed:  {printable(f['path'])}: {printable(f['error'])}")
    return "\n".join(lines)


def _timing_text(timing: dict[str, Any] | None) -> str:
    """What the tuned rate means; indexes tuned before 0.2.0 timed one batch and recorded nothing."""
    if not timing:
        return ""
    busy = timing.get("busy_elsewhere")
    elsewhere = f"; other work kept {busy:.1f} of {timing['cpus']} cores busy" if busy is not None else ""
    return f" (batches of {timing['batch']:,} queries, {timing['threads']} threads{elsewhere})"


def _setting_text(e: dict[str, Any]) -> str:
    parts = [e["device"], e["dtype"]]
    if e["checked_cosine"] is not None:
        parts[-1] += f" (cosine {e['checked_cosine']:.6f} to float32 on its first photos)"
    if e["attention"]:
        parts.append(f"{e['attention']} attention" if e["attention"] == "explicit" else "SDPA attention")
    parts += ["compiled" if e["compiled"] else "eager", f"{e['decode']} decode"]
    return ", ".join(parts)


# -- verify, reindex -------------------------------------------------------------------------------------------------


@cli.command()
@index_dir_option
@click.option("--deep", is_flag=True, help="Also rehash every file, and embed a sample of photos again to compare.")
@click.option("--repair", is_flag=True, help="Fix what can be fixed (re-queue, drop orphans, rewrite FAISS).")
@json_option
@quiet_option
def verify(index_dir: Path | None, deep: bool, repair: bool, as_json: bool, quiet: bool) -> None:
    """Check that database, embedding store, side stores, FAISS index, row map and files agree; exit code 1 if not.

    \b
    Example:
        birder-index verify --deep
        birder-index verify --repair
    """
    from birder_index.indexer import verify_index

    with Reporter(quiet=quiet) as progress, open_for(index_dir, reporter=progress) as index:
        report = verify_index(index, deep=deep, repair=repair, progress=progress)
    if as_json:
        emit_json({**report.__dict__, "healthy": report.healthy})
    else:
        click.echo(verify_text(report))
    if not report.healthy and not repair:
        sys.exit(1)


def verify_text(r: VerifyReport) -> str:
    def listed(items: Sequence[object]) -> str:
        shown = ", ".join(printable(str(i)) for i in items[:5]) + (", ..." if len(items) > 5 else "")
        return f"{len(items)}" + (f" ({shown})" if items else "")

    faiss = f"{listed(r.faiss_missing)} missing, {listed(r.faiss_orphans)} orphans"
    if r.faiss_self_missed:
        faiss += f", {r.faiss_self_missed} of {r.faiss_self_sampled} sampled vectors not found"
    if r.faiss_unreadable:
        faiss = f"unreadable ({printable(r.faiss_unreadable)})"
    if r.database_problems:
        return f"database:        DAMAGED ({printable('; '.join(r.database_problems[:3]))})\nNOT healthy"
    lines = [
        f"images:          {r.indexed} indexed, {r.pending} pending, {r.failed} failed",
        f"embedding store: {r.store_rows} rows committed, {r.store_rows_lost} lost, {r.torn_tail_bytes} bytes of "
        "torn tail",
        f"bad store rows:  {listed(r.bad_vector_rows)} missing or shared, {listed(r.nonfinite_rows)} not finite",
        f"colour store:    {r.colour_rows_lost} committed signatures missing",
        f"thumbnail store: {r.thumb_rows_lost} committed thumbnails missing",
        f"faiss:           {faiss}",
        f"row map:         {r.row_map_wrong or 'agrees with the database'}",
        f"files:           {listed(r.files_missing)} missing, {listed(r.files_changed)} changed",
    ]
    if r.deep_sampled:
        lines.append(f"embedded again:  {listed(r.embeddings_wrong)} of {r.deep_sampled} sampled photos differ")
    if r.leftovers:
        lines.append(f"leftovers:       {listed(r.leftovers)}")
    lines += [f"repaired:        {what}" for what in r.repaired]
    lines.append(
        "healthy" if r.healthy else ("repaired" if r.repaired else "NOT healthy: `birder-index verify --repair`")
    )
    return "\n".join(lines)


@cli.command()
@index_dir_option
@index_options
@click.option("--tune-only", is_flag=True, help="Keep the trained index; tune nprobe and k_factor again.")
@ray_option("Fill a new IVF index")
def reindex(
    index_dir: Path | None, max_index_memory: int | None, target_recall: float | None, tune_only: bool, ray: str | None
) -> None:
    """Choose, train and tune the FAISS index again from the stored embeddings (no image is re-embedded).

    \b
    Examples:
        birder-index reindex
        birder-index reindex --tune-only --target-recall 0.97
        birder-index reindex --ray head-node:6379
    """
    from birder_index.indexer import reindex as reindex_

    with open_for(index_dir) as index:
        report = reindex_(
            index, max_index_memory=max_index_memory, target_recall=target_recall, tune_only=tune_only, ray=ray
        )
    click.echo(
        f"{report.factory} index of {report.vectors} vectors: trained in {report.train_seconds:.1f}s, filled in "
        f"{report.add_seconds:.1f}s, tuned in {report.tune_seconds:.1f}s; "
        + (  # an index of one vector has no neighbours to measure
            f"recall@10 {report.recall:.3f} at {report.qps:.0f} queries/s"
            if report.recall is not None and report.qps is not None
            else "recall not measured (fewer than 2 vectors)"
        )
    )


@cli.command()
@json_option
def doctor(as_json: bool) -> None:
    """What this installation runs on: torch and its device, the FAISS build, optional parts, caches; exit code 1
    when something is wrong (no FAISS, two FAISS builds, a CPU FAISS beside CUDA).

    \b
    Example:
        birder-index doctor
    """
    from birder_index.indexer import runtime

    r = runtime()
    if as_json:
        emit_json({**r.__dict__, "problems": r.problems})
    else:
        faiss = (
            f"{r.faiss} from {', '.join(r.faiss_distributions) or 'an unknown distribution'}" if r.faiss else "missing"
        )
        gpus = f", {r.faiss_gpus} GPU(s)" if r.faiss_gpus else " (CPU only)"
        extras = ", ".join(f"{name} {'yes' if ok else 'no'}" for name, ok in r.optional.items())
        lines = [
            f"torch:    {r.torch}, device {r.device}{', bf16 native' if r.bf16 else ''}",
            f"faiss:    {faiss}{gpus if r.faiss else ''}",
            f"extras:   {extras}",
            f"cache:    {r.cache}" + (" (Hugging Face hub offline)" if r.hf_offline else ""),
        ]
        lines += [f"problem:  {p}" for p in r.problems]
        click.echo("\n".join(lines))
    if r.problems:
        sys.exit(1)
