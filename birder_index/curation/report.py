"""The curation signals as self-contained HTML pages, like dedup's report (its thumbnails and style): one card per
photo with its thumbnail embedded, its figures, and for a suspect label or an outlier the nearest photos beside
it. The pages open from disk, with no server and no files beside them. File names and labels are data, not
markup: every one is escaped."""

from __future__ import annotations

import html
import os
from collections.abc import Iterable
from pathlib import Path

from birder_index.curation.audit import Audit
from birder_index.curation.outliers import Outliers
from birder_index.curation.representatives import Representatives
from birder_index.dedup.report import STYLE
from birder_index.dedup.report import thumbnail_data
from birder_index.output import write_text

WITH_THUMBNAILS = 500  # rows shown with thumbnails; the others by name


def _card(path: str, lines: Iterable[str], *, tag: str = "", kind: str = "near", thumbnails: bool = True) -> str:
    """One photo: thumbnail, an optional tag, the (escaped here) text lines, its name and a link to it."""
    uri, resolution = thumbnail_data(path) if thumbnails else ("", "")
    link = html.escape(Path(path).as_uri() if os.path.isabs(path) else path, quote=True)
    img = f'<img src="{uri}" alt="" loading="lazy">' if uri else ("<div>unreadable</div>" if thumbnails else "")
    badge = f'<span class="tag {kind}">{html.escape(tag)}</span> ' if tag else ""
    text = "<br>".join(html.escape(line) for line in lines)
    return (
        f'<div class="card"><a href="{link}">{img}</a>{badge}{text}'
        f'<div class="name">{html.escape(Path(path).name)}</div>{html.escape(resolution)}'
        f'<br><a class="path" href="{link}">{html.escape(path)}</a></div>'
    )


def _page(title: str, summary: str, rows: list[tuple[str, list[str]]]) -> str:
    """rows: (heading, cards) each."""
    parts = [
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{STYLE}</style></head><body><h1>{html.escape(title)}</h1>",
        f'<div class="summary">{html.escape(summary)}</div>',
    ]
    for heading, cards in rows:
        parts.append(
            f'<div class="group"><h2>{html.escape(heading)}</h2><div class="cards">{"".join(cards)}</div></div>'
        )
    parts.append("</body></html>")
    return "\n".join(parts)


def audit_html(audit: Audit) -> str:
    rows = []
    for n, s in enumerate(audit.suspects, 1):
        thumbs = n <= WITH_THUMBNAILS
        cards = [_card(s.path, [f"labelled {s.label}", f"looks like {s.looks_like} ({s.confidence:.3f})"],
                       tag="suspect", kind="exact", thumbnails=thumbs)]  # fmt: skip
        cards += [_card(x.path, [f"labelled {x.label}", f"similarity {x.similarity:.4f}"], thumbnails=thumbs)
                  for x in s.nearest]  # fmt: skip
        rows.append((f"{n}. labelled {s.label}, looks like {s.looks_like} (confidence {s.confidence:.3f})", cards))
    summary = (f"Set {audit.set_name}: {audit.flagged} of {audit.labelled} labelled photos outvoted by their "
               f"neighbours and the class prototypes; {len(audit.suspects)} shown, most suspicious first.")  # fmt: skip
    return _page("Label audit", summary, rows)


def outliers_html(result: Outliers) -> str:
    rows = []
    for n, o in enumerate(result.outliers, 1):
        thumbs = n <= WITH_THUMBNAILS
        cards = [_card(o.path, [f"mean similarity {o.score:.4f}"], tag="outlier", kind="exact", thumbnails=thumbs)]
        cards += [_card(p, [f"similarity {s:.4f}"], thumbnails=thumbs) for _, p, s in o.nearest]
        rows.append((f"{n}. mean similarity to its {result.k} nearest: {o.score:.4f}", cards))
    summary = (f"{len(result.outliers)} most isolated of {result.photos} photos (the median photo scores "
               f"{result.median:.4f}), each beside its nearest photos.")  # fmt: skip
    return _page("Outliers", summary, rows)


def representatives_html(result: Representatives) -> str:
    cards = [_card(r.path, [f"stands for {r.members} photos", f"their mean similarity {r.mean_similarity:.4f}"],
                   tag=f"{n}", kind="keeper", thumbnails=n <= WITH_THUMBNAILS)
             for n, r in enumerate(result.representatives, 1)]  # fmt: skip
    summary = (f"{len(result.representatives)} representatives of {result.photos} photos "
               f"({result.skipped} outliers skipped), most members first.")  # fmt: skip
    return _page("Representatives", summary, [("Representatives", cards)])


def write_audit_report(audit: Audit, path: Path) -> None:
    write_text(path, audit_html(audit))


def write_outliers_report(result: Outliers, path: Path) -> None:
    write_text(path, outliers_html(result))


def write_representatives_report(result: Representatives, path: Path) -> None:
    write_text(path, representatives_html(result))
