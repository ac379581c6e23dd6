"""The live preview over real HTTP: a uvicorn server on a free loopback port, httpx as client.

Most tests run the server in a background thread (fast, same process); the command-line tests
start ``bulletin preview`` as a real subprocess and stop it with Ctrl+C (SIGINT).
"""

from __future__ import annotations

import ast
import asyncio
import contextlib
import json
import os
import queue
import re
import signal
import smtplib
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import formatdate, make_msgid
from importlib import resources
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from bulletin import workspace as ws
from bulletin.errors import BulletinError, ContentError, Location, Problem
from bulletin.mail.headers import fold, text_pieces
from bulletin.sink import SinkHandle, read_captured, start_sink
from bulletin.web.livereload import LiveReloader
from bulletin.web.preview import (
    HOST,
    SINK_MAILDIR,
    PortInUse,
    bind_socket,
    create_preview_app,
    make_server,
)

SLUG = "2014-10-clusterpolisee-03"
BULLETIN = Path(sys.executable).parent / "bulletin"
RELOAD_TIMEOUT = 3.0
"""A saved file must show in the preview within this many seconds (the aim is well under 1)."""
ROMANIAN = "Vă dorim o lectură plăcută"
"""A phrase of the sample issue's first section, with ă (its diacritics must survive)."""


GREETING = """
<mj-section padding="8px 0px">
  <mj-column>
    <mj-text>
      <p>Salut, {{ subscriber.get('name', 'cititorule') }} ({{ subscriber.email }})</p>
    </mj-text>
  </mj-column>
</mj-section>
"""
"""A footer addition showing the sample subscriber's name and address."""


# -- helpers --------------------------------------------------------------------------------


def write_atomically(path: Path, text: str) -> None:
    """Save like most editors do: write a temporary file, then rename it over the original."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def set_subject(issue_yaml: Path, subject: str) -> None:
    text = issue_yaml.read_text(encoding="utf-8")
    line = "subject: " + json.dumps(subject, ensure_ascii=False)
    new, n = re.subn(r"^subject:.*$", line, text, count=1, flags=re.M)
    assert n == 1, "the sample issue has a one-line subject"
    write_atomically(issue_yaml, new)


def add_section(issue_yaml: Path, section: dict[str, Any]) -> None:
    """Insert ``section`` first in the issue (YAML round trip: layout changes, data does not)."""
    data = yaml.safe_load(issue_yaml.read_text(encoding="utf-8"))
    data["sections"].insert(0, section)
    write_atomically(issue_yaml, yaml.safe_dump(data, allow_unicode=True, sort_keys=False))


@dataclass
class RunningPreview:
    url: str
    root: Path
    issue_dir: Path

    @property
    def issue_yaml(self) -> Path:
        return self.issue_dir / "issue.yaml"

    def get(self, path: str, **params: str) -> httpx.Response:
        return httpx.get(self.url + path, params=params, timeout=5)

    def summary(self) -> dict[str, Any]:
        r = self.get("/summary.json")
        assert r.status_code == 200
        data: dict[str, Any] = r.json()
        return data

    def wait_for(
        self, ok: Callable[[dict[str, Any]], bool], timeout: float = RELOAD_TIMEOUT
    ) -> dict[str, Any]:
        """The summary once ``ok(summary)`` holds; fails after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            data = self.summary()
            if ok(data):
                return data
            if time.monotonic() > deadline:
                pytest.fail(f"preview not updated within {timeout} s; last summary: {data}")
            time.sleep(0.05)


@contextlib.contextmanager
def preview_in_thread(root: Path) -> Iterator[RunningPreview]:
    """The preview app served by uvicorn in a background thread on a free port."""
    workspace = ws.load(root)
    issue_dir = workspace.issue_dir(SLUG)
    app = create_preview_app(workspace, issue_dir)
    sock = bind_socket(HOST, 0)
    started = threading.Event()
    server = make_server(app, on_started=started.set)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        assert started.wait(10), "the preview server did not start"
        yield RunningPreview(f"http://{HOST}:{sock.getsockname()[1]}", root, issue_dir)
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()
    assert not thread.is_alive(), "the preview server did not stop"


@pytest.fixture
def preview(workspace_dir: Path) -> Iterator[RunningPreview]:
    with preview_in_thread(workspace_dir) as running:
        yield running


