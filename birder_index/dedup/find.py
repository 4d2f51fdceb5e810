"""Exact and near duplicates of a collection, grouped without chaining.

- Exact: identical bytes (sha256), then identical decoded pixels (checked by decoding, for near pairs that score
  >= 0.999 and have the same size).
- Near: every pair of stored embeddings with cosine similarity >= threshold, and every pair of stored thumbnails
  (backbone/thumbnail.py) correlating >= `thumbnail_min`: pixel-level copies the encoder scores low (a
  quality-30 JPEG of a smooth gradient). Both are found exactly by a range join that compares each vector only
  with the k-means cells that can hold such a pair (`pairs.py`): the brute force's pairs without its N x N work
  or memory; memory is linear in N. A pair whose colours differ (colour signatures, backbone/colour.py, below
  `colour_min`) is not a duplicate: encoders are trained to see a recoloured picture as the same picture.
- Groups (star rule): images are visited in keeper order (--keep); an image not yet in a group becomes a keeper
  and takes every ungrouped image that matches it (either signal, colours agreeing). Every member matches its
  keeper, so no group is held together by a chain of pairs.
- Pairs a person marked "not duplicates" (`marks.py`, the web app's duplicates view) are never in one group: the
  pair is dropped, and a member is not taken into a group holding one it is marked apart from.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from dataclasses import field
from dataclasses import replace
from pathlib import Path

import numpy as np

from birder_index.backbone.colour import colour_similarity
from birder_index.backbone.thumbnail import has_thumbnail
from birder_index.backbone.thumbnail import thumbnail_match
from birder_index.db import queries as q
from birder_index.db.engine import session_scope
from birder_index.dedup.marks import marked_pairs
from birder_index.dedup.on_ray import join_runner
from birder_index.dedup.pairs import Fetch
from birder_index.dedup.pairs import Runner
from birder_index.dedup.pairs import similar_pairs
from birder_index.dedup.thumbnail_pairs import thumbnail_pairs
from birder_index.distributed.cluster import RaySettings
from birder_index.errors import BirderIndexError
from birder_index.errors import IndexMismatch
from birder_index.indexer.index import Index
from birder_index.indexer.index import absolute_path
from birder_index.indexer.signatures import read_signatures
from birder_index.indexer.signatures import unsigned
from birder_index.indexer.vectors import VectorStore
from birder_index.progress import Progress
from birder_index.progress import silent

logger = logging.getLogger(__name__)

KEEP_POLICIES = ("largest", "smallest", "oldest", "newest", "first")
PIXEL_CHECK_SCORE = 0.999
# Bhattacharyya coefficient of colour signatures: near-duplicate copies score above it, recoloured versions of
# one design below (benchmarks/dedup.py prints both; docs/dedup.md).
COLOUR_MIN = 0.95
# Thumbnail correlation at or above which a pair is a near duplicate whatever its cosine, unless calibrated:
# above the different pictures of the quality benchmark, below the low-quality copies the encoder misses
# (docs/dedup.md; the figures: docs/benchmarks.md#dedup).
THUMBNAIL_MIN = 0.98


@dataclass(frozen=True)
class Member:
    id: int
    path: str
    score: float  # cosine similarity to the keeper
    kind: str  # "exact" (same bytes or same pixels) or "near"
    thumbnail: float | None = None  # thumbnail correlation to the keeper (None: either has no thumbnail)
    mirrored: bool = False  # that correlation is with the keeper's thumbnail mirrored (higher than straight)


@dataclass
class Group:
    keeper: Member
    duplicates: list[Member] = field(default_factory=list)


@dataclass
class DedupResult:
    threshold: float
    groups: list[Group]
    colour_min: float = COLOUR_MIN
    thumbnail_min: float = THUMBNAIL_MIN  # 0: thumbnails not compared
    unsigned: int = 0  # images the colour check could not judge (no signature), when it was on
    no_thumbnail: int = 0  # images without a thumbnail to compare (imported, or indexed before), when it was on
    # every pair above the threshold before grouping (marked pairs included): (a ids, b ids, similarities)
    pairs: tuple[np.ndarray, np.ndarray, np.ndarray] = field(
        default_factory=lambda: (np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32))
    )
    kept_apart: int = 0  # pairs found that a person had marked "not duplicates": not grouped

    def notes(self) -> list[str]:
        """What the user should know about how far the checks went."""
        out = []
        if self.unsigned:
            out.append(
                f"{self.unsigned} images have no colour signature (imported embeddings, or indexed before signatures "
                "existed): the colour check let their pairs through (a new index built from the photos has them)"
            )
        if self.no_thumbnail:
            out.append(
                f"{self.no_thumbnail} images have no thumbnail (imported embeddings, indexed before thumbnails "
                "existed, or lost from the store): only their embeddings were compared (a new index built from the "
                "photos has them)"
            )
        if self.kept_apart:
            out.append(f'{self.kept_apart} pairs marked "not duplicates" were kept apart (`birder-index serve`)')
        return out

    def to_json(self) -> dict[str, object]:
        return {
            "threshold": self.threshold,
            "colour_min": self.colour_min,
            "thumbnail_min": self.thumbnail_min,
            "groups": [
                {"keeper": g.keeper.path, "duplicates": [_member_json(m) for m in g.duplicates]} for g in self.groups
            ],
        }


def _member_json(m: Member) -> dict[str, object]:
    out: dict[str, object] = {"path": m.path, "score": round(m.score, 6), "kind": m.kind}
    if m.thumbnail is not None:
        out["thumbnail"] = round(m.thumbnail, 4)
    if m.mirrored:
        out["mirrored"] = True
    return out


# -- candidate pairs -----------------------------------------------------------------------------------------------


def near_pairs(
    index: Index, threshold: float, *, against: Index | None = None, thumbnail_min: float = 0.0,
    runner: Runner | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:  # fmt: skip
    """(a, b, cosine) of every pair whose stored embeddings have cosine >= threshold or, with `thumbnail_min`, whose
    stored thumbnails correlate at least that much, straight or one of them mirrored: a from `index`, b from
    `against` (default: itself, each pair once with a < b). Exact, by the cell-pruned range join of `pairs`,
    once per signal; `runner` runs its pieces (default: here; Ray tasks for `dedup --ray`)."""
    ids, rows = index.id_rows()
    other = against or index
    their_ids, their_rows = other.id_rows()
    e_mine, e_theirs = _fetcher(index, rows), _fetcher(other, their_rows)

    def join(fetch_q: Fetch, fetch_b: Fetch, t: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        b = None if against is None else fetch_b
        return similar_pairs(fetch_q, len(ids), t, fetch_b=b, nb=len(their_ids), runner=runner)

    qa, qb, s = join(e_mine, e_theirs, threshold)
    if thumbnail_min > 0 and index.thumbnails().rows and other.thumbnails().rows:
        mine, theirs = _thumb_reader(index, rows), _thumb_reader(other, their_rows)
        ta, tb = thumbnail_pairs(
            mine, len(ids), thumbnail_min, read_b=None if against is None else theirs, nb=len(their_ids), runner=runner
        )
        key = np.int64(len(their_ids))  # pairs as one number each, to drop those the embeddings found already
        new = ~np.isin(ta * key + tb, qa * key + qb)
        ta, tb = ta[new], tb[new]
        qa, qb = np.concatenate([qa, ta]), np.concatenate([qb, tb])
        s = np.concatenate([s, _row_dots(e_mine, e_theirs, ta, tb)])
    return ids[qa], their_ids[qb], s


def _fetcher(index: Index, rows: np.ndarray) -> Fetch:
    return index.store().reader(rows)  # a Ray task unpickles it and maps the store itself


def _thumb_reader(index: Index, rows: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
    return index.thumbnails().reader(rows, signatures=True)


def _row_dots(fetch_a: Fetch, fetch_b: Fetch, a: np.ndarray, b: np.ndarray, chunk: int = 1 << 16) -> np.ndarray:
    """Row-wise dot products of the vectors at positions a and b, in chunks."""
    out = np.zeros(len(a), np.float32)
    for start in range(0, len(a), chunk):
        end = start + chunk
        out[start:end] = np.einsum("ij,ij->i", fetch_a(a[start:end]), fetch_b(b[start:end]))
    return out


def thumbnail_scores(
    index: Index, a: np.ndarray, b: np.ndarray, *, against: Index | None = None, chunk: int = 1 << 16
) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """Thumbnail correlation of pairs of image ids (a from `index`, b from `against` or `index`), the better of
    straight and mirrored (nan where either image has no thumbnail to compare: flat, or indexed before), and
    whether it is the mirrored one."""
    other = against or index
    out, turned = np.full(len(a), np.nan, np.float32), np.zeros(len(a), bool)
    for start in range(0, len(a), chunk):  # bounded memory, as in `same_colours`
        ra, _ = index.rows_of(a[start : start + chunk])
        rb, _ = other.rows_of(b[start : start + chunk])
        sa, sb = read_signatures(index.thumbnails(), ra), read_signatures(other.thumbnails(), rb)
        known = has_thumbnail(sa) & has_thumbnail(sb)
        corr, flipped = thumbnail_match(sa, sb)
        out[start : start + len(ra)] = np.where(known, corr, np.nan)
        turned[start : start + len(ra)] = known & flipped
    return out, turned


def _missing(signatures: Callable[[Index], VectorStore], on: float, *indexes: Index) -> int:
    """Images of these indexes without a stored signature of one kind, counted when that check is on."""
    return sum(unsigned(signatures(ix), ix.id_rows()[1]) for ix in indexes) if on > 0 else 0


def same_colours(
    index: Index, a: np.ndarray, b: np.ndarray, colour_min: float, *, against: Index | None = None, chunk: int = 1 << 16
) -> np.ndarray:  # fmt: skip
    """Mask over pairs (a from `index`, b from `against` or `index`): colour signatures at least `colour_min` alike.
    Pairs where either image has no signature (imported embeddings) pass."""
    other = against or index
    keep = np.ones(len(a), bool)
    if colour_min <= 0:
        return keep
    for start in range(0, len(a), chunk):  # bounded memory however many pairs a low threshold finds
        ra, _ = index.rows_of(a[start : start + chunk])
        rb, _ = other.rows_of(b[start : start + chunk])
        sa, sb = read_signatures(index.colours(), ra), read_signatures(other.colours(), rb)
        keep[start : start + chunk] = colour_similarity(sa, sb) >= colour_min
    return keep


def _near_same_colour(
    index: Index, threshold: float, colour_min: float, thumbnail_min: float, against: Index | None = None,
    ray: RaySettings | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:  # fmt: skip
    """The near pairs (a ids, b ids, cosines) that also pass the colour check."""
    with join_runner(ray, index, against) as runner:
        a, b, scores = near_pairs(index, threshold, against=against, thumbnail_min=thumbnail_min, runner=runner)
    ok = same_colours(index, a, b, colour_min, against=against)
    return a[ok], b[ok], scores[ok]


# -- keepers -------------------------------------------------------------------------------------------------------


def keeper_order(attrs: dict[str, np.ndarray], policy: str) -> np.ndarray:
    """Image ids, best keeper first. Ties: larger file, then path order (attrs come in path order)."""
    if policy not in KEEP_POLICIES:
        raise BirderIndexError(f"--keep must be one of {', '.join(KEEP_POLICIES)}, got {policy!r}")
    pixels = attrs["width"] * attrs["height"]
    path_rank = np.arange(len(attrs["id"]))
    primary = {
        "largest": -pixels,
        "smallest": pixels,
        "oldest": attrs["mtime_ns"],
        "newest": -attrs["mtime_ns"],
        "first": path_rank,
    }[policy]
    secondary = -attrs["size"] if policy != "smallest" else attrs["size"]
    return attrs["id"][np.lexsort((path_rank, secondary, primary))]


# -- grouping ------------------------------------------------------------------------------------------------------


def twins_of(attrs: dict[str, np.ndarray]) -> dict[int, list[int]]:
    """id -> the other ids with identical bytes (sha256), for images that have any."""
    groups: dict[bytes, list[int]] = {}
    for sha, i in zip(attrs["sha256"].tolist(), attrs["id"].tolist(), strict=True):
        if sha:
            groups.setdefault(sha, []).append(i)
    return {i: [j for j in ids if j != i] for ids in groups.values() if len(ids) > 1 for i in ids}


def group_stars(
    order: np.ndarray, a: np.ndarray, b: np.ndarray, s: np.ndarray, twins: dict[int, list[int]],
    *, apart: frozenset[tuple[int, int]] = frozenset(),
) -> list[tuple[int, list[tuple[int, float]]]]:  # fmt: skip
    """Star groups: (keeper, [(member, score to the keeper)]) in keeper order. Identical files join together.
    `apart`: pairs (smaller id first) never to be in one group; the best-scoring member of such a pair is taken."""
    adjacency: dict[int, dict[int, float]] = {}
    for x, y, score in zip(a.tolist(), b.tolist(), s.tolist(), strict=True):
        adjacency.setdefault(x, {})[y] = score
        adjacency.setdefault(y, {})[x] = score
    for x, others in twins.items():
        for y in others:
            adjacency.setdefault(x, {})[y] = 1.0
    grouped: set[int] = set()
    groups = []
    for keeper in order.tolist():
        if keeper in grouped or keeper not in adjacency:
            continue
        members = {m: score for m, score in adjacency[keeper].items() if m not in grouped}
        for m in list(members):  # identical copies of a member are as close to the keeper as it is
            for twin in twins.get(m, []):
                if twin != keeper and twin not in grouped:
                    members.setdefault(twin, members[m])
        ranked = sorted(members.items(), key=lambda ms: -ms[1])
        if apart:
            ranked = _without_marked(keeper, ranked, apart)
        if not ranked:
            continue
        grouped.add(keeper)
        grouped.update(m for m, _ in ranked)
        groups.append((keeper, ranked))
    return groups


def _without_marked(
    keeper: int, ranked: list[tuple[int, float]], apart: frozenset[tuple[int, int]]
) -> list[tuple[int, float]]:
    """Members in score order, leaving out each one marked apart from the keeper or from a member already taken."""
    taken: list[tuple[int, float]] = []
    for m, score in ranked:
        if all((min(m, other), max(m, other)) not in apart for other in (keeper, *(t for t, _ in taken))):
            taken.append((m, score))
    return taken


def count_marked(a: np.ndarray, b: np.ndarray, twins: dict[int, list[int]], apart: frozenset[tuple[int, int]]) -> int:
    """How many of the pairs found (a, b) and of identical files (`twins`) are marked apart, each pair once."""
    if not apart:
        return 0
    found = {(min(x, y), max(x, y)) for x, y in zip(a.tolist(), b.tolist(), strict=True)}
    found.update((x, y) for x, ys in twins.items() for y in ys if x < y)
    return len(found & apart)


def pixel_identical(path_a: Path, path_b: Path) -> bool:
    """Same decoded pixels (a PNG and its lossless re-save)? Decodes both at full resolution."""
    from birder_index.backbone.images import open_upright
    from birder_index.errors import ImageError

    try:
        img_a, wa, ha = open_upright(path_a)
        img_b, wb, hb = open_upright(path_b)
    except (ImageError, OSError):
        return False
    return (wa, ha) == (wb, hb) and np.array_equal(np.asarray(img_a), np.asarray(img_b))


# -- the whole run -------------------------------------------------------------------------------------------------


def find_duplicates(
    index: Index,
    threshold: float,
    *,
    keep: str = "largest",
    against: Index | None = None,
    colour_min: float = COLOUR_MIN,
    thumbnail_min: float | None = THUMBNAIL_MIN,
    progress: Progress = silent,
    ray: str | RaySettings | None = None,
) -> DedupResult:
    """Exact and near-duplicate groups of `index` at a cosine-similarity threshold (see the module docstring).

    With `against`, only pairs across the two indexes count: keepers come from `against`, duplicates from `index`
    (deduplicating a test set against a training set). `colour_min=0` lets near duplicates differ in colour
    (greyscale or recoloured copies); `thumbnail_min=0` compares embeddings only (None: the default bar). `ray`:
    the range joins run as Ray tasks ("auto", an address, or RaySettings; docs/scale.md), with the same pairs.
    """
    settings = RaySettings(address=ray) if isinstance(ray, str) else ray
    thumbnail_min = THUMBNAIL_MIN if thumbnail_min is None else thumbnail_min
    if not 0 < threshold <= 1:
        raise BirderIndexError(f"--threshold must be in (0, 1], got {threshold}")
    if not 0 <= thumbnail_min <= 1:
        raise BirderIndexError(f"--thumbnail must be in [0, 1], got {thumbnail_min}")
    progress("finding near pairs", 0, None)
    if against is not None:
        return _find_across(index, against, threshold, keep, colour_min, thumbnail_min, settings)
    a, b, scores = _near_same_colour(index, threshold, colour_min, thumbnail_min, ray=settings)
    n_unsigned, n_bare = _missing(Index.colours, colour_min, index), _missing(Index.thumbnails, thumbnail_min, index)
    found = DedupResult(threshold, [], colour_min, thumbnail_min, n_unsigned, n_bare, (a, b, scores))
    return regroup(index, found, keep=keep, progress=progress)


def regroup(index: Index, result: DedupResult, *, keep: str = "largest", progress: Progress = silent) -> DedupResult:
    """The groups of a result's pairs, formed again as `find_duplicates` forms them: after pairs were marked "not
    duplicates" (or unmarked) since, or with another keep policy. No pair is searched again."""
    progress("grouping", 0, None)
    with session_scope(index.engine) as s:
        attrs = q.indexed_attributes(s)
    a, b, scores = result.pairs
    known = np.isin(a, attrs["id"]) & np.isin(b, attrs["id"])  # images gone since the pairs were found
    a, b, scores = a[known], b[known], scores[known]
    twins = twins_of(attrs)
    apart = marked_pairs(index)
    stars = group_stars(keeper_order(attrs, keep), a, b, scores, twins, apart=apart)
    groups = _named(index, index, [(k, [(m, sc, "near") for m, sc in ms]) for k, ms in stars])
    _mark_exact(index, attrs, groups)
    _with_thumbnails(index, groups)
    return replace(result, groups=groups, kept_apart=count_marked(a, b, twins, apart))


