"""The public app's parts, and the cases a subprocess cannot set up easily.

The app runs in a real uvicorn on a loopback port (in a thread, so a test can give it a store
with a short busy timeout or an https base_url); the pure parts (form parsing, the token
bucket, address masking, log redaction) are checked directly.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa
import uvicorn
from starlette.applications import Starlette

from bulletin import workspace as ws
from bulletin.errors import BulletinError
from bulletin.store.db import open_store, write_transaction
from bulletin.store.schema import subscriptions
from bulletin.store.subscribers import add_subscriber, create_list
from bulletin.tokens import TokenSigner
from bulletin.web.pages import mask_email, page_language
from bulletin.web.public import (
    RateLimiter,
    RedactTokens,
    bind,
    client_key,
    create_public_app,
    parse_form,
    signer_for,
)


@contextlib.contextmanager
def running(app: Starlette) -> Iterator[str]:
    """``app`` served by uvicorn on a free loopback port; yields its base URL."""
    sock = bind("127.0.0.1", 0)
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, lifespan="off", log_config=None, access_log=False))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    assert server.started, "uvicorn did not start"
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


def load(root: Path, extra: str = "") -> ws.Workspace:
    if extra:
        config = root / "bulletin.toml"
        config.write_text(config.read_text(encoding="utf-8") + extra, encoding="utf-8")
    return ws.load(root)


def subscribe(engine: sa.Engine) -> tuple[int, int]:
    with write_transaction(engine) as conn:
        the_list = create_list(conn, "news", "News")
        sub = add_subscriber(conn, "ana@example.org", "news", language="en").subscriber
    return sub.id, the_list.id


def list_status(engine: sa.Engine, sub_id: int) -> str | None:
    with engine.connect() as conn:
        return conn.scalar(
            sa.select(subscriptions.c.status).where(subscriptions.c.subscriber_id == sub_id)
        )


# -- behaviour that needs a particular setup -------------------------------------------------


def test_hsts_only_with_an_https_base_url(workspace_dir: Path):
    config = workspace_dir / "bulletin.toml"
    text = config.read_text(encoding="utf-8")
    https = text.replace('"http://127.0.0.1:8080"', '"https://news.example.org"')
    assert https != text
    config.write_text(https, encoding="utf-8")
    workspace = ws.load(workspace_dir)
    signer = TokenSigner(["a-test-key-of-enough-length"])
    app = create_public_app(workspace, signer=signer)
    with running(app) as url:
        for path in ("/healthz", "/archive/", "/u/not-a-token", "/nowhere"):
            response = httpx.get(url + path, timeout=10)
            assert response.headers["strict-transport-security"] == "max-age=31536000", path
        moved = httpx.get(url + "/archive", timeout=10)
        assert moved.headers["location"] == "https://news.example.org/archive/"
    app.state.public.engine.dispose()


@pytest.mark.sqlite_only  # PostgreSQL: test_serve_postgres.py
def test_a_locked_database_answers_503_and_loses_nothing(
    workspace_dir: Path, caplog: pytest.LogCaptureFixture
):
    workspace = load(workspace_dir)
    engine = open_store(workspace.database_url())
    sub_id, list_id = subscribe(engine)
    signer = TokenSigner(["a-test-key-of-enough-length"])
    token = signer.unsubscribe_token(sub_id, list_id)
    other = open_store(workspace.database_url())
    # The app waits 0.3 s for the database instead of serve's few seconds: the test is quick.
    app = create_public_app(workspace, engine=engine, signer=signer, db_wait=0.3)
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    one_click = b"List-Unsubscribe=One-Click"
    with running(app) as url, httpx.Client(base_url=url, timeout=10) as client:
        with write_transaction(other):  # an import holding the write lock
            # Readers are not blocked (WAL): the page still shows.
            assert client.get(f"/u/{token}").status_code == 200
            with caplog.at_level(logging.ERROR, logger="bulletin.web.public"):
                busy = client.post(f"/u/{token}", content=one_click, headers=form)
            assert busy.status_code == 503
            assert busy.headers["retry-after"] == "30"
            assert "Try again" in busy.text or "Încercați din nou" in busy.text
        assert list_status(other, sub_id) == "subscribed"
        assert any("answered 503" in r.getMessage() for r in caplog.records)
        # Once the lock is gone, the retry a mail provider makes goes through.
        done = client.post(f"/u/{token}", content=one_click, headers=form)
        assert done.status_code == 200
        assert list_status(other, sub_id) == "unsubscribed"
    engine.dispose()
    other.dispose()


def test_no_free_connection_answers_503_not_500(
    workspace_dir: Path, caplog: pytest.LogCaptureFixture
):
    workspace = load(workspace_dir)
    engine = open_store(workspace.database_url(), pool_timeout=0.3)
    sub_id, list_id = subscribe(engine)
    signer = TokenSigner(["a-test-key-of-enough-length"])
    token = signer.unsubscribe_token(sub_id, list_id)
    app = create_public_app(workspace, engine=engine, signer=signer, db_wait=0.3)
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    with running(app) as url, httpx.Client(base_url=url, timeout=10) as client:
        # Every connection of the pool (5 + 10 overflow) busy elsewhere.
        taken = [engine.connect() for _ in range(15)]
        try:
            with caplog.at_level(logging.ERROR, logger="bulletin.web.public"):
                page = client.get(f"/u/{token}")
                post = client.post(
                    f"/u/{token}", content=b"List-Unsubscribe=One-Click", headers=form
                )
            health = client.get("/healthz")
        finally:
            for conn in taken:
                conn.close()
        assert (page.status_code, post.status_code, health.status_code) == (503, 503, 503)
        assert page.headers["retry-after"] == post.headers["retry-after"] == "30"
        assert list_status(engine, sub_id) == "subscribed"
        assert sum("no connection came free" in r.getMessage() for r in caplog.records) == 2
        done = client.post(f"/u/{token}", content=b"List-Unsubscribe=One-Click", headers=form)
        assert done.status_code == 200
        assert list_status(engine, sub_id) == "unsubscribed"
    engine.dispose()


@pytest.mark.sqlite_only  # PostgreSQL: test_serve_postgres.py
def test_a_damaged_database_answers_503_not_500(
    workspace_dir: Path, caplog: pytest.LogCaptureFixture
):
    workspace = load(workspace_dir)
    engine = open_store(workspace.database_url())
    sub_id, list_id = subscribe(engine)
    signer = TokenSigner(["a-test-key-of-enough-length"])
    token = signer.unsubscribe_token(sub_id, list_id)
    app = create_public_app(workspace, engine=engine, signer=signer, db_wait=0.3)
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    db_file = workspace_dir / "subscribers" / "bulletin.db"
    with running(app) as url, httpx.Client(base_url=url, timeout=10) as client:
        assert client.get(f"/u/{token}").status_code == 200
        # The file is overwritten while serve runs (a bad restore, a disk fault); the next
        # connections open what is there now.
        engine.dispose()
        good = db_file.read_bytes()
        db_file.write_bytes(b"not a database any more " * 400)
        with caplog.at_level(logging.ERROR, logger="bulletin.web.public"):
            page = client.get(f"/u/{token}")
            post = client.post(f"/u/{token}", content=b"List-Unsubscribe=One-Click", headers=form)
        assert (page.status_code, post.status_code) == (503, 503)
        assert post.headers["retry-after"] == "30"
        assert "Traceback" not in post.text and "sqlite" not in post.text.lower()
        messages = [r.getMessage() for r in caplog.records]
        assert sum("is not a SQLite database" in m for m in messages) == 2, messages
        engine.dispose()
        db_file.write_bytes(good)
        done = client.post(f"/u/{token}", content=b"List-Unsubscribe=One-Click", headers=form)
        assert done.status_code == 200
    assert list_status(engine, sub_id) == "unsubscribed"
    engine.dispose()


def test_a_path_prefix_in_base_url(workspace_dir: Path):
    config = workspace_dir / "bulletin.toml"
    text = config.read_text(encoding="utf-8")
    config.write_text(
        text.replace('"http://127.0.0.1:8080"', '"https://example.org/news/"'), encoding="utf-8"
    )
    workspace = ws.load(workspace_dir)
    app = create_public_app(workspace, signer=TokenSigner(["a-test-key-of-enough-length"]))
    with running(app) as url:
        page = httpx.get(url + "/u/not-a-token", timeout=10)
        moved = httpx.get(url + "/archive", timeout=10)
    # The proxy strips /news; our links and redirects put it back.
    assert '<link rel="stylesheet" href="/news/static/public.css">' in page.text
    assert moved.headers["location"] == "https://example.org/news/archive/"
    app.state.public.engine.dispose()


class BrokenArchive:
    """Stands in for the archive with a bug, to see what a 500 looks like."""

    def index_page(self) -> bytes:
        raise RuntimeError("a bug")

    def issue_page(self, slug: str) -> bytes | None:
        raise RuntimeError("a bug")


def test_a_bug_answers_a_plain_500_page_with_the_headers(workspace_dir: Path):
    workspace = load(workspace_dir)
    signer = TokenSigner(["a-test-key-of-enough-length"])
    app = create_public_app(workspace, signer=signer, archive=BrokenArchive())  # type: ignore[arg-type]
    with running(app) as url:
        response = httpx.get(url + "/archive/", timeout=10)
    assert response.status_code == 500
    assert "A apărut o eroare" in response.text
    assert "RuntimeError" not in response.text and "Traceback" not in response.text
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["cache-control"] == "no-store"
    assert "frame-ancestors 'none'" in response.headers["content-security-policy"]
    app.state.public.engine.dispose()


def test_signer_for_never_creates_a_key(workspace_dir: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("BULLETIN_SECRET_KEY", raising=False)
    workspace = load(workspace_dir)
    with pytest.raises(BulletinError) as caught:
        signer_for(workspace)
    assert "copy .bulletin/secret_key" in str(caught.value)
    assert not (workspace_dir / ".bulletin").exists()
    # With the sending machine's key in the environment, links verify.
    monkeypatch.setenv("BULLETIN_SECRET_KEY", "the-key-of-the-sending-machine")
    token = TokenSigner(["the-key-of-the-sending-machine"]).unsubscribe_token(7, 2)
    verified = signer_for(workspace).verify_unsubscribe(token)
    assert verified is not None and (verified.subscriber_id, verified.list_id) == (7, 2)


def test_trusted_proxies_are_validated(workspace_dir: Path):
    assert ws.load(workspace_dir).config.serve.proxies == ["127.0.0.1", "::1"]
    config = workspace_dir / "bulletin.toml"
    original = config.read_text(encoding="utf-8")
    good = load(workspace_dir, '\n[serve]\ntrusted_proxies = "10.0.0.0/8,192.0.2.7  fd00::/8"\n')
    assert good.config.serve.proxies == ["10.0.0.0/8", "192.0.2.7", "fd00::/8"]
    config.write_text(original, encoding="utf-8")
    with pytest.raises(BulletinError) as caught:
        load(workspace_dir, '\n[serve]\ntrusted_proxies = "10.0.0.0/8, proxy.example"\n')
    assert "serve.trusted_proxies: 'proxy.example' is not an IP address or CIDR network" in str(
        caught.value
    )


# -- pure parts ------------------------------------------------------------------------------


def test_parse_form_reads_both_encodings():
    assert parse_form("application/x-www-form-urlencoded", b"List-Unsubscribe=One-Click") == {
        "List-Unsubscribe": ["One-Click"]
    }
    assert parse_form("application/x-www-form-urlencoded", b"scope=list&scope=all") == {
        "scope": ["list", "all"]
    }
    body = (
        b"--XyZ\r\n"
        b'Content-Disposition: form-data; name="List-Unsubscribe"\r\n\r\n'
        b"One-Click\r\n"
        b"--XyZ\r\n"
        b'Content-Disposition: form-data; name="upload"; filename="a.txt"\r\n'
        b"Content-Type: text/plain\r\n\r\n"
        b"ignored\r\n"
        b"--XyZ--\r\n"
    )
    assert parse_form('multipart/form-data; boundary="XyZ"', body) == {
        "List-Unsubscribe": ["One-Click"]
    }
    # Unreadable bodies give no fields rather than an error.
    assert parse_form("multipart/form-data; boundary=XyZ", b"\x00\xff garbage") == {}
    assert parse_form("multipart/form-data", b"no boundary at all") == {}
    assert parse_form("", b"List-Unsubscribe=One-Click") == {"List-Unsubscribe": ["One-Click"]}


def test_rate_limiter_refills_over_time():
    now = [0.0]
    limiter = RateLimiter(6, clock=lambda: now[0])  # 6 a minute: one every 10 s
    assert [limiter.take("a") for _ in range(6)] == [0.0] * 6
    wait = limiter.take("a")
    assert 9.9 < wait <= 10.0
    assert limiter.take("b") == 0.0  # another client has its own bucket
    now[0] += 10.0
    assert limiter.take("a") == 0.0
    assert limiter.take("a") > 0


def test_rate_limiter_memory_is_bounded():
    now = [0.0]
    limiter = RateLimiter(60, clock=lambda: now[0], max_clients=100)
    for i in range(100):
        limiter.take(f"idle-{i}")
    now[0] += 120  # every bucket has refilled: those clients are idle
    limiter.take("busy")
    limiter.take("another")
    assert len(limiter._buckets) <= 100


def test_client_key_groups_ipv6_by_64():
    def scope(host: str) -> dict[str, object]:
        return {"client": (host, 1234)}

    assert client_key(scope("203.0.113.9")) == "203.0.113.9"
    assert client_key(scope("2001:db8:1:2:aaaa::1")) == client_key(scope("2001:db8:1:2::ffff"))
    assert client_key(scope("2001:db8:1:2::1")) != client_key(scope("2001:db8:1:3::1"))
    assert client_key(scope("::ffff:203.0.113.9")) == "203.0.113.9"
    assert client_key({"client": None}) == "unknown"


def test_masked_addresses_and_languages():
    assert mask_email("ana.popescu@example.org") == "a***@example.org"
    assert mask_email("x@exemplu.ro") == "x***@exemplu.ro"
    assert mask_email("ștefan@exemplu.ro") == "ș***@exemplu.ro"
    assert page_language("ro-RO", "en") == "ro"
    assert page_language("", "en-GB") == "en"
    assert page_language("de", "fr") == "en"


def test_access_log_filter_hides_tokens():
    record = logging.LogRecord(
        "uvicorn.access",
        logging.INFO,
        __file__,
        1,
        '%s - "%s %s HTTP/%s" %d',
        ("127.0.0.1:5000", "POST", "/u/FAECKVbmdcJ_q6fOXbZYBSWaJQ?x=1", "1.1", 200),
        None,
    )
    assert RedactTokens().filter(record)
    assert record.getMessage() == '127.0.0.1:5000 - "POST /u/…?x=1 HTTP/1.1" 200'