def read_event(lines: Iterator[str]) -> dict[str, Any]:
    """The next Server-Sent Event (keep-alive comments skipped) as {"event", "data"}."""
    event: dict[str, Any] = {}
    for line in lines:
        if not line:
            if "data" in event:
                return event
            continue
        if line.startswith(":"):
            continue
        field, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if field == "data":
            event["data"] = json.loads(value)
        elif field == "event":
            event["event"] = value
    raise AssertionError("the event stream ended")


# -- the HTTP routes ------------------------------------------------------------------------


def test_page_links_both_widths_and_is_locked_down(preview: RunningPreview) -> None:
    r = preview.get("/")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/html")
    assert r.headers["x-content-type-options"] == "nosniff"
    csp = r.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
    page = r.text
    assert re.search(r'<iframe[^>]*id="frame-desktop"[^>]*width="800"', page)
    assert re.search(r'<iframe[^>]*id="frame-mobile"[^>]*width="375"', page)
    for tab in ("tab-email", "tab-text", "tab-summary", "tab-captured"):
        assert f'id="{tab}"' in page
    for name in ("preview.js", "preview.css"):
        static = preview.get(f"/static/{name}")
        assert static.status_code == 200 and len(static.content) > 500
        assert static.headers["x-content-type-options"] == "nosniff"
    assert preview.get("/static/../preview.py").status_code == 404


def test_email_html_text_and_summary(preview: RunningPreview) -> None:
    issue = yaml.safe_load(preview.issue_yaml.read_text(encoding="utf-8"))

    html = preview.get("/email.html")
    assert html.status_code == 200
    assert html.headers["content-type"] == "text/html; charset=utf-8"
    assert html.headers["x-content-type-options"] == "nosniff"
    csp = html.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "sandbox" in csp and "script" not in csp
    assert ROMANIAN in html.text

    text = preview.get("/email.txt")
    assert text.status_code == 200
    assert text.headers["content-type"] == "text/plain; charset=utf-8"
    assert ROMANIAN in text.text and "<p>" not in text.text

    summary = preview.summary()
    assert summary["ok"] is True and summary["error"] is None
    email = summary["email"]
    assert email["subject"] == issue["subject"]
    assert email["preheader"] == issue["preheader"]
    config = ws.load(preview.root).config
    assert email["from"].endswith(f"<{config.sender.from_email}>")
    assert email["html_bytes"] == len(html.content)
    assert email["html_kb"] == round(len(html.content) / 1024, 1) > 1
    for p in email["problems"]:
        assert p["severity"] in ("error", "warning") and p["message"]


def test_sample_subscriber_values_are_escaped_in_html(workspace_dir: Path) -> None:
    # The default layout shows no per-recipient text besides links, so greet the reader.
    footer = workspace_dir / "templates" / "partials" / "footer.mjml.j2"
    footer.write_text(footer.read_text(encoding="utf-8") + GREETING, encoding="utf-8")
    with preview_in_thread(workspace_dir) as preview:
        evil = "<b>Ana</b>"
        html = preview.get("/email.html", name=evil, email="ana@example.org").text
        assert "Salut, &lt;b&gt;Ana&lt;/b&gt; (ana@example.org)" in html
        assert evil not in html
        # An empty name takes the template's fallback; no name given takes the sample reader.
        assert (
            "Salut, cititorule (x@example.org)"
            in preview.get("/email.html", name="", email="x@example.org").text
        )
        assert "Salut, Ana Popescu" in preview.get("/email.html").text
        assert {"name", "email"} <= set(preview.summary()["email"]["slots"])
        page = preview.get("/", name=evil).text
        assert 'value="&lt;b&gt;Ana&lt;/b&gt;"' in page and evil not in page


def test_requests_must_name_the_loopback_host(preview: RunningPreview) -> None:
    # A page on another site can resolve its own name to 127.0.0.1 (DNS rebinding); the
    # preview answers only to the loopback names.
    r = httpx.get(preview.url + "/email.html", headers={"Host": "evil.example"}, timeout=5)
    assert r.status_code == 400
    assert ROMANIAN not in r.text
    assert httpx.get(preview.url + "/", headers={"Host": "localhost"}, timeout=5).is_success


# -- live reload ----------------------------------------------------------------------------


