"""``bulletin serve`` as a real server process on a loopback port, driven over HTTP.

One server for the module (starting one costs a couple of seconds) over a copy of the sample
workspace with a real store (SQLite, or PostgreSQL on that pass). Each test makes its own
subscribers, so tests do not depend on one another, and checks the database through its own
connection: what the server answered is only half of the story, what it committed is the
other half.

Every request names a client address of its own in X-Forwarded-For (the test client's peer
is 127.0.0.1, a trusted proxy by default), so the per-address rate limit only bites in the
test that is about it.

The issue also asks for "an unsubscribe while a send is running is honoured for unsent
messages"; that test needs the send engine and lives with it.
"""

from __future__ import annotations

import itertools
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa

from bulletin import workspace as ws
from bulletin.store.db import open_store, write_transaction
from bulletin.store.schema import events, lists, subscribers, subscriptions
from bulletin.store.subscribers import add_subscriber, create_list, find_list, remove_subscriber
from bulletin.tokens import TokenSigner
from conftest import REPO, SAMPLE_SLUG, pass_database_url, set_config

BULLETIN = Path(sys.executable).parent / "bulletin"
RATE = 30
"""serve.rate_per_minute of the test workspace: small, so the rate-limit test is quick."""

SECURITY_HEADERS = {
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "x-frame-options": "DENY",
}
PAGE_CSP = (
    "default-src 'none'; style-src 'self'; form-action 'self'; frame-ancestors 'none'; "
    "base-uri 'none'"
)


# -- the server -----------------------------------------------------------------------------


def make_workspace(root: Path, extra_config: str = "", *, database_url: str | None = None) -> Path:
    """The repository's workspace files copied to ``root``, with a test [serve] section.

    ``database_url`` (see :func:`conftest.pass_database_url`) replaces the workspace's own
    SQLite file.
    """
    import shutil

    root.mkdir(parents=True)
    config = (REPO / "bulletin.toml").read_text(encoding="utf-8")
    config += f"\n[serve]\nrate_per_minute = {RATE}\n" + extra_config
    (root / "bulletin.toml").write_text(config, encoding="utf-8")
    shutil.copytree(REPO / "templates", root / "templates")
    shutil.copytree(REPO / "issues", root / "issues")
    (root / "subscribers").mkdir()
    if database_url is not None:
        set_config(root, "database", url=database_url)
    return root


