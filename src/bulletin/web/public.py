"""``bulletin serve``: the public web service -- unsubscribe, signup, preferences, archive.

Routes (all under ``newsletter.base_url``, which a reverse proxy with HTTPS maps to this app):

``GET  /u/<token>``        a confirmation page with a button; **never changes anything**, since
                           link scanners and mail clients fetch links nobody clicked
``POST /u/<token>``        unsubscribes: the page's form (``scope=list`` or ``scope=all``) and
                           RFC 8058 one-click (``List-Unsubscribe=One-Click``, urlencoded or
                           multipart); committed before the 200 answer, idempotent, no cookie,
                           no CSRF token, no redirect
``GET  /subscribe/<list>`` a public list's signup form (Romanian or English: the list's
                           language when the browser reads it, else the browser's)
``POST /subscribe/<list>`` a sign-up, from that form or one embedded in another website (see
                           :mod:`bulletin.signup.service`): the same answer for every address,
                           and the confirmation mail is sent after the answer
``GET  /confirm/<token>``  a page that posts itself as it loads (an inline script allowed by
                           its hash, a button without scripts); **changes nothing** itself
``POST /confirm/<token>``  confirms the sign-up: subscribed, with a consent record
``GET  /preferences/<token>``  the person's public lists, name and language
``POST /preferences/<token>``  changes them (join or leave lists, leave all)
``GET  /archive/``         the published issues, newest first (see :mod:`bulletin.web.archive`)
``GET  /archive/<slug>``   one issue as a web page: the "view online" link of every email
``GET  /archive/images/<name>``  a published issue's local image (content-hashed, cached a year)
``GET  /healthz``          ``ok`` once the database answers ``SELECT 1`` (for the proxy)
``POST /hooks/<provider>`` bounce and complaint events from ``ses`` (through SNS),
                           ``postmark``, ``sendgrid`` or ``mailgun`` (see
                           :mod:`bulletin.inbound.webhooks`): 200 once recorded; 404 while
                           the provider's secret is not configured; one 403 for every
                           request that is unsigned, badly signed, stale or replayed; 400
                           for an authenticated body we cannot read; 413 past
                           :data:`bulletin.inbound.webhooks.MAX_BODY_BYTES`

When the database cannot answer in time -- another process holds the write lock (an import
saving), no connection is free, the disk is full, the file is damaged; on PostgreSQL a row or
table lock held past serve's lock and statement timeouts, or a server that is down -- a
request gets the 503 page with Retry-After after at most :data:`DB_WAIT_SECONDS` (a statement
at a time on PostgreSQL), the log says what was not done, and nothing was changed: mail
providers retry one-click POSTs. Every change goes through one writer thread
(:mod:`bulletin.web.writer`; SQLite lets one writer in at a time): a queue of unsubscribes
behind a long lock holds no worker threads, the pages that only read keep answering, and the
unsubscribes that arrive together are saved in one transaction, each answered after the
commit that saved it.

Several serve processes may share one database behind a proxy (an unsubscribe is one
transaction, and its event is recorded by whichever process changed the row). What lives in
each process's memory is per process: the rate limit per client address, the writer thread,
and the rendered archive.

Safety: every response carries security headers; only GET, HEAD and POST are accepted; POST
bodies over :data:`MAX_BODY_BYTES` get 413; each client address has a token bucket of
``serve.rate_per_minute`` requests (429 with Retry-After); nothing redirects to an address
taken from the request. An invalid token -- forged, altered, truncated, for a deleted
subscriber -- gets the same 404 page, so the answer says nothing about who is subscribed.
"""

from __future__ import annotations

import base64
import copy
import email.parser
import email.policy
import hashlib
import ipaddress
import logging
import math
import os
import re
import socket
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any, Literal, TypeVar
from urllib.parse import parse_qs, urlsplit

import uvicorn
from markupsafe import Markup
from sqlalchemy.engine import Connection, Engine
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from bulletin import urls
from bulletin.errors import BulletinError
from bulletin.inbound import webhooks as hooks
from bulletin.listen import listen_socket
from bulletin.render.images import content_type
from bulletin.signup.service import FormErrors, Signups, Submitted
from bulletin.store import operations
from bulletin.store.db import (
    DatabaseProblem,
    database_problem,
    open_store,
    ping,
    write_transaction,
)
from bulletin.store.signups import Preferences
from bulletin.store.subscribers import (
    MailingList,
    TokenUnsubscribe,
    UnsubscribeTarget,
    unsubscribe_by_token,
    unsubscribe_target,
)
from bulletin.tokens import KEY_ENV, TokenSigner, UnsubscribeToken, key_file, load_keys
from bulletin.web.archive import ISSUE_CSP, Archive
from bulletin.web.pages import STYLESHEET, Words, mask_email, render_page, stylesheet
from bulletin.web.server import Server, run_until_stopped, url_of
from bulletin.web.writer import TooLate, Writer
from bulletin.workspace import Workspace

log = logging.getLogger(__name__)

