"""``bulletin serve`` on PostgreSQL: locks held long, the server going away, two serve processes.

Real ``bulletin serve`` subprocesses over real HTTP, against the session's PostgreSQL server
(or, to stop and start it, one of the test's own). PostgreSQL never locks a whole database
the way SQLite's writer does, but a row or table lock held by an import, a send or a
person in psql can stop an unsubscribe just as well: serve must answer 200 (saved) or 503
with Retry-After within its wait, never hang and never 500, and a retry must lose nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
import sqlalchemy as sa

from bulletin import workspace as ws
from bulletin.store.db import open_store, write_transaction
from bulletin.store.schema import events
from bulletin.store.subscribers import add_subscriber, create_list
from bulletin.tokens import TokenSigner
from pgserver import USER, PgServer
from serveload import FORM, SERVE_WAIT, SLACK, Answer, get, post, unsubscribed
from test_public import ONE_CLICK, ServeProcess, make_workspace, next_client_address

HOLD = SERVE_WAIT + 3
"""How long another connection holds its lock: past serve's wait."""
FIRST_WAVE = 100
SECOND_WAVE = 20


@dataclass
class Store:
    """A workspace on PostgreSQL with ``n`` subscribers of ``news`` and their tokens."""

    root: Path
    engine: sa.Engine
    ids: list[int]
    tokens: list[str]


def make_store(root: Path, url: str, n: int) -> Store:
    make_workspace(root, database_url=url)
    workspace = ws.load(root)
    engine = open_store(workspace.database_url())
    with write_transaction(engine) as conn:
        news = create_list(conn, "news", "News")
        ids = [
            add_subscriber(conn, f"cititor{i:03d}@example.org", "news").subscriber.id
            for i in range(n)
        ]
    signer = TokenSigner.from_workspace(workspace)
    return Store(root, engine, ids, [signer.unsubscribe_token(i, news.id) for i in ids])


def events_per_subscriber(engine: sa.Engine, ids: list[int]) -> list[tuple[int, int]]:
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(events.c.subscriber_id, sa.func.count())
            .where(events.c.subscriber_id.in_(ids), events.c.kind == "unsubscribed")
            .group_by(events.c.subscriber_id)
        ).all()
    return sorted((int(a), int(b)) for a, b in rows)


def _schema_of(url: str) -> str:
    return url.rsplit("search_path%3D", 1)[1].split("&", 1)[0]


@contextlib.contextmanager
def holding(server: Any, url: str, lock_sql: str) -> Iterator[None]:
    """Another program's transaction holding a lock until the block ends."""
    conn = psycopg.connect(
        host="127.0.0.1",
        port=server.port,
        user=USER,
        dbname="postgres",
        options=f"-csearch_path={_schema_of(url)}",
    )
    try:
        conn.execute(lock_sql.encode())
        yield
    finally:
        conn.rollback()
        conn.close()


LOCKS = {
    # An import updating these subscribers: the unsubscribe's event needs a key-share lock
    # on its subscriber row. Pages only read, and MVCC readers never wait.
    "rows": "SELECT id FROM subscribers FOR UPDATE",
    # A migration or a person in psql: even reading the subscriptions waits.
    "table": "LOCK TABLE subscriptions IN ACCESS EXCLUSIVE MODE",
}


@pytest.mark.slow
@pytest.mark.parametrize("lock", list(LOCKS))
def test_a_lock_held_past_serves_wait_answers_503_never_hangs_and_loses_nothing(
    tmp_path: Path, pg_server: Any, lock: str
) -> None:
    url = pg_server.new_url()
    store = make_store(tmp_path / "ws", url, FIRST_WAVE + SECOND_WAVE)
    ids, tokens = store.ids, store.tokens
    server = ServeProcess(store.root)

    async def storm() -> tuple[list[Answer], list[tuple[int, float]]]:
        limits = httpx.Limits(max_connections=None, max_keepalive_connections=0)
        timeout = httpx.Timeout(SERVE_WAIT + SLACK + 10)
        async with httpx.AsyncClient(base_url=server.url, timeout=timeout, limits=limits) as c:
            with holding(pg_server, url, LOCKS[lock]):
                held_from = time.monotonic()
                first = [asyncio.create_task(post(c, i, tokens[i])) for i in range(FIRST_WAVE)]
                await asyncio.sleep(0.5)
                reads = [await get(c, f"/u/{tokens[-1]}"), await get(c, "/healthz")]
                await asyncio.sleep(HOLD - 2.5 - (time.monotonic() - held_from))
                second = [
                    asyncio.create_task(post(c, i, tokens[i]))
                    for i in range(FIRST_WAVE, FIRST_WAVE + SECOND_WAVE)
                ]
                await asyncio.sleep(HOLD - (time.monotonic() - held_from))
                waited = sum(not task.done() for task in first)
            assert waited == 0, f"{waited} answers waited for the lock to go"
            return await asyncio.gather(*first, *second), reads

    try:
        answers, reads = asyncio.run(storm())
        output = "".join(server.output)
        assert {a.status for a in answers} <= {200, 503}, output[-3000:]
        busy = [a for a in answers if a.status == 503]
        assert all(a.retry_after == "30" for a in busy)
        assert max(a.seconds for a in answers) < SERVE_WAIT + SLACK, "an answer hung"
        assert sum(a.index < FIRST_WAVE for a in busy) > FIRST_WAVE // 2, "the lock was held"
        page, health = reads
        assert health[0] == 200 and health[1] < SERVE_WAIT, reads
        if lock == "rows":
            assert page[0] == 200 and page[1] < SERVE_WAIT, reads
        else:
            assert page[0] == 503 and page[1] < SERVE_WAIT + SLACK, reads
        done = {ids[a.index] for a in answers if a.status == 200}
        assert unsubscribed(store.engine, ids) == done
        assert "answered 503" in output and "Traceback" not in output

        async def retry() -> list[Answer]:
            limits = httpx.Limits(max_keepalive_connections=0)
            async with httpx.AsyncClient(base_url=server.url, timeout=60, limits=limits) as c:
                return await asyncio.gather(*(post(c, a.index, tokens[a.index]) for a in busy))

        assert [a.status for a in asyncio.run(retry())] == [200] * len(busy)
        assert unsubscribed(store.engine, ids) == set(ids)
        assert events_per_subscriber(store.engine, ids) == [(i, 1) for i in sorted(ids)]
    finally:
        assert server.stop() == 0
        store.engine.dispose()


