"""The live preview in a real headless Chromium (Debian's /usr/bin/chromium via Playwright).

A real ``bulletin preview --no-open --port 0`` subprocess serves a copy of the workspace.
Host names do not resolve in the browser, so remote images in the email cannot slow a test
down or make it depend on the network.
"""

from __future__ import annotations

import json
import os
import queue
import re
import shutil
import signal
import smtplib
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from email.message import EmailMessage
from email.policy import SMTP
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from bulletin.mail.headers import fold, text_pieces
from bulletin.sink import start_sink
from conftest import CHROMIUM, CHROMIUM_ARGS  # noqa: E402

pytestmark = pytest.mark.browser

playwright_api = pytest.importorskip("playwright.sync_api")
from playwright.sync_api import Browser, Page, expect, sync_playwright  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
SLUG = "2014-10-clusterpolisee-03"
BULLETIN = Path(sys.executable).parent / "bulletin"
RELOAD_MS = 3000
"""A save must show in the open page within 3 s (the preview aims for well under 1 s)."""
ROMANIAN = "Vă dorim o lectură plăcută"

if not CHROMIUM.exists():  # pragma: no cover - the Makefile installs it
    pytest.skip("Debian chromium is not installed (make system-deps)", allow_module_level=True)


# -- fixtures -------------------------------------------------------------------------------


def copy_workspace(root: Path) -> Path:
    """The repository's workspace files copied to ``root`` (as conftest's workspace_dir)."""
    root.mkdir(parents=True)
    shutil.copy(REPO / "bulletin.toml", root / "bulletin.toml")
    shutil.copytree(REPO / "templates", root / "templates")
    shutil.copytree(REPO / "issues", root / "issues")
    (root / "subscribers").mkdir()
    return root


class PreviewProcess:
    """``bulletin preview --no-open --port 0`` on a workspace; knows its URL once it listens."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.issue_yaml = root / "issues" / SLUG / "issue.yaml"
        self.proc = subprocess.Popen(
            [str(BULLETIN), "--workspace", str(root), "preview", SLUG, "--no-open", "--port", "0"],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            encoding="utf-8",
        )
        self.output: list[str] = []
        lines: queue.Queue[str] = queue.Queue()

        def pump() -> None:
            assert self.proc.stdout is not None
            for line in self.proc.stdout:
                self.output.append(line)
                lines.put(line)

        self._pump_thread = threading.Thread(target=pump, daemon=True)
        self._pump_thread.start()
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            try:
                line = lines.get(timeout=0.1)
            except queue.Empty:
                if self.proc.poll() is not None:
                    break
                continue
            if m := re.search(r"at (http://127\.0\.0\.1:\d+)/", line):
                self.url = m.group(1)
                return
        self.stop()
        pytest.fail("bulletin preview did not start:\n" + "".join(self.output))

    def stop(self) -> None:
        """Ctrl+C, as a user would; kill only if it hangs. Closes the output pipe."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(8)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._pump_thread.join(5)
        assert self.proc.stdout is not None
        self.proc.stdout.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


GREETING = """
<mj-section padding="8px 0px">
  <mj-column>
    <mj-text><p>Salut, {{ subscriber.get('name', 'cititorule') }}!</p></mj-text>
  </mj-column>
</mj-section>
"""
"""Added to the footer: the default layout shows no per-recipient text besides links."""


@pytest.fixture(scope="module")
def preview(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PreviewProcess]:
    """One server for the module (starting one costs about a second).

    Tests that edit the workspace restore it afterwards (see ``editable``).
    """
    root = copy_workspace(tmp_path_factory.mktemp("preview") / "ws")
    footer = root / "templates" / "partials" / "footer.mjml.j2"
    footer.write_text(footer.read_text(encoding="utf-8") + GREETING, encoding="utf-8")
    server = PreviewProcess(root)
    yield server
    server.stop()


@pytest.fixture
def editable(preview: PreviewProcess) -> Iterator[PreviewProcess]:
    """The module's server; issue.yaml is put back, and rebuilt, after the test."""
    original = preview.issue_yaml.read_text(encoding="utf-8")
    yield preview
    if preview.issue_yaml.read_text(encoding="utf-8") != original:
        before = httpx.get(preview.url + "/summary.json", timeout=5).json()["version"]
        write_atomically(preview.issue_yaml, original)
        deadline = time.monotonic() + RELOAD_MS / 1000
        while time.monotonic() < deadline:
            summary = httpx.get(preview.url + "/summary.json", timeout=5).json()
            if summary["version"] > before and summary["ok"]:
                break
            time.sleep(0.05)
        else:
            pytest.fail("the preview did not rebuild the restored issue")