T = TypeVar("T")

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8080

MAX_BODY_BYTES = 16 * 1024
"""Largest POST body accepted. A one-click body is 26 bytes; the page's form a few more."""

BUSY_RETRY_SECONDS = 30
"""Retry-After of a 503 when the database could not answer in time."""

DB_WAIT_SECONDS = 5.0
"""The longest a request waits for the database (its turn to write, another process's lock,
a free connection) before it answers 503. Mail providers give one-click POSTs little time."""

ALLOWED_METHODS = frozenset({"GET", "HEAD", "POST"})

PAGE_CSP = (
    "default-src 'none'; style-src 'self'; form-action 'self'; frame-ancestors 'none'; "
    "base-uri 'none'"
)
"""Content-Security-Policy of our own pages: our stylesheet, forms to ourselves, nothing else."""

CONFIRM_SCRIPT = 'document.getElementById("confirm").submit();'
"""The confirmation page's only script: it posts the page's form as the page loads."""

CONFIRM_CSP = PAGE_CSP.replace(
    "default-src 'none';",
    "default-src 'none'; script-src 'sha256-"
    + base64.b64encode(hashlib.sha256(CONFIRM_SCRIPT.encode("utf-8")).digest()).decode("ascii")
    + "';",
)
"""The confirmation page's CSP: :data:`PAGE_CSP` plus exactly that script, by its hash."""

SUBSCRIBE_CSP = PAGE_CSP
"""The signup form's CSP: as strict as the others (forms on other sites post *to* us, which
our CSP neither allows nor forbids)."""

_ARCHIVE_STYLESHEET = urls.ARCHIVE.path() + STYLESHEET
"""The stylesheet beside the archive pages, which link it relatively (so a static copy of
the archive works anywhere)."""

_UNLIMITED_PATHS = frozenset(
    {urls.HEALTH.path(), urls.STATIC.path(name=STYLESHEET), _ARCHIVE_STYLESHEET}
    | {urls.HOOK.path(provider=p) for p in hooks.PROVIDERS}
)
"""Paths outside the rate limit: the proxy's health checks, the stylesheet of a page that
was itself counted, and the provider webhooks (a relay posts every bounce of a big send from
a handful of addresses; a 429 there loses events, while a forged request costs one
signature check and is refused)."""

Scope_ = Literal["list", "all"]


# --- rate limit -------------------------------------------------------------------------


class RateLimiter:
    """A token bucket per client: ``per_minute`` requests in a burst, refilled continuously.

    In memory, per process: behind a proxy that spreads requests over N serve processes, a
    client gets up to N times the rate (see the deployment notes).
    Memory is bounded: past ``max_clients`` buckets, the full ones (idle clients) are
    dropped, and if that is not enough, all of them.
    """

    def __init__(
        self,
        per_minute: int,
        *,
        clock: Callable[[], float] = time.monotonic,
        max_clients: int = 100_000,
    ) -> None:
        self.capacity = float(per_minute)
        self.rate = per_minute / 60.0
        self._clock = clock
        self._max = max_clients
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def take(self, key: str) -> float:
        """Spend one request of ``key``: 0 if allowed, else the seconds until one is."""
        now = self._clock()
        with self._lock:
            tokens, last = self._buckets.get(key, (self.capacity, now))
            tokens = min(self.capacity, tokens + (now - last) * self.rate)
            if tokens < 1.0:
                self._buckets[key] = (tokens, now)
                return (1.0 - tokens) / self.rate
            self._buckets[key] = (tokens - 1.0, now)
            if len(self._buckets) > self._max:
                self._prune(now)
            return 0.0

    def _prune(self, now: float) -> None:
        full_after = self.capacity / self.rate
        self._buckets = {k: v for k, v in self._buckets.items() if now - v[1] < full_after}
        if len(self._buckets) > self._max:
            self._buckets.clear()


def client_key(scope: Scope) -> str:
    """Whom a request counts against: its address (IPv6: its /64, what one host gets).

    The address is the proxy's X-Forwarded-For client when uvicorn trusts the proxy
    (``serve.trusted_proxies``), else the peer's.
    """
    client = scope.get("client")
    host = client[0] if client else ""
    try:
        addr = ipaddress.ip_address(host)
    except ValueError:
        return host or "unknown"
    if isinstance(addr, ipaddress.IPv6Address):
        if addr.ipv4_mapped is not None:
            return str(addr.ipv4_mapped)
        return str(ipaddress.IPv6Network((addr, 64), strict=False))
    return str(addr)


# --- headers and the guard middleware ---------------------------------------------------


def security_headers(https: bool) -> list[tuple[bytes, bytes]]:
    """Headers every response carries (a response's own CSP and Cache-Control win)."""
    headers = [
        (b"x-content-type-options", b"nosniff"),
        (b"referrer-policy", b"no-referrer"),
        (b"x-frame-options", b"DENY"),
    ]
    if https:
        # Only when the public address is https: HSTS over plain http would be ignored at
        # best, and a wrong one locks browsers out of the host for its whole max-age.
        headers.append((b"strict-transport-security", b"max-age=31536000"))
    return headers