def choose_keeper(index: Index, result: DedupResult, group: int, keeper_id: int) -> DedupResult:
    """The result with another member made the keeper of group `group` (its number in `result.groups`, from 0): the
    old keeper becomes a duplicate, and every duplicate is scored against the new keeper (cosine, thumbnail, and
    exact where the bytes are the same). A plan made from it keeps the new keeper and checks it before acting."""
    if not 0 <= group < len(result.groups):
        raise BirderIndexError(f"no group {group + 1} in this result of {len(result.groups)} groups")
    g = result.groups[group]
    members = {m.id: m for m in g.duplicates}
    if keeper_id == g.keeper.id:
        return result
    if keeper_id not in members:
        raise BirderIndexError(f"image {keeper_id} is not in group {group + 1}")
    new = members.pop(keeper_id)
    others = [Member(g.keeper.id, g.keeper.path, 0.0, "near"), *members.values()]
    ids = np.array([m.id for m in others], np.int64)
    vectors, _ = index.fetch_normalized(np.concatenate([[keeper_id], ids]))
    cosines = vectors[1:] @ vectors[0]
    with session_scope(index.engine) as s:
        rows = q.images_by_ids(s, [keeper_id, *ids.tolist()])
    sha = rows[keeper_id].sha256 if keeper_id in rows else None
    rescored = [
        Member(m.id, m.path, 1.0, "exact")
        if sha and m.id in rows and rows[m.id].sha256 == sha
        else Member(m.id, m.path, float(c), "near")
        for m, c in zip(others, cosines.tolist(), strict=True)
    ]
    chosen = Group(
        Member(new.id, new.path, 1.0, "keeper"), sorted(rescored, key=lambda m: (m.kind != "exact", -m.score))
    )
    _with_thumbnails(index, [chosen])
    groups = list(result.groups)
    groups[group] = chosen
    return replace(result, groups=groups)


