"""The writer thread of ``bulletin serve``: unsubscribes saved together, each answered after
its commit, none lost or counted twice, one failing job not failing the others.

The app runs in a real uvicorn on a loopback port (``running`` from test_public_app) over
a real store -- a SQLite file, or a PostgreSQL schema on that pass -- and is driven over
HTTP; what it answered is compared with what the database holds, through a connection of
the test's own. :class:`~bulletin.web.writer.Writer` is also driven directly, with real
transactions, for what HTTP cannot arrange (a job that fails half-way).
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from bulletin.store.db import database_problem, open_store, write_transaction
from bulletin.store.schema import events, lists, subscribers, subscriptions
from bulletin.store.subscribers import (
    add_subscriber,
    create_list,
    remove_subscriber,
    unsubscribe_by_token,
)
from bulletin.tokens import TokenSigner
from bulletin.web import writer as writer_module
from bulletin.web.public import create_public_app
from bulletin.web.writer import GRACE, TooLate, Writer
from test_public_app import load, running

KEY = "a-test-key-of-enough-length"
FORM = {"Content-Type": "application/x-www-form-urlencoded"}
ONE_CLICK = b"List-Unsubscribe=One-Click"
NO_RATE_LIMIT = "\n[serve]\nrate_per_minute = 100000\n"


def people(engine: sa.Engine, n: int, *lists_: str) -> tuple[list[int], dict[str, int]]:
    """``n`` subscribers on each of ``lists_`` (Romanian names); (their ids, list ids)."""
    with write_transaction(engine) as conn:
        ids_of = {slug: create_list(conn, slug, f"Știri {slug}").id for slug in lists_}
        ids = []
        for i in range(n):
            first = lists_[0]
            sub = add_subscriber(conn, f"cititor{i:03d}@example.ro", first, name="Ștefan Țurcanu")
            for slug in lists_[1:]:
                add_subscriber(conn, f"cititor{i:03d}@example.ro", slug)
            ids.append(sub.subscriber.id)
    return ids, ids_of


def unsubscribe_events(engine: sa.Engine, ids: list[int]) -> dict[int, int]:
    """Subscriber id -> how many ``unsubscribed`` events it has."""
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(events.c.subscriber_id, sa.func.count())
            .where(events.c.subscriber_id.in_(ids), events.c.kind == "unsubscribed")
            .group_by(events.c.subscriber_id)
        ).all()
    return {int(a): int(b) for a, b in rows}


def still_subscribed(engine: sa.Engine, ids: list[int]) -> set[int]:
    with engine.connect() as conn:
        return set(
            conn.scalars(
                sa.select(subscriptions.c.subscriber_id).where(
                    subscriptions.c.subscriber_id.in_(ids), subscriptions.c.status == "subscribed"
                )
            )
        )


async def post_all(url: str, tokens: list[str], body: bytes = ONE_CLICK) -> list[httpx.Response]:
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=0)
    async with httpx.AsyncClient(base_url=url, timeout=30, limits=limits) as client:
        return await asyncio.gather(
            *(client.post(f"/u/{t}", content=body, headers=FORM) for t in tokens)
        )


@pytest.mark.sqlite_only  # PostgreSQL saves each in a transaction of its own (row locks)
def test_unsubscribes_waiting_together_are_saved_in_one_transaction(workspace_dir: Path):
    workspace = load(workspace_dir, NO_RATE_LIMIT)
    engine = open_store(workspace.database_url())
    ids, list_ids = people(engine, 60, "news")
    signer = TokenSigner([KEY])
    tokens = [signer.unsubscribe_token(i, list_ids["news"]) for i in ids]
    other = open_store(workspace.database_url())
    app = create_public_app(workspace, engine=engine, signer=signer, db_wait=10)
    writer = app.state.public.writer
    with running(app) as url:

        async def storm() -> list[httpx.Response]:
            # Another process holds the write lock (an import saving) while all 60 arrive.
            with write_transaction(other):
                task = asyncio.ensure_future(post_all(url, tokens))
                await asyncio.sleep(1.0)
                assert not task.done(), "answered before anything could be saved"
                assert still_subscribed(other, ids) == set(ids)
            return await task

        answers = asyncio.run(storm())
    assert [a.status_code for a in answers] == [200] * len(ids)
    assert all("Done:" in a.text or "Gata:" in a.text for a in answers)
    assert still_subscribed(other, ids) == set()
    assert unsubscribe_events(other, ids) == {i: 1 for i in ids}
    # The first waited for the lock alone at most; the 59 queued behind it went together.
    assert writer.batches <= 3, writer.batches
    engine.dispose()
    other.dispose()


def test_many_posts_for_one_subscriber_at_once_count_once(workspace_dir: Path):
    workspace = load(workspace_dir, NO_RATE_LIMIT)
    engine = open_store(workspace.database_url())
    ids, list_ids = people(engine, 2, "news", "events")
    signer = TokenSigner([KEY])
    one = signer.unsubscribe_token(ids[0], list_ids["news"])
    every = signer.unsubscribe_token(ids[1], None)
    app = create_public_app(workspace, engine=engine, signer=signer)
    with running(app) as url:
        answers = asyncio.run(post_all(url, [one] * 15 + [every] * 15))
    assert [a.status_code for a in answers] == [200] * 30
    first, second = answers[:15], answers[15:]
    # One of each changed something; the others say it was already done.
    assert sum("nothing changed" in a.text or "nu s-a schimbat" in a.text for a in first) == 14
    assert sum("nothing changed" in a.text or "nu s-a schimbat" in a.text for a in second) == 14
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(events.c.subscriber_id, events.c.list_id).where(
                events.c.subscriber_id.in_(ids), events.c.kind == "unsubscribed"
            )
        ).all()
        status = conn.scalar(sa.select(subscribers.c.status).where(subscribers.c.id == ids[1]))
    # The list token: one event for its list. The every-list token: one per list, one global.
    news, evs = list_ids["news"], list_ids["events"]
    assert sorted(rows, key=str) == sorted(
        [(ids[0], news), (ids[1], news), (ids[1], evs), (ids[1], None)], key=str
    )
    assert status == "unsubscribed"
    assert still_subscribed(engine, ids) == {ids[0]}  # still on "events"
    engine.dispose()


def test_unsubscribe_by_token_reads_once_and_says_what_changed(database_url: str):
    engine = open_store(database_url)
    ids, list_ids = people(engine, 3, "news", "events")
    news = list_ids["news"]
    with write_transaction(engine) as conn:
        done = unsubscribe_by_token(conn, ids[0], news, "one-click")
        again = unsubscribe_by_token(conn, ids[0], news, "one-click")
        every = unsubscribe_by_token(conn, ids[1], news, "web", all_lists=True)
        remove_subscriber(conn, ids[2])
        gone = unsubscribe_by_token(conn, ids[2], news, "one-click")
        old = create_list(conn, "old", "Old").id
        conn.execute(lists.delete().where(lists.c.id == old))
        no_list = unsubscribe_by_token(conn, ids[0], old, "one-click")
    assert done is not None and done.changed and done.list_slug == "news"
    assert done.list_name == "Știri news" and done.email == "cititor000@example.ro"
    assert again is not None and not again.changed
    assert every is not None and every.changed and every.list_slug is None
    assert gone is None and no_list is None
    assert unsubscribe_events(engine, ids[:2]) == {ids[0]: 1, ids[1]: 2 + 1}
    engine.dispose()


def test_a_failing_job_does_not_fail_the_others_of_its_batch(database_url: str):
    engine = open_store(database_url)
    ids, list_ids = people(engine, 5, "news")
    news = list_ids["news"]
    writer = Writer(engine)

    def job(sub_id: int, fail: bool):
        def apply(conn: Connection) -> bool:
            unsubscribe_by_token(conn, sub_id, news, "one-click")
            if fail:
                raise RuntimeError("a bug in one job")
            return True

        return apply

    async def together() -> list[object]:
        deadline = time.monotonic() + 10
        return await asyncio.gather(
            *(writer.batched(job(i, i == ids[2]), deadline) for i in ids), return_exceptions=True
        )

    results = asyncio.run(together())
    assert [type(r).__name__ for r in results] == ["bool"] * 2 + ["RuntimeError"] + ["bool"] * 2
    # The failing job's statements were rolled back; every other job is saved, once.
    assert still_subscribed(engine, ids) == {ids[2]}
    assert unsubscribe_events(engine, ids) == {i: 1 for i in ids if i != ids[2]}
    engine.dispose()


@pytest.mark.sqlite_only  # SQLite's writer lock; PostgreSQL's row locks: test_serve_postgres.py
def test_a_job_behind_a_lock_past_its_deadline_fails_in_time_and_changes_nothing(
    workspace_dir: Path,
):
    workspace = load(workspace_dir)
    engine = open_store(workspace.database_url())
    other = open_store(workspace.database_url())
    ids, list_ids = people(engine, 2, "news")
    writer = Writer(engine)

    def apply_to(sub_id: int):
        return lambda conn: unsubscribe_by_token(conn, sub_id, list_ids["news"], "one-click")

    async def behind_lock() -> tuple[BaseException, float]:
        started = time.monotonic()
        with pytest.raises(Exception) as caught:
            await writer.batched(apply_to(ids[0]), time.monotonic() + 0.5)
        return caught.value, time.monotonic() - started

    with write_transaction(other):
        error, took = asyncio.run(behind_lock())
    assert 0.4 < took < 0.5 + GRACE + 0.5, took
    # What serve answers 503 for: the lock it could not get in time (or, had the writer
    # been slower to say so, "too late").
    if not isinstance(error, TooLate):
        problem = database_problem(error, engine)
        assert problem is not None and problem.kind == "busy", error
    assert still_subscribed(other, ids) == set(ids)
    # The writer goes on with the next jobs once the lock is gone.
    done = asyncio.run(writer.batched(apply_to(ids[1]), time.monotonic() + 5))
    assert done is not None and done.changed
    assert still_subscribed(other, ids) == {ids[0]}
    engine.dispose()
    other.dispose()


def test_an_idle_writer_thread_ends_and_the_next_write_starts_another(
    database_url: str, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setattr(writer_module, "IDLE_SECONDS", 0.1)
    engine = open_store(database_url)
    ids, list_ids = people(engine, 2, "news")
    writer = Writer(engine)

    def apply_to(sub_id: int):
        return lambda conn: unsubscribe_by_token(conn, sub_id, list_ids["news"], "one-click")

    first = asyncio.run(writer.batched(apply_to(ids[0]), time.monotonic() + 5))
    thread = writer._thread
    assert thread is not None
    thread.join(5)
    assert not thread.is_alive() and writer._thread is None
    second = asyncio.run(writer.batched(apply_to(ids[1]), time.monotonic() + 5))
    assert first is not None and first.changed and second is not None and second.changed
    assert still_subscribed(engine, ids) == set()
    engine.dispose()


@pytest.mark.postgresql_only  # SQLite locks the whole database, not rows
def test_a_row_locked_elsewhere_fails_only_its_own_unsubscribe(workspace_dir: Path):
    workspace = load(workspace_dir, NO_RATE_LIMIT)
    engine = open_store(workspace.database_url())
    ids, list_ids = people(engine, 40, "news")
    signer = TokenSigner([KEY])
    tokens = [signer.unsubscribe_token(i, list_ids["news"]) for i in ids]
    other = open_store(workspace.database_url())
    wait = 4.0
    app = create_public_app(workspace, engine=engine, signer=signer, db_wait=wait)
    locked = ids[20]  # amid the others, so it shares a batch with some of them

    async def timed(client: httpx.AsyncClient, token: str) -> tuple[int, str | None, float]:
        started = time.monotonic()
        answer = await client.post(f"/u/{token}", content=ONE_CLICK, headers=FORM)
        return answer.status_code, answer.headers.get("retry-after"), time.monotonic() - started

    async def storm() -> list[tuple[int, str | None, float]]:
        limits = httpx.Limits(max_connections=None, max_keepalive_connections=0)
        async with httpx.AsyncClient(base_url=url, timeout=30, limits=limits) as client:
            return await asyncio.gather(*(timed(client, t) for t in tokens))

    with running(app) as url, other.connect() as conn, conn.begin():
        # Another program updating one subscriber (an import, a person in psql) holds its row.
        conn.execute(
            sa.select(subscribers.c.id).where(subscribers.c.id == locked).with_for_update()
        )
        answers = dict(zip(ids, asyncio.run(storm()), strict=True))
        assert still_subscribed(other, ids) == {locked}
    assert answers[locked][:2] == (503, "30")
    assert [answers[i][0] for i in ids if i != locked] == [200] * 39
    # The others did not wait for the locked row as long as serve waits for a database.
    slowest = max(answers[i][2] for i in ids if i != locked)
    assert slowest < wait - 1.0, slowest
    assert unsubscribe_events(other, ids) == {i: 1 for i in ids if i != locked}
    engine.dispose()
    other.dispose()