class Guard:
    """ASGI middleware: security headers, allowed methods and the per-client rate limit."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        limiter: RateLimiter,
        https: bool,
        page: Callable[[str, int, dict[str, str] | None], Response],
    ) -> None:
        self.app = app
        self.limiter = limiter
        self.headers = security_headers(https)
        self.page = page

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        extra = self.headers

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {name.lower() for name, _ in headers}
                headers += [h for h in extra if h[0] not in present]
                if b"content-security-policy" not in present:
                    headers.append((b"content-security-policy", PAGE_CSP.encode()))
                if b"cache-control" not in present:
                    headers.append((b"cache-control", b"no-store"))
                message = {**message, "headers": headers}
            await send(message)

        if scope["method"] not in ALLOWED_METHODS:
            allow = {"Allow": ", ".join(sorted(ALLOWED_METHODS))}
            await self.page("method", 405, allow)(scope, receive, send_with_headers)
            return
        if scope["path"] not in _UNLIMITED_PATHS:
            wait = self.limiter.take(client_key(scope))
            if wait > 0:
                retry = {"Retry-After": str(max(1, math.ceil(wait)))}
                await self.page("ratelimited", 429, retry)(scope, receive, send_with_headers)
                return
        await self.app(scope, receive, send_with_headers)


# --- request bodies ---------------------------------------------------------------------


class BodyTooLarge(Exception):
    """The request body is over :data:`MAX_BODY_BYTES`."""


async def read_body(request: Request, limit: int = MAX_BODY_BYTES) -> bytes:
    """The request body, refusing early (Content-Length) or once past ``limit`` bytes."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise BodyTooLarge
    return bytes(body)


def parse_form(content_type: str, body: bytes) -> dict[str, list[str]]:
    """Form fields of a POST body: ``application/x-www-form-urlencoded`` or multipart.

    Lenient on purpose: a body we cannot read yields no fields, and the POST still
    unsubscribes from the token's list (the POST itself is the request; see RFC 8058).
    Multipart is read with the standard library's MIME parser: the body is small and
    bounded, and uploads are not expected (file parts are ignored).
    """
    media = content_type.split(";", 1)[0].strip().lower()
    if media == "multipart/form-data":
        head = b"Content-Type: " + content_type.encode("latin-1", "replace") + b"\r\n\r\n"
        message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(head + body)
        fields: dict[str, list[str]] = {}
        if not message.is_multipart():
            return fields
        for part in message.iter_parts():
            name = part.get_param("name", header="content-disposition")
            if not isinstance(name, str) or part.get_filename() is not None:
                continue
            payload = part.get_payload(decode=True)
            if isinstance(payload, bytes):
                fields.setdefault(name, []).append(payload.decode("utf-8", "replace").strip())
        return fields
    # Urlencoded, and the fallback for a missing or odd Content-Type (one-click bodies are
    # short ASCII either way).
    return parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True, max_num_fields=50)


# --- the app ----------------------------------------------------------------------------