def open_page(browser: Browser, width: int = 1400, height: int = 900) -> Page:
    context = browser.new_context(viewport={"width": width, "height": height})
    context.set_default_timeout(5000)
    return context.new_page()


def open_preview(browser: Browser, server: PreviewProcess) -> Page:
    page = open_page(browser)
    page.goto(server.url + "/")
    # Connected to the event stream and the summary filled in.
    expect(page.locator("#status")).to_contain_text("Live")
    return page


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def write_atomically(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def edit_issue(issue_yaml: Path, subject: str, paragraph: str) -> None:
    """New subject and a new first section (YAML round trip: layout changes, data does not)."""
    data: dict[str, Any] = yaml.safe_load(issue_yaml.read_text(encoding="utf-8"))
    data["subject"] = subject
    data["sections"].insert(0, {"type": "text", "body": paragraph})
    write_atomically(issue_yaml, yaml.safe_dump(data, allow_unicode=True, sort_keys=False))


# -- tests ----------------------------------------------------------------------------------


def test_screenshots_at_mobile_and_desktop_width(
    browser: Browser, preview: PreviewProcess, tmp_path: Path
) -> None:
    for width in (375, 800):
        page = open_page(browser, width=width, height=800)
        page.goto(preview.url + "/email.html")
        expect(page.get_by_text(ROMANIAN)).to_be_visible()
        shot = tmp_path / f"email-{width}.png"
        data = page.screenshot(path=shot, full_page=True)
        page.context.close()
        w, h = png_size(data)
        assert w == width
        assert h > 1000, "the whole email, not just the first screen"
        # A blank or nearly blank page compresses to a few KB; text and layout do not.
        assert len(data) > 30_000
        assert shot.stat().st_size == len(data)


def test_page_shows_both_widths_without_horizontal_overflow(
    browser: Browser, preview: PreviewProcess, tmp_path: Path
) -> None:
    page = open_preview(browser, preview)
    desktop = page.locator("#frame-desktop")
    mobile = page.locator("#frame-mobile")
    for frame, width in ((desktop, 800), (mobile, 375)):
        box = frame.bounding_box()
        assert box is not None and box["width"] == width
    handle = mobile.element_handle()
    assert handle is not None
    content = handle.content_frame()
    assert content is not None
    expect(content.get_by_text(ROMANIAN)).to_be_visible()
    scroll_width = content.evaluate("document.documentElement.scrollWidth")
    assert scroll_width <= 375, f"the email overflows the 375 px frame ({scroll_width} px)"
    # The frame is sized to the email, so the page does not hide it behind a scrollbar.
    assert content.evaluate("document.documentElement.clientWidth") == 375
    page.screenshot(path=tmp_path / "preview-page.png")
    page.context.close()


def test_personalisation_is_escaped(browser: Browser, preview: PreviewProcess) -> None:
    page = open_preview(browser, preview)
    page.fill("#sample-name", "<b>Ana</b>")
    page.fill("#sample-email", "ana.test@example.org")
    page.click("#sample button[type=submit]")
    frame = page.frame_locator("#frame-desktop")
    # The name is shown as the text "<b>Ana</b>", never as bold markup.
    expect(frame.get_by_text("Salut, <b>Ana</b>!")).to_be_visible()
    expect(frame.locator("b", has_text="Ana")).to_have_count(0)
    # The plain-text tab, reached with the keyboard.
    page.focus("#tab-email")
    page.keyboard.press("ArrowRight")
    expect(page.locator("#panel-text")).to_be_visible()
    expect(page.locator("#panel-email")).to_be_hidden()
    expect(page.locator("#tab-text")).to_be_focused()
    expect(page.locator("#text")).to_contain_text(ROMANIAN)
    assert "name=%3Cb%3EAna%3C%2Fb%3E" in page.url, "the sample survives a page reload"
    page.context.close()


def test_saving_issue_yaml_reloads_the_open_page(
    browser: Browser, editable: PreviewProcess
) -> None:
    page = open_preview(browser, editable)
    page.evaluate("window.__notReloaded = true")
    subject = "Ediție reîncărcată: știri din țară"
    paragraph = "Paragraf nou, salvat din editor: școală, înțelegere."

    started = time.monotonic()
    edit_issue(editable.issue_yaml, subject, paragraph)
    expect(page.frame_locator("#frame-desktop").get_by_text(paragraph)).to_be_visible(
        timeout=RELOAD_MS
    )
    expect(page.frame_locator("#frame-mobile").get_by_text(paragraph)).to_be_visible(
        timeout=RELOAD_MS
    )
    expect(page.locator("#subject")).to_have_text(subject, timeout=RELOAD_MS)
    elapsed = time.monotonic() - started
    assert elapsed < RELOAD_MS / 1000
    assert page.evaluate("window.__notReloaded") is True, "reloaded without a page reload"
    page.click("#tab-summary")
    expect(page.locator("#h-subject")).to_have_text(subject)
    page.context.close()


def test_broken_edit_shows_the_error_and_keeps_the_last_render(
    browser: Browser, editable: PreviewProcess, tmp_path: Path
) -> None:
    page = open_preview(browser, editable)
    banner = page.locator("#build-error")
    expect(banner).to_be_hidden()
    good = editable.issue_yaml.read_text(encoding="utf-8")
    broken = good.replace("language: ro", "language: Romanian!", 1)
    assert broken != good
    write_atomically(editable.issue_yaml, broken)

    expect(banner).to_be_visible(timeout=RELOAD_MS)
    expect(banner).to_contain_text(re.compile(r"issue\.yaml:\d+"))
    expect(banner).to_contain_text("language")
    expect(banner).to_contain_text("last good render")
    expect(page.locator("#status")).to_contain_text("failed")
    page.screenshot(path=tmp_path / "preview-error.png")
    # The email is still the last good one, in the page and at its address.
    expect(page.frame_locator("#frame-desktop").get_by_text(ROMANIAN)).to_be_visible()
    response = page.request.get(editable.url + "/email.html")
    assert response.status == 200 and ROMANIAN in response.text()
    summary = json.loads(page.request.get(editable.url + "/summary.json").text())
    assert summary["ok"] is False and summary["email"] is not None

    write_atomically(editable.issue_yaml, good)
    expect(banner).to_be_hidden(timeout=RELOAD_MS)
    expect(page.locator("#status")).to_contain_text("Live")
    page.context.close()


def captured_message(subject: str, html: str | None, text: str) -> bytes:
    """A message on the wire, its subject encoded as bulletin encodes it."""
    m = EmailMessage()
    m["From"] = "Clusterul Polisee <stiri@example.org>"
    m["To"] = "Ana Popescu <ana@example.org>"
    m.set_content(text)
    if html is not None:
        m.add_alternative(html, subtype="html")
    return fold("Subject", text_pieces(subject)).encode("ascii") + m.as_bytes(policy=SMTP)


def test_captured_mail_tab_lists_new_mail_and_shows_it(
    browser: Browser, preview: PreviewProcess
) -> None:
    page = open_page(browser)
    page.goto(preview.url + "/#captured")
    expect(page.locator("#panel-captured")).to_be_visible()
    expect(page.locator("#captured-empty")).to_contain_text("No captured mail yet.")

    subject = "Știri din țară: ședință la Brașov"
    paragraph = "Ședința are loc în sala mare; vă așteptăm."
    evil = "<script>window.__owned = 1</script><b>bold</b>"
    with start_sink(preview.root / "mail" / "sink", "127.0.0.1", 0) as sink:
        with smtplib.SMTP(sink.host, sink.port, timeout=5) as smtp:
            smtp.sendmail(
                "stiri@example.org",
                ["ana@example.org"],
                captured_message(subject, f"<p>{paragraph}</p>", "Ședința, în text.\n"),
            )
            smtp.sendmail("x@example.org", ["ana@example.org"], captured_message(evil, None, "-\n"))
        assert sink.wait(1, 5) == 2

    # The open tab polls: the new mail shows without a reload.
    rows = page.locator("#captured-list tbody tr")
    expect(rows).to_have_count(2, timeout=3000)
    expect(page.locator("#captured-empty")).to_be_hidden()
    expect(page.locator("#captured-badge")).to_have_text("(2)")
    # Markup in a subject is shown as text, never run or rendered.
    expect(rows.filter(has_text=evil)).to_have_count(1)
    expect(page.locator("#panel-captured script, #panel-captured b")).to_have_count(0)
    assert page.evaluate("window.__owned") is None

    rows.filter(has_text=subject).click()
    expect(page.locator("#cm-subject")).to_have_text(subject)
    expect(page.frame_locator("#captured-frame").get_by_text(paragraph)).to_be_visible()
    page.click("#cm-view-text")
    expect(page.locator("#captured-text")).to_have_text("Ședința, în text.\n")
    expect(page.locator("#captured-frame")).to_be_hidden()
    page.click("#cm-view-headers")
    expect(page.locator("#captured-text")).to_contain_text("Delivered-To: ana@example.org")
    page.context.close()
