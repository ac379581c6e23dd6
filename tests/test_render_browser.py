"""The rendered sample issue in a real headless Chromium: phone width and dark mode."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from bulletin import workspace as ws
from bulletin.content.loader import load_issue
from bulletin.render.pipeline import render_issue
from bulletin.render.values import sample_values
from conftest import CHROMIUM, CHROMIUM_ARGS

pytestmark = pytest.mark.browser

pytest.importorskip("playwright.sync_api")
from playwright.sync_api import Browser, Page, Route, sync_playwright  # noqa: E402

SAMPLE_SLUG = "2014-10-clusterpolisee-03"

if not CHROMIUM.exists():  # pragma: no cover - the Makefile installs it
    pytest.skip("Debian chromium is not installed (make system-deps)", allow_module_level=True)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as p:
        b = p.chromium.launch(
            executable_path=str(CHROMIUM),
            args=CHROMIUM_ARGS,
        )
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def sample_html(workspace_dir: Path) -> Path:
    workspace = ws.load(workspace_dir)
    loaded = load_issue(workspace, workspace.issue_dir(SAMPLE_SLUG))
    rendered = render_issue(workspace, loaded)
    path = workspace_dir / "sample.html"
    path.write_text(rendered.html.fill(sample_values(workspace, loaded.slug)), encoding="utf-8")
    return path


def open_page(browser: Browser, path: Path, width: int, scheme: str = "light") -> Page:
    page = browser.new_page(
        viewport={"width": width, "height": 900},
        color_scheme="dark" if scheme == "dark" else "light",
    )

    def offline(route: Route) -> None:
        # Images point at the web; the test stays on this machine.
        if route.request.url.startswith("file:"):
            route.continue_()
        else:
            route.abort()

    page.route("**/*", offline)
    page.goto(path.as_uri())
    return page


def test_phone_width_has_no_horizontal_scroll_and_events_read_well(
    browser: Browser, sample_html: Path
) -> None:
    page = open_page(browser, sample_html, 375)
    try:
        assert page.evaluate("document.documentElement.scrollWidth") <= 375
        # The columns collapse: content spans the screen less its padding.
        heading = page.locator("h2").first.bounding_box()
        assert heading is not None and heading["width"] > 300
        # Each event: its date block sits beside its title, and the title has room.
        blocks = page.locator(".evb")
        assert blocks.count() >= 3
        for i in range(blocks.count()):
            block = blocks.nth(i).bounding_box()
            title = page.locator(".evt h3").nth(i).bounding_box()
            assert block is not None and title is not None
            assert block["x"] + block["width"] <= title["x"]
            assert abs(block["y"] - title["y"]) < 12
            assert title["width"] >= 220
            assert title["x"] + title["width"] <= 375
        body_size = page.evaluate(
            "parseFloat(getComputedStyle(document.querySelector('.c p')).fontSize)"
        )
        assert body_size >= 16
    finally:
        page.close()


def test_dark_mode_turns_the_cards_dark_and_text_light(browser: Browser, sample_html: Path) -> None:
    page = open_page(browser, sample_html, 600, scheme="dark")
    try:
        card = page.evaluate(
            "getComputedStyle(document.querySelector('.card table')).backgroundColor"
        )
        text = page.evaluate("getComputedStyle(document.querySelector('.c p')).color")
        assert card == "rgb(27, 32, 39)"
        assert text == "rgb(230, 232, 235)"
    finally:
        page.close()
    page = open_page(browser, sample_html, 600)
    try:
        card = page.evaluate(
            "getComputedStyle(document.querySelector('.card table')).backgroundColor"
        )
        assert card == "rgb(255, 255, 255)"
    finally:
        page.close()


def test_dark_mode_keeps_the_call_to_action_distinct(browser: Browser, sample_html: Path) -> None:
    script = "getComputedStyle(document.querySelector('{}')).backgroundColor"
    page = open_page(browser, sample_html, 600, scheme="dark")
    try:
        cta = page.evaluate(script.format(".cta table"))
        card = page.evaluate(script.format(".card:not(.cta) table"))
        assert cta == "rgb(29, 53, 80)" and card == "rgb(27, 32, 39)"
        text = page.evaluate("getComputedStyle(document.querySelector('.cta .c p')).color")
        assert text == "rgb(230, 232, 235)"
    finally:
        page.close()
    page = open_page(browser, sample_html, 600)
    try:
        assert page.evaluate(script.format(".cta table")) == "rgb(238, 244, 251)"
    finally:
        page.close()


def test_the_date_badge_puts_day_and_month_on_two_lines_and_the_preheader_is_hidden(
    browser: Browser, sample_html: Path
) -> None:
    page = open_page(browser, sample_html, 375)
    try:
        lines = page.evaluate(
            """() => [...document.querySelectorAll('td.evb')].map(td => {
                const day = td.querySelector('b').getBoundingClientRect();
                const range = document.createRange();
                range.selectNodeContents(td.lastChild);
                const month = range.getBoundingClientRect();
                return [td.textContent.trim(), month.top >= day.bottom - 1];
            })"""
        )
        assert lines[0] == ["6–9oct.", True]
        assert all(below for _, below in lines), lines
        assert not page.locator(".ph").is_visible()
        first = page.evaluate("document.body.innerText.trim().split('\\n')[0]")
        assert "Dezbaterea" not in first  # the preheader is not shown in the page
    finally:
        page.close()