def test_saving_issue_yaml_sends_an_event_and_rebuilds(preview: RunningPreview) -> None:
    timeout = httpx.Timeout(5, read=RELOAD_TIMEOUT + 2)
    with httpx.stream("GET", preview.url + "/events", timeout=timeout) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        lines = r.iter_lines()
        first = read_event(lines)
        assert first["event"] == "build"
        seen = first["data"]["version"]

        subject = "Ediție de probă: știri și întâlniri"
        started = time.monotonic()
        set_subject(preview.issue_yaml, subject)
        while True:
            event = read_event(lines)["data"]
            assert event["version"] > seen
            if event["ok"]:
                break
        elapsed = time.monotonic() - started
    assert elapsed < RELOAD_TIMEOUT
    summary = preview.summary()
    assert summary["email"]["subject"] == subject
    assert summary["output_version"] == event["output_version"]


def test_saving_a_referenced_markdown_file_rebuilds(preview: RunningPreview) -> None:
    md = preview.issue_dir / "nota.md"
    md.write_text("Prima versiune a notei.\n", encoding="utf-8")
    add_section(preview.issue_yaml, {"type": "text", "body": {"file": "nota.md"}})
    preview.wait_for(lambda s: s["ok"] and "Prima versiune" in preview.get("/email.txt").text)

    md.write_text("A doua versiune: țară, școală, înșelătorie.\n", encoding="utf-8")
    preview.wait_for(lambda s: "A doua versiune" in preview.get("/email.html").text)
    assert "țară, școală, înșelătorie" in preview.get("/email.html").text


def test_saving_a_template_rebuilds_and_template_errors_are_located(
    preview: RunningPreview,
) -> None:
    template = preview.root / "templates" / "sections" / "text.mjml.j2"
    good = template.read_text(encoding="utf-8")
    before = preview.summary()["version"]
    template.write_text(good + "{# touched #}\n", encoding="utf-8")
    assert preview.wait_for(lambda s: s["version"] > before)["ok"] is True

    template.write_text("{% if section.title %}\n" + good, encoding="utf-8")  # never closed
    broken = preview.wait_for(lambda s: not s["ok"])
    paths = [p["path"] for p in broken["error"]["problems"]]
    assert any(p.endswith("text.mjml.j2") for p in paths), broken["error"]
    assert ROMANIAN in preview.get("/email.html").text

    template.write_text(good, encoding="utf-8")
    preview.wait_for(lambda s: s["ok"])


def test_broken_edit_shows_problems_and_keeps_last_good_render(preview: RunningPreview) -> None:
    good = preview.summary()
    good_html = preview.get("/email.html").text
    text = preview.issue_yaml.read_text(encoding="utf-8")
    write_atomically(preview.issue_yaml, text.replace("sections:", "sections: [", 1))

    broken = preview.wait_for(lambda s: not s["ok"])
    error = broken["error"]
    assert error["bug"] is False
    assert error["problems"], "the failure lists located problems"
    where = error["problems"][0]
    assert where["path"].endswith("issue.yaml") and where["line"] >= 1
    # The last good render is still served, as it was.
    assert broken["output_version"] == good["output_version"]
    assert broken["email"]["subject"] == good["email"]["subject"]
    assert preview.get("/email.html").text == good_html

    write_atomically(preview.issue_yaml, text)
    fixed = preview.wait_for(lambda s: s["ok"])
    assert fixed["error"] is None and fixed["output_version"] > good["output_version"]


def test_a_first_build_failure_is_served_until_fixed(workspace_dir: Path) -> None:
    issue_yaml = workspace_dir / "issues" / SLUG / "issue.yaml"
    text = issue_yaml.read_text(encoding="utf-8")
    issue_yaml.write_text(text.replace("language: ro", "language: Romanian!", 1), "utf-8")
    with preview_in_thread(workspace_dir) as preview:
        summary = preview.summary()
        assert summary["ok"] is False and summary["email"] is None
        assert any("language" in p["message"] for p in summary["error"]["problems"])
        html = preview.get("/email.html")
        assert html.status_code == 503
        assert "language" in html.text and "issue.yaml" in html.text
        assert preview.get("/email.txt").status_code == 503

        write_atomically(issue_yaml, text)
        preview.wait_for(lambda s: s["ok"])
        assert ROMANIAN in preview.get("/email.html").text


# -- captured mail (bulletin sink) ----------------------------------------------------------

