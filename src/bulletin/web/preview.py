"""``bulletin preview``: a local web app that shows an issue as it will be sent, live.

The app renders the issue once per change (see :mod:`bulletin.web.livereload`) and serves:

``/``               the preview page (email at desktop and mobile widths, plain text, summary)
``/email.html``     the HTML email filled for a sample subscriber (``?name=&email=``)
``/email.txt``      the plain-text part, filled the same way
``/summary.json``   subject, preheader, sender, sizes, check findings and the build state
``/events``         Server-Sent Events: one ``build`` event per rebuild

The email is untrusted content as far as the page is concerned (it comes from YAML, Markdown
and templates anybody may have edited), so it is served with a strict Content-Security-Policy
in a sandbox: no scripts, no forms, no plugins. The page itself only loads its own files.

Only 127.0.0.1 is ever bound, and requests must name it (or ``localhost``) as their Host so
that a web page elsewhere cannot read an unpublished issue through DNS rebinding.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import secrets
import socket
import threading
import time
import webbrowser
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import uvicorn
from jinja2 import Environment, PackageLoader, select_autoescape
from starlette.applications import Starlette
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

from bulletin.content.loader import load_issue
from bulletin.content.model import LoadedIssue
from bulletin.errors import BulletinError, Problem
from bulletin.render.checks import check_issue
from bulletin.render.pipeline import render_issue, sample_values
from bulletin.render.types import RenderedIssue
from bulletin.web.livereload import BuildFailure, BuildState, LiveReloader
from bulletin.workspace import Workspace

HOST = "127.0.0.1"
DEFAULT_PORT = 8000

GMAIL_CLIP_KB = 102
"""Gmail shows "[Message clipped]" for HTML bodies above about this size."""

KEEPALIVE_SECONDS = 10.0
"""An SSE comment this often keeps proxies and the browser from dropping an idle stream."""

MAX_SAMPLE_CHARS = 200
"""Longest sample name or address accepted from the form (it is a preview, not a store)."""

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
        # Email clients load remote images; the preview must show them the same way.
        "img-src https: http: data:",
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


class PreviewApp:
    """The routes of the preview, around one :class:`LiveReloader` of the issue."""

    def __init__(
        self,
        workspace: Workspace,
        issue_dir: Path,
        *,
        on_build: Callable[[BuildState[PreviewBuild]], None] | None = None,
    ) -> None:
        self.workspace = workspace
        self.issue_dir = issue_dir
        self.slug = issue_dir.name
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
        return sample_values(self.workspace, loaded, **sample)

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
        )
        return HTMLResponse(html, headers=_headers(PAGE_CSP))

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
        body = state.output.rendered.html.fill(values)
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
                "subject": out.rendered.subject,
                "preheader": out.rendered.preheader,
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

    # Issue 4 adds the SMTP sink's captured messages here: a ``/captured.json`` route listing
    # them and a "Captured mail" tab in templates/preview.html (see the marked slot there).

    def routes(self) -> list[Route]:
        return [
            Route("/", self.page),
            Route("/static/{name}", self.static),
            Route("/email.html", self.email_html),
            Route("/email.txt", self.email_text),
            Route("/summary.json", self.summary),
            Route("/events", self.events),
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
) -> Starlette:
    """The preview app for one issue. Builds it once now; rebuilds on change while served.

    ``app.state.preview`` is the :class:`PreviewApp` (its ``reloader`` holds the builds).
    """
    preview = PreviewApp(workspace, issue_dir, on_build=on_build)
    app = Starlette(
        routes=preview.routes(),
        middleware=[Middleware(TrustedHostMiddleware, allowed_hosts=[HOST, "localhost"])],
        lifespan=preview.lifespan,
    )
    app.state.preview = preview
    return app


class PortInUse(BulletinError):
    """The requested port is taken by another program."""


def bind_socket(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port`` (port 0: any free port).

    Binding here rather than in uvicorn turns "address in use" into a clear user error and
    lets ``--port 0`` report the port actually chosen.
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    # SO_REUSEADDR only allows reuse of sockets in TIME_WAIT (a preview restarted right after
    # Ctrl+C); on Linux a port with a live listener still fails with EADDRINUSE.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        sock.listen(128)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise PortInUse(
                f"Port {port} is in use; pass --port N",
                hint="Another program (maybe another preview) listens there; "
                "--port 0 picks any free port.",
            ) from None
        raise BulletinError(
            f"Cannot listen on {host}:{port}: {exc.strerror or exc}.",
            hint="Pass another port with --port N (ports below 1024 need privileges).",
        ) from None
    return sock


class PreviewServer(uvicorn.Server):
    """uvicorn, plus: announce the URL once listening, and end SSE streams on shutdown.

    uvicorn waits for open responses before it stops; an event stream never ends by itself,
    so without closing them Ctrl+C would hang while a preview tab is open.
    """

    def __init__(
        self,
        config: uvicorn.Config,
        preview: PreviewApp,
        on_started: Callable[[], None] | None = None,
    ) -> None:
        super().__init__(config)
        self._preview = preview
        self._on_started = on_started

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started and self._on_started is not None:
            self._on_started()

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        self._preview.reloader.close()
        await super().shutdown(sockets)


def make_server(app: Starlette, *, on_started: Callable[[], None] | None = None) -> PreviewServer:
    """A :class:`PreviewServer` for ``app``; run it with ``server.run(sockets=[sock])``.

    ``run`` may be called in a background thread (tests); stop it with
    ``server.should_exit = True``.
    """
    config = uvicorn.Config(
        app,
        log_level="warning",
        access_log=False,
        lifespan="on",
        ws="none",  # the preview speaks HTTP and Server-Sent Events only
        # Safety net only: PreviewServer.shutdown already ends the event streams.
        timeout_graceful_shutdown=3,
    )
    return PreviewServer(config, app.state.preview, on_started)


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
    """Serve the live preview of ``issue_dir`` until Ctrl+C (blocking).

    Raises :class:`PortInUse` when the port is taken. Prints the URL once the server
    listens (tests read it to learn the port chosen for ``port=0``).
    """
    sock = bind_socket(host, port)
    try:
        app = create_preview_app(workspace, issue_dir, on_build=_build_logger(workspace, echo))
        url = f"http://{host}:{sock.getsockname()[1]}/"
        watched = ", ".join(workspace.relpath(p) + "/" for p in app.state.preview.reloader.paths)

        def started() -> None:
            echo(f"Previewing {issue_dir.name} at {url}")
            echo(f"Watching {watched}; press Ctrl+C to stop.")
            if open_browser:
                _open_browser(url)

        server = make_server(app, on_started=started)
        with contextlib.suppress(KeyboardInterrupt):
            server.run(sockets=[sock])
    finally:
        sock.close()


__all__ = [
    "DEFAULT_PORT",
    "HOST",
    "PortInUse",
    "PreviewApp",
    "PreviewBuild",
    "PreviewServer",
    "bind_socket",
    "build_preview",
    "create_preview_app",
    "make_server",
    "serve_preview",
]
