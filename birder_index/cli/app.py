"""The command group and the options its commands share."""

from __future__ import annotations

import errno
import json
import logging
import os
import sys
from collections.abc import Callable
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING
from typing import Any
from typing import ClassVar
from typing import TypeVar

import click

from birder_index.cli.progress import Reporter
from birder_index.errors import BirderIndexError
from birder_index.output import printable

if TYPE_CHECKING:
    from birder_index.indexer import Index

F = TypeVar("F", bound=Callable[..., Any])
_FILE = click.Path(exists=True, dir_okay=False, path_type=Path)


# What to install when an optional part is missing (pyproject.toml's extras).
MISSING = {
    "faiss": 'FAISS is not installed: pip install "birder-index[cpu]" (or "birder-index[gpu]" on a CUDA machine)',
    "pyarrow": 'this needs pyarrow: pip install "birder-index[parquet]"',
    "matplotlib": 'plots need matplotlib: pip install "birder-index[plots]"',
    "ray": 'the Ray build needs Ray: pip install "birder-index[ray]"',
    "psycopg": 'PostgreSQL needs psycopg: pip install "birder-index[postgres]"',
    "fastapi": 'the web app needs FastAPI and uvicorn: pip install "birder-index[web]"',
    "uvicorn": 'the web app needs FastAPI and uvicorn: pip install "birder-index[web]"',
    "birder": 'models beyond the three native ViT families need birder: pip install "birder-index[birder]"',
}


class Cli(click.Group):
    def invoke(self, ctx: click.Context) -> Any:
        try:
            result = super().invoke(ctx)
            sys.stdout.flush()  # a full disk or a closed pipe shows here, not as a traceback at exit
            return result
        except BirderIndexError as e:
            raise click.ClickException(str(e)) from None
        except ModuleNotFoundError as e:
            root = (e.name or "").split(".")[0]
            if root not in MISSING:
                raise
            raise click.ClickException(MISSING[root]) from None
        except KeyboardInterrupt:
            click.echo("\nInterrupted.", err=True)
            sys.exit(130)
        except BrokenPipeError:  # `birder-index search ... | head`: the reader has what it wanted
            _silence_stdout()
            sys.exit(141)
        except OSError as e:
            if e.errno not in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EIO):
                raise
            # A full disk: a build or a move left nothing half done (docs/robustness.md); say so in one line.
            where = f" ({e.filename})" if e.filename else ""
            _silence_stdout()
            raise click.ClickException(f"cannot write: {(e.strerror or str(e)).lower()}{where}") from None


def _silence_stdout() -> None:
    """Point stdout at /dev/null so that the interpreter's last flush raises nothing."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass
    finally:
        os.close(devnull)


# -- shared options -------------------------------------------------------------------------------------------------


def index_dir_option(f: F) -> F:
    return click.option(
        "--index-dir",
        type=click.Path(file_okay=False, path_type=Path),
        help="Index folder (default: $BIRDER_INDEX_DIR, else the nearest .birder-index/ here or above).",
    )(f)


def db_option(f: F) -> F:
    return click.option(
        "--db",
        metavar="URL",
        envvar="BIRDER_INDEX_DB",
        show_envvar=True,
        help="SQLAlchemy URL of the metadata database, e.g. postgresql://user@host/photos (default: SQLite in the "
        "index folder).",
    )(f)


def ray_option(what: str) -> Callable[[F], F]:
    """`--ray [auto|ADDRESS]`: `what` runs on a Ray cluster (docs/scale.md)."""
    return click.option(
        "--ray",
        is_flag=False,
        flag_value="auto",
        default=None,
        metavar="[auto|ADDRESS]",
        help=f"{what} on a Ray cluster: `auto` (alone: --ray) finds or starts one, or a cluster's address; the index "
        "folder must be on a filesystem every node mounts at the same path (docs/scale.md).",
    )


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


def store_dtype_option(f: F) -> F:
    return click.option(
        "--store-dtype",
        type=click.Choice(["float16", "float32"]),
        default="float16",
        show_default=True,
        help="How a new index stores embeddings: float32 for models whose values exceed float16's range.",
    )(f)


def json_option(f: F) -> F:
    """`--json`: exactly one JSON document on stdout (docs/cli.md#json)."""
    return click.option("--json", "as_json", is_flag=True, help="Print one JSON document on stdout instead of text.")(f)


def jsonl_option(f: F) -> F:
    """`--jsonl`: one JSON object per line, for commands whose results stream (one per query)."""
    return click.option("--jsonl", "as_jsonl", is_flag=True, help="Print one JSON object per line (per query).")(f)


def json_file_option(f: F) -> F:
    """`--json-file FILE`: the same document written to a file, wherever a command offers files."""
    return click.option(
        "--json-file", type=click.Path(dir_okay=False, path_type=Path), help="Also write the JSON document to FILE."
    )(f)


def quiet_option(f: F) -> F:
    return click.option("-q", "--quiet", is_flag=True, help="Say nothing on stderr about progress.")(f)


def emit_json(document: object) -> None:
    """The one JSON convention: one document, on one line, on stdout."""
    click.echo(json.dumps(document))


def open_for(index_dir: Path | None, *, paths: Sequence[str | Path] = (), reporter: Reporter | None = None) -> Index:
    """The index a command works on (indexer.layout.find_index_dir's order), saying which one on stderr when it is
    not the one the current folder or a parent holds."""
    from birder_index.indexer import found_here
    from birder_index.indexer import open_index

    index = open_index(index_dir, paths=paths)
    if index_dir is None and not os.environ.get("BIRDER_INDEX_DIR") and not found_here(index.dir):
        click.echo(f"using the index in {printable(str(index.dir))}", err=True)
    return index


@click.group(cls=Cli)
@click.version_option(package_name="birder-index")
@click.option("-v", "--verbose", count=True, help="-v: progress details, -vv: debug timings.")
def cli(verbose: int) -> None:
    """Embedding-based image similarity search with birder's image encoders, FAISS and SQLite."""
    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
