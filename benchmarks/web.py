"""`birder-index serve`: how fast the page's two commonest requests answer, against the issue's targets.

    python benchmarks/web.py search [--rows 1000000] [--dim 512] [--queries 300] [--keep DIR]
    python benchmarks/web.py grid --photos PHOTOS --weights MODEL.pt2 [--copies 2] [--loads 5]

search: a collection of --rows synthetic embeddings (benchmarks/synthetic.py's generator, as `dedup.py scale`
uses it; 100 folders of rows/100 each) imported with `import_embeddings` (the FAISS index trains and tunes itself
as for any import), served by the real server on a loopback port; --queries searches by a stored photo (GET
/api/search?id=..&k=24, random ids), each timed server-side (the answer's took_ms: from the request to the
answer, the database reads for the 24 results included) and by the client (HTTP round trip). Also: the same
search filtered to one folder, a page of the collection deep in it (OFFSET), and the folder list (once, cached).
Target: search by a stored photo <= 50 ms server-side.

grid: PHOTOS copied --copies times (different names, so at least 100 files; identical content is embedded once),
built with the given model, served; one page of 100 thumbnails (GET /api/images?limit=100 and its 100 previews,
one by one six at a time as a browser fetches plain <img> tags) with a cold then a warm preview cache, and warm
in one request (/api/thumbs, what the page asks first); then the Browse view loaded in
headless Chromium (Playwright, as the tests drive it) --loads times, each in a fresh browser context with the
server's preview cache warm, timed to the 100th thumbnail decoded and shown, from the start of the navigation to
its address, and from a switch to it from the Search view. Target: <= 1 s.
Also: a search by an uploaded photo (its embedding included), the first one loading the model.

Results are printed and written to benchmarks/out/web.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from realdata import OUT

from birder_index.indexer import BuildOptions
from birder_index.indexer import ModelSpec
from birder_index.indexer import build_index
from birder_index.indexer import describe
from birder_index.indexer import import_embeddings
from birder_index.indexer import open_index
from birder_index.web import Address
from birder_index.web import ServeOptions
from birder_index.web import running

FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
         "--no-first-run", "--disable-sync", "--disable-quic", "--disable-dev-shm-usage"]  # fmt: skip


def get(address: Address, path: str, *, data: bytes | None = None, kind: str = "") -> tuple[bytes, float]:
    """(body, seconds) of one request with the token in a header, as a script sends it."""
    headers = {"x-birder-token": address.token}
    if data is not None:
        headers["content-type"] = kind
    request = urllib.request.Request(address.base + path, data=data, headers=headers)
    t0 = time.perf_counter()
    with urllib.request.urlopen(request, timeout=120) as response:
        body = response.read()
    return body, time.perf_counter() - t0


def summary(values: list[float]) -> dict[str, float]:
    arr = np.array(values)
    return {"median": float(np.median(arr)), "p95": float(np.percentile(arr, 95)), "max": float(arr.max()),
            "n": len(values)}  # fmt: skip


def ms(s: dict[str, float], scale: float = 1.0) -> str:
    return f"median {s['median'] * scale:.1f} ms, p95 {s['p95'] * scale:.1f} ms, max {s['max'] * scale:.1f} ms"


# -- search on a large index -------------------------------------------------------------------------------------


def search(args: argparse.Namespace) -> dict[str, Any]:
    from dedup import GEN  # the generator dedup.py's scale benchmark uses (benchmarks/synthetic.py)

    work = args.keep or Path(tempfile.mkdtemp(prefix="web-bench-", dir=args.work))
    try:
        t0 = time.perf_counter()
        if not (work / "index" / "index.db").exists():
            work.mkdir(parents=True, exist_ok=True)
            x = GEN.sample(args.rows, args.dim, seed=0)
            np.save(work / "x.npy", x)
            del x
            (work / "x.txt").write_text("\n".join(f"f{i % 100:02d}/{i:08d}.jpg" for i in range(args.rows)))
            import_embeddings(work / "x.npy", work / "index", paths_file=work / "x.txt")
            (work / "x.npy").unlink()
        made = time.perf_counter() - t0
        with open_index(work / "index") as index:
            factory = describe(index)["index"]["type"]
            assert len(index.id_rows()[0]) == args.rows, "--keep holds an index of another size"
        print(f"{args.rows} x {args.dim} imported in {made:.0f}s (0: reused): {factory}", flush=True)
        with open_index(work / "index") as index, running(index, ServeOptions(port=0)) as address:
            rng = np.random.default_rng(1)
            ids = rng.integers(1, args.rows + 1, args.queries + 10)
            for i in ids[:10]:  # warm-up: the FAISS index loads on the first search
                get(address, f"/api/search?id={i}&k=24")
            server, client = [], []
            for i in ids[10:]:
                body, seconds = get(address, f"/api/search?id={i}&k=24")
                server.append(json.loads(body)["took_ms"] / 1000)
                client.append(seconds)
            filtered = [json.loads(get(address, f"/api/search?id={i}&k=24&folder=f07")[0])["took_ms"] / 1000
                        for i in ids[10:60]]  # fmt: skip
            offsets = rng.integers(0, args.rows - 100, 20)
            deep = [get(address, f"/api/images?offset={o}&limit=100")[1] for o in offsets]
            by_date = [get(address, f"/api/images?offset={o}&limit=100&sort=-date")[1] for o in offsets[:5]]
            _, folders_s = get(address, "/api/folders")
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)
    out = {
        "rows": args.rows, "dim": args.dim, "factory": factory, "import_s": made,
        "search_server": summary(server), "search_client": summary(client), "search_folder_server": summary(filtered),
        "page_deep": summary(deep), "page_by_date": summary(by_date), "folders_first_s": folders_s,
    }  # fmt: skip
    print(
        f"search by a stored photo, k=24 ({len(server)} queries): server {ms(out['search_server'], 1000)}; "
        f"client round trip {ms(out['search_client'], 1000)}"
    )
    print(f"same, within one folder of {args.rows // 100}: server {ms(out['search_folder_server'], 1000)}")
    print(
        f"a page of 100 at a random offset: by path {ms(out['page_deep'], 1000)}; newest first "
        f"{ms(out['page_by_date'], 1000)}; folder list (first time): {folders_s:.2f}s"
    )
    return out


# -- a grid of thumbnails ----------------------------------------------------------------------------------------


def grid(args: argparse.Namespace) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="web-bench-", dir=args.work))
    try:
        photos = work / "photos"
        photos.mkdir()
        sources = sorted(p for p in args.photos.iterdir() if p.is_file() and not p.name.startswith("."))
        for copy in range(args.copies):
            for p in sources:
                shutil.copy(p, photos / f"{copy}_{p.name}")
        t0 = time.perf_counter()
        build_index(photos, spec=ModelSpec(weights=args.weights), options=BuildOptions())
        print(f"{len(sources) * args.copies} photos built in {time.perf_counter() - t0:.0f}s", flush=True)
        with open_index(photos / ".birder-index") as index, running(index, ServeOptions(port=0)) as address:
            cold = page_of_thumbnails(address)
            warm = [page_of_thumbnails(address) for _ in range(args.loads)]
            batched = [page_of_thumbnails(address, batched=True) for _ in range(args.loads)]
            opened, switched = browse_in_chromium(address, args.loads)
            upload = sources[0].read_bytes()
            kind = "image/jpeg" if sources[0].suffix.lower() in (".jpg", ".jpeg") else "application/octet-stream"
            first_upload = json.loads(get(address, "/api/uploads", data=upload, kind=kind)[0])["took_ms"] / 1000
            uploads = [
                json.loads(get(address, "/api/uploads", data=upload + bytes([n]), kind=kind)[0])["took_ms"] / 1000
                for n in range(5)
            ]  # fmt: skip  (a trailing byte: a new upload each time, decoded as before)
            searched = [json.loads(get(address, f"/api/search?id={i}&k=24")[0])["took_ms"] / 1000 for i in range(1, 21)]
    finally:
        shutil.rmtree(work, ignore_errors=True)
    out = {"photos": len(sources) * args.copies, "cold_page_s": cold, "warm_page": summary(warm),
           "warm_page_batched": summary(batched),
           "browser_opened": summary(opened), "browser_switched": summary(switched), "first_upload_s": first_upload,
           "upload": summary(uploads),
           "search_server": summary(searched)}  # fmt: skip
    print(
        f"page of 100 thumbnails over HTTP, one by one 6 at a time: cold cache {cold:.2f}s; warm "
        f"{ms(out['warm_page'], 1000)}; warm in one request: {ms(out['warm_page_batched'], 1000)}"
    )
    print(
        f"Browse view of 100 in Chromium, warm preview cache, fresh browser context, {args.loads} loads: its address "
        f"opened {ms(out['browser_opened'], 1000)}; switched to from Search {ms(out['browser_switched'], 1000)}"
    )
    print(
        f"search by an uploaded photo ({sources[0].name}): first {first_upload:.2f}s (loads the model), then "
        f"{ms(out['upload'], 1000)} (decode and embed; the search itself: {ms(out['search_server'], 1000)})"
    )
    return out


def page_of_thumbnails(address: Address, *, batched: bool = False) -> float:
    """Seconds for a page of 100 and its previews: one by one, six at a time (how the page asks for those not
    made yet, and how a browser fetches plain <img> tags), or `batched` in one request (/api/thumbs, how the page
    asks first)."""
    t0 = time.perf_counter()
    page = json.loads(get(address, "/api/images?limit=100&status=indexed")[0])
    ids = [item["id"] for item in page["items"]]
    if batched:
        body, _ = get(address, f"/api/thumbs?ids={','.join(map(str, ids))}")
        sizes = [len(body) // len(ids)] * len(ids)  # each one's length is in the X-Thumbs header
    else:
        with ThreadPoolExecutor(6) as pool:  # a browser's connections per host
            sizes = list(pool.map(lambda i: len(get(address, f"/api/thumb/{i}")[0]), ids))
    assert len(sizes) == 100 and all(sizes), "the page must hold 100 thumbnails"
    return time.perf_counter() - t0


def browse_in_chromium(address: Address, loads: int) -> tuple[list[float], list[float]]:
    """Seconds until the Browse view shows its 100th thumbnail (decoded), in a fresh browser context each time
    (nothing in the browser's cache): (opening its address: from the navigation's start, the page's own scripts
    and requests included; switching to it from another view of the page)."""
    from playwright.sync_api import sync_playwright

    opened, switched = [], []
    all_shown = "document.querySelectorAll('.grid .thumb.loaded').length >= 100"
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=os.environ.get("BIRDER_INDEX_CHROMIUM", "/usr/bin/chromium"),
                                    args=FLAGS)  # fmt: skip
        for _ in range(loads + 1):
            context = browser.new_context(viewport={"width": 1600, "height": 2400}, bypass_csp=True)
            page = context.new_page()
            page.goto(address.url + "#/browse")
            page.wait_for_function(all_shown, timeout=60_000)
            opened.append(page.evaluate("performance.now()") / 1000)  # from the navigation's start
            page.evaluate("location.hash = '#/search'")
            page.wait_for_selector(".drop")
            page.evaluate("window.__t0 = performance.now(); location.hash = '#/browse'")
            page.wait_for_function(all_shown, timeout=60_000)
            switched.append(page.evaluate("performance.now() - window.__t0") / 1000)
            context.close()
        browser.close()
    return opened[1:], switched[1:]  # the first load also warms the browser's own caches and compilers


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=None, help="scratch folder (default: the system's temp)")
    sub = parser.add_subparsers(dest="what", required=True)
    s = sub.add_parser("search")
    s.add_argument("--rows", type=int, default=1_000_000)
    s.add_argument("--dim", type=int, default=512)
    s.add_argument("--queries", type=int, default=300)
    s.add_argument("--keep", type=Path, help="make the index in this folder and keep it; reuse it if it is there")
    g = sub.add_parser("grid")
    g.add_argument("--photos", type=Path, required=True)
    g.add_argument("--weights", type=Path, required=True)
    g.add_argument("--copies", type=int, default=2)
    g.add_argument("--loads", type=int, default=5)
    args = parser.parse_args()
    result = search(args) if args.what == "search" else grid(args)
    OUT.mkdir(exist_ok=True)
    path = OUT / "web.json"
    saved = json.loads(path.read_text()) if path.exists() else {}
    saved[args.what] = {**result, "date": time.strftime("%Y-%m-%d"), "cpus": os.cpu_count()}
    path.write_text(json.dumps(saved, indent=1))


if __name__ == "__main__":
    main()