SUBJECT_RO = "Știri din țară: întâlnire la Brașov, lectură plăcută"
EVIL_SUBJECT = "<script>alert('x')</script> & <b>bold</b>"


def with_subject(m: EmailMessage, subject: str) -> bytes:
    """``m`` on the wire with a Subject encoded as bulletin encodes it.

    (The ``email.policy`` folder may move the space between two words to between two
    encoded-words, where decoders drop it; see :mod:`bulletin.mail.headers`.)
    """
    return fold("Subject", text_pieces(subject)).encode("ascii") + m.as_bytes(policy=SMTP)


def newsletter(subject: str = SUBJECT_RO) -> bytes:
    """A multipart/alternative message like bulletin sends, subject RFC 2047-encoded."""
    m = EmailMessage()
    m["From"] = "Clusterul Polisee <stiri@example.org>"
    m["To"] = "Ana Popescu <ana@example.org>"
    m["Date"] = formatdate(localtime=True)
    m["Message-ID"] = make_msgid(domain="example.org")
    m.set_content(f"{ROMANIAN}, în text simplu.\n")
    m.add_alternative(f"<p>{ROMANIAN}, în <b>HTML</b>.</p>\n", subtype="html")
    return with_subject(m, subject)


def hostile() -> bytes:
    """Text only, with markup in the subject and the sender's display name."""
    m = EmailMessage()
    m["From"] = '"<img src=x onerror=alert(1)>" <evil@example.org>'
    m["To"] = "victim@example.org"
    m.set_content("Nothing to see.\n")
    return with_subject(m, EVIL_SUBJECT)


def deliver(sink: SinkHandle, message: bytes, rcpt: str = "ana@example.org") -> str:
    """Send ``message`` through the running sink with smtplib; the key it was stored under."""
    seen = sink.count
    before = set(sink_keys(sink.maildir))
    with smtplib.SMTP(sink.host, sink.port, timeout=5) as smtp:
        smtp.sendmail("stiri@example.org", [rcpt], message)
    assert sink.wait(seen, 5) == seen + 1, "the sink did not store the message"
    (key,) = set(sink_keys(sink.maildir)) - before
    return key


def sink_keys(maildir: Path) -> dict[str, Path]:
    return {p.name.split(":", 1)[0]: p for p in maildir.glob("[nc][eu][wr]/*")}


def age(maildir: Path, key: str, seconds: float) -> None:
    """Make a captured file older, so "newest first" does not hang on timestamp resolution."""
    path = sink_keys(maildir)[key]
    then = time.time() - seconds
    os.utime(path, (then, then))


@dataclass
class CapturedPreview:
    preview: RunningPreview
    sink: SinkHandle
    ro_key: str
    evil_key: str


@pytest.fixture
def captured(workspace_dir: Path) -> Iterator[CapturedPreview]:
    """A preview and a real sink delivering into the workspace's default Maildir."""
    with start_sink(workspace_dir / SINK_MAILDIR, HOST, 0) as sink:
        ro_key = deliver(sink, newsletter())
        evil_key = deliver(sink, hostile(), "victim@example.org")
        age(sink.maildir, ro_key, 120)
        age(sink.maildir, evil_key, 60)
        with preview_in_thread(workspace_dir) as preview:
            yield CapturedPreview(preview, sink, ro_key, evil_key)


def test_no_captured_mail_shows_how_to_get_some(preview: RunningPreview) -> None:
    r = preview.get("/captured.json")
    assert r.status_code == 200
    assert r.json() == {
        "maildir": "mail/sink",
        "exists": False,
        "total": 0,
        "limit": 200,
        "messages": [],
    }
    page = preview.get("/").text
    empty = re.search(r'<p id="captured-empty"([^>]*)>(.*?)</p>', page, re.S)
    assert empty is not None
    assert "hidden" not in empty.group(1)
    text = re.sub(r"\s+", " ", re.sub(r"<[^>]+>", "", empty.group(2)))
    assert text == (
        "No captured mail yet. Start bulletin sink and send with "
        "bulletin send ISSUE --list SLUG or --test you@example.org."
    )