def _with_thumbnails(index: Index, groups: list[Group], against: Index | None = None) -> None:
    """Each duplicate's thumbnail correlation to its keeper (keepers from `against` when given)."""
    members = np.array([m.id for g in groups for m in g.duplicates], np.int64)
    keepers = np.array([g.keeper.id for g in groups for _ in g.duplicates], np.int64)
    corr, turned = thumbnail_scores(index, members, keepers, against=against)
    start = 0
    for g in groups:
        end = start + len(g.duplicates)
        g.duplicates = [
            replace(m, thumbnail=None if np.isnan(c) else float(c), mirrored=bool(t))
            for m, c, t in zip(g.duplicates, corr[start:end], turned[start:end], strict=True)
        ]
        start = end


def _mark_exact(index: Index, attrs: dict[str, np.ndarray], groups: list[Group]) -> None:
    """Members with the keeper's bytes, or (checked by decoding) its pixels, are exact duplicates."""
    pos = {i: k for k, i in enumerate(attrs["id"].tolist())}
    has_files = index.root is not None
    for g in groups:
        kp = pos[g.keeper.id]
        for n, m in enumerate(g.duplicates):
            mp = pos[m.id]
            same_bytes = attrs["sha256"][kp] != b"" and attrs["sha256"][kp] == attrs["sha256"][mp]
            same_size = (attrs["width"][kp], attrs["height"][kp]) == (attrs["width"][mp], attrs["height"][mp])
            if same_bytes or (
                has_files and m.score >= PIXEL_CHECK_SCORE and same_size
                and pixel_identical(Path(g.keeper.path), Path(m.path))
            ):  # fmt: skip
                g.duplicates[n] = Member(m.id, m.path, 1.0, "exact")
        g.duplicates.sort(key=lambda m: (m.kind != "exact", -m.score))


