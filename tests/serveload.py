"""Many one-click requests at once against a real ``bulletin serve``: the tests' client side.

Shared by the tests that hold the database's locks while serve answers (SQLite's writer,
PostgreSQL's row and table locks) and judge every answer: 200 saved, or 503 with
Retry-After within serve's wait, never a hang.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import httpx
import sqlalchemy as sa

from bulletin.store.schema import subscriptions
from bulletin.web.public import DB_WAIT_SECONDS
from test_public import ONE_CLICK, next_client_address

SERVE_WAIT = DB_WAIT_SECONDS
"""How long serve waits for the database before it answers 503."""

SLACK = 4.0
"""Time allowed on top of serve's wait for hundreds of requests on a busy 2-core machine."""

FORM = {"Content-Type": "application/x-www-form-urlencoded"}


@dataclass
class Answer:
    index: int
    status: int
    """0 when no answer came at all (the client's timeout)."""
    retry_after: str | None
    seconds: float


async def post(client: httpx.AsyncClient, index: int, token: str) -> Answer:
    """The one-click POST a mail provider sends for the ``index``-th token, from its own address."""
    started = time.monotonic()
    try:
        response = await client.post(
            f"/u/{token}",
            content=ONE_CLICK,
            headers={**FORM, "X-Forwarded-For": next_client_address()},
        )
    except httpx.TimeoutException:
        return Answer(index, 0, None, time.monotonic() - started)
    return Answer(
        index, response.status_code, response.headers.get("retry-after"), time.monotonic() - started
    )


async def get(client: httpx.AsyncClient, path: str) -> tuple[int, float]:
    """(status, seconds) of a GET; status 0 if no answer came within serve's wait and slack."""
    started = time.monotonic()
    try:
        response = await client.get(
            path, headers={"X-Forwarded-For": next_client_address()}, timeout=SERVE_WAIT + SLACK
        )
    except httpx.TimeoutException:
        return 0, time.monotonic() - started
    return response.status_code, time.monotonic() - started


def unsubscribed(engine: sa.Engine, ids: list[int]) -> set[int]:
    """Which of ``ids`` are unsubscribed (from any list)."""
    with engine.connect() as conn:
        return set(
            conn.scalars(
                sa.select(subscriptions.c.subscriber_id).where(
                    subscriptions.c.subscriber_id.in_(ids),
                    subscriptions.c.status == "unsubscribed",
                )
            )
        )
