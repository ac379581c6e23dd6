"""``bulletin preview``: a local web app that shows an issue as it will be sent, live.

The app renders the issue once per change (see :mod:`bulletin.web.livereload`) and serves:

``/``               the preview page (email at desktop and mobile widths, plain text, summary)
``/email.html``     the HTML email filled for a sample subscriber (``?name=&email=``)
``/email.txt``      the plain-text part, filled the same way
``/summary.json``   subject, preheader, sender, sizes, check findings and the build state
``/events``         Server-Sent Events: one ``build`` event per rebuild
``/captured.json``  the messages `bulletin sink` captured in the workspace's Maildir
``/captured/KEY.html``, ``.txt``, ``.eml``  one captured message: HTML part, text part, source

The email is untrusted content as far as the page is concerned (it comes from YAML, Markdown
and templates anybody may have edited), so it is served with a strict Content-Security-Policy
in a sandbox: no scripts, no forms, no plugins. The page itself only loads its own files.
Captured mail is treated the same way: its HTML part gets the same sandbox, and its subject
and addresses only ever reach the page as JSON shown through ``textContent``.

Only 127.0.0.1 is ever bound, and requests must name it (or ``localhost``) as their Host so
that a web page elsewhere cannot read an unpublished issue through DNS rebinding.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.parser
import email.policy
import json
import os
import re
import secrets
import socket
import threading
import time
import webbrowser
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from email.message import EmailMessage
from html import escape
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import uvicorn
from jinja2 import Environment, PackageLoader, select_autoescape
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import (
    HTMLResponse,
    JSONResponse,
    PlainTextResponse,
    Response,
    StreamingResponse,
)
from starlette.routing import Route

from bulletin import urls
from bulletin.content.loader import load_issue
from bulletin.content.model import LoadedIssue
from bulletin.errors import BulletinError, Problem
from bulletin.listen import PortInUse, listen_socket
from bulletin.render.checks import check_issue
from bulletin.render.images import content_type
from bulletin.render.pipeline import render_issue
from bulletin.render.types import RenderedIssue
from bulletin.render.values import SAMPLE_EMAIL, SAMPLE_NAME, sample_values
from bulletin.sink import DEFAULT_MAILDIR, CapturedMessage, list_captured, read_captured
from bulletin.web.livereload import BuildFailure, BuildState, LiveReloader
from bulletin.web.server import Server, run_until_stopped, url_of
from bulletin.workspace import Workspace

HOST = "127.0.0.1"
DEFAULT_PORT = 8000

GMAIL_CLIP_KB = 102
"""Gmail shows "[Message clipped]" for HTML bodies above about this size."""

KEEPALIVE_SECONDS = 10.0
"""An SSE comment this often keeps proxies and the browser from dropping an idle stream."""

MAX_SAMPLE_CHARS = 200
"""Longest sample name or address accepted from the form (it is a preview, not a store)."""

SINK_MAILDIR = DEFAULT_MAILDIR
"""Where `bulletin sink` stores mail unless told otherwise, relative to the workspace."""

CAPTURED_LIMIT = 200
"""Most captured messages listed at once (the newest); the JSON reports the total too."""

PAGE_CSP = "; ".join(
    [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "connect-src 'self'",
        "frame-src 'self'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ]
)

EMAIL_CSP = "; ".join(
    [
        "default-src 'none'",
        # Email clients load remote images; the preview must show them the same way, and
        # shows the issue's local images from disk (PREVIEW_IMAGES, same origin).
        "img-src 'self' https: http: data:",
        # Email HTML is styled inline and with <style> blocks; nothing else is allowed, so the
        # web-font <link> MJML emits stays unloaded (no request to Google from a preview).
        "style-src 'unsafe-inline'",
        "font-src data:",
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'self'",
        # Same origin so the page can size the frame to its content; never scripts or forms.
        "sandbox allow-same-origin allow-popups allow-popups-to-escape-sandbox",
    ]
)

_COMMON_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
}

_STATIC = {
    "preview.css": "text/css; charset=utf-8",
    "preview.js": "text/javascript; charset=utf-8",
}


@dataclass(frozen=True)
class PreviewBuild:
    """One successful build: the loaded issue, its render and every finding about it."""

    loaded: LoadedIssue
    rendered: RenderedIssue
    problems: tuple[Problem, ...]
    """Render lint findings followed by check findings, without duplicates."""


def build_preview(workspace: Workspace, issue_dir: Path) -> PreviewBuild:
    """Load, render and check the issue (raises the loader's or renderer's BulletinError)."""
    loaded = load_issue(workspace, issue_dir)
    rendered = render_issue(workspace, loaded)
    checked = check_issue(workspace, loaded, rendered)
    # dict.fromkeys keeps order and drops a finding reported by both render and checks.
    problems = tuple(dict.fromkeys([*rendered.problems, *checked]))
    return PreviewBuild(loaded, rendered, problems)


PREVIEW_IMAGES = "/images/"
"""Where the preview serves the issue's local images from disk (the render's own files)."""


def _images_from_disk(workspace: Workspace, html: str) -> str:
    """The rendered HTML with local images shown from the preview instead of base_url.

    Mail is rendered once with the published addresses (which checks see); the images are
    published only with the archive, so the preview points them at its own route.
    """
    published = urls.image_url(workspace.config.newsletter.base_url, "")
    return html.replace(published, PREVIEW_IMAGES)


def _headers(csp: str | None = None) -> dict[str, str]:
    headers = dict(_COMMON_HEADERS)
    if csp:
        headers["Content-Security-Policy"] = csp
    return headers


def _problem_json(p: Problem) -> dict[str, Any]:
    loc = p.location
    return {
        "severity": p.severity,
        "code": p.code,
        "message": p.message,
        "location": str(loc) if loc else None,
        "path": loc.path if loc else None,
        "line": loc.line if loc else None,
        "column": loc.column if loc else None,
    }


def _failure_json(f: BuildFailure) -> dict[str, Any]:
    return {
        "message": f.message,
        "hint": f.hint,
        "bug": f.bug,
        "problems": [_problem_json(p) for p in f.problems],
    }


def _kb(n_bytes: int) -> float:
    return round(n_bytes / 1024, 1)


def _sample(request: Request) -> dict[str, str]:
    """The sample subscriber from the query string: only the fields given, trimmed.

    A missing field takes the renderer's made-up reader; an empty one stays empty, so the
    fallback for subscribers without a name can be previewed too.
    """
    q = request.query_params
    return {k: q[k][:MAX_SAMPLE_CHARS] for k in ("name", "email") if k in q}


class SafeJSONResponse(JSONResponse):
    """JSON with ``<``, ``>`` and ``&`` written as ``\\u`` escapes.

    Captured subjects and addresses come from whoever sent the mail. Escaped, they cannot
    form markup even where JSON ends up parsed as HTML; ``JSON.parse`` restores them as sent.
    """

    def render(self, content: Any) -> bytes:
        text = json.dumps(content, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
        # These characters occur only inside JSON strings, where the escapes mean the same.
        for char, code in (("&", "\\u0026"), ("<", "\\u003c"), (">", "\\u003e")):
            text = text.replace(char, code)
        return text.encode("utf-8")


class CapturedIndex:
    """The sink's Maildir, listed again only when the set of its files changes.

    The page polls the list every 2 s. Reading the file names is cheap; reading the header
    block of each of thousands of captured messages is not, so that is done only when a
    name appears, goes or changes (a mail client marking a message read renames it).
    """

    def __init__(self, maildir: Path) -> None:
        self.maildir = maildir
        self._lock = threading.Lock()
        self._names: frozenset[str] | None = None
        self._messages: list[CapturedMessage] = []

    def _names_now(self) -> frozenset[str]:
        names: list[str] = []
        for sub in ("new", "cur"):
            try:
                with os.scandir(self.maildir / sub) as entries:
                    names.extend(f"{sub}/{e.name}" for e in entries if not e.name.startswith("."))
            except (FileNotFoundError, NotADirectoryError):
                continue
        return frozenset(names)

    def keys(self) -> set[str]:
        """The keys of the messages there now (file names without their ``:flags``)."""
        return {name.split("/", 1)[1].split(":", 1)[0] for name in self._names_now()}

    def listing(self) -> list[CapturedMessage]:
        """Every captured message, newest first."""
        # Names first, listing second: a message moved while it is listed (and so missed)
        # then shows under a new name next time, which triggers a fresh listing.
        names = self._names_now()
        with self._lock:
            if names != self._names:
                self._messages = list_captured(self.maildir)
                self._names = names
            return self._messages


def _captured_json(m: CapturedMessage) -> dict[str, Any]:
    return {
        "key": m.key,
        "subject": m.subject,
        "from": m.from_,
        "to": m.to,
        "delivered_to": m.delivered_to,
        "envelope_from": m.envelope_from,
        "message_id": m.message_id,
        "date": m.date.isoformat() if m.date else None,
        # The file time is naive local time; with its offset the page shows it correctly.
        "received": m.received.astimezone().isoformat(timespec="milliseconds"),
        "size": m.size,
    }


def _parse_message(data: bytes) -> EmailMessage:
    message = email.parser.BytesParser(policy=email.policy.default).parsebytes(data)
    assert isinstance(message, EmailMessage)
    return message


def _part_text(message: EmailMessage, subtype: str) -> str | None:
    """The decoded text of the ``text/<subtype>`` body, or None when the message has none."""
    part = message.get_body(preferencelist=(subtype,))
    if part is None:
        return None
    try:
        content = part.get_content()
    except (LookupError, ValueError):  # an unknown charset or a broken transfer encoding
        payload = part.get_payload(decode=True)
        content = payload.decode("utf-8", "replace") if isinstance(payload, bytes) else ""
    # Parts keep the CRLF line ends of the wire; the page shows text, not the protocol.
    return str(content).replace("\r\n", "\n")


def _header_block(data: bytes) -> bytes:
    """The header lines of a raw message, up to and including the blank line after them."""
    ends = [i + len(sep) for sep in (b"\r\n\r\n", b"\n\n") if (i := data.find(sep)) >= 0]
    return data[: min(ends)] if ends else data


def _download_name(key: str) -> str:
    # Maildir keys may hold backslash escapes (\057) of the host name; keep file names plain.
    return re.sub(r"[^A-Za-z0-9._-]", "_", key) + ".eml"


def _small_page(title: str, text: str) -> str:
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        f"<title>{escape(title)}</title></head>"
        '<body style="font:16px/1.5 system-ui,sans-serif;margin:24px;color:#57606a">'
        f"<p>{escape(text)}</p></body></html>"
    )


def _not_captured(media: str) -> Response:
    text = "No captured message with that key (it may have been deleted)."
    if media == "html":
        body = _small_page("Not found", text)
        return HTMLResponse(body, status_code=404, headers=_headers(EMAIL_CSP))
    return PlainTextResponse(text, status_code=404, headers=_headers())


class PreviewApp:
    """The routes of the preview, around one :class:`LiveReloader` of the issue."""

    def __init__(
        self,
        workspace: Workspace,
        issue_dir: Path,
        *,
        on_build: Callable[[BuildState[PreviewBuild]], None] | None = None,
        captured_maildir: Path | None = None,
    ) -> None:
        self.workspace = workspace
        self.issue_dir = issue_dir
        self.slug = issue_dir.name
        self.captured = CapturedIndex(
            captured_maildir if captured_maildir is not None else workspace.root / SINK_MAILDIR
        )
        # A fresh id per server run: a page that reconnects to a restarted server sees a new
        # id and refreshes even if the build version happens to be the same number.
        self.instance = secrets.token_hex(8)
        self.reloader: LiveReloader[PreviewBuild] = LiveReloader(
            lambda: build_preview(workspace, issue_dir),
            [issue_dir, workspace.templates_dir],
            on_build=on_build,
        )
        self._env = Environment(
            loader=PackageLoader("bulletin.web", "templates"),
            autoescape=select_autoescape(default=True),
            trim_blocks=True,
            lstrip_blocks=True,
        )
        static_root = resources.files("bulletin.web").joinpath("static")
        self._static = {name: static_root.joinpath(name).read_bytes() for name in _STATIC}
        self.reloader.rebuild()

    # -- helpers -------------------------------------------------------------------------

    def _values(self, loaded: LoadedIssue, sample: dict[str, str]) -> dict[str, str]:
        return sample_values(
            self.workspace,
            loaded.slug,
            email=sample.get("email", SAMPLE_EMAIL),
            name=sample.get("name", SAMPLE_NAME),
        )

    def _no_build_response(self, state: BuildState[PreviewBuild], media: str) -> Response:
        """503 while no build has succeeded yet: the page shows the error instead."""
        failure = state.failure
        text = failure.message if failure else "The issue has not been built yet."
        if failure:
            text += "".join(f"\n{p}" for p in failure.problems)
        if media == "html":
            body = self._env.get_template("no_build.html").render(message=text)
            return HTMLResponse(body, status_code=503, headers=_headers(EMAIL_CSP))
        return PlainTextResponse(text, status_code=503, headers=_headers())

    # -- routes --------------------------------------------------------------------------

    async def page(self, request: Request) -> Response:
        state = self.reloader.state
        sample = _sample(request)
        if state.output is not None:
            # Show the made-up reader's values in the form when none were given.
            with contextlib.suppress(BulletinError):  # the frames will show that error
                values = self._values(state.output.loaded, sample)
                sample = {"name": values.get("name", ""), "email": values.get("email", "")}
        html = self._env.get_template("preview.html").render(
            slug=self.slug,
            name=sample.get("name", ""),
            email=sample.get("email", ""),
            query=urlencode(sample),
            instance=self.instance,
            version=state.version,
            output_version=state.output_version,
            captured_dir=self.workspace.relpath(self.captured.maildir),
            # Known now, so the empty state does not flash while the list loads.
            captured_empty=not self.captured.keys(),
        )
        return HTMLResponse(html, headers=_headers(PAGE_CSP))

    async def image(self, request: Request) -> Response:
        state = self.reloader.state
        name = request.path_params["name"]
        shown = state.output.rendered.images if state.output is not None else ()
        for image in shown:
            if image.name == name and image.path.is_file():
                return Response(
                    image.path.read_bytes(), media_type=content_type(name), headers=_headers()
                )
        return PlainTextResponse("Not found", status_code=404, headers=_headers())

    async def static(self, request: Request) -> Response:
        name = request.path_params["name"]
        if name not in _STATIC:
            return PlainTextResponse("Not found", status_code=404, headers=_headers())
        return Response(self._static[name], media_type=_STATIC[name], headers=_headers())

    async def email_html(self, request: Request) -> Response:
        state = self.reloader.state
        if state.output is None:
            return self._no_build_response(state, "html")
        try:
            values = self._values(state.output.loaded, _sample(request))
        except BulletinError as exc:
            return PlainTextResponse(str(exc), status_code=400, headers=_headers())
        body = _images_from_disk(self.workspace, state.output.rendered.html.fill(values))
        return HTMLResponse(body, headers=_headers(EMAIL_CSP))

    async def email_text(self, request: Request) -> Response:
        state = self.reloader.state
        if state.output is None:
            return self._no_build_response(state, "text")
        try:
            values = self._values(state.output.loaded, _sample(request))
        except BulletinError as exc:
            return PlainTextResponse(str(exc), status_code=400, headers=_headers())
        body = state.output.rendered.text.fill(values)
        return PlainTextResponse(body, headers=_headers())

    async def summary(self, request: Request) -> Response:
        state = self.reloader.state
        data: dict[str, Any] = {
            "issue": self.slug,
            "instance": self.instance,
            "version": state.version,
            "output_version": state.output_version,
            "ok": state.ok,
            "finished_at": state.finished_at,
            "duration_ms": round(state.duration * 1000),
            "error": _failure_json(state.failure) if state.failure else None,
            "email": None,
        }
        out = state.output
        if out is not None:
            try:
                values = self._values(out.loaded, _sample(request))
            except BulletinError as exc:
                return JSONResponse({**data, "sample_error": str(exc)}, headers=_headers())
            html_bytes = len(out.rendered.html.fill(values).encode("utf-8"))
            text_bytes = len(out.rendered.text.fill(values).encode("utf-8"))
            sender = self.workspace.config.sender
            data["email"] = {
                "subject": out.rendered.subject_for(values),
                "preheader": out.rendered.preheader_for(values),
                "from": f"{out.rendered.from_name} <{sender.from_email}>",
                "reply_to": sender.reply_to,
                "language": out.rendered.language,
                "html_bytes": html_bytes,
                "html_kb": _kb(html_bytes),
                "text_bytes": text_bytes,
                "text_kb": _kb(text_bytes),
                "gmail_clip_kb": GMAIL_CLIP_KB,
                "slots": sorted(out.rendered.html.slot_names | out.rendered.text.slot_names),
                "problems": [_problem_json(p) for p in out.problems],
                "errors": sum(p.severity == "error" for p in out.problems),
                "warnings": sum(p.severity == "warning" for p in out.problems),
            }
        return JSONResponse(data, headers=_headers())

    def _event(self, state: BuildState[PreviewBuild]) -> str:
        payload = {
            "instance": self.instance,
            "version": state.version,
            "output_version": state.output_version,
            "ok": state.ok,
        }
        return f"event: build\ndata: {json.dumps(payload)}\n\n"

    async def events(self, request: Request) -> Response:
        reloader = self.reloader

        async def stream() -> AsyncIterator[str]:
            # retry: reconnect quickly when the server restarts. The first event tells the
            # page which build it is talking about, so a reconnect after a missed rebuild
            # (or to a new server) still refreshes.
            state = reloader.state
            yield "retry: 1000\n" + self._event(state)
            seen = state.version
            while not reloader.closed:
                state = await reloader.wait_for_change(seen, KEEPALIVE_SECONDS)
                if reloader.closed:
                    break
                if state.version != seen:
                    seen = state.version
                    yield self._event(state)
                else:
                    yield ": keep-alive\n\n"

        headers = _headers()
        headers["X-Accel-Buffering"] = "no"
        return StreamingResponse(stream(), media_type="text/event-stream", headers=headers)

    # -- captured mail (messages caught by `bulletin sink`) -------------------------------

    def _captured_key(self, request: Request) -> str | None:
        """The key in the URL if the Maildir holds it; None otherwise (never a path)."""
        key: str = request.path_params["key"]
        # Only a name that is in the listing reaches the filesystem: "..", slashes and
        # made-up names stop here.
        return key if key in self.captured.keys() else None

    async def _captured_message(self, request: Request) -> EmailMessage | None:
        key = self._captured_key(request)
        if key is None:
            return None
        try:
            data = await run_in_threadpool(read_captured, self.captured.maildir, key)
        except BulletinError:  # deleted between the listing and the read
            return None
        # Parsing a large message is CPU work; keep it off the event loop.
        return await run_in_threadpool(_parse_message, data)

    async def captured_json(self, request: Request) -> Response:
        """The newest captured messages (``?limit=N``, at most CAPTURED_LIMIT) and the total."""
        limit = CAPTURED_LIMIT
        with contextlib.suppress(ValueError):
            limit = min(max(int(request.query_params.get("limit", limit)), 0), CAPTURED_LIMIT)
        messages = await run_in_threadpool(self.captured.listing)
        data = {
            "maildir": self.workspace.relpath(self.captured.maildir),
            "exists": self.captured.maildir.is_dir(),
            "total": len(messages),
            "limit": limit,
            "messages": [_captured_json(m) for m in messages[:limit]],
        }
        return SafeJSONResponse(data, headers=_headers())

    async def captured_html(self, request: Request) -> Response:
        message = await self._captured_message(request)
        if message is None:
            return _not_captured("html")
        html = _part_text(message, "html")
        if html is None:
            note = _small_page("No HTML part", "This message has no HTML part; see its text.")
            return HTMLResponse(note, status_code=404, headers=_headers(EMAIL_CSP))
        # The same sandbox as the preview's own email: captured mail is untrusted too.
        return HTMLResponse(html, headers=_headers(EMAIL_CSP))

    async def captured_text(self, request: Request) -> Response:
        message = await self._captured_message(request)
        if message is None:
            return _not_captured("text")
        text = _part_text(message, "plain")
        if text is None:
            return PlainTextResponse(
                "This message has no text/plain part.", status_code=404, headers=_headers()
            )
        return PlainTextResponse(text, headers=_headers())

    async def captured_source(self, request: Request) -> Response:
        key = self._captured_key(request)
        if key is None:
            return _not_captured("text")
        try:
            data = await run_in_threadpool(read_captured, self.captured.maildir, key)
        except BulletinError:
            return _not_captured("text")
        q = request.query_params
        if "headers" in q:
            data = _header_block(data)
        if "download" in q:
            headers = _headers()
            headers["Content-Disposition"] = f'attachment; filename="{_download_name(key)}"'
            return Response(data, media_type="message/rfc822", headers=headers)
        # Shown as text in the browser (never rendered): nosniff plus text/plain. Bytes
        # that are not UTF-8 (8bit bodies in other charsets) show as replacement marks.
        return Response(data, media_type="text/plain; charset=utf-8", headers=_headers())

    def routes(self) -> list[Route]:
        return [
            Route("/", self.page),
            Route("/static/{name}", self.static),
            Route(PREVIEW_IMAGES + "{name}", self.image),
            Route("/email.html", self.email_html),
            Route("/email.txt", self.email_text),
            Route("/summary.json", self.summary),
            Route("/events", self.events),
            Route("/captured.json", self.captured_json),
            Route("/captured/{key}.html", self.captured_html),
            Route("/captured/{key}.txt", self.captured_text),
            Route("/captured/{key}.eml", self.captured_source),
        ]

    @contextlib.asynccontextmanager
    async def lifespan(self, app: Starlette) -> AsyncIterator[None]:
        """Watch files while the server runs; stop the watcher and wake SSE clients on exit."""
        stop = asyncio.Event()
        watcher = await self.reloader.start_watching(stop)
        try:
            yield
        finally:
            stop.set()
            self.reloader.close()
            # The watcher notices the stop event within one step (50 ms); don't hang on it.
            with contextlib.suppress(asyncio.TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(watcher, timeout=2.0)


def create_preview_app(
    workspace: Workspace,
    issue_dir: Path,
    *,
    on_build: Callable[[BuildState[PreviewBuild]], None] | None = None,
    captured_maildir: Path | None = None,
) -> Starlette:
    """The preview app for one issue. Builds it once now; rebuilds on change while served.

    ``captured_maildir`` is the Maildir whose messages the "Captured mail" tab lists
    (default: the sink's, ``mail/sink`` in the workspace).
    ``app.state.preview`` is the :class:`PreviewApp` (its ``reloader`` holds the builds).
    """
    preview = PreviewApp(workspace, issue_dir, on_build=on_build, captured_maildir=captured_maildir)
    app = Starlette(
        routes=preview.routes(),
        middleware=[Middleware(TrustedHostMiddleware, allowed_hosts=[HOST, "localhost"])],
        lifespan=preview.lifespan,
    )
    app.state.preview = preview
    return app


def bind_socket(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port`` (port 0: any free port).

    Binding here rather than in uvicorn turns "address in use" into a clear user error and
    lets ``--port 0`` report the port actually chosen.
    """
    return listen_socket(
        host,
        port,
        in_use_hint="Another program (maybe another preview) listens there; pass --port N "
        "(--port 0 picks any free port).",
    )


def make_server(app: Starlette, *, on_started: Callable[[], None] | None = None) -> Server:
    """A :class:`~bulletin.web.server.Server` for ``app``: ``server.run(sockets=[sock])`` runs it.

    ``run`` may be called in a background thread (tests); stop it with
    ``server.should_exit = True``. Shutting down ends the open event streams (see
    :mod:`bulletin.web.server`), so Ctrl+C does not hang while a preview tab is open.
    """
    config = uvicorn.Config(
        app,
        log_level="warning",
        access_log=False,
        lifespan="on",
        ws="none",  # the preview speaks HTTP and Server-Sent Events only
        # Safety net only: on_shutdown already ends the event streams.
        timeout_graceful_shutdown=3,
    )
    return Server(config, on_started=on_started, on_shutdown=app.state.preview.reloader.close)


def _echo(message: str) -> None:
    print(message, flush=True)


def _open_browser(url: str) -> None:
    # webbrowser may run a terminal browser in the foreground; never block the server on it.
    threading.Thread(target=webbrowser.open, args=(url,), daemon=True).start()


def _build_logger(
    workspace: Workspace, echo: Callable[[str], None]
) -> Callable[[BuildState[PreviewBuild]], None]:
    def on_build(state: BuildState[PreviewBuild]) -> None:
        stamp = time.strftime("%H:%M:%S", time.localtime(state.finished_at))
        changed = ", ".join(workspace.relpath(Path(p)) for p in state.changed[:3])
        why = f" ({changed} changed)" if changed else ""
        if state.failure is None:
            out = state.output
            findings = ""
            if out is not None and out.problems:
                n_err = sum(p.severity == "error" for p in out.problems)
                n_warn = len(out.problems) - n_err
                findings = f"; {n_err} error(s), {n_warn} warning(s) in the Summary tab"
            echo(f"[{stamp}] Built in {state.duration:.2f} s{why}{findings}")
            return
        f = state.failure
        keep = (
            "the last good render stays on screen"
            if state.output is not None
            else "nothing to show until it builds"
        )
        echo(f"[{stamp}] Build failed{why}; {keep}:")
        if f.bug:
            echo(f.message.rstrip())
        else:
            echo(f"  {f.message}")
            for p in f.problems:
                echo(f"  {p}")
            if f.hint:
                echo(f"  {f.hint}")

    return on_build


def serve_preview(
    workspace: Workspace,
    issue_dir: Path,
    *,
    host: str = HOST,
    port: int = DEFAULT_PORT,
    open_browser: bool = True,
    echo: Callable[[str], None] = _echo,
) -> None:
    """Serve the live preview of ``issue_dir`` until Ctrl+C or SIGTERM (blocking).

    Raises :class:`PortInUse` when the port is taken. Prints the URL once the server
    listens (tests read it to learn the port chosen for ``port=0``).
    """
    sock = bind_socket(host, port)
    try:
        app = create_preview_app(workspace, issue_dir, on_build=_build_logger(workspace, echo))
        url = url_of(sock)
        watched = ", ".join(workspace.relpath(p) + "/" for p in app.state.preview.reloader.paths)

        def started() -> None:
            echo(f"Previewing {issue_dir.name} at {url}")
            echo(f"Watching {watched}; press Ctrl+C to stop.")
            if open_browser:
                _open_browser(url)

        run_until_stopped(make_server(app, on_started=started), sock)
    finally:
        sock.close()


__all__ = [
    "CAPTURED_LIMIT",
    "DEFAULT_PORT",
    "HOST",
    "PortInUse",
    "PreviewApp",
    "PreviewBuild",
    "SINK_MAILDIR",
    "bind_socket",
    "build_preview",
    "create_preview_app",
    "make_server",
    "serve_preview",
]
