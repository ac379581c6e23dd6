"""The unsubscribe page and the archive in a real headless Chromium (Debian's /usr/bin/chromium).

A real ``bulletin serve --port 0`` subprocess serves a copy of the workspace; the browser
opens a subscriber's link, presses the button, and the database (read through a separate
connection) must show the unsubscribe. Screenshots go to the test's tmp folder, or to
``$BULLETIN_SCREENSHOTS`` when set, for a person to look at.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from bulletin import workspace as ws
from bulletin.store.db import open_store, write_transaction
from bulletin.store.subscribers import create_list
from bulletin.tokens import TokenSigner
from conftest import CHROMIUM, CHROMIUM_ARGS, SAMPLE_SLUG, pass_database_url  # noqa: E402
from test_public import (
    ServeProcess,
    Site,
    make_workspace,
    statuses,
    subscribe,
    token_url,
)

pytestmark = pytest.mark.browser

playwright_api = pytest.importorskip("playwright.sync_api")
from playwright.sync_api import Browser, Page, expect, sync_playwright  # noqa: E402

if not CHROMIUM.exists():  # pragma: no cover - the Makefile installs it
    pytest.skip("Debian chromium is not installed (make system-deps)", allow_module_level=True)


@pytest.fixture(scope="module")
def site(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[Site]:
    root = make_workspace(
        tmp_path_factory.mktemp("serve-browser") / "ws", database_url=pass_database_url(request)
    )
    workspace = ws.load(root)
    engine = open_store(workspace.database_url())
    with write_transaction(engine) as conn:
        create_list(conn, "newsletter-ro", "Newsletter în română")
        create_list(conn, "news-en", "News in English")
    signer = TokenSigner.from_workspace(workspace)
    server = ServeProcess(root)
    try:
        yield Site(server, workspace, engine, signer)
    finally:
        server.stop()
        engine.dispose()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def shots(tmp_path: Path) -> Path:
    folder = Path(os.environ.get("BULLETIN_SCREENSHOTS") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def open_page(browser: Browser, width: int = 1000, height: int = 720) -> Page:
    context = browser.new_context(viewport={"width": width, "height": height})
    context.set_default_timeout(10_000)
    return context.new_page()


def test_clicking_the_button_unsubscribes(site: Site, browser: Browser, shots: Path):
    person = subscribe(site, "newsletter-ro", "news-en", language="ro")
    url = site.url + token_url(site, person, "newsletter-ro")
    page = open_page(browser)
    blocked: list[str] = []
    page.on("console", lambda m: blocked.append(m.text) if "Content Security" in m.text else None)
    page.goto(url)
    expect(page.locator("h1")).to_have_text("Vă dezabonați de la Newsletter în română?")
    button = page.get_by_role("button", name="Dezabonare")
    expect(button).to_be_visible()
    # The stylesheet loaded under the page's Content-Security-Policy.
    assert button.evaluate("b => getComputedStyle(b).backgroundColor") == "rgb(29, 78, 216)"
    page.screenshot(path=str(shots / "unsubscribe-page.png"), full_page=True)
    # Opening the page changed nothing.
    assert statuses(site, person)[1] == {"newsletter-ro": "subscribed", "news-en": "subscribed"}

    with page.expect_response(lambda r: r.request.method == "POST") as answer:
        button.click()
    assert answer.value.status == 200
    expect(page.locator("#status")).to_have_text(
        "Gata: adresa r***@example.org a fost dezabonată de la Newsletter în română."
    )
    assert page.url == url  # answered in place, no redirect
    page.screenshot(path=str(shots / "unsubscribe-done.png"), full_page=True)
    assert statuses(site, person) == (
        "active",
        {"newsletter-ro": "unsubscribed", "news-en": "subscribed"},
    )
    assert blocked == []
    page.context.close()


def test_ticking_all_lists_unsubscribes_from_everything(site: Site, browser: Browser):
    person = subscribe(site, "newsletter-ro", "news-en", language="en")
    page = open_page(browser, width=390, height=800)  # a phone
    page.goto(site.url + token_url(site, person, "news-en"))
    page.get_by_label("Also unsubscribe from every other list").check()
    page.get_by_role("button", name="Unsubscribe").click()
    expect(page.locator("#status")).to_contain_text(
        "is unsubscribed from all lists of ClusterPoliSEE e-newsletter"
    )
    assert statuses(site, person) == (
        "unsubscribed",
        {"newsletter-ro": "unsubscribed", "news-en": "unsubscribed"},
    )
    page.context.close()


def test_archive_in_the_browser(site: Site, browser: Browser, shots: Path):
    page = open_page(browser)
    page.goto(site.url + "/archive/")
    link = page.get_by_role("link", name="ClusterPoliSEE nr. 3: Open Days 2014", exact=False)
    expect(link).to_be_visible()
    page.screenshot(path=str(shots / "archive-index.png"), full_page=True)
    link.click()
    page.wait_for_url(f"**/archive/{SAMPLE_SLUG}")
    expect(page.get_by_text("Vă dorim o lectură plăcută", exact=False)).to_be_visible()
    expect(page.get_by_text("trimis către abonații ClusterPoliSEE e-newsletter")).to_be_visible()
    page.screenshot(path=str(shots / "archive-issue.png"))
    page.context.close()