class PublicApp:
    """The routes of ``bulletin serve`` around one workspace, store and token signer."""

    def __init__(
        self,
        workspace: Workspace,
        engine: Engine,
        signer: TokenSigner,
        archive: Archive,
        *,
        db_wait: float = DB_WAIT_SECONDS,
        webhooks: hooks.Webhooks | None = None,
    ) -> None:
        self.workspace = workspace
        self.webhooks = (
            webhooks if webhooks is not None else hooks.Webhooks.from_workspace(workspace)
        )
        self.engine = engine
        self.signer = signer
        self.archive = archive
        self.db_wait = db_wait
        self.signups = Signups(workspace, engine, signer)
        # One writer thread for this process (see the module docstring). Not a guard of
        # correctness -- the database's locks are -- only of where the waiting happens.
        self.writer = Writer(engine)
        config = workspace.config
        self.base_url = config.newsletter.base_url
        self.https = self.base_url.startswith("https://")
        self.lang = config.newsletter.language
        self.newsletter = config.newsletter.name
        self.contact = config.sender.reply_to or ""
        # An absolute path from base_url, right at any depth and behind a path prefix.
        self.css_href = urlsplit(self.base_url).path.rstrip("/") + urls.STATIC.path(name=STYLESHEET)

    # -- pages -----------------------------------------------------------------------------

    def html(
        self,
        template: str,
        lang: str,
        status: int = 200,
        headers: dict[str, str] | None = None,
        **context: Any,
    ) -> Response:
        body = render_page(
            template,
            lang,
            newsletter=self.newsletter,
            css=self.css_href,
            contact=self.contact,
            **context,
        )
        return HTMLResponse(body, status_code=status, headers=headers)

    def message(self, kind: str, status: int, headers: dict[str, str] | None = None) -> Response:
        """A short page (title and one paragraph) in the newsletter's language."""
        words = Words(self.lang)
        return self.html(
            "message.html",
            self.lang,
            status,
            headers,
            title=words(f"{kind}.title"),
            text=words(f"{kind}.text"),
        )

    def invalid_link(self) -> Response:
        # One page for every failure, whether or not the subscriber exists.
        return self.message("invalid", 404)

    def busy(self, problem: DatabaseProblem, what: str) -> Response:
        # Never silent: the client sees 503 (mail providers retry one-click requests) and
        # the log says what was not done.
        log.error("database unavailable while %s; answered 503: %s", what, problem.message)
        return self.message("busy", 503, {"Retry-After": str(BUSY_RETRY_SECONDS)})

    def _late(self) -> DatabaseProblem:
        return DatabaseProblem(
            f"No turn to write within {self.db_wait:g} s (the database is locked, or other "
            "unsubscribes are waiting for it)",
            hint="Mail providers retry; a lock held long is an import or a send saving.",
            kind="busy",
        )

    # -- unsubscribe -----------------------------------------------------------------------

    def _lookup(self, token: UnsubscribeToken) -> UnsubscribeTarget | None:
        with self.engine.connect() as conn, conn.begin():
            return unsubscribe_target(conn, token.subscriber_id, token.list_id)

    def _page_lang(self, target: UnsubscribeTarget) -> str:
        return target.subscriber.language or self.lang

    async def unsubscribe_page(self, request: Request) -> Response:
        token = self.signer.verify_unsubscribe(request.path_params["token"])
        if token is None:
            return self.invalid_link()
        try:
            target = await run_in_threadpool(self._lookup, token)
        except Exception as exc:
            problem = database_problem(exc, self.engine)
            if problem is None:
                raise
            return self.busy(problem, "showing an unsubscribe page")
        if target is None:
            return self.invalid_link()
        return self.html(
            "unsubscribe.html",
            self._page_lang(target),
            address=mask_email(target.subscriber.email),
            list_name=target.list_name,
            list_done=target.list_done,
            all_done=target.all_done,
        )

    async def unsubscribe_post(self, request: Request) -> Response:
        deadline = time.monotonic() + self.db_wait
        token = self.signer.verify_unsubscribe(request.path_params["token"])
        if token is None:
            return self.invalid_link()
        try:
            body = await read_body(request)
        except BodyTooLarge:
            return self.message("toolarge", 413)
        fields = parse_form(request.headers.get("content-type", ""), body)
        one_click = "One-Click" in fields.get("List-Unsubscribe", [])
        scope: Scope_ = "all" if "all" in fields.get("scope", []) else "list"
        source = "one-click" if one_click else "web"
        what = f"unsubscribing subscriber {token.subscriber_id} ({source})"

        def apply(conn: Connection) -> TokenUnsubscribe | None:
            return unsubscribe_by_token(
                conn, token.subscriber_id, token.list_id, source, all_lists=scope == "all"
            )

        done = await self._saved(self.writer.batched(apply, deadline), what)
        if isinstance(done, Response):
            return done
        if done is None:
            return self.invalid_link()
        # Committed: the answer below is sent after the change is durable, as RFC 8058
        # expects.
        log.info(
            "unsubscribed subscriber %d from %s (%s)"
            if done.changed
            else "no change: subscriber %d was already unsubscribed from %s (%s)",
            done.subscriber_id,
            done.list_slug or "all lists",
            source,
        )
        return self.html(
            "done.html",
            done.language or self.lang,
            address=mask_email(done.email),
            list_name=done.list_name,
            scope="list" if done.list_slug is not None else "all",
            changed=done.changed,
        )

    # -- sign-up, confirmation, preferences ------------------------------------------------

    async def _write(self, request: Request, what: str, fn: Callable[[float], Any]) -> Any:
        """``fn(wait)`` in the writer thread, with a database in trouble turned into the 503
        page (``wait``: the seconds left to wait for the database)."""
        deadline = time.monotonic() + self.db_wait
        return await self._saved(self.writer.solo(fn, deadline), what)

    async def _saved(self, job: Awaitable[T], what: str) -> T | Response:
        """The writer's answer to ``job``, or the 503 page when the database could not take
        it in time (nothing was saved then)."""
        try:
            return await job
        except TooLate:
            return self.busy(self._late(), what)
        except DatabaseProblem as problem:
            return self.busy(problem, what)
        except Exception as exc:
            found = database_problem(exc, self.engine)
            if found is None:
                raise
            return self.busy(found, what)

    def _read_or_busy(self, exc: Exception, what: str) -> Response:
        problem = database_problem(exc, self.engine)
        if problem is None:
            raise exc
        return self.busy(problem, what)

    @staticmethod
    def _client_ip(request: Request) -> str | None:
        return request.client.host if request.client else None

    def _form_page(
        self,
        the_list: MailingList,
        lang: str,
        status: int = 200,
        errors: FormErrors | None = None,
        fields: dict[str, list[str]] | None = None,
    ) -> Response:
        fields = fields or {}
        return self.html(
            "subscribe.html",
            lang,
            status,
            {"Content-Security-Policy": SUBSCRIBE_CSP},
            list_name=the_list.name,
            description=the_list.description,
            consent_text=self.signups.consent_for(the_list, lang),
            double_opt_in=the_list.opt_in == "double",
            action=urlsplit(urls.subscribe_url(self.base_url, the_list.slug)).path,
            errors=errors,
            email=(fields.get("email") or [""])[0][:254],
            name=(fields.get("name") or [""])[0][:200],
        )

    def _public_list(self, slug: str) -> MailingList | None:
        with self.engine.connect() as conn:
            return self.signups.public_list(conn, slug)

    async def subscribe_page(self, request: Request) -> Response:
        try:
            the_list = await run_in_threadpool(self._public_list, request.path_params["list"])
        except Exception as exc:
            return self._read_or_busy(exc, "showing a signup form")
        if the_list is None:
            return self.message("notfound", 404)
        lang = self.signups.page_language(the_list, request.headers.get("accept-language", ""))
        return self._form_page(the_list, lang)

    async def subscribe_post(self, request: Request) -> Response:
        slug = request.path_params["list"]
        try:
            body = await read_body(request)
        except BodyTooLarge:
            return self.message("toolarge", 413)
        fields = parse_form(request.headers.get("content-type", ""), body)
        accept = request.headers.get("accept-language", "")
        ip = self._client_ip(request)
        result = await self._write(
            request,
            "recording a sign-up",
            lambda wait: self.signups.submit_in_transaction(slug, fields, accept, ip, wait=wait),
        )
        if isinstance(result, Response):
            return result
        if result is None:
            return self.message("notfound", 404)
        the_list, lang, outcome = result
        if isinstance(outcome, FormErrors):
            return self._form_page(the_list, lang, 400, outcome, fields)
        assert isinstance(outcome, Submitted)
        # The mail and the hourly purge run after the answer is sent: an address that gets
        # a mail is answered as fast as one that does not (no enumeration by timing).
        tasks: list[tuple[Callable[[Any], None], Any]] = []
        if outcome.to_mail is not None:
            tasks.append((self.signups.send_confirmation, outcome.to_mail))
        if self.signups.purge_due():
            tasks.append((self._purge, None))
        background = BackgroundTask(_run_all, tasks) if tasks else None
        response = self.html(
            "subscribed.html",
            lang,
            list_name=the_list.name,
            double_opt_in=the_list.opt_in == "double",
        )
        response.background = background
        return response

    def purge_signups(self) -> None:
        """Delete sign-ups not confirmed within 30 days (errors are logged, not raised)."""
        self._purge()

    def purge_every_hour(self) -> None:
        """:meth:`purge_signups` now and then hourly, for ever (a daemon thread of serve)."""
        while True:
            if self.signups.purge_due():
                self._purge()
            time.sleep(60)

    def _purge(self, _: object = None) -> None:
        try:
            self.signups.purge()
        except Exception as exc:  # the next sign-up tries again; the log says why
            log.error("purging old sign-ups failed: %s", exc)

    def _invalid_confirm(self) -> Response:
        return self.message("confirm_invalid", 404)

    async def confirm_page(self, request: Request) -> Response:
        token = request.path_params["token"]
        try:
            page = await run_in_threadpool(self.signups.confirm_page, token)
        except Exception as exc:
            return self._read_or_busy(exc, "showing a confirmation page")
        if page is None:
            return self._invalid_confirm()
        return self.html(
            "confirm.html",
            page.language,
            200,
            {"Content-Security-Policy": CONFIRM_CSP},
            list_name=page.list.name,
            address=mask_email(page.email),
            script=Markup(CONFIRM_SCRIPT),
        )

    async def confirm_post(self, request: Request) -> Response:
        token = request.path_params["token"]
        try:
            await read_body(request)
        except BodyTooLarge:
            return self.message("toolarge", 413)
        ip = self._client_ip(request)
        done = await self._write(
            request,
            "confirming a sign-up",
            lambda wait: self.signups.confirm(token, ip, wait=wait),
        )
        if isinstance(done, Response):
            return done
        if done is None:
            return self._invalid_confirm()
        log.info("confirmed a sign-up of subscriber %d to %s", done.subscriber.id, done.list.slug)
        sub = done.subscriber
        response = self.html(
            "confirmed.html",
            sub.language or done.list.language or self.lang,
            address=mask_email(sub.email),
            list_name=done.list.name,
            preferences_url=urls.preferences_url(
                self.base_url, self.signer.preferences_token(sub.id)
            ),
        )
        if self.signups.wants_welcome(done):
            response.background = BackgroundTask(self.signups.send_welcome, done)
        return response

    def _preferences_html(
        self, prefs: Preferences, *, saved: bool = False, errors: bool = False
    ) -> Response:
        sub = prefs.subscriber
        lang = sub.language or self.lang
        consent = {c.list.id: self.signups.consent_for(c.list, lang) for c in prefs.choices}
        return self.html(
            "preferences.html",
            lang,
            400 if errors else 200,
            address=mask_email(sub.email),
            choices=prefs.choices,
            consent=consent,
            name=sub.name,
            language=sub.language,
            suppressed=prefs.suppressed,
            saved=saved,
            errors=errors,
        )

    async def preferences_page(self, request: Request) -> Response:
        token = request.path_params["token"]
        try:
            prefs = await run_in_threadpool(self.signups.preferences, token)
        except Exception as exc:
            return self._read_or_busy(exc, "showing a preferences page")
        if prefs is None:
            return self.invalid_link()
        return self._preferences_html(prefs)

    async def preferences_post(self, request: Request) -> Response:
        token = request.path_params["token"]
        try:
            body = await read_body(request)
        except BodyTooLarge:
            return self.message("toolarge", 413)
        fields = parse_form(request.headers.get("content-type", ""), body)
        ip = self._client_ip(request)
        result = await self._write(
            request,
            "changing preferences",
            lambda wait: self.signups.change_preferences(token, fields, ip, wait=wait),
        )
        if isinstance(result, Response):
            return result
        if result is None:
            return self.invalid_link()
        if isinstance(result, FormErrors):
            prefs = await run_in_threadpool(self.signups.preferences, token)
            if prefs is None:
                return self.invalid_link()
            return self._preferences_html(prefs, errors=True)
        return self._preferences_html(result, saved=True)

    # -- provider webhooks -----------------------------------------------------------------

    async def hook(self, request: Request) -> Response:
        provider = request.path_params["provider"]
        if provider not in hooks.PROVIDERS or not self.webhooks.enabled(provider):
            return self.message("notfound", 404)
        try:
            body = await read_body(request, hooks.MAX_BODY_BYTES)
        except BodyTooLarge:
            return self.message("toolarge", 413)
        try:
            # In a worker thread: an SNS certificate may have to be fetched first.
            delivery = await run_in_threadpool(
                self.webhooks.authenticate, provider, request.headers, body
            )
            if delivery.subscribe_url is not None:
                await run_in_threadpool(self.webhooks.confirm, delivery)
                log.info("webhook %s: confirmed the SNS subscription", provider)
                return _hook_ok()
        except hooks.Refused as exc:
            return _hook_refused(provider, exc)
        except hooks.Malformed as exc:
            log.info("webhook %s: refused a malformed body: %s", provider, exc)
            return PlainTextResponse("malformed\n", status_code=400)
        result = await self._write(
            request,
            f"recording {provider} webhook events",
            lambda wait: self._apply_hook(delivery, wait),
        )
        if isinstance(result, Response):
            return result
        if isinstance(result, hooks.Refused):
            return _hook_refused(provider, result)
        if delivery.note:
            log.info("webhook %s: %s", provider, delivery.note)
        log.info(
            "webhook %s: %d events, %d repeated, %d for unknown addresses, %d suppressed%s",
            provider,
            result.events,
            result.repeated,
            result.unknown,
            result.suppressed,
            "".join(f"; {line}" for line in result.lines[:20]),
        )
        return _hook_ok()

    def _apply_hook(self, delivery: hooks.Delivery, wait: float) -> hooks.Outcome | hooks.Refused:
        try:
            with write_transaction(self.engine, wait=wait) as conn:
                return self.webhooks.apply(conn, delivery)
        except hooks.Refused as exc:  # rolled back: a replay changes nothing
            return exc

    # -- archive, health, static -----------------------------------------------------------

    async def archive_index(self, request: Request) -> Response:
        body = await run_in_threadpool(self.archive.index_page)
        return HTMLResponse(body, headers={"Cache-Control": "public, max-age=300"})

    async def archive_redirect(self, request: Request) -> Response:
        # The index's links are relative to /archive/; the target comes from the config,
        # never from the request.
        return RedirectResponse(urls.archive_url(self.base_url), status_code=301)

    async def archive_issue(self, request: Request) -> Response:
        body = await run_in_threadpool(self.archive.issue_page, request.path_params["slug"])
        if body is None:
            return self.message("notfound", 404)
        headers = {
            "Cache-Control": "public, max-age=300",
            "Content-Security-Policy": f"{ISSUE_CSP}; frame-ancestors 'none'",
        }
        return HTMLResponse(body, headers=headers)

    async def archive_image(self, request: Request) -> Response:
        image = await run_in_threadpool(self.archive.image, request.path_params["image"])
        if image is None:
            return self.message("notfound", 404)
        # The name changes with the content, so the file at a name never changes.
        return Response(
            await run_in_threadpool(image.path.read_bytes),
            media_type=content_type(image.name),
            headers={"Cache-Control": "public, max-age=31536000, immutable"},
        )

    async def healthz(self, request: Request) -> Response:
        try:
            await run_in_threadpool(ping, self.engine)
        except Exception as exc:  # any failure means "not healthy", and the log says why
            log.error("health check failed: %s", exc)
            return PlainTextResponse("database unavailable\n", status_code=503)
        return PlainTextResponse("ok\n")

    async def css(self, request: Request) -> Response:
        return Response(
            stylesheet(),
            media_type="text/css; charset=utf-8",
            headers={"Cache-Control": "public, max-age=3600"},
        )

    # -- errors ----------------------------------------------------------------------------

    async def http_error(self, request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        kind = {404: "notfound", 405: "method"}.get(exc.status_code, "error")
        return self.message(kind, exc.status_code, dict(exc.headers or {}))

    async def server_error(self, request: Request, exc: Exception) -> Response:
        # Runs outside the Guard middleware, so this page sets its headers itself.
        response = self.message("error", 500)
        for name, value in security_headers(self.https):
            response.headers[name.decode()] = value.decode()
        response.headers["Content-Security-Policy"] = PAGE_CSP
        response.headers["Cache-Control"] = "no-store"
        return response

    def routes(self) -> list[Route]:
        """The routes, declared from the URL scheme in :mod:`bulletin.urls`."""
        archive = urls.ARCHIVE.path()
        issue = urls.ARCHIVE_ISSUE.pattern
        return [
            Route(urls.UNSUBSCRIBE.pattern, self.unsubscribe_page, methods=["GET"]),
            Route(urls.UNSUBSCRIBE.pattern, self.unsubscribe_post, methods=["POST"]),
            Route(urls.SUBSCRIBE.pattern, self.subscribe_page, methods=["GET"]),
            Route(urls.SUBSCRIBE.pattern, self.subscribe_post, methods=["POST"]),
            Route(urls.CONFIRM.pattern, self.confirm_page, methods=["GET"]),
            Route(urls.CONFIRM.pattern, self.confirm_post, methods=["POST"]),
            Route(urls.PREFERENCES.pattern, self.preferences_page, methods=["GET"]),
            Route(urls.PREFERENCES.pattern, self.preferences_post, methods=["POST"]),
            Route(archive.rstrip("/"), self.archive_redirect, methods=["GET"]),
            Route(archive, self.archive_index, methods=["GET"]),
            Route(_ARCHIVE_STYLESHEET, self.css, methods=["GET"]),
            Route(urls.IMAGE.pattern, self.archive_image, methods=["GET"]),
            Route(issue, self.archive_issue, methods=["GET"]),
            Route(issue + "/", self.archive_issue, methods=["GET"]),
            Route(urls.STATIC.path(name=STYLESHEET), self.css, methods=["GET"]),
            Route(urls.HEALTH.pattern, self.healthz, methods=["GET"]),
            Route(urls.HOOK.pattern, self.hook, methods=["POST"]),
            Route("/", self.archive_redirect, methods=["GET"]),
        ]


def _hook_ok() -> Response:
    return PlainTextResponse("ok\n")


HOOK_REFUSED_BODY = "forbidden\n"
"""The one answer to every refused webhook request, whatever check failed."""


def _hook_refused(provider: str, exc: Exception) -> Response:
    # The reason is for the log; the client learns only that it was refused.
    log.info("webhook %s: refused: %s", provider, exc)
    return PlainTextResponse(HOOK_REFUSED_BODY, status_code=403)


def _run_all(tasks: list[tuple[Callable[[Any], None], Any]]) -> None:
    for fn, arg in tasks:
        fn(arg)


def signer_for(workspace: Workspace) -> TokenSigner:
    """The signer with the keys that signed the mailed links; never makes a new key.

    A server that invented its own key would answer "not valid" to every link already
    mailed, so a missing key is an error that says where the key should come from.
    """
    path = key_file(workspace)
    if not path.exists() and not os.environ.get(KEY_ENV, "").strip():
        raise BulletinError(
            f"No signing key: {workspace.relpath(path)} does not exist and {KEY_ENV} is unset.",
            hint="bulletin serve must check links with the key that signed them: copy "
            ".bulletin/secret_key (mode 0600) from the workspace that sends, or set "
            f"{KEY_ENV} to the same keys there and here.",
        )
    return TokenSigner(load_keys(workspace, create=False))


def create_public_app(
    workspace: Workspace,
    *,
    engine: Engine | None = None,
    signer: TokenSigner | None = None,
    archive: Archive | None = None,
    db_wait: float = DB_WAIT_SECONDS,
    webhooks: hooks.Webhooks | None = None,
) -> Starlette:
    """The public app of ``workspace`` (``app.state.public`` is the :class:`PublicApp`).

    By default it opens the workspace's store (migrating it if needed) with waits bounded
    by ``db_wait`` seconds, uses the workspace's signing keys (see :func:`signer_for`) and
    publishes its archive.
    """
    # The key first: without it nothing is worth opening the database for.
    signer = signer if signer is not None else signer_for(workspace)
    if engine is None:
        engine = open_store(
            workspace.database_url(),
            busy_timeout_ms=int(db_wait * 1000),
            pool_timeout=db_wait,
            statement_timeout_ms=int(db_wait * 1000),
        )
    public = PublicApp(
        workspace,
        engine,
        signer,
        archive
        if archive is not None
        else Archive(workspace, sent=lambda: operations.sent_issues(engine)),
        db_wait=db_wait,
        webhooks=webhooks,
    )
    limiter = RateLimiter(workspace.config.serve.rate_per_minute)
    app = Starlette(
        routes=public.routes(),
        middleware=[
            Middleware(
                Guard,
                limiter=limiter,
                https=public.https,
                page=lambda kind, status, headers: public.message(kind, status, headers),
            )
        ],
        exception_handlers={HTTPException: public.http_error, Exception: public.server_error},
    )
    # Trailing-slash redirects are built from the request's Host; every route that needs
    # both forms is listed explicitly instead.
    app.router.redirect_slashes = False
    app.state.public = public
    app.state.limiter = limiter
    return app


# --- serving ----------------------------------------------------------------------------


_TOKEN_PREFIXES = tuple(
    page.pattern.split("{", 1)[0] for page in (urls.UNSUBSCRIBE, urls.CONFIRM, urls.PREFERENCES)
)
_TOKEN_IN_PATH = re.compile("(" + "|".join(re.escape(p) for p in _TOKEN_PREFIXES) + r")[^/?\s\"]+")


class RedactTokens(logging.Filter):
    """Access-log filter: ``/u/<token>`` is logged as ``/u/…``, and so are confirmation and
    preferences tokens (a token acts for whoever holds it, and log files travel further than
    mail)."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) >= 3 and isinstance(args[2], str):
            redacted = _TOKEN_IN_PATH.sub(lambda m: m.group(1) + "…", args[2])
            record.args = (*args[:2], redacted, *args[3:])
        return True


def log_config() -> dict[str, Any]:
    """uvicorn's logging setup plus bulletin's own messages (INFO: each unsubscribe)."""
    config = copy.deepcopy(uvicorn.config.LOGGING_CONFIG)
    config["filters"] = {"redact": {"()": RedactTokens}}
    config["handlers"]["access"]["filters"] = ["redact"]
    config["loggers"]["bulletin"] = {"handlers": ["default"], "level": "INFO", "propagate": False}
    return config


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on ``host:port`` (IPv4 or IPv6; port 0: any free port)."""
    return listen_socket(
        host,
        port,
        backlog=1024,
        in_use_hint="Another program (maybe another bulletin serve) listens there; pass --port N.",
    )


def _echo(message: str) -> None:
    print(message, flush=True)


def serve_public(
    workspace: Workspace,
    *,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    echo: Callable[[str], None] = _echo,
) -> None:
    """Run the public app with uvicorn until Ctrl+C or SIGTERM (blocking).

    The rate limit and the archive cache live in this process's memory. Behind a proxy in
    ``serve.trusted_proxies``, the client address comes from X-Forwarded-For.
    """
    app = create_public_app(workspace)
    base_url = workspace.config.newsletter.base_url
    try:
        sock = bind(host, port)
    except BaseException:
        app.state.public.engine.dispose()
        raise
    try:
        url = url_of(sock)
        config = uvicorn.Config(
            app,
            proxy_headers=True,
            forwarded_allow_ips=workspace.config.serve.proxies,
            server_header=False,
            access_log=True,
            log_config=log_config(),
            lifespan="off",
            ws="none",
            # Unsubscribes are short; a stalled client must not hold a connection long.
            timeout_keep_alive=5,
            limit_concurrency=512,
            timeout_graceful_shutdown=10,
        )

        def started() -> None:
            # Render the archive now rather than on its first visitor (each issue takes a
            # fraction of a second; a long archive would make that visitor wait).
            threading.Thread(target=app.state.public.archive.entries, daemon=True).start()
            # Sign-ups older than 30 days go now and then every hour (and, at most hourly, as
            # forms arrive).
            threading.Thread(target=app.state.public.purge_every_hour, daemon=True).start()
            echo(f"Serving unsubscribe pages and the archive at {url} (Ctrl+C to stop)")
            echo(f"Links in mail point to {base_url} (newsletter.base_url)")
            webhooks = app.state.public.webhooks
            on = [urls.hook_url(base_url, p) for p in hooks.PROVIDERS if webhooks.enabled(p)]
            if on:
                echo(f"Provider webhooks: {', '.join(on)}")
            if not base_url.startswith("https://"):
                echo(
                    "Warning: newsletter.base_url is not https. Mail providers only offer "
                    "one-click unsubscribe for https links: put bulletin serve behind a "
                    "reverse proxy with HTTPS and set base_url to its address."
                )

        run_until_stopped(Server(config, on_started=started), sock)
    finally:
        sock.close()
        app.state.public.engine.dispose()


__all__ = [
    "DB_WAIT_SECONDS",
    "DEFAULT_HOST",
    "DEFAULT_PORT",
    "MAX_BODY_BYTES",
    "PAGE_CSP",
    "PublicApp",
    "RateLimiter",
    "create_public_app",
    "parse_form",
    "serve_public",
    "signer_for",
]