def test_captured_json_is_decoded_escaped_and_newest_first(captured: CapturedPreview) -> None:
    preview = captured.preview
    r = preview.get("/captured.json")
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/json"
    assert r.headers["x-content-type-options"] == "nosniff"
    # Markup from a sender never appears as markup, even in the raw JSON; UTF-8 stays as is.
    assert "<" not in r.text and ">" not in r.text
    assert "\\u003cscript\\u003e" in r.text
    assert SUBJECT_RO in r.text
    data = r.json()
    assert data["total"] == 2 and data["exists"] is True
    evil, ro = data["messages"]
    assert (evil["key"], ro["key"]) == (captured.evil_key, captured.ro_key)
    assert evil["subject"] == EVIL_SUBJECT
    assert evil["from"] == '"<img src=x onerror=alert(1)>" <evil@example.org>'
    assert ro["subject"] == SUBJECT_RO
    assert ro["to"] == "Ana Popescu <ana@example.org>"
    assert ro["delivered_to"] == "ana@example.org"
    assert ro["message_id"].endswith("@example.org>") and ro["date"]
    assert ro["size"] == sink_keys(captured.sink.maildir)[ro["key"]].stat().st_size
    assert ro["received"] < evil["received"]
    page = preview.get("/").text
    assert re.search(r'<p id="captured-empty"[^>]* hidden>', page)

    limited = preview.get("/captured.json", limit="1").json()
    assert limited["total"] == 2 and [m["key"] for m in limited["messages"]] == [evil["key"]]

    # Mail arriving while the preview runs is listed at the next request.
    new_key = deliver(captured.sink, newsletter("A treia: ședință"))
    again = preview.get("/captured.json").json()
    assert again["total"] == 3
    assert [m["key"] for m in again["messages"]] == [new_key, evil["key"], ro["key"]]
    assert again["messages"][0]["subject"] == "A treia: ședință"


def test_captured_message_html_text_and_source(captured: CapturedPreview) -> None:
    preview = captured.preview
    key = captured.ro_key
    html = preview.get(f"/captured/{key}.html")
    assert html.status_code == 200
    assert html.headers["content-type"] == "text/html; charset=utf-8"
    csp = html.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "sandbox" in csp and "script" not in csp
    assert f"<p>{ROMANIAN}, în <b>HTML</b>.</p>" in html.text

    text = preview.get(f"/captured/{key}.txt")
    assert text.status_code == 200
    assert text.headers["content-type"] == "text/plain; charset=utf-8"
    assert text.text == f"{ROMANIAN}, în text simplu.\n"

    raw = read_captured(captured.sink.maildir, key)
    source = preview.get(f"/captured/{key}.eml")
    assert source.headers["content-type"] == "text/plain; charset=utf-8"
    assert source.content == raw
    assert source.text.startswith("X-Bulletin-Envelope-From: <")
    assert "Subject: =?utf-8?" in source.text, "the subject travelled RFC 2047-encoded"

    head = preview.get(f"/captured/{key}.eml", headers="1")
    assert head.content == raw[: raw.index(b"\r\n\r\n") + 4]
    assert "Delivered-To: ana@example.org" in head.text and ROMANIAN not in head.text

    download = preview.get(f"/captured/{key}.eml", download="1")
    assert download.headers["content-type"] == "message/rfc822"
    assert download.headers["content-disposition"].startswith("attachment; filename=")
    assert download.headers["content-disposition"].endswith('.eml"')
    assert download.content == raw

    # A text-only message has no HTML to show: say so inside the same sandbox.
    no_html = preview.get(f"/captured/{captured.evil_key}.html")
    assert no_html.status_code == 404 and "no HTML part" in no_html.text
    assert "sandbox" in no_html.headers["content-security-policy"]
    assert preview.get(f"/captured/{captured.evil_key}.txt").text == "Nothing to see.\n"


def test_unknown_and_traversal_keys_are_not_found(captured: CapturedPreview) -> None:
    preview = captured.preview
    config = (preview.root / "bulletin.toml").read_text(encoding="utf-8")
    key = captured.ro_key
    maildir_file = sink_keys(captured.sink.maildir)[key]
    paths = [
        "/captured/no-such-key.html",
        f"/captured/{key}x.txt",
        f"/captured/{key}:2,S.eml",  # a file name with its flags is not a key
        "/captured/...html",  # key ".."
        "/captured/%2E%2E.eml",
        "/captured/new.txt",
        "/captured/..%2F..%2Fbulletin.toml.txt",
        "/captured/%2Fetc%2Fpasswd.eml",
        f"/captured/..%2Fsink%2F{maildir_file.parent.name}%2F{maildir_file.name}.eml",
    ]
    for path in paths:
        r = httpx.get(preview.url + path, timeout=5)
        assert r.status_code == 404, path
        assert "sender" not in r.text and "root:" not in r.text and ROMANIAN not in r.text
    assert "sender" in config, "the check above would notice bulletin.toml leaking"