class ServeProcess:
    """``bulletin serve --port 0`` on a workspace; knows its URL once it listens."""

    def __init__(self, root: Path, *args: str) -> None:
        self.root = root
        self.proc = subprocess.Popen(
            [str(BULLETIN), "--workspace", str(root), "serve", "--port", "0", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            encoding="utf-8",
        )
        self.output: list[str] = []
        self.lines: queue.Queue[str] = queue.Queue()
        self._pump_thread = threading.Thread(target=self._pump, daemon=True)
        self._pump_thread.start()
        match = self.wait_for_line(r"at (http://127\.0\.0\.1:\d+)/ ")
        self.url = match.group(1)

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.output.append(line)
            self.lines.put(line)

    def wait_for_line(self, pattern: str, timeout: float = 20) -> re.Match[str]:
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
        self.stop()
        pytest.fail(f"no line matching {pattern!r}; output:\n{''.join(self.output)}")

    def stop(self, sig: int = signal.SIGINT) -> int:
        """Ctrl+C (or ``sig``), as a user or a service manager would; kill only if it hangs."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise
        finally:
            self._pump_thread.join(5)
            assert self.proc.stdout is not None
            self.proc.stdout.close()


@dataclass
class Site:
    """The running server with the workspace, store and signer behind it."""

    server: ServeProcess
    workspace: ws.Workspace
    engine: sa.Engine
    signer: TokenSigner

    @property
    def url(self) -> str:
        return self.server.url


@pytest.fixture(scope="module")
def site(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[Site]:
    root = make_workspace(
        tmp_path_factory.mktemp("serve") / "ws", database_url=pass_database_url(request)
    )
    workspace = ws.load(root)
    engine = open_store(workspace.database_url())
    with write_transaction(engine) as conn:
        create_list(conn, "newsletter-ro", "Newsletter în română")
        create_list(conn, "news-en", "News in English")
        create_list(conn, "html", '<b>"Știri" & more</b>')
    signer = TokenSigner.from_workspace(workspace)  # creates the key file the server reads
    server = ServeProcess(root)
    try:
        yield Site(server, workspace, engine, signer)
    finally:
        server.stop()
        engine.dispose()


_addresses = itertools.count(1)


def next_client_address() -> str:
    """A documentation address (RFC 5737) per client; only ever a header value, never dialled."""
    n = next(_addresses)
    return f"198.51.{100 + n // 250}.{n % 250 + 1}"


@pytest.fixture
def client(site: Site) -> Iterator[httpx.Client]:
    headers = {"X-Forwarded-For": next_client_address()}
    with httpx.Client(base_url=site.url, headers=headers, timeout=10) as c:
        yield c


_people = itertools.count(1)


@dataclass
class Person:
    id: int
    email: str
    list_ids: dict[str, int]


def subscribe(site: Site, *slugs: str, language: str = "", name: str = "") -> Person:
    """A new subscriber on ``slugs``, added through the store like an import would."""
    email = f"reader{next(_people)}.{os.getpid()}@example.org"
    with write_transaction(site.engine) as conn:
        sub_id = 0
        for slug in slugs:
            result = add_subscriber(conn, email, slug, name=name or None, language=language)
            sub_id = result.subscriber.id
        ids = {}
        for slug in slugs:
            found = find_list(conn, slug)
            assert found is not None
            ids[slug] = found.id
    return Person(sub_id, email, ids)


def statuses(site: Site, person: Person) -> tuple[str, dict[str, str]]:
    """(global status, {list slug: subscription status}) read with a separate connection."""
    with site.engine.connect() as conn:
        status = conn.scalar(sa.select(subscribers.c.status).where(subscribers.c.id == person.id))
        rows = conn.execute(
            sa.select(lists.c.slug, subscriptions.c.status)
            .select_from(subscriptions.join(lists))
            .where(subscriptions.c.subscriber_id == person.id)
        ).all()
    assert status is not None
    return status, {slug: st for slug, st in rows}


def history(site: Site, person: Person) -> list[tuple[str, str]]:
    """The (kind, source) of each event of ``person``, oldest first."""
    with site.engine.connect() as conn:
        rows = conn.execute(
            sa.select(events.c.kind, events.c.source)
            .where(events.c.subscriber_id == person.id)
            .order_by(events.c.id)
        ).all()
    return [(kind, source) for kind, source in rows]


def token_url(site: Site, person: Person, slug: str | None) -> str:
    list_id = None if slug is None else person.list_ids[slug]
    return "/u/" + site.signer.unsubscribe_token(person.id, list_id)


ONE_CLICK = b"List-Unsubscribe=One-Click"
FORM = {"Content-Type": "application/x-www-form-urlencoded"}


def multipart(fields: dict[str, str]) -> tuple[bytes, dict[str, str]]:
    """A multipart/form-data body written out by hand, as a mail provider sends it."""
    boundary = "----bulletin-test-7MA4YWxkTrZu0gW"
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'
        for name, value in fields.items()
    ]
    body = ("".join(parts) + f"--{boundary}--\r\n").encode("utf-8")
    return body, {"Content-Type": f"multipart/form-data; boundary={boundary}"}


def assert_security_headers(response: httpx.Response) -> None:
    for name, value in SECURITY_HEADERS.items():
        assert response.headers.get(name) == value, (name, response.headers)
    assert "content-security-policy" in response.headers
    assert "frame-ancestors 'none'" in response.headers["content-security-policy"]
    assert "server" not in response.headers
    # base_url is http in the test workspace: no HSTS (see test_public_app for https).
    assert "strict-transport-security" not in response.headers


# -- GET never changes anything --------------------------------------------------------------


def test_get_shows_a_confirmation_page_and_changes_nothing(site: Site, client: httpx.Client):
    person = subscribe(site, "newsletter-ro", "news-en", language="ro")
    url = token_url(site, person, "newsletter-ro")
    before = statuses(site, person), history(site, person)
    for _ in range(3):  # a link scanner, a preview pane and the reader
        page = client.get(url)
        assert page.status_code == 200
        assert page.headers["content-type"] == "text/html; charset=utf-8"
        assert page.headers["cache-control"] == "no-store"
        assert page.headers["content-security-policy"] == PAGE_CSP
        assert_security_headers(page)
        assert 'lang="ro"' in page.text
        assert "Vă dezabonați de la Newsletter în română?" in page.text
        assert '<form method="post">' in page.text
        assert ">Dezabonare</button>" in page.text
        assert 'name="scope" value="all"' in page.text
        # The address is masked: the link may have been forwarded.
        assert "r***@example.org" in page.text
        assert person.email not in page.text
    head = client.head(url)
    assert head.status_code == 200 and head.content == b""
    assert (statuses(site, person), history(site, person)) == before
    assert before[0] == ("active", {"newsletter-ro": "subscribed", "news-en": "subscribed"})


def test_page_language_follows_the_subscriber_then_the_newsletter(site: Site, client: httpx.Client):
    english = subscribe(site, "news-en", language="en-GB")
    page = client.get(token_url(site, english, "news-en"))
    assert 'lang="en"' in page.text
    assert "Unsubscribe from News in English?" in page.text
    assert ">Unsubscribe</button>" in page.text
    unknown = subscribe(site, "news-en")  # no language: the newsletter's (ro)
    page = client.get(token_url(site, unknown, "news-en"))
    assert 'lang="ro"' in page.text and "Vă dezabonați de la News in English?" in page.text


def test_list_names_are_escaped(site: Site, client: httpx.Client):
    person = subscribe(site, "html", language="en")
    page = client.get(token_url(site, person, "html"))
    assert page.status_code == 200
    assert "<b>" not in page.text.split("<main", 1)[1]
    assert "&lt;b&gt;&#34;Știri&#34; &amp; more&lt;/b&gt;" in page.text


# -- POST: the page's form and RFC 8058 one-click ----------------------------------------------


def test_one_click_urlencoded_unsubscribes_from_that_list(site: Site, client: httpx.Client):
    person = subscribe(site, "newsletter-ro", "news-en")
    url = token_url(site, person, "newsletter-ro")
    response = client.post(url, content=ONE_CLICK, headers=FORM)
    assert response.status_code == 200
    assert "location" not in response.headers and not response.history
    assert "Gata: adresa r***@example.org a fost dezabonată de la Newsletter în română." in (
        response.text
    )
    # Committed before the answer: a separate connection sees it now.
    assert statuses(site, person) == (
        "active",
        {"newsletter-ro": "unsubscribed", "news-en": "subscribed"},
    )
    assert history(site, person)[-1] == ("unsubscribed", "one-click")


def test_one_click_multipart_unsubscribes_from_that_list(site: Site, client: httpx.Client):
    person = subscribe(site, "newsletter-ro", "news-en")
    body, headers = multipart({"List-Unsubscribe": "One-Click"})
    response = client.post(token_url(site, person, "news-en"), content=body, headers=headers)
    assert response.status_code == 200 and not response.history
    assert statuses(site, person) == (
        "active",
        {"newsletter-ro": "subscribed", "news-en": "unsubscribed"},
    )
    assert history(site, person)[-1] == ("unsubscribed", "one-click")


def test_repeated_post_is_idempotent(site: Site, client: httpx.Client):
    person = subscribe(site, "newsletter-ro", language="en")
    url = token_url(site, person, "newsletter-ro")
    first = client.post(url, content=ONE_CLICK, headers=FORM)
    events_after_first = history(site, person)
    second = client.post(url, content=ONE_CLICK, headers=FORM)
    third = client.post(url, data={"scope": "list"})
    assert [r.status_code for r in (first, second, third)] == [200, 200, 200]
    assert "is unsubscribed from Newsletter în română" in first.text
    assert "was already unsubscribed from Newsletter în română; nothing changed" in second.text
    assert history(site, person) == events_after_first  # no second event
    assert statuses(site, person)[1] == {"newsletter-ro": "unsubscribed"}
    # The page now says so, and offers leaving every list instead.
    page = client.get(url)
    assert "This address is already unsubscribed from Newsletter în română." in page.text
    assert 'name="scope" value="all"' in page.text


def test_the_page_option_unsubscribes_from_all_lists(site: Site, client: httpx.Client):
    person = subscribe(site, "newsletter-ro", "news-en")
    # What the browser sends with the checkbox ticked: the hidden field and the checkbox.
    response = client.post(
        token_url(site, person, "newsletter-ro"), content=b"scope=list&scope=all", headers=FORM
    )
    assert response.status_code == 200
    assert "dezabonată de la toate listele ClusterPoliSEE e-newsletter" in response.text
    assert statuses(site, person) == (
        "unsubscribed",
        {"newsletter-ro": "unsubscribed", "news-en": "unsubscribed"},
    )
    assert ("unsubscribed", "web") in history(site, person)
    again = client.get(token_url(site, person, "news-en"))
    assert "deja dezabonată de la toate listele" in again.text
    assert "<form" not in again.text  # nothing left to do


def test_a_token_for_every_list(site: Site, client: httpx.Client):
    person = subscribe(site, "newsletter-ro", "news-en", language="en")
    url = token_url(site, person, None)
    page = client.get(url)
    assert "Unsubscribe from ClusterPoliSEE e-newsletter?" in page.text
    assert statuses(site, person)[0] == "active"
    response = client.post(url, content=ONE_CLICK, headers=FORM)
    assert response.status_code == 200
    assert "is unsubscribed from all lists of ClusterPoliSEE e-newsletter" in response.text
    assert statuses(site, person) == (
        "unsubscribed",
        {"newsletter-ro": "unsubscribed", "news-en": "unsubscribed"},
    )


def test_post_without_a_body_still_unsubscribes(site: Site, client: httpx.Client):
    # Some senders of one-click requests send no body or an unusual type; the POST to a
    # valid token is the request, so it is honoured.
    person = subscribe(site, "news-en")
    response = client.post(token_url(site, person, "news-en"), content=b"")
    assert response.status_code == 200
    assert statuses(site, person)[1] == {"news-en": "unsubscribed"}
    assert history(site, person)[-1] == ("unsubscribed", "web")


# -- tokens that are not valid ------------------------------------------------------------------


def _flip(token: str, index: int) -> str:
    c = token[index]
    return token[:index] + ("B" if c == "A" else "A") + token[index + 1 :]


def test_forged_and_modified_tokens_get_one_identical_404(site: Site, client: httpx.Client):
    person = subscribe(site, "newsletter-ro")
    gone = subscribe(site, "newsletter-ro")
    with write_transaction(site.engine) as conn:
        remove_subscriber(conn, gone.id)
    ro = person.list_ids["newsletter-ro"]
    good = site.signer.unsubscribe_token(person.id, ro)
    stranger = TokenSigner(["another-key-that-is-long-enough"])
    bad = {
        "altered MAC": _flip(good, len(good) - 3),
        "altered id": _flip(good, 2),
        "truncated": good[:-2],
        "extended": good + "AA",
        "foreign key": stranger.unsubscribe_token(person.id, ro),
        "bounce token": site.signer.bounce_token(person.id, ro),
        "deleted subscriber": site.signer.unsubscribe_token(gone.id, ro),
        "unknown list": site.signer.unsubscribe_token(person.id, 999_999),
        "not a token": "preview",
    }
    before = statuses(site, person), history(site, person)
    bodies = set()
    for what, token in bad.items():
        assert token != good
        got = client.get(f"/u/{token}")
        posted = client.post(f"/u/{token}", content=ONE_CLICK, headers=FORM)
        for response in (got, posted):
            assert response.status_code == 404, what
            assert "Acest link nu este valid" in response.text
            assert_security_headers(response)
            bodies.add(response.content)
    # The same bytes whether the subscriber exists, was deleted, or the token is garbage.
    assert len(bodies) == 1
    assert (statuses(site, person), history(site, person)) == before
    assert client.get(f"/u/{good}").status_code == 200


# -- the safety rails ----------------------------------------------------------------------------


def test_bodies_over_16_kb_are_refused(site: Site, client: httpx.Client):
    person = subscribe(site, "news-en")
    url = token_url(site, person, "news-en")
    big = ONE_CLICK + b"&pad=" + b"x" * 17_000
    declared = client.post(url, content=big, headers=FORM)
    assert declared.status_code == 413
    assert_security_headers(declared)

    def chunks() -> Iterator[bytes]:  # no Content-Length: the limit counts what arrives
        yield ONE_CLICK + b"&pad="
        for _ in range(20):
            yield b"x" * 1024

    streamed = client.post(url, content=chunks(), headers=FORM)
    assert streamed.status_code == 413
    assert statuses(site, person)[1] == {"news-en": "subscribed"}


def test_only_get_head_and_post_are_allowed(site: Site, client: httpx.Client):
    person = subscribe(site, "news-en")
    url = token_url(site, person, "news-en")
    for method in ("PUT", "DELETE", "PATCH", "OPTIONS", "TRACE"):
        response = client.request(method, url)
        assert response.status_code == 405, method
        assert response.headers["allow"] == "GET, HEAD, POST"
        assert_security_headers(response)
    assert client.post("/archive/").status_code == 405
    assert statuses(site, person)[1] == {"news-en": "subscribed"}


def test_rate_limit_per_client_address(site: Site):
    person = subscribe(site, "news-en")
    url = token_url(site, person, "news-en")
    limited = {"X-Forwarded-For": next_client_address()}
    other = {"X-Forwarded-For": next_client_address()}
    with httpx.Client(base_url=site.url, timeout=10) as c:
        codes = [c.get(url, headers=limited).status_code for _ in range(RATE)]
        assert codes == [200] * RATE
        refused = c.get(url, headers=limited)
        assert refused.status_code == 429
        assert 1 <= int(refused.headers["retry-after"]) <= 60 / RATE + 1
        assert "Prea multe cereri" in refused.text
        assert_security_headers(refused)
        # A POST from the same address is refused too, and changes nothing.
        assert c.post(url, content=ONE_CLICK, headers={**FORM, **limited}).status_code == 429
        assert statuses(site, person)[1] == {"news-en": "subscribed"}
        # Other addresses are not affected; health checks never count.
        assert c.get(url, headers=other).status_code == 200
        assert all(c.get("/healthz", headers=limited).status_code == 200 for _ in range(3))


def test_forwarded_for_is_ignored_from_untrusted_peers(site: Site):
    # 127.0.0.2 is not in serve.trusted_proxies: its X-Forwarded-For is not believed, so
    # changing the header does not buy a new bucket.
    transport = httpx.HTTPTransport(local_address="127.0.0.2")
    with httpx.Client(base_url=site.url, transport=transport, timeout=10) as c:
        codes = [
            c.get("/archive/", headers={"X-Forwarded-For": next_client_address()}).status_code
            for _ in range(RATE + 1)
        ]
    assert codes[:RATE] == [200] * RATE
    assert codes[RATE] == 429


def test_no_redirect_is_built_from_the_request(site: Site, client: httpx.Client):
    person = subscribe(site, "news-en")
    token = site.signer.unsubscribe_token(person.id, person.list_ids["news-en"])
    evil = {"Host": "evil.example"}
    assert client.get(f"/u/{token}/", headers=evil).status_code == 404
    assert client.get(site.url + "//evil.example/", headers=evil).status_code == 404
    for path in ("/archive", "/"):
        response = client.get(path, headers=evil)
        assert response.status_code == 301
        # The target is newsletter.base_url from bulletin.toml, whatever the Host said.
        assert response.headers["location"] == "http://127.0.0.1:8080/archive/"


def test_healthz(site: Site, client: httpx.Client):
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.text == "ok\n"
    assert response.headers["cache-control"] == "no-store"


def test_stylesheet_is_served_for_pages_and_archive(site: Site, client: httpx.Client):
    one = client.get("/static/public.css")
    two = client.get("/archive/public.css")
    assert one.status_code == two.status_code == 200
    assert one.headers["content-type"] == "text/css; charset=utf-8"
    assert one.content == two.content and b".card" in one.content


# -- the archive ---------------------------------------------------------------------------------


def test_archive_index_and_issue_hold_no_personal_data(site: Site, client: httpx.Client):
    person = subscribe(site, "newsletter-ro", name="Ioana Știrbu")
    index = client.get("/archive/")
    assert index.status_code == 200
    assert_security_headers(index)
    assert f'<a href="{SAMPLE_SLUG}">ClusterPoliSEE nr. 3: Open Days 2014' in index.text
    assert "Nr. 3 · <time" in index.text and "1 octombrie 2014" in index.text
    assert 'id="unsubscribe"' in index.text
    page = client.get(f"/archive/{SAMPLE_SLUG}")
    assert page.status_code == 200
    assert page.headers["content-type"] == "text/html; charset=utf-8"
    csp = page.headers["content-security-policy"]
    assert "script-src" not in csp and "default-src 'none'" in csp
    assert "frame-ancestors 'none'" in csp
    assert "Vă dorim o lectură plăcută" in page.text
    # The footer names no address, and the unsubscribe link carries no token.
    assert "Acest mesaj a fost trimis către abonații ClusterPoliSEE e-newsletter." in page.text
    assert 'href="http://127.0.0.1:8080/archive/#unsubscribe"' in page.text
    assert "/u/" not in page.text
    assert "BULLETINSLOT" not in page.text
    for private in (person.email, "Ioana", "cititor@example.org", "Ana Popescu", "@example.org"):
        assert private not in page.text and private not in index.text
    assert client.get(f"/archive/{SAMPLE_SLUG}/").content == page.content


def test_archive_refuses_unknown_and_crafted_slugs(site: Site, client: httpx.Client):
    for path in (
        "/archive/no-such-issue",
        "/archive/..%2Fbulletin.toml",
        "/archive/%2e%2e",
        "/archive/.bulletin",
        f"/archive/{SAMPLE_SLUG}/issue.yaml",
        "/archive/subscribers",
    ):
        response = client.get(path)
        assert response.status_code == 404, path
        assert "Pagina nu există" in response.text
        assert "secret" not in response.text


def test_archive_build_writes_what_the_server_serves(site: Site, client: httpx.Client, tmp_path):
    out = tmp_path / "public" / "archive"
    result = subprocess.run(
        [str(BULLETIN), "--workspace", str(site.workspace.root), "archive", "build", str(out)],
        capture_output=True,
        text=True,
        encoding="utf-8",
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "Wrote the archive of 1 issue to" in result.stdout
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()) == [
        f"{SAMPLE_SLUG}/index.html",
        "index.html",
        "public.css",
    ]
    assert (out / "index.html").read_bytes() == client.get("/archive/").content
    issue = client.get(f"/archive/{SAMPLE_SLUG}").content
    assert (out / SAMPLE_SLUG / "index.html").read_bytes() == issue
    assert (out / "public.css").read_bytes() == client.get("/archive/public.css").content


# -- the command ---------------------------------------------------------------------------------


def test_serve_announces_its_address_and_warns_about_http(site: Site):
    text = "".join(site.server.output)
    assert re.search(r"Serving unsubscribe pages and the archive at http://127\.0\.0\.1:\d+/", text)
    assert "Links in mail point to http://127.0.0.1:8080 (newsletter.base_url)" in text
    assert "Warning: newsletter.base_url is not https" in text


def test_access_log_does_not_show_tokens(site: Site, client: httpx.Client):
    person = subscribe(site, "news-en")
    token = site.signer.unsubscribe_token(person.id, person.list_ids["news-en"])
    assert client.get(f"/u/{token}").status_code == 200
    site.server.wait_for_line(r'"GET /u/… HTTP/1.1" 200')
    assert token not in "".join(site.server.output)


def test_sigterm_stops_the_server_cleanly(tmp_path: Path):
    root = make_workspace(tmp_path / "ws")
    TokenSigner.from_workspace(ws.load(root))
    server = ServeProcess(root)
    assert httpx.get(server.url + "/healthz", timeout=10).status_code == 200
    assert server.stop(signal.SIGTERM) == 0
    assert "Finished server process" in "".join(server.output)


def test_serve_refuses_to_start_without_the_signing_key(tmp_path: Path):
    root = make_workspace(tmp_path / "ws")
    env = {k: v for k, v in os.environ.items() if k != "BULLETIN_SECRET_KEY"}
    result = subprocess.run(
        [str(BULLETIN), "--workspace", str(root), "serve", "--port", "0"],
        capture_output=True,
        text=True,
        encoding="utf-8",
        env=env,
        timeout=60,
    )
    assert result.returncode == 1
    assert "No signing key: .bulletin/secret_key does not exist" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (root / ".bulletin" / "secret_key").exists()


def test_serve_reports_a_port_in_use(site: Site):
    port = site.url.rsplit(":", 1)[1]
    result = subprocess.run(
        [str(BULLETIN), "--workspace", str(site.workspace.root), "serve", "--port", port],
        capture_output=True,
        text=True,
        encoding="utf-8",
        timeout=60,
    )
    assert result.returncode == 1
    assert f"Port {port} on 127.0.0.1 is already in use." in result.stderr
    assert "pass --port N" in result.stderr
