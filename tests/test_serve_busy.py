"""``bulletin serve`` while another process holds SQLite's write lock for a long time.

A real ``bulletin serve`` subprocess, a real SQLite file, a second connection holding the
write lock (``BEGIN IMMEDIATE``, as an import saving a large file does) for longer than serve
waits, and hundreds of one-click POSTs at once over real HTTP. Every answer must be a 200
that was saved or the documented 503 with Retry-After -- never a 500, never an answer that
waits for the lock to go -- and the pages that only read keep answering meanwhile. Retrying
the 503s once the lock is gone unsubscribes everyone, each exactly once.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa

from bulletin import workspace as ws
from bulletin.store.db import open_store, write_transaction
from bulletin.store.schema import events
from bulletin.store.subscribers import add_subscriber, create_list
from bulletin.tokens import TokenSigner
from serveload import SERVE_WAIT, SLACK, Answer, get, post, unsubscribed
from test_public import ServeProcess, make_workspace

HOLD = SERVE_WAIT + 5
"""How long the other process holds the write lock: well past serve's waits."""

FIRST_WAVE = 240
"""POSTs sent at once when the lock is taken: they cannot be saved in time."""

SECOND_WAVE = 60
"""POSTs sent shortly before the lock goes: they can be saved within serve's wait."""


@pytest.mark.sqlite_only  # PostgreSQL's locks: test_serve_postgres.py
def test_a_long_write_lock_answers_503_never_500_and_loses_nothing(tmp_path: Path):
    root = make_workspace(tmp_path / "ws")
    workspace = ws.load(root)
    engine = open_store(workspace.database_url())
    with write_transaction(engine) as conn:
        news = create_list(conn, "news", "News")
        ids = [
            add_subscriber(conn, f"cititor{i:03d}@example.org", "news").subscriber.id
            for i in range(FIRST_WAVE + SECOND_WAVE)
        ]
    signer = TokenSigner.from_workspace(workspace)
    tokens = [signer.unsubscribe_token(sub_id, news.id) for sub_id in ids]
    server = ServeProcess(root)
    db_file = root / "subscribers" / "bulletin.db"

    async def storm() -> tuple[list[Answer], list[tuple[int, float]]]:
        # A connection per request, as from many mail providers: a kept-alive one idle past
        # serve's keep-alive timeout may be closed by the server just as it is reused.
        limits = httpx.Limits(max_connections=None, max_keepalive_connections=0)
        async with httpx.AsyncClient(base_url=server.url, timeout=60, limits=limits) as client:
            # Another process takes the write lock, as an import saving a big file does.
            lock = sqlite3.connect(db_file, isolation_level=None, timeout=10)
            lock.execute("BEGIN IMMEDIATE")
            held_from = time.monotonic()
            try:
                first = [asyncio.create_task(post(client, i, tokens[i])) for i in range(FIRST_WAVE)]
                await asyncio.sleep(0.5)
                # Pages that only read, while hundreds of POSTs wait.
                reads = [
                    await get(client, f"/u/{tokens[-1]}"),
                    await get(client, "/healthz"),
                ]
                await asyncio.sleep(HOLD - 2.5 - (time.monotonic() - held_from))
                second = [
                    asyncio.create_task(post(client, i, tokens[i]))
                    for i in range(FIRST_WAVE, FIRST_WAVE + SECOND_WAVE)
                ]
                await asyncio.sleep(HOLD - (time.monotonic() - held_from))
                # The first wave was answered while the lock was still held.
                waited = sum(not task.done() for task in first)
                reads.append(await get(client, "/healthz"))
            finally:
                lock.execute("ROLLBACK")
                lock.close()
            assert waited == 0, f"{waited} answers waited for the lock to go"
            answers = await asyncio.gather(*first, *second)
        return answers, reads

    try:
        answers, reads = asyncio.run(storm())
        output = "".join(server.output)
        statuses = sorted({a.status for a in answers})
        assert set(statuses) <= {200, 503}, (statuses, output[-3000:])
        busy = [a for a in answers if a.status == 503]
        assert all(a.retry_after == "30" for a in busy)
        assert max(a.seconds for a in answers) < SERVE_WAIT + SLACK, "an answer hung"
        assert sum(a.index < FIRST_WAVE for a in busy) > FIRST_WAVE // 2, "the lock was held"
        assert all(status == 200 for status, _ in reads), reads
        assert max(seconds for _, seconds in reads) < SERVE_WAIT, reads
        # Every 200 was saved before it was sent; every 503 changed nothing.
        done = {ids[a.index] for a in answers if a.status == 200}
        assert unsubscribed(engine, ids) == done
        assert "answered 503" in output and "Traceback" not in output

        async def retry() -> list[Answer]:
            limits = httpx.Limits(max_keepalive_connections=0)
            async with httpx.AsyncClient(base_url=server.url, timeout=60, limits=limits) as client:
                return await asyncio.gather(*(post(client, a.index, tokens[a.index]) for a in busy))

        retried = asyncio.run(retry())
        assert [a.status for a in retried] == [200] * len(busy)
        assert unsubscribed(engine, ids) == set(ids)
        with engine.connect() as conn:
            per_subscriber = conn.execute(
                sa.select(events.c.subscriber_id, sa.func.count())
                .where(events.c.subscriber_id.in_(ids), events.c.kind == "unsubscribed")
                .group_by(events.c.subscriber_id)
            ).all()
        assert sorted(per_subscriber) == [(sub_id, 1) for sub_id in sorted(ids)]
    finally:
        assert server.stop() == 0
        engine.dispose()
