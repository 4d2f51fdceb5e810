"""Dedup's outputs as files: the groups as a self-contained HTML page (thumbnails embedded, keeper marked, scores,
sizes, resolutions, each file's name above its path and a link that opens it; 50 groups a page) and as CSV rows.
The page opens in any browser from disk: no server, no files beside it. Every name is escaped: file names are
data, not markup."""

from __future__ import annotations

import base64
import html
import io
import json
import os
from pathlib import Path

from PIL import Image

from birder_index.dedup.find import DedupResult
from birder_index.dedup.find import Member
from birder_index.output import csv_text
from birder_index.output import write_text

THUMB = 160
WITH_THUMBNAILS = 1000  # groups shown with thumbnails (largest first); the others are listed by name
PER_PAGE = 50

STYLE = """
body{font-family:system-ui,sans-serif;margin:24px;background:#fafafa;color:#222}
h1{font-size:20px} .summary{color:#555;margin-bottom:16px}
.group{background:#fff;border:1px solid #ddd;border-radius:8px;padding:12px;margin:12px 0}
.group h2{font-size:14px;margin:0 0 8px;color:#444}
.cards{display:flex;flex-wrap:wrap;gap:10px}
.card{width:180px;font-size:12px;border:2px solid #ddd;border-radius:6px;padding:4px;overflow-wrap:anywhere}
.card.keeper{border-color:#2a7}
.card img{width:170px;height:170px;object-fit:contain;background:#eee;display:block}
.card .name{font-weight:600;margin:4px 0 2px}.card .path{color:#777}
.tag{display:inline-block;padding:0 6px;border-radius:4px;color:#fff;font-weight:600}
.tag.keeper{background:#2a7}.tag.exact{background:#c33}.tag.near{background:#d80}
nav{margin:12px 0} nav button{margin-right:4px}
"""

# Pages of groups: every group is in the document, hidden but the current page's (a browser lays out only those).
_SCRIPT = """
const groups=[...document.querySelectorAll('.group')],per=%d,pages=Math.max(1,Math.ceil(groups.length/per));
let page=0;const nav=document.getElementById('nav');
function show(p){page=Math.min(Math.max(p,0),pages-1);groups.forEach((g,i)=>g.hidden=Math.floor(i/per)!==page);
nav.querySelector('span').textContent=`page ${page+1} of ${pages}`;window.scrollTo(0,0);}
nav.querySelector('.prev').onclick=()=>show(page-1);nav.querySelector('.next').onclick=()=>show(page+1);show(0);
"""


def thumbnail_data(path: str) -> tuple[str, str]:
    """(data URI of a JPEG thumbnail, "W x H"), or ("", "unreadable") for a file that cannot be read."""
    from birder_index.backbone.images import open_upright

    try:
        img, w, h = open_upright(Path(path), draft_size=(THUMB, THUMB))
    except Exception:
        return "", "unreadable"
    img.thumbnail((THUMB, THUMB), Image.Resampling.BICUBIC)
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=75)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode(), f"{w} x {h}"


def _card(m: Member, keeper: bool, thumbnails: bool) -> str:
    uri, resolution = thumbnail_data(m.path) if thumbnails else ("", "")
    try:
        size = f"{os.path.getsize(m.path) / 1e6:.2f} MB"
    except OSError:
        size = "missing"
    tag = "keeper" if keeper else m.kind
    score = "" if keeper else f" similarity {m.score:.4f}"
    if not keeper and m.thumbnail is not None:
        score += f", thumbnail {m.thumbnail:.4f}{' mirrored' if m.mirrored else ''}"
    link = html.escape(Path(m.path).as_uri() if os.path.isabs(m.path) else m.path, quote=True)
    img = f'<img src="{uri}" alt="" loading="lazy">' if uri else ("<div>unreadable</div>" if thumbnails else "")
    details = ", ".join(x for x in (html.escape(resolution), size) if x)
    return (
        f'<div class="card{" keeper" if keeper else ""}"><a href="{link}">{img}</a>'
        f'<span class="tag {tag}">{tag}</span>{score}<div class="name">{html.escape(Path(m.path).name)}</div>'
        f'{details}<br><a class="path" href="{link}">{html.escape(m.path)}</a></div>'
    )


def report_html(result: DedupResult) -> str:
    """The page: every group, the `WITH_THUMBNAILS` largest with their thumbnails, `PER_PAGE` groups a page."""
    n_dups = sum(len(g.duplicates) for g in result.groups)
    bar = f" or thumbnail correlation {result.thumbnail_min:.3f}" if result.thumbnail_min else ""
    more = (
        f"; thumbnails for the {WITH_THUMBNAILS} largest, the others by name"
        if len(result.groups) > WITH_THUMBNAILS
        else ""
    )
    parts = [
        f"<!doctype html><html><head><meta charset='utf-8'><title>Duplicates</title><style>{STYLE}</style></head>",
        "<body><h1>Duplicate groups</h1>",
        f'<div class="summary">{len(result.groups)} groups, {n_dups} duplicates at similarity threshold '
        f"{result.threshold:.4f}{bar}{more}.</div>",
        '<nav id="nav"><button class="prev">previous</button><button class="next">next</button> <span></span></nav>',
    ]
    for n, g in enumerate(result.groups, 1):
        thumbs = n <= WITH_THUMBNAILS
        cards = [_card(g.keeper, True, thumbs)] + [_card(m, False, thumbs) for m in g.duplicates]
        parts.append(
            f'<div class="group"><h2>Group {n}: {len(g.duplicates)} duplicate(s)</h2>'
            f'<div class="cards">{"".join(cards)}</div></div>'
        )
    parts.append(f"<script>{_SCRIPT % PER_PAGE}</script></body></html>")
    return "\n".join(parts)


def write_report(result: DedupResult, path: Path) -> int:
    """Write the page; returns the number of groups shown with thumbnails."""
    write_text(path, report_html(result))
    return min(len(result.groups), WITH_THUMBNAILS)


CSV_HEADER = ("group", "keeper", "path", "score", "kind", "thumbnail", "mirrored")


def write_groups_csv(result: DedupResult, path: Path) -> None:
    """One row per duplicate: its group, the group's keeper, its score to the keeper, kind and thumbnail figure."""
    rows = (
        (
            n,
            g.keeper.path,
            m.path,
            f"{m.score:.6f}",
            m.kind,
            "" if m.thumbnail is None else f"{m.thumbnail:.4f}",
            "yes" if m.mirrored else "",
        )
        for n, g in enumerate(result.groups, 1)
        for m in g.duplicates
    )
    write_text(path, csv_text(CSV_HEADER, rows))


def write_groups_json(result: DedupResult, path: Path) -> None:
    write_text(path, json.dumps(result.to_json(), indent=1))
