"""Signing up in a real headless Chromium: the hosted form, and a form embedded in a plain page
of another origin; the confirmation link opened in the browser subscribes the person.

A real ``bulletin serve`` (the module's own, see test_signup's ``site`` fixture) sends the
confirmation through a real SMTP relay (:class:`smtpfaults.FaultServer`); the embedding site
is a second tiny HTTP server on another port serving the snippet ``bulletin form`` prints.
"""

from __future__ import annotations

import functools
import http.server
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from bulletin.cli import cli
from bulletin.store.consent import consents_of
from bulletin.store.subscribers import find_subscriber
from conftest import CHROMIUM
from test_public_browser import browser, shots
from test_signup import Signup, confirm_link, new_address, pending, site, state

pytestmark = pytest.mark.browser

playwright_api = pytest.importorskip("playwright.sync_api")
from playwright.sync_api import Browser, Page, expect  # noqa: E402

if not CHROMIUM.exists():  # pragma: no cover - the Makefile installs it
    pytest.skip("Debian chromium is not installed (make system-deps)", allow_module_level=True)

__all__ = ["browser", "shots", "site"]  # fixtures, imported: this module gets its own


def open_page(browser: Browser, *, javascript: bool = True, locale: str = "ro-RO") -> Page:
    context = browser.new_context(
        viewport={"width": 1000, "height": 760}, java_script_enabled=javascript, locale=locale
    )
    context.set_default_timeout(10_000)
    page = context.new_page()
    violations: list[str] = []
    page.on(
        "console", lambda m: violations.append(m.text) if "Content Security" in m.text else None
    )
    page.csp_violations = violations  # type: ignore[attr-defined]
    return page


def assert_subscribed_with_consent(site: Signup, address: str, slug: str, name: str) -> None:
    assert state(site, address) == ("active", {slug: "subscribed"})
    assert pending(site, address) == 0
    with site.engine.connect() as conn:
        sub = find_subscriber(conn, address)
        assert sub is not None and sub.name == name
        records = consents_of(conn, sub.id)
    assert [(c.list_slug, c.source) for c in records] == [(slug, "form")]
    assert records[0].confirmed_at is not None and records[0].given_at is not None


def test_hosted_form_then_the_link_in_the_browser(
    site: Signup, browser: Browser, shots: Path
) -> None:
    address = new_address()
    page = open_page(browser)
    page.goto(site.url + "/subscribe/stiri")
    expect(page.locator("h1")).to_have_text("Abonare la Știri ClusterPoliSEE")
    # The honeypot is in the page but out of sight.
    expect(page.locator("#website")).not_to_be_in_viewport()
    page.get_by_label("Adresa de e-mail").fill(address)
    page.get_by_label("Nume (opțional)").fill("Ștefan Țurcanu")
    page.get_by_label("Sunt de acord să primesc", exact=False).check()
    page.screenshot(path=str(shots / "signup-form.png"), full_page=True)
    page.get_by_role("button", name="Abonare").click()
    expect(page.locator("#status")).to_contain_text("Vă mulțumim pentru înscrierea la")
    page.screenshot(path=str(shots / "signup-thanks.png"), full_page=True)
    assert state(site, address) is None

    link = confirm_link(site.wait_for_mail(address), site)
    confirm = open_page(browser)
    # One click of the person (the one on the link): the page posts itself as it loads.
    with confirm.expect_response(lambda r: r.request.method == "POST") as answer:
        confirm.goto(link)
    assert answer.value.status == 200
    expect(confirm.locator("#status")).to_have_text(
        "Vă mulțumim: adresa c***@example.org este abonată la Știri ClusterPoliSEE."
    )
    confirm.screenshot(path=str(shots / "signup-confirmed.png"), full_page=True)
    assert_subscribed_with_consent(site, address, "stiri", "Ștefan Țurcanu")
    assert page.csp_violations == [] and confirm.csp_violations == []  # type: ignore[attr-defined]
    page.context.close()
    confirm.context.close()


@pytest.fixture
def other_site(site: Signup, tmp_path: Path) -> Iterator[str]:
    """A plain page on another origin (another port) with the form `bulletin form` prints."""
    result = CliRunner().invoke(
        cli, ["-w", str(site.workspace.root), "form", "events-en", "--language", "en"]
    )
    assert result.exit_code == 0, result.output
    snippet = result.output
    base = site.workspace.config.newsletter.base_url
    assert f'action="{base}/subscribe/events-en"' in snippet
    assert "<script" not in snippet
    # The organisation's site would post to base_url; here that is the test server.
    snippet = snippet.replace(base, site.url)
    (tmp_path / "index.html").write_text(
        "<!doctype html><html lang='en'><head><meta charset='utf-8'><title>Example NGO</title>"
        f"</head><body><h1>Example NGO</h1><p>Our newsletter:</p>{snippet}</body></html>",
        encoding="utf-8",
    )
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/index.html"
    finally:
        server.shutdown()
        server.server_close()


def test_form_embedded_in_another_site_then_the_button_without_scripts(
    site: Signup, browser: Browser, other_site: str, shots: Path
) -> None:
    address = new_address()
    page = open_page(browser, locale="en-GB")
    page.goto(other_site)
    page.get_by_label("Email address").fill(address)
    page.get_by_label("I agree to receive", exact=False).check()
    page.screenshot(path=str(shots / "signup-embedded.png"), full_page=True)
    page.get_by_role("button", name="Subscribe").click()
    page.wait_for_url(site.url + "/subscribe/events-en")  # our answer, from another origin
    expect(page.locator("#status")).to_contain_text("Thank you for signing up to Events.")

    link = confirm_link(site.wait_for_mail(address), site)
    # Without JavaScript the page waits for the person: nothing changes until the button.
    confirm = open_page(browser, javascript=False, locale="en-GB")
    confirm.goto(link)
    expect(confirm.locator("h1")).to_have_text("Confirm your subscription to Events")
    assert state(site, address) is None and pending(site, address) == 1
    confirm.get_by_role("button", name="Confirm my subscription").click()
    expect(confirm.locator("#status")).to_have_text(
        "Thank you: c***@example.org is subscribed to Events."
    )
    assert_subscribed_with_consent(site, address, "events-en", "")
    page.context.close()
    confirm.context.close()


def test_preferences_page_in_the_browser(site: Signup, browser: Browser, shots: Path) -> None:
    from bulletin.store.db import write_transaction
    from bulletin.store.subscribers import add_subscriber

    address = new_address()
    with write_transaction(site.engine) as conn:
        result = add_subscriber(conn, address, "stiri", name="Ana", language="ro")
    page = open_page(browser)
    page.goto(site.url + "/preferences/" + site.signer.preferences_token(result.subscriber.id))
    expect(page.locator("h1")).to_have_text("Preferințele dumneavoastră")
    page.get_by_label("Events", exact=False).check()
    page.get_by_label("Știri ClusterPoliSEE", exact=False).uncheck()
    page.get_by_label("Nume (opțional)").fill("Ana Ștefănescu")
    page.screenshot(path=str(shots / "preferences.png"), full_page=True)
    page.get_by_role("button", name="Salvare").click()
    expect(page.locator("#status")).to_have_text("Salvat.")
    assert state(site, address) == (
        "active",
        {"stiri": "unsubscribed", "events-en": "subscribed"},
    )
    assert page.csp_violations == []  # type: ignore[attr-defined]
    page.context.close()