def _find_across(
    index: Index, against: Index, threshold: float, keep: str, colour_min: float, thumbnail_min: float,
    ray: RaySettings | None,
) -> DedupResult:  # fmt: skip
    mine, theirs = index.model_row(), against.model_row()
    if mine.sha256 != theirs.sha256 or mine.embedding_dim != theirs.embedding_dim:
        raise IndexMismatch(f"--against: the indexes were built with different models ({mine.name}, {theirs.name})")
    a, b, s = _near_same_colour(index, threshold, colour_min, thumbnail_min, against, ray)
    with session_scope(index.engine) as se, session_scope(against.engine) as so:
        mine_sha, their_sha = q.indexed_attributes(se), q.indexed_attributes(so)
    by_sha = {sha: i for sha, i in zip(their_sha["sha256"].tolist(), their_sha["id"].tolist(), strict=True) if sha}
    exact = [(by_sha[sha], i) for sha, i in zip(mine_sha["sha256"].tolist(), mine_sha["id"].tolist(), strict=True)
             if sha and sha in by_sha]  # fmt: skip
    best: dict[int, tuple[int, float, str]] = {}  # each of my images joins its best match in `against`
    for theirs_id, mine_id in exact:
        best[mine_id] = (theirs_id, 1.0, "exact")
    for mine_id, theirs_id, score in zip(a.tolist(), b.tolist(), s.tolist(), strict=True):
        if mine_id not in best or (best[mine_id][2] != "exact" and score > best[mine_id][1]):
            best[mine_id] = (theirs_id, score, "near")
    grouped: dict[int, list[tuple[int, float, str]]] = {}
    for mine_id, (theirs_id, score, kind) in best.items():
        grouped.setdefault(theirs_id, []).append((mine_id, score, kind))
    order = keeper_order(their_sha, keep)
    stars = [(k, sorted(grouped[k], key=lambda m: -m[1])) for k in order.tolist() if k in grouped]
    n_unsigned = _missing(Index.colours, colour_min, index, against)
    n_bare = _missing(Index.thumbnails, thumbnail_min, index, against)
    groups = _named(against, index, stars)
    _with_thumbnails(index, groups, against)
    return DedupResult(threshold, groups, colour_min, thumbnail_min, n_unsigned, n_bare, (a, b, s))


def _named(keepers: Index, members: Index, stars: list[tuple[int, list[tuple[int, float, str]]]]) -> list[Group]:
    with session_scope(keepers.engine) as s:
        keeper_paths = q.paths_of(s, [k for k, _ in stars])
    with session_scope(members.engine) as s:
        member_paths = q.paths_of(s, [m for _, ms in stars for m, _, _ in ms])
    kroot, mroot = keepers.root, members.root
    groups = []
    for keeper, ms in stars:
        g = Group(Member(keeper, absolute_path(kroot, keeper_paths[keeper]), 1.0, "keeper"))
        g.duplicates = [Member(m, absolute_path(mroot, member_paths[m]), sc, kind) for m, sc, kind in ms]
        groups.append(g)
    groups.sort(key=lambda g: -len(g.duplicates))  # largest groups first, keeper order within equal sizes
    return groups
