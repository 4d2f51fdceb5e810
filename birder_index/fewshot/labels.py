"""Label sets: imported from a folder-per-class tree (ImageFolder layout) or a CSV `path,label`, stored in the
index, and read back with their embeddings as a `LabelledSet`."""

from __future__ import annotations

import csv
import logging
import os
from dataclasses import dataclass
from dataclasses import field
from pathlib import Path

import numpy as np

from birder_index.db import queries as q
from birder_index.db.engine import session_scope
from birder_index.db.models import INDEXED
from birder_index.errors import BirderIndexError
from birder_index.fewshot.classifiers import fit_classes
from birder_index.indexer.index import Index
from birder_index.indexer.model import ModelSpec
from birder_index.indexer.scan import IMAGE_EXTENSIONS
from birder_index.progress import Progress
from birder_index.progress import silent

logger = logging.getLogger(__name__)


@dataclass
class LabelImport:
    set_name: str
    labelled: int = 0
    classes: int = 0
    unknown: list[str] = field(default_factory=list)  # paths not in the index (not indexed, or failed)
    empty_classes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class LabelledSet:
    ids: np.ndarray
    x: np.ndarray  # raw embeddings
    y: np.ndarray  # class indices
    classes: list[str]


def labelled_ids(index: Index, set_name: str, *, purpose: str = "lookup") -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(image ids, class indices, class names) of a label set of at least two classes; `purpose` names what needs
    them in the error."""
    with session_scope(index.engine) as s:
        ids, labels = q.labels_of(s, set_name)
    if not len(ids):
        raise BirderIndexError(f"label set {set_name!r} is empty or does not exist (`birder-index label list`)")
    y, classes = fit_classes(labels)
    if len(classes) < 2:
        raise BirderIndexError(f"label set {set_name!r} has one class ({classes[0]}); {purpose} needs at least 2")
    return ids, y, classes


def labelled_set(index: Index, set_name: str) -> LabelledSet:
    ids, y, classes = labelled_ids(index, set_name)
    return LabelledSet(ids, index.vectors(ids), y, classes)


def read_label_source(source: Path, root: Path | None) -> tuple[list[tuple[str, str]], list[str]]:
    """((path relative to the index root, label) pairs, empty classes) from a class-folder tree or a CSV."""
    if source.is_dir():
        return _from_folders(source, root)
    if source.suffix.lower() == ".csv":
        return _from_csv(source, root), []
    raise BirderIndexError(f"{source}: give a folder with one subfolder per class, or a CSV with path,label")


def _relative(path: Path, root: Path | None) -> str:
    if root is None:
        return str(path)
    try:
        return path.resolve().relative_to(root).as_posix()
    except ValueError:
        return str(path)


def _from_folders(source: Path, root: Path | None) -> tuple[list[tuple[str, str]], list[str]]:
    pairs, empty = [], []
    classes = sorted(p for p in source.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise BirderIndexError(f"{source} has no class subfolders (expected {source}/<class>/<image>)")
    for folder in classes:
        images = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())
        if not images:
            empty.append(folder.name)
        pairs += [(_relative(p, root), folder.name) for p in images]
    return pairs, empty


def _from_csv(source: Path, root: Path | None) -> list[tuple[str, str]]:
    try:
        with open(source, newline="") as f:
            reader = csv.reader(f)
            numbered = [(reader.line_num, r) for r in reader if r]  # line numbers of the file, as an editor shows
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise BirderIndexError(f"cannot read {source}: {e}") from None
    if numbered and [c.strip().lower() for c in numbered[0][1][:2]] == ["path", "label"]:
        numbered = numbered[1:]
    bad = [n for n, r in numbered if len(r) < 2 or not r[0].strip() or not r[1].strip()]
    if bad:
        raise BirderIndexError(f"{source}: line {bad[0]} is not `path,label`")
    base = source.parent
    out = []
    for path, label, *_ in (r for _, r in numbered):
        p = Path(path.strip())
        absolute = p if p.is_absolute() else (root / p if root and (root / p).exists() else base / p)
        out.append((_relative(absolute, root) if absolute.exists() else path.strip(), label.strip()))
    return out


def import_labels(index: Index, source: Path, set_name: str) -> LabelImport:
    """Label indexed photos; paths the index does not hold are reported, not fatal (unless all are)."""
    pairs, empty = read_label_source(source, index.root)
    report = LabelImport(set_name, empty_classes=empty)
    with session_scope(index.engine) as s:
        ids = q.ids_by_path(s, [p for p, _ in pairs])
        known = [(ids[p], label) for p, label in pairs if p in ids]
        report.unknown = [p for p, _ in pairs if p not in ids]
        if pairs and not known:
            raise BirderIndexError(f"none of the {len(pairs)} paths in {source} is in the index (first: {pairs[0][0]})")
        q.set_labels(s, set_name, [i for i, _ in known], [label for _, label in known])
    report.labelled, report.classes = len(known), len({label for _, label in known})
    return report


NAME_MAX = 200  # characters of a set or label name (the schema's column width)
UNKNOWN = "unknown"  # what lookup answers below its open-set threshold: not a class anyone can assign


def _check_name(what: str, name: str) -> str:
    clean = name.strip()
    if not clean or len(clean) > NAME_MAX or any(ord(c) < 32 for c in clean):
        raise BirderIndexError(f"a {what} is 1 to {NAME_MAX} printable characters, not {name!r}")
    return clean


def assign_label(index: Index, set_name: str, ids: list[int], label: str) -> int:
    """Label these images `label` in a set (created if new), replacing the label they had in it; returns how many.
    Every id must name an indexed image (one whose embedding the set's lookups and probes can read)."""
    set_name, label = _check_name("label set name", set_name), _check_name("label", label)
    if label == UNKNOWN:
        raise BirderIndexError(f"{UNKNOWN!r} is what lookup answers when no class fits; choose another label")
    wanted = sorted({int(i) for i in ids})
    if not wanted:
        raise BirderIndexError("no images to label")
    with session_scope(index.engine) as s:
        rows = q.image_rows(s, wanted)
        bad = [i for i in wanted if i not in rows or rows[i].status != INDEXED]
        if bad:
            why = "is not indexed" if bad[0] in rows else "is not in the index"
            raise BirderIndexError(f"image {bad[0]} {why}; only indexed images can be labelled")
        q.set_labels(s, set_name, wanted, [label] * len(wanted))
    return len(wanted)


def unassign_labels(index: Index, set_name: str, ids: list[int]) -> int:
    """Take images out of a set; returns how many labels went."""
    with session_scope(index.engine) as s:
        return q.remove_image_labels(s, set_name, sorted({int(i) for i in ids}))


def labels_of_images(index: Index, set_name: str, ids: list[int]) -> dict[int, str]:
    """image id -> its label in a set, for the images that have one."""
    with session_scope(index.engine) as s:
        return q.labels_for(s, set_name, ids)


def label_sets(index: Index) -> list[str]:
    """The names of the index's label sets."""
    with session_scope(index.engine) as s:
        return q.label_set_names(s)


def label_summary(index: Index, *, set_name: str | None = None) -> list[tuple[str, str, int]]:
    with session_scope(index.engine) as s:
        return q.label_summary(s, set_name=set_name)


def remove_labels(index: Index, set_name: str, *, label: str | None = None) -> int:
    with session_scope(index.engine) as s:
        n = q.remove_labels(s, set_name, label=label)
    if n == 0:
        raise BirderIndexError(f"no labels {'in class ' + repr(label) + ' of ' if label else 'in '}set {set_name!r}")
    return n


def label_folder_or_csv(
    source: Path,
    set_name: str,
    *,
    index_dir: Path | None = None,
    spec: ModelSpec | None = None,
    progress: Progress = silent,
) -> tuple[LabelImport, Path]:
    """Import labels, indexing on the way: the index is `index_dir`, else the one whose photo folder holds `source`
    (layout.find_index_dir); a class-folder tree inside that photo folder is indexed incrementally first; with no
    index anywhere, the tree itself becomes the indexed folder. Returns (report, index folder)."""
    from birder_index.errors import IndexNotFound
    from birder_index.indexer import BuildOptions
    from birder_index.indexer import build_index
    from birder_index.indexer import open_index
    from birder_index.indexer.layout import find_index_dir

    model = spec or ModelSpec()
    db = os.environ.get("BIRDER_INDEX_DB") or None  # metadata in another database: the folder must be named
    options = BuildOptions(db=db)
    if db and index_dir is None:
        raise BirderIndexError("with a BIRDER_INDEX_DB database, name the index folder with --index-dir")
    try:
        directory = Path(index_dir) if db and index_dir else find_index_dir(explicit=index_dir, paths=[source])
    except IndexNotFound:
        if not source.is_dir() or index_dir is not None:
            raise
        build_index(source, spec=model, options=options, progress=progress)
        directory = find_index_dir(paths=[source])
    with open_index(directory) as index:
        root = index.root
    if source.is_dir() and root is not None and source.resolve().is_relative_to(root):
        # incremental: only photos not yet indexed
        build_index(root, index_dir=directory, spec=model, options=options, progress=progress)
    with open_index(directory) as index:
        return import_labels(index, source, set_name), directory