@pytest.mark.slow
def test_serve_answers_503_while_the_database_server_is_down_and_recovers(tmp_path: Path) -> None:
    with PgServer() as own:
        url = own.new_url()
        store = make_store(tmp_path / "ws", url, 3)
        store.engine.dispose()
        server = ServeProcess(store.root)
        headers = {"X-Forwarded-For": next_client_address()}
        try:
            with httpx.Client(base_url=server.url, timeout=30, headers=headers) as client:
                assert client.get("/healthz").status_code == 200
                first = client.post(f"/u/{store.tokens[0]}", content=ONE_CLICK, headers=FORM)
                assert first.status_code == 200, "".join(server.output)[-3000:]
                own.halt()
                started = time.monotonic()
                page = client.get(f"/u/{store.tokens[1]}")
                post_ = client.post(f"/u/{store.tokens[1]}", content=ONE_CLICK, headers=FORM)
                health = client.get("/healthz")
                assert (page.status_code, post_.status_code, health.status_code) == (503,) * 3
                assert time.monotonic() - started < 3 * SERVE_WAIT
                assert post_.headers["retry-after"] == "30"
                assert "Traceback" not in post_.text and "psycopg" not in post_.text
                own.start()
                again = client.post(f"/u/{store.tokens[1]}", content=ONE_CLICK, headers=FORM)
                assert again.status_code == 200
                assert client.get("/healthz").status_code == 200
                # A restart while serve is idle (a nightly upgrade): the first request after
                # it already works, because a stale pooled connection is noticed before use.
                own.halt()
                own.start()
                third = client.post(f"/u/{store.tokens[2]}", content=ONE_CLICK, headers=FORM)
                assert third.status_code == 200, "".join(server.output)[-3000:]
            output = "".join(server.output)
            assert "No PostgreSQL server answers at 127.0.0.1" in output, output[-3000:]
            assert "Traceback" not in output
        finally:
            assert server.stop() == 0
        check = sa.create_engine(url)
        assert unsubscribed(check, store.ids) == set(store.ids)
        check.dispose()


@pytest.mark.slow
def test_two_serve_processes_on_one_database_unsubscribe_everyone_once(
    tmp_path: Path, pg_server: Any
) -> None:
    # Two serve processes behind one proxy; mail providers retry, so the same one-click
    # POST often reaches both at once.
    n = 150
    store = make_store(tmp_path / "ws", pg_server.new_url(), n)
    servers = [ServeProcess(store.root), ServeProcess(store.root)]

    async def both() -> list[Answer]:
        limits = httpx.Limits(max_connections=None, max_keepalive_connections=0)
        clients = [httpx.AsyncClient(base_url=s.url, timeout=60, limits=limits) for s in servers]
        try:
            tasks = [post(client, i, store.tokens[i]) for i in range(n) for client in clients]
            return await asyncio.gather(*tasks)
        finally:
            for client in clients:
                await client.aclose()

    try:
        answers = asyncio.run(both())
        assert {a.status for a in answers} == {200}, [a for a in answers if a.status != 200][:5]
        assert unsubscribed(store.engine, store.ids) == set(store.ids)
        assert events_per_subscriber(store.engine, store.ids) == [(i, 1) for i in sorted(store.ids)]
        for s in servers:
            assert "Traceback" not in "".join(s.output)
    finally:
        for s in servers:
            assert s.stop() == 0
        store.engine.dispose()