# -- the generic live reloader ----------------------------------------------------------------


def test_reloader_keeps_last_good_output_on_user_error_and_bug(tmp_path: Path) -> None:
    outcomes: list[Callable[[], str]] = [lambda: "first"]

    def fail_user() -> str:
        raise ContentError([Problem("bad key", Location("issue.yaml", 7))], summary="Invalid:")

    def fail_bug() -> str:
        raise ZeroDivisionError("oops")

    reloader = LiveReloader(lambda: outcomes[-1](), [tmp_path])
    assert reloader.rebuild().output == "first"

    outcomes.append(fail_user)
    state = reloader.rebuild()
    assert (state.version, state.output, state.output_version) == (2, "first", 1)
    assert state.failure is not None and not state.failure.bug
    assert state.failure.message == "Invalid:"
    assert [str(p) for p in state.failure.problems] == ["issue.yaml:7: bad key"]

    outcomes.append(fail_bug)
    state = reloader.rebuild()
    assert state.output == "first" and state.failure is not None and state.failure.bug
    assert "ZeroDivisionError: oops" in state.failure.message

    outcomes.append(lambda: "second")
    state = reloader.rebuild()
    assert (state.version, state.output, state.output_version) == (4, "second", 4)
    assert state.ok


def test_reloader_watches_files_and_wakes_waiters(tmp_path: Path) -> None:
    source = tmp_path / "page.txt"
    source.write_text("one", encoding="utf-8")
    built: list[str] = []

    def build() -> str:
        text = source.read_text(encoding="utf-8")
        if not text:
            raise BulletinError("empty page")
        built.append(text)
        return text

    async def scenario() -> tuple[str | None, float]:
        reloader = LiveReloader(build, [tmp_path])
        seen = reloader.rebuild().version
        stop = asyncio.Event()
        watcher = await reloader.start_watching(stop)
        started = time.monotonic()
        source.write_text("două", encoding="utf-8")
        state = reloader.state
        while state.output != "două" and time.monotonic() - started < RELOAD_TIMEOUT:
            state = await reloader.wait_for_change(state.version, RELOAD_TIMEOUT)
        elapsed = time.monotonic() - started
        assert state.version > seen
        stop.set()
        reloader.close()
        await asyncio.wait_for(watcher, 2)
        return state.output, elapsed

    output, elapsed = asyncio.run(scenario())
    assert output == "două"
    assert elapsed < 1.0
    assert built[0] == "one"


# -- the command line -----------------------------------------------------------------------


