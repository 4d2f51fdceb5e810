"""A self-contained HTML page of duplicate groups: thumbnails embedded, keeper marked, scores, sizes, resolutions.
It opens in any browser from disk; no server, no files beside it."""

from __future__ import annotations

import base64
import html
import io
import os
from pathlib import Path

from PIL import Image

from birder_index.dedup.find import DedupResult
from birder_index.dedup.find import Member

THUMB = 200

_STYLE = """
body{font-family:system-ui,sans-serif;margin:24px;background:#fafafa;color:#222}
h1{font-size:20px} .summary{color:#555;margin-bottom:16px}
.group{background:#fff;border:1px solid #ddd;border-radius:8px;padding:12px;margin:12px 0}
.group h2{font-size:14px;margin:0 0 8px;color:#444}
.cards{display:flex;flex-wrap:wrap;gap:10px}
.card{width:210px;font-size:12px;border:2px solid #ddd;border-radius:6px;padding:4px;overflow-wrap:anywhere}
.card.keeper{border-color:#2a7}
.card img{width:200px;height:200px;object-fit:contain;background:#eee;display:block}
.tag{display:inline-block;padding:0 6px;border-radius:4px;color:#fff;font-weight:600}
.tag.keeper{background:#2a7}.tag.exact{background:#c33}.tag.near{background:#d80}
"""


def _thumbnail(path: str) -> tuple[str, str]:
    """(data URI of a JPEG thumbnail, "W x H") or a placeholder for an unreadable file."""
    from birder_index.backbone.images import open_upright

    try:
        img, w, h = open_upright(Path(path), draft_size=(THUMB, THUMB))
    except Exception:
        return "", "unreadable"
    img.thumbnail((THUMB, THUMB), Image.Resampling.BICUBIC)
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=80)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode(), f"{w} x {h}"


def _card(m: Member, keeper: bool) -> str:
    uri, resolution = _thumbnail(m.path)
    try:
        size = f"{os.path.getsize(m.path) / 1e6:.2f} MB"
    except OSError:
        size = "missing"
    tag = "keeper" if keeper else m.kind
    score = "" if keeper else f" similarity {m.score:.4f}"
    if not keeper and m.thumbnail is not None:
        score += f", thumbnail {m.thumbnail:.4f}{' mirrored' if m.mirrored else ''}"
    img = f'<img src="{uri}" alt="">' if uri else "<div>unreadable</div>"
    return (f'<div class="card{" keeper" if keeper else ""}">{img}<span class="tag {tag}">{tag}</span>{score}'
            f"<br>{html.escape(resolution)}, {size}<br>{html.escape(m.path)}</div>")  # fmt: skip


def write_report(result: DedupResult, path: Path, *, limit: int = 1000) -> int:
    """Write the page (largest groups first, at most `limit` groups); returns the number of groups shown."""
    groups = result.groups[:limit]
    n_dups = sum(len(g.duplicates) for g in result.groups)
    parts = [
        f"<!doctype html><html><head><meta charset='utf-8'><title>Duplicates</title><style>{_STYLE}</style></head>",
        "<body><h1>Duplicate groups</h1>",
        f'<div class="summary">{len(result.groups)} groups, {n_dups} duplicates at similarity threshold '
        f"{result.threshold:.4f}"
        f"{f' or thumbnail correlation {result.thumbnail_min:.3f}' if result.thumbnail_min else ''}"
        f"{f'; the {limit} largest shown' if len(result.groups) > limit else ''}.</div>",
    ]
    for n, g in enumerate(groups, 1):
        cards = [_card(g.keeper, True)] + [_card(m, False) for m in g.duplicates]
        parts.append(f'<div class="group"><h2>Group {n}: {len(g.duplicates)} duplicate(s)</h2>'
                     f'<div class="cards">{"".join(cards)}</div></div>')  # fmt: skip
    parts.append("</body></html>")
    path.write_text("\n".join(parts), encoding="utf-8")
    return len(groups)
