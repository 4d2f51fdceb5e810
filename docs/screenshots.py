"""The screenshots of docs/web.md, taken from the real page in headless Chromium.

    python docs/screenshots.py --index-dir PHOTOS/.birder-index [--out docs/]

PHOTOS: the 54 real photos of ../shared/datasets/real-photos.sh, built with the shared EfficientNet encoder
(`birder-index build PHOTOS --weights ../shared/models/efficientnet_lite0_imagenet.pt2`). The script labels three
photos of each of three kinds in a label set `kind` (through the API, as the page does), runs dedup (calibrating
on the first run), and saves web-search.png, web-duplicates.png, web-labels.png and web-probe.png, each reduced to
a palette of 256 colours to stay small.
"""

from __future__ import annotations

import argparse
import io
import json
import urllib.request
from pathlib import Path

from PIL import Image

from birder_index.indexer import open_index
from birder_index.web import Address
from birder_index.web import ServeOptions
from birder_index.web import running

FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
         "--no-first-run", "--disable-sync", "--disable-quic", "--disable-dev-shm-usage"]  # fmt: skip
KINDS = {
    "nature": ["mate_nature_LadyBird.jpg", "mate_nature_YellowFlower.jpg", "mate_nature_RainDrops.jpg",
               "mate_nature_Garden.jpg"],
    "pattern": ["gnome_truchet-l.webp", "gnome_grid-d.webp", "gnome_pixels-l.webp", "gnome_licorice-d.webp"],
    "abstract": ["mate_abstract_Flow.png", "mate_abstract_Silk.png", "mate_abstract_Waves.png",
                 "mate_abstract_Spring.png"],
}  # fmt: skip
ALL_SHOWN = "[...document.querySelectorAll('{0} .thumb')].every(t => t.matches('.loaded, .broken'))"


def call(address: Address, path: str, body: object | None = None) -> object:
    data = json.dumps(body).encode() if body is not None else None
    headers = {"x-birder-token": address.token, "content-type": "application/json"}
    with urllib.request.urlopen(urllib.request.Request(address.base + path, data=data, headers=headers)) as r:
        return json.loads(r.read())


def save(page: object, path: Path) -> None:
    page.evaluate("document.querySelectorAll('#messages .message').forEach(m => m.remove())")  # type: ignore[attr-defined]
    page.wait_for_timeout(500)  # type: ignore[attr-defined]  # the thumbnails' fade-in
    png = page.screenshot()  # type: ignore[attr-defined]
    img = Image.open(io.BytesIO(png)).convert("RGB")
    img = img.resize((img.width * 3 // 4, img.height * 3 // 4), Image.Resampling.LANCZOS)
    img.quantize(256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE).save(path, optimize=True)
    print(f"{path}: {path.stat().st_size // 1024} KB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--index-dir", type=Path, required=True)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    from playwright.sync_api import sync_playwright

    with open_index(args.index_dir) as index, running(index, ServeOptions(port=0)) as address:
        ids = {name: call(address, f"/api/lookup?path={name}")["id"] for names in KINDS.values() for name in names}  # type: ignore[index]
        for kind, names in KINDS.items():
            call(address, "/api/labels/assign", {"set": "kind", "ids": [ids[n] for n in names], "label": kind})
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=FLAGS)
            page = browser.new_page(viewport={"width": 1280, "height": 820}, bypass_csp=True)
            page.set_default_timeout(600_000)
            page.goto(address.url)
            page.wait_for_selector(".status span")
            lady = ids["mate_nature_LadyBird.jpg"]
            call(address, f"/api/search?id={lady}")  # the FAISS index loads on the first search
            page.evaluate(f"location.hash = '#/search?id={lady}&k=24'")
            page.wait_for_function(ALL_SHOWN.format(".grid"))
            save(page, args.out / "web-search.png")

            page.evaluate("location.hash = '#/duplicates'")
            page.click("button:text('Find duplicates')")
            page.wait_for_selector("article.group")
            page.wait_for_function(ALL_SHOWN.format("article.group"))
            save(page, args.out / "web-duplicates.png")

            page.evaluate("location.hash = '#/labels?set=kind&tab=suggestions'")
            page.click("button:text('Compute suggestions')")
            page.wait_for_selector(".review .big .thumb.loaded")
            page.wait_for_function(ALL_SHOWN.format(".queue"))
            save(page, args.out / "web-labels.png")

            page.evaluate("location.hash = '#/probe?set=kind'")
            page.select_option("select[aria-label=folds]", "3")
            page.click("button:text('Fit and evaluate')")
            page.wait_for_selector(".metric")
            save(page, args.out / "web-probe.png")
            browser.close()


if __name__ == "__main__":
    main()
