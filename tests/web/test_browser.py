"""End to end in a real browser: Debian's Chromium driven by Playwright for Python, against `birder-index serve`
running on a free loopback port. Each view is used as a person would (a photo dropped in, a group marked, photos
labelled, a suggestion accepted with one key press), the index is checked for what changed, and a screenshot of
each view is saved beside the test's files (pytest's tmp_path; BIRDER_INDEX_ARTIFACTS=DIR copies them there).

Chromium and Playwright are part of the test setup (.ci/run installs them): where either is missing these tests
fail with a message saying how to install it, they are not skipped.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from birder_index.cli import cli
from birder_index.dedup import not_duplicate_pairs
from birder_index.fewshot import labels_of_images
from birder_index.indexer import open_index
from birder_index.web import Address
from birder_index.web import ServeOptions
from birder_index.web import running

CHROMIUM = Path(os.environ.get("BIRDER_INDEX_CHROMIUM", "/usr/bin/chromium"))
# Root needs --no-sandbox; the others keep Chromium off the network (this machine's is closed): no component
# updates, no background requests, no QUIC, a fresh profile.
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
         "--no-first-run", "--disable-sync", "--disable-quic", "--disable-dev-shm-usage"]  # fmt: skip
TIMEOUT = 30_000  # ms for any one step: the first upload loads the model


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail(
            'the browser tests need Playwright for Python: pip install -e ".[dev]" (never `playwright install`)'
        )
    if not CHROMIUM.exists():
        pytest.fail(f"the browser tests need Chromium at {CHROMIUM}: apt-get install -y chromium "
                    "(or point BIRDER_INDEX_CHROMIUM at one)")  # fmt: skip
    with sync_playwright() as p:
        launched = p.chromium.launch(executable_path=str(CHROMIUM), args=FLAGS)
        yield launched
        launched.close()


@pytest.fixture
def served(collection: Path) -> Iterator[Address]:
    with open_index(collection / ".birder-index") as index, running(index, ServeOptions(port=0)) as address:
        yield address


@pytest.fixture
def page(browser: Any, served: Address, tmp_path: Path) -> Iterator[Any]:
    # bypass_csp: Playwright's waits evaluate strings, which the page's policy forbids; without the policy, the
    # name-as-text check below also shows that the page's own DOM building is safe, not only that CSP would block.
    context = browser.new_context(viewport={"width": 1280, "height": 900}, bypass_csp=True)
    context.set_default_timeout(TIMEOUT)
    tab = context.new_page()
    problems: list[str] = []
    tab.on("pageerror", lambda e: problems.append(f"page error: {e}"))
    tab.on("console", lambda m: problems.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
    tab.goto(served.url)
    tab.wait_for_selector(".status span")  # the page has read /api/info
    tab.problems = problems
    yield tab
    context.close()
    assert not [p for p in problems if "status of 4" not in p], problems  # refusals the test asked for aside


def shot(page: Any, tmp_path: Path, name: str) -> Path:
    path = tmp_path / f"{name}.png"
    page.wait_for_timeout(300)  # the last thumbnails fade in
    page.screenshot(path=str(path), full_page=False)
    assert path.stat().st_size > 10_000
    artifacts = os.environ.get("BIRDER_INDEX_ARTIFACTS")
    if artifacts:
        Path(artifacts).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, Path(artifacts) / path.name)
    return path


def test_the_address_carries_the_token_once(browser: Any, served: Address) -> None:
    context = browser.new_context()
    tab = context.new_page()
    tab.goto(served.base + "/")
    assert "needs the address" in tab.content()  # without the token: nothing but how to get in
    tab.goto(served.url + "#/browse")
    tab.wait_for_selector(".status span")
    assert tab.url == served.base + "/#/browse"  # the token left the address bar (and the history)
    assert tab.evaluate("document.cookie") == ""  # HttpOnly: no script of the page can read it
    tab.wait_for_selector(".grid .card")  # its requests carry the cookie
    tab.reload()
    tab.wait_for_selector(".grid .card")  # and so does a reload, without the token in the address
    context.close()


def test_search_by_a_dropped_photo_then_by_a_result(
    page: Any, served: Address, collection: Path, tmp_path: Path
) -> None:
    query = tmp_path / "my walk.jpg"
    shutil.copy(collection / "photo07.jpg", query)  # the same picture, from outside the collection
    page.set_input_files("input[type=file]", str(query))
    page.wait_for_url(re.compile(r"#/search\?.*upload="))
    first = page.locator(".grid .card").first
    first.wait_for()
    assert first.locator(".name").inner_text() == "photo07.jpg"  # its neighbour, first
    assert page.locator(".query .name").inner_text() == "my walk.jpg"
    page.wait_for_function("document.querySelectorAll('.grid .thumb.loaded').length >= 10")
    shot(page, tmp_path, "search")
    first.locator(".thumb").click()  # search from a result: the address says so, and a reload shows it again
    page.wait_for_url(re.compile(r"#/search\?.*id=\d+"))
    page.wait_for_selector(".query .name:text-is('photo07.jpg')")
    shown = page.url
    page.reload()
    page.wait_for_selector(".query .name:text-is('photo07.jpg')")
    assert page.url == shown and page.locator(".grid .card").count() == 13  # every other indexed photo (k=24)
    names = page.locator(".grid .card .name").all_inner_texts()
    assert "photo07.jpg" not in names


def test_an_unreadable_photo_gets_a_message(page: Any, collection: Path, tmp_path: Path) -> None:
    bad = tmp_path / "notes.jpg"
    bad.write_text("this is not a picture")
    page.set_input_files("input[type=file]", str(bad))
    notice = page.locator(".query .notice.error")
    notice.wait_for()
    assert notice.inner_text() == "cannot read query image notes.jpg (uploaded): not an image PIL can read"


def test_browse_pages_and_names_are_text_not_markup(
    page: Any, collection: Path, served: Address, tmp_path: Path
) -> None:
    hostile = collection / "<img src=x onerror=window.__owned=1>.jpg"
    shutil.copy(collection / "photo03.jpg", hostile)
    from birder_index.indexer import BuildOptions
    from birder_index.indexer import build_index

    build_index(collection, options=BuildOptions(workers=0))
    page.goto(served.base + "/#/browse")
    page.wait_for_selector(".grid .card")
    names = page.locator(".grid .card .name").all_inner_texts()
    assert hostile.name in names  # shown as the characters it is made of
    assert page.evaluate("window.__owned") is None
    assert page.locator("img[src='x']").count() == 0
    page.select_option("select[aria-label=status]", "failed")
    page.wait_for_selector("table.failed")
    row = page.locator("table.failed tbody tr").first.locator("td").all_inner_texts()
    assert row[0] == "broken.jpg" and row[2]  # with its reason
    page.select_option("select[aria-label=status]", "indexed")
    page.wait_for_function("document.querySelectorAll('.grid .thumb.loaded').length >= 12")
    shot(page, tmp_path, "browse")


def test_duplicates_review_and_a_group_marked_not_duplicates(page: Any, served: Address, collection: Path,
                                                             tmp_path: Path) -> None:  # fmt: skip
    page.goto(served.base + "/#/duplicates")
    page.check("input[name=mode][value=fixed]")
    page.fill("input[aria-label=threshold]", "0.95")
    page.click("button:text('Find duplicates')")
    page.wait_for_selector("article.group")
    assert "2 groups, 2 duplicates" in page.locator(".summary").inner_text()
    group = page.locator("article.group", has=page.locator(".name:text-is('small_01.jpg')"))
    assert group.locator(".card.keeper .name").inner_text() == "photo01.jpg"
    page.wait_for_function("document.querySelectorAll('article.group .thumb.loaded').length >= 4")
    shot(page, tmp_path, "duplicates")
    group.locator("button:text('Not duplicates')").click()
    page.wait_for_selector(".message:has-text('marked not duplicates')")
    page.wait_for_function(
        "!document.body.innerText.includes('small_01.jpg') || document.querySelectorAll('article.group').length === 1"
    )
    assert page.locator("article.group").count() == 1
    with open_index(collection / ".birder-index") as index:
        marked, _ = not_duplicate_pairs(index)
    assert len(marked) == 1  # stored in the index...
    out = CliRunner().invoke(cli, ["dedup", "--threshold", "0.95", "--index-dir", str(collection / ".birder-index")])
    assert "small_01.jpg" not in out.stdout and "kept apart" in out.output  # ...and the CLI's dedup honours it


def test_labels_assigned_and_a_suggestion_accepted_with_one_key(page: Any, served: Address, collection: Path,
                                                                tmp_path: Path) -> None:  # fmt: skip
    page.goto(served.base + "/#/labels?set=birds")
    page.wait_for_selector(".grid .card")

    def label(names: list[str], value: str) -> None:
        for name in names:
            page.locator(".grid .card", has=page.locator(f".name:text-is('{name}')")).locator(".thumb").click()
        assert page.locator(".selectionbar strong").inner_text() == f"{len(names)} selected"
        page.fill("input[aria-label=label]", value)
        page.keyboard.press("Enter")
        page.wait_for_selector(f".message:has-text('labelled “{value}”')")

    label(["photo00.jpg", "photo01.jpg", "photo03.jpg"], "robin")
    label(["photo04.jpg", "photo06.jpg", "photo07.jpg"], "finch")
    badges = page.locator(".grid .card", has=page.locator(".name:text-is('photo06.jpg')")).locator(".badge")
    assert badges.inner_text() == "finch"
    listed = CliRunner().invoke(cli, ["label", "list", "--index-dir", str(collection / ".birder-index")]).stdout
    assert listed.splitlines() == ["birds\tfinch\t3", "birds\trobin\t3"]  # the CLI's label set
    page.wait_for_function("document.querySelectorAll('.grid .thumb.loaded').length >= 12")
    shot(page, tmp_path, "labels")

    page.click("button:text('Suggestions')")
    page.click("button:text('Compute suggestions')")
    current = page.locator(".review .big .card .name")
    current.wait_for()
    name = current.inner_text()
    suggested = page.locator(".choices button").first.locator("span").first.inner_text().split(" ", 1)[1]
    page.wait_for_function("document.querySelector('.review .big .thumb.loaded') !== null")
    shot(page, tmp_path, "suggestions")
    page.keyboard.press("Enter")  # accept
    page.wait_for_selector(f".message:has-text('{name}: {suggested}')")
    assert current.inner_text() != name  # the next one, least confident first
    with open_index(collection / ".birder-index") as index:
        from birder_index.search import image_at

        row = image_at(index, name if "/" in name else _path_of(collection, name))
        assert row is not None and labels_of_images(index, "birds", [row.id]) == {row.id: suggested}
    page.keyboard.press("2")  # the second choice for the next one
    page.wait_for_selector(".message >> nth=1")
    listed = json.loads(CliRunner().invoke(cli, ["label", "list", "--json", "--index-dir",
                                                 str(collection / ".birder-index")]).stdout)  # fmt: skip
    assert sum(row["images"] for row in listed) == 8

    page.goto(served.base + "/#/probe?set=birds")
    page.click("button:text('Fit and evaluate')")
    page.wait_for_selector(".metric", timeout=120_000)  # a fit with cross-validation: slow on a busy machine
    assert page.locator(".confusion .cell").count() == 4 and page.locator(".bars .track").count() == 2
    shot(page, tmp_path, "probe")


def _path_of(collection: Path, name: str) -> str:
    (found,) = [p for p in collection.rglob(name) if ".birder-index" not in p.parts]
    return found.relative_to(collection).as_posix()