class PreviewProcess:
    """``bulletin preview`` as a subprocess; its output lines are collected by a thread."""

    def __init__(self, root: Path, *args: str, env: dict[str, str] | None = None) -> None:
        self.proc = subprocess.Popen(
            [str(BULLETIN), "--workspace", str(root), "preview", *args],
            env={**os.environ, **(env or {})},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            encoding="utf-8",
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.output: list[str] = []
        self._pump_thread = threading.Thread(target=self._pump, daemon=True)
        self._pump_thread.start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.output.append(line)
            self.lines.put(line)

    def wait_for_line(self, pattern: str, timeout: float = 15) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=0.1)
            except queue.Empty:
                if self.proc.poll() is not None and self.lines.empty():
                    break
                continue
            if m := re.search(pattern, line):
                return m
        pytest.fail(f"no line matching {pattern!r}; output:\n{''.join(self.output)}")

    def stop(self, sig: int = signal.SIGINT) -> int:
        """Ctrl+C (or ``sig``), as a user would; kill only if it hangs."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(8)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise
        finally:
            self._pump_thread.join(5)
            assert self.proc.stdout is not None
            self.proc.stdout.close()


def fake_browser(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """A stand-in browser (webbrowser runs $BROWSER with the URL) that writes the URL down."""
    opened = tmp_path / "opened.txt"
    script = tmp_path / "fake-browser"
    script.write_text(f'#!/bin/sh\nprintf %s "$1" > {opened}\n', encoding="utf-8")
    script.chmod(0o755)
    return opened, {"BROWSER": str(script)}


def test_cli_serves_until_ctrl_c_even_with_a_live_event_stream(
    workspace_dir: Path, tmp_path: Path
) -> None:
    opened, env = fake_browser(tmp_path)
    proc = PreviewProcess(workspace_dir, SLUG, "--no-open", "--port", "0", env=env)
    try:
        url = proc.wait_for_line(r"at (http://127\.0\.0\.1:\d+/)").group(1)
        assert httpx.get(url + "summary.json", timeout=5).json()["ok"] is True
        # An open event stream must not keep the server from stopping.
        with httpx.stream("GET", url + "events", timeout=5) as stream:
            assert read_event(stream.iter_lines())["event"] == "build"
            started = time.monotonic()
            code = proc.stop()
        assert code == 0
        assert time.monotonic() - started < 3
    finally:
        if proc.proc.poll() is None:
            proc.proc.kill()
            proc.stop()
    out = "".join(proc.output)
    assert "Built in" in out and "Traceback" not in out
    assert not opened.exists(), "--no-open still opened a browser"


def test_cli_stops_cleanly_on_sigterm_like_ctrl_c(workspace_dir: Path, tmp_path: Path) -> None:
    # A service manager or a terminal closing sends SIGTERM: a graceful stop, exit code 0.
    proc = PreviewProcess(workspace_dir, SLUG, "--no-open", "--port", "0")
    try:
        url = proc.wait_for_line(r"at (http://127\.0\.0\.1:\d+/)").group(1)
        with httpx.stream("GET", url + "events", timeout=5) as stream:
            assert read_event(stream.iter_lines())["event"] == "build"
            started = time.monotonic()
            code = proc.stop(signal.SIGTERM)
        assert code == 0, "".join(proc.output)
        assert time.monotonic() - started < 3
    finally:
        if proc.proc.poll() is None:
            proc.proc.kill()
            proc.stop()
    assert "Traceback" not in "".join(proc.output)


def test_cli_opens_the_browser_at_the_preview(workspace_dir: Path, tmp_path: Path) -> None:
    opened, env = fake_browser(tmp_path)
    proc = PreviewProcess(workspace_dir, SLUG, "--port", "0", env=env)
    try:
        url = proc.wait_for_line(r"at (http://127\.0\.0\.1:\d+/)").group(1)
        deadline = time.monotonic() + 5
        while not (opened.exists() and opened.read_text()) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert opened.read_text(encoding="utf-8") == url
    finally:
        assert proc.stop() == 0


def test_cli_reports_a_busy_port_plainly(workspace_dir: Path) -> None:
    with socket.socket() as busy:
        busy.bind((HOST, 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(PortInUse) as caught:
            bind_socket(HOST, port)
        assert caught.value.message == f"Port {port} on {HOST} is already in use."
        assert caught.value.hint and "--port N" in caught.value.hint
        result = subprocess.run(
            [str(BULLETIN), "-w", str(workspace_dir), "preview", SLUG, "--no-open", f"-p{port}"],
            capture_output=True,
            text=True,
            timeout=20,
        )
    assert result.returncode == 1
    assert f"Port {port} on {HOST} is already in use." in result.stderr
    assert "pass --port N" in result.stderr
    assert "Traceback" not in result.stderr


def test_cli_names_an_unknown_issue(workspace_dir: Path) -> None:
    result = subprocess.run(
        [str(BULLETIN), "-w", str(workspace_dir), "preview", "no-such-issue", "--no-open"],
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert result.returncode == 1
    assert "No issue 'no-such-issue'" in result.stderr and SLUG in result.stderr


# -- packaging and layering -------------------------------------------------------------------


def test_page_files_are_package_data() -> None:
    web = resources.files("bulletin.web")
    for name in ("templates/preview.html", "templates/no_build.html", "static/preview.js"):
        assert web.joinpath(name).is_file(), name


def test_web_does_not_import_the_command_line() -> None:
    # uvicorn itself imports click, so look at what our web modules import.
    web = Path(resources.files("bulletin.web"))  # type: ignore[arg-type]
    for source in web.glob("*.py"):
        for node in ast.walk(ast.parse(source.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            else:
                continue
            for name in names:
                assert name.split(".")[0] != "click", f"{source.name} imports {name}"
                assert not name.startswith("bulletin.cli"), f"{source.name} imports {name}"
