"""Provider webhooks on ``bulletin serve``: signed requests in, the same suppressions out.

The app runs in a real uvicorn on a loopback port (``running`` from test_public_app), over a
real store (SQLite, or PostgreSQL on that pass); requests are built and signed here with test
keys (:mod:`webhookkit`). SES's signing certificate is fetched over real TLS from a local
stand-in for the SNS host, trusted through a test root given to the fetcher instead of the
system CA store. After every refused request the test compares the whole of what the store
holds about subscribers and receipts: a refusal changes nothing. The last tests run
``bulletin serve`` itself as a subprocess, one full path per provider.
"""

from __future__ import annotations

import json
import logging
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from bulletin import urls
from bulletin import workspace as ws
from bulletin.errors import BulletinError, ConfigError
from bulletin.inbound.bounces import SoftLimit
from bulletin.inbound.sns import HttpsFetcher, SnsVerifier
from bulletin.inbound.webhooks import PROVIDERS, Webhooks
from bulletin.store.db import open_store, write_transaction
from bulletin.store.schema import events, subscribers, webhook_receipts
from bulletin.store.subscribers import add_subscriber, create_list, find_subscriber
from bulletin.tokens import TokenSigner
from bulletin.web.public import create_public_app
from conftest import pass_database_url
from test_public import ServeProcess, make_workspace
from test_public_app import running
from webhookkit import (
    CERT_URL,
    EVIL_HOST,
    MAILGUN_KEY,
    OTHER_TOPIC,
    POSTMARK_SECRET,
    REGION_HOST,
    TOPIC,
    FakeSnsHost,
    Keys,
    basic_auth,
    mailgun_body,
    mailgun_failed,
    postmark_bounce,
    sendgrid_headers,
    ses_bounce,
    ses_complaint,
    ses_notification,
    subscription_confirmation,
)

FORBIDDEN = "forbidden\n"
JSON = {"Content-Type": "application/json"}


@pytest.fixture(scope="module")
def keys() -> Keys:
    return Keys.make()


@pytest.fixture(scope="module")
def sns_host(keys: Keys, tmp_path_factory: pytest.TempPathFactory) -> Iterator[FakeSnsHost]:
    host = FakeSnsHost(keys, tmp_path_factory.mktemp("sns"))
    try:
        yield host
    finally:
        host.stop()


@dataclass
class Hooks:
    """A running app with every hook on, its store, and three subscribers on ``news``."""

    url: str
    client: httpx.Client
    engine: sa.Engine
    workspace: ws.Workspace
    sns_host: FakeSnsHost
    people: list[str]

    def post(self, provider: str, body: bytes | dict[str, Any] | list[Any], **headers: str):
        content = body if isinstance(body, bytes) else json.dumps(body).encode("utf-8")
        return self.client.post(f"/hooks/{provider}", content=content, headers=headers or JSON)

    def status(self, email: str) -> str:
        with self.engine.connect() as conn:
            found = find_subscriber(conn, email)
        assert found is not None
        return found.status

    def snapshot(self) -> tuple[list[tuple[Any, ...]], ...]:
        """Everything a webhook could change: statuses, history, receipts."""
        with self.engine.connect() as conn:
            return (
                [tuple(r) for r in conn.execute(sa.select(subscribers).order_by(subscribers.c.id))],
                [tuple(r) for r in conn.execute(sa.select(events).order_by(events.c.id))],
                [
                    tuple(r)
                    for r in conn.execute(
                        sa.select(webhook_receipts).order_by(
                            webhook_receipts.c.provider, webhook_receipts.c.key
                        )
                    )
                ],
            )

    def history(self, email: str) -> list[tuple[str, str]]:
        with self.engine.connect() as conn:
            found = find_subscriber(conn, email)
            assert found is not None
            rows = conn.execute(
                sa.select(events.c.kind, events.c.source)
                .where(events.c.subscriber_id == found.id)
                .order_by(events.c.id)
            )
            return [(r.kind, r.source) for r in rows]


def make_hooks(
    workspace: ws.Workspace, keys: Keys, sns_host: FakeSnsHost, *, topics: frozenset[str]
) -> Webhooks:
    fetcher = HttpsFetcher(keys.client_context(), route=sns_host.route)
    sns = SnsVerifier(topics, fetch=fetcher, cache_dir=workspace.secrets_dir / "sns-certs")
    return Webhooks(
        limit=SoftLimit.from_workspace(workspace),
        ses_topics=topics,
        postmark_secret=POSTMARK_SECRET,
        mailgun_key=MAILGUN_KEY,
        sendgrid_key=keys.sendgrid_public(),
        sns=sns,
    )


@pytest.fixture
def hooks(workspace_dir: Path, keys: Keys, sns_host: FakeSnsHost) -> Iterator[Hooks]:
    workspace = ws.load(workspace_dir)
    engine = open_store(workspace.database_url())
    people = ["ana@example.org", "Ștefan.Țiriac@example.ro", "ion@example.net"]
    with write_transaction(engine) as conn:
        create_list(conn, "news", "Știri")
        for email in people:
            add_subscriber(conn, email, "news")
    webhooks = make_hooks(workspace, keys, sns_host, topics=frozenset({TOPIC}))
    app = create_public_app(
        workspace, engine=engine, signer=TokenSigner(["k" * 32]), webhooks=webhooks
    )
    with running(app) as url, httpx.Client(base_url=url, timeout=20) as client:
        yield Hooks(url, client, engine, workspace, sns_host, people)
    engine.dispose()


def refused(hooks: Hooks, response: httpx.Response, before: object) -> None:
    """The one answer to a refused request, and nothing changed."""
    assert response.status_code == 403, response.text
    assert response.text == FORBIDDEN
    assert hooks.snapshot() == before


# --- SES through SNS ---------------------------------------------------------------------------


def test_ses_hard_bounce_suppresses_and_the_certificate_is_fetched_once(
    hooks: Hooks, keys: Keys
) -> None:
    ana, stefan, _ = hooks.people
    fetches = hooks.sns_host.cert_fetches
    answer = hooks.post("ses", ses_notification(keys, ses_bounce([ana])))
    assert answer.status_code == 200 and answer.text == "ok\n"
    assert hooks.status(ana) == "bounced"
    assert hooks.history(ana)[-1][0] == "bounced"
    assert hooks.history(ana)[-1][1].startswith("bounce ses ")
    # The Romanian address is found in any case, and suppressed by a signature version 1.
    signed = ses_notification(keys, ses_bounce([stefan.upper()]), version="1")
    assert hooks.post("ses", signed).status_code == 200
    assert hooks.status(stefan) == "bounced"
    assert hooks.sns_host.cert_fetches == fetches + 1  # cached after the first
    cached = list((hooks.workspace.secrets_dir / "sns-certs").glob("*.pem"))
    assert len(cached) == 1
    assert stat.S_IMODE(cached[0].stat().st_mode) == 0o600


def test_ses_complaint_suppresses_at_once(hooks: Hooks, keys: Keys) -> None:
    ana = hooks.people[0]
    assert hooks.post("ses", ses_notification(keys, ses_complaint([ana]))).status_code == 200
    assert hooks.status(ana) == "complained"


def test_ses_soft_bounces_count_up_to_the_limit(hooks: Hooks, keys: Keys) -> None:
    ana = hooks.people[0]
    for n in range(3):  # bounces.soft_limit is 3 by default
        assert hooks.status(ana) == "active", n
        signed = ses_notification(keys, ses_bounce([ana], "Transient"))
        assert hooks.post("ses", signed).status_code == 200
    assert hooks.status(ana) == "bounced"
    kinds = [kind for kind, _ in hooks.history(ana)]
    assert kinds.count("soft-bounce") == 3 and kinds[-1] == "bounced"


def test_ses_the_same_message_twice_is_refused_and_counts_once(hooks: Hooks, keys: Keys) -> None:
    ana = hooks.people[0]
    signed = ses_notification(keys, ses_bounce([ana], "Transient"))
    assert hooks.post("ses", signed).status_code == 200
    before = hooks.snapshot()
    refused(hooks, hooks.post("ses", signed), before)
    assert [k for k, _ in hooks.history(ana)].count("soft-bounce") == 1


def test_ses_forged_wrongly_signed_stale_and_foreign_messages_change_nothing(
    hooks: Hooks, keys: Keys
) -> None:
    ana = hooks.people[0]
    before = hooks.snapshot()
    good = ses_notification(keys, ses_bounce([ana]))
    forged = dict(good, Message=json.dumps(ses_bounce([hooks.people[1]])))
    refused(hooks, hooks.post("ses", forged), before)
    stranger = ses_notification(keys, ses_bounce([ana]), key=keys.stranger_key)
    refused(hooks, hooks.post("ses", stranger), before)
    stale = ses_notification(keys, ses_bounce([ana]), at=datetime.now(UTC) - timedelta(hours=2))
    refused(hooks, hooks.post("ses", stale), before)
    future = ses_notification(keys, ses_bounce([ana]), at=datetime.now(UTC) + timedelta(hours=1))
    refused(hooks, hooks.post("ses", future), before)
    unsigned = {k: v for k, v in good.items() if k != "Signature"}
    refused(hooks, hooks.post("ses", unsigned), before)
    refused(hooks, hooks.post("ses", dict(good, SignatureVersion="3")), before)
    refused(hooks, hooks.post("ses", b"{not json"), before)
    refused(hooks, hooks.post("ses", b"[]"), before)
    fetches = hooks.sns_host.cert_fetches
    foreign = ses_notification(keys, ses_bounce([ana]), topic=OTHER_TOPIC)
    refused(hooks, hooks.post("ses", foreign), before)
    assert hooks.status(ana) == "active"
    assert hooks.sns_host.cert_fetches == fetches  # another topic costs no download


@pytest.mark.parametrize(
    "url",
    [
        f"https://{EVIL_HOST}/SimpleNotificationService-0123.pem",
        "https://sns.us-east-1.amazonaws.com/evil/SimpleNotificationService-0123.pem",
        "http://sns.us-east-1.amazonaws.com/SimpleNotificationService-0123.pem",
        "https://sns.us-east-1.amazonaws.com:8443/SimpleNotificationService-0123.pem",
        "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-0123.pem?x=1",
    ],
)
def test_a_signing_certificate_from_anywhere_else_is_refused_without_a_fetch(
    hooks: Hooks, keys: Keys, url: str
) -> None:
    before = hooks.snapshot()
    fetches, visits = hooks.sns_host.cert_fetches, list(hooks.sns_host.visits)
    message = ses_notification(keys, ses_bounce([hooks.people[0]]))
    refused(hooks, hooks.post("ses", dict(message, SigningCertURL=url)), before)
    assert (hooks.sns_host.cert_fetches, hooks.sns_host.visits) == (fetches, visits)


def test_a_certificate_not_chaining_to_the_trust_root_is_refused(
    workspace_dir: Path, keys: Keys, sns_host: FakeSnsHost
) -> None:
    # The production fetcher trusts the system CA store, which does not know the test root:
    # the local stand-in's TLS certificate fails, so no certificate and no suppression.
    verifier = SnsVerifier(
        frozenset({TOPIC}), fetch=HttpsFetcher(route=sns_host.route), cache_dir=None
    )
    workspace = ws.load(workspace_dir)
    webhooks = Webhooks(limit=SoftLimit.from_workspace(workspace), sns=verifier)
    from bulletin.inbound.webhooks import Refused

    with pytest.raises(Refused, match="cannot fetch the signing certificate"):
        webhooks.authenticate(
            "ses", {}, json.dumps(ses_notification(keys, ses_bounce(["a@b.c"]))).encode()
        )


def test_ses_malformed_notification_answers_400_and_changes_nothing(
    hooks: Hooks, keys: Keys
) -> None:
    before = hooks.snapshot()
    broken = {"notificationType": "Bounce", "bounce": {"bounceType": "Permanent"}}
    answer = hooks.post("ses", ses_notification(keys, broken))
    assert answer.status_code == 400
    no_address = ses_bounce([hooks.people[0]])
    no_address["bounce"]["bouncedRecipients"].append({"diagnosticCode": "x"})
    assert hooks.post("ses", ses_notification(keys, no_address)).status_code == 400
    assert hooks.snapshot() == before
    assert hooks.status(hooks.people[0]) == "active"


def test_unknown_addresses_and_other_notifications_are_acknowledged(
    hooks: Hooks, keys: Keys
) -> None:
    before = hooks.snapshot()
    answer = hooks.post("ses", ses_notification(keys, ses_bounce(["nobody@example.org"])))
    assert answer.status_code == 200
    delivery = {"notificationType": "Delivery", "delivery": {"recipients": [hooks.people[0]]}}
    assert hooks.post("ses", ses_notification(keys, delivery)).status_code == 200
    after = hooks.snapshot()
    assert after[:2] == before[:2]  # subscribers and history untouched
    assert len(after[2]) > len(before[2])  # only the receipts were written


def test_subscription_confirmation_is_visited_only_when_signed_and_allowed(
    hooks: Hooks, keys: Keys
) -> None:
    visits = hooks.sns_host.visits
    good = subscription_confirmation(keys)
    assert hooks.post("ses", good).status_code == 200
    assert len(visits) == 1 and "Action=ConfirmSubscription" in visits[0]
    before = hooks.snapshot()
    foreign = subscription_confirmation(keys, topic=OTHER_TOPIC)
    refused(hooks, hooks.post("ses", foreign), before)
    unsigned = dict(subscription_confirmation(keys), Signature="AAAA")
    refused(hooks, hooks.post("ses", unsigned), before)
    tampered = dict(subscription_confirmation(keys))
    tampered["SubscribeURL"] = f"https://{REGION_HOST}/?Action=ConfirmSubscription&Token=other"
    refused(hooks, hooks.post("ses", tampered), before)
    # Signed and from the right topic, but the URL leaves SNS: never visited (the local
    # stand-in answers for every host, so a visit would show).
    elsewhere = subscription_confirmation(
        keys, subscribe_url=f"https://{EVIL_HOST}/?Action=ConfirmSubscription"
    )
    refused(hooks, hooks.post("ses", elsewhere), before)
    for url in (
        f"http://{REGION_HOST}/?Action=ConfirmSubscription",
        f"https://{REGION_HOST}:8443/?Action=ConfirmSubscription",
        f"https://user@{REGION_HOST}/?Action=ConfirmSubscription",
    ):
        signed = subscription_confirmation(keys, subscribe_url=url)
        refused(hooks, hooks.post("ses", signed), before)
    assert len(visits) == 1


# --- Postmark ----------------------------------------------------------------------------------


def test_postmark_bounce_and_complaint_with_basic_auth(hooks: Hooks) -> None:
    ana, stefan, ion = hooks.people
    auth = basic_auth(POSTMARK_SECRET)
    assert hooks.post("postmark", postmark_bounce(ana), **auth).status_code == 200
    assert hooks.status(ana) == "bounced"
    complaint = dict(postmark_bounce(stefan, "SpamComplaint"), RecordType="SpamComplaint")
    assert hooks.post("postmark", complaint, **auth).status_code == 200
    assert hooks.status(stefan) == "complained"
    for n in range(3):
        assert hooks.status(ion) == "active", n
        assert hooks.post("postmark", postmark_bounce(ion, "SoftBounce"), **auth).status_code == 200
    assert hooks.status(ion) == "bounced"


def test_postmark_wrong_or_missing_auth_changes_nothing(hooks: Hooks) -> None:
    before = hooks.snapshot()
    body = postmark_bounce(hooks.people[0])
    refused(hooks, hooks.post("postmark", body, **basic_auth("wrong")), before)
    refused(hooks, hooks.post("postmark", body, **basic_auth(POSTMARK_SECRET[:-1])), before)
    refused(hooks, hooks.post("postmark", body), before)
    bearer = {"Authorization": "Bearer not-basic-auth", **JSON}
    refused(hooks, hooks.post("postmark", body, **bearer), before)
    garbage = {"Authorization": "Basic !!!", **JSON}
    refused(hooks, hooks.post("postmark", body, **garbage), before)


def test_postmark_retry_counts_once_and_malformed_bodies_answer_400(hooks: Hooks) -> None:
    ion = hooks.people[2]
    auth = basic_auth(POSTMARK_SECRET)
    soft = postmark_bounce(ion, "SoftBounce")
    for _ in range(3):  # the same event three times is one soft bounce, not the limit
        assert hooks.post("postmark", soft, **auth).status_code == 200
    assert hooks.status(ion) == "active"
    assert [k for k, _ in hooks.history(ion)].count("soft-bounce") == 1
    before = hooks.snapshot()
    assert hooks.post("postmark", b"{oops", **auth).status_code == 400
    no_email = {k: v for k, v in postmark_bounce(ion).items() if k != "Email"}
    assert hooks.post("postmark", no_email, **auth).status_code == 400
    assert hooks.snapshot() == before


# --- SendGrid ----------------------------------------------------------------------------------


def sendgrid_batch(hooks: Hooks) -> bytes:
    ana, stefan, ion = hooks.people
    batch = [
        {"email": ion, "event": "delivered", "sg_event_id": "d1", "timestamp": 1},
        {"email": ana, "event": "bounce", "type": "bounce", "sg_event_id": "b1",
         "reason": "550 5.1.1 unknown user", "timestamp": int(datetime.now(UTC).timestamp())},
        {"email": stefan, "event": "spamreport", "sg_event_id": "s1"},
        {"email": ion, "event": "deferred", "sg_event_id": "f1"},
        {"email": ion, "event": "bounce", "type": "blocked", "sg_event_id": "k1"},
    ]  # fmt: skip
    return json.dumps(batch).encode("utf-8")


def test_sendgrid_signed_batch(hooks: Hooks, keys: Keys) -> None:
    ana, stefan, ion = hooks.people
    body = sendgrid_batch(hooks)
    answer = hooks.post("sendgrid", body, **sendgrid_headers(keys.sendgrid_key, body))
    assert answer.status_code == 200
    assert (hooks.status(ana), hooks.status(stefan), hooks.status(ion)) == (
        "bounced",
        "complained",
        "active",
    )
    assert [k for k, _ in hooks.history(ion)] == ["soft-bounce"]


def test_sendgrid_forged_stale_replayed_and_unsigned_change_nothing(
    hooks: Hooks, keys: Keys
) -> None:
    body = sendgrid_batch(hooks)
    before = hooks.snapshot()
    wrong_key = sendgrid_headers(keys.sendgrid_other, body)
    refused(hooks, hooks.post("sendgrid", body, **wrong_key), before)
    tampered = body.replace(b'"spamreport"', b'"bounce"')
    refused(
        hooks, hooks.post("sendgrid", tampered, **sendgrid_headers(keys.sendgrid_key, body)), before
    )
    old = int((datetime.now(UTC) - timedelta(minutes=10)).timestamp())
    stale = sendgrid_headers(keys.sendgrid_key, body, timestamp=old)
    refused(hooks, hooks.post("sendgrid", body, **stale), before)
    refused(hooks, hooks.post("sendgrid", body), before)
    only_signature = sendgrid_headers(keys.sendgrid_key, body)
    del only_signature["X-Twilio-Email-Event-Webhook-Timestamp"]
    refused(hooks, hooks.post("sendgrid", body, **only_signature), before)
    good = sendgrid_headers(keys.sendgrid_key, body)
    assert hooks.post("sendgrid", body, **good).status_code == 200
    after = hooks.snapshot()
    refused(hooks, hooks.post("sendgrid", body, **good), after)  # the same request again
    # Re-signed later, as SendGrid's own retry would be: accepted, and still counts once.
    assert (
        hooks.post("sendgrid", body, **sendgrid_headers(keys.sendgrid_key, body)).status_code == 200
    )
    assert hooks.snapshot()[:2] == after[:2]


def test_sendgrid_malformed_bodies_answer_400_and_apply_no_event(hooks: Hooks, keys: Keys) -> None:
    ana = hooks.people[0]
    before = hooks.snapshot()
    for body in (
        b"not json",
        b'{"event": "bounce"}',
        # A good bounce first, then one without an address: the whole batch is refused.
        json.dumps(
            [{"email": ana, "event": "bounce", "sg_event_id": "x"}, {"event": "bounce"}]
        ).encode(),
    ):
        answer = hooks.post("sendgrid", body, **sendgrid_headers(keys.sendgrid_key, body))
        assert answer.status_code == 400, body
    assert hooks.snapshot() == before


# --- Mailgun -----------------------------------------------------------------------------------


def test_mailgun_failures_and_complaints(hooks: Hooks) -> None:
    ana, stefan, ion = hooks.people
    assert hooks.post("mailgun", mailgun_body(mailgun_failed(ana))).status_code == 200
    assert hooks.status(ana) == "bounced"
    complaint = {"id": "c-1", "event": "complained", "recipient": stefan, "timestamp": 1.0}
    assert hooks.post("mailgun", mailgun_body(complaint)).status_code == 200
    assert hooks.status(stefan) == "complained"
    # Temporary failures are attempts Mailgun retries (delays): never counted.
    for _ in range(4):
        retry = mailgun_body(mailgun_failed(ion, "temporary"))
        assert hooks.post("mailgun", retry).status_code == 200
    assert hooks.status(ion) == "active" and hooks.history(ion) == []
    # Given up after hours of retries ("old"): a soft bounce, suppressed at the limit (3).
    for n in range(3):
        assert hooks.status(ion) == "active", n
        gave_up = mailgun_body(mailgun_failed(ion, "permanent", reason="old"))
        assert hooks.post("mailgun", gave_up).status_code == 200
    assert hooks.status(ion) == "bounced"


def test_mailgun_bad_stale_and_reused_tokens_change_nothing(hooks: Hooks) -> None:
    ana, stefan, _ = hooks.people
    before = hooks.snapshot()
    refused(hooks, hooks.post("mailgun", mailgun_body(mailgun_failed(ana), key="other")), before)
    old = int((datetime.now(UTC) - timedelta(minutes=6)).timestamp())
    refused(hooks, hooks.post("mailgun", mailgun_body(mailgun_failed(ana), timestamp=old)), before)
    unsigned = json.dumps({"event-data": mailgun_failed(ana)}).encode()
    refused(hooks, hooks.post("mailgun", unsigned), before)
    refused(hooks, hooks.post("mailgun", b"\xff\xfe"), before)
    first = mailgun_body(mailgun_failed(ana, "temporary"), token="t" * 50)
    assert hooks.post("mailgun", first).status_code == 200
    after = hooks.snapshot()
    refused(hooks, hooks.post("mailgun", first), after)
    # The same token and signature around another event: a replay, whatever it carries.
    signed = json.loads(first)["signature"]
    other = json.dumps({"signature": signed, "event-data": mailgun_failed(stefan)}).encode()
    refused(hooks, hooks.post("mailgun", other), after)
    assert hooks.status(stefan) == "active"


def test_mailgun_used_tokens_hold_across_processes(
    hooks: Hooks, keys: Keys, sns_host: FakeSnsHost
) -> None:
    body = mailgun_body(mailgun_failed(hooks.people[0], "temporary"))
    assert hooks.post("mailgun", body).status_code == 200
    before = hooks.snapshot()
    # A second app over the same store, as another serve process or one restarted.
    webhooks = make_hooks(hooks.workspace, keys, sns_host, topics=frozenset({TOPIC}))
    app = create_public_app(hooks.workspace, signer=TokenSigner(["k" * 32]), webhooks=webhooks)
    try:
        with running(app) as url:
            answer = httpx.post(url + "/hooks/mailgun", content=body, headers=JSON, timeout=20)
            refused(hooks, answer, before)
    finally:
        app.state.public.engine.dispose()


# --- all providers -----------------------------------------------------------------------------


def test_oversized_bodies_get_413_and_unknown_providers_404(hooks: Hooks) -> None:
    before = hooks.snapshot()
    big = b"[" + b" " * (1024 * 1024) + b"]"
    for provider in ("ses", "postmark", "sendgrid", "mailgun"):
        assert hooks.post(provider, big).status_code == 413, provider
    assert hooks.client.post("/hooks/sparkpost", content=b"{}").status_code == 404
    assert hooks.client.get("/hooks/ses").status_code == 405
    assert hooks.snapshot() == before


def test_a_provider_without_a_secret_answers_404(workspace_dir: Path) -> None:
    for name in ("BULLETIN_POSTMARK_WEBHOOK_SECRET", "BULLETIN_MAILGUN_SIGNING_KEY"):
        assert name not in os.environ
    workspace = ws.load(workspace_dir)
    app = create_public_app(workspace, signer=TokenSigner(["k" * 32]))
    try:
        with running(app) as url:
            for provider in ("ses", "postmark", "sendgrid", "mailgun"):
                answer = httpx.post(f"{url}/hooks/{provider}", content=b"{}", timeout=10)
                assert answer.status_code == 404, provider
    finally:
        app.state.public.engine.dispose()


def test_refusals_are_logged_without_secrets(
    hooks: Hooks, keys: Keys, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="bulletin"):
        hooks.post(
            "postmark", postmark_bounce(hooks.people[0]), **basic_auth(POSTMARK_SECRET + "x")
        )
        hooks.post("mailgun", mailgun_body(mailgun_failed(hooks.people[0]), key="nope"))
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "webhook postmark: refused: wrong or missing basic auth" in text
    assert "webhook mailgun: refused: bad signature" in text
    assert POSTMARK_SECRET not in text and MAILGUN_KEY not in text


def test_the_hook_urls_come_from_the_url_scheme() -> None:
    assert urls.hook_url("https://news.example.org/ro/", "ses") == (
        "https://news.example.org/ro/hooks/ses"
    )


# --- configuration -------------------------------------------------------------------------------


def test_secrets_in_bulletin_toml_are_refused_at_their_line(workspace_dir: Path) -> None:
    config = workspace_dir / "bulletin.toml"
    config.write_text(
        config.read_text(encoding="utf-8")
        + '\n[webhooks]\nses_topics = "nope"\nmailgun_signing_key = "key-123"\n',
        encoding="utf-8",
    )
    lines = config.read_text(encoding="utf-8").splitlines()
    with pytest.raises(ConfigError) as caught:
        ws.load(workspace_dir)
    text = str(caught.value)
    key_line = lines.index('mailgun_signing_key = "key-123"') + 1
    topics_line = lines.index('ses_topics = "nope"') + 1
    assert f"bulletin.toml:{key_line}: webhooks.mailgun_signing_key" in text
    assert "BULLETIN_MAILGUN_SIGNING_KEY" in text and "key-123" not in text
    assert f"bulletin.toml:{topics_line}: webhooks.ses_topics" in text


def test_secret_files_must_be_private_and_keys_readable(
    workspace_dir: Path, keys: Keys, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = workspace_dir / "postmark.secret"
    secret.write_text(POSTMARK_SECRET + "\n", encoding="utf-8")
    secret.chmod(0o644)
    key_file = workspace_dir / "sendgrid.key"
    key_file.write_text(keys.sendgrid_public() + "\n", encoding="utf-8")
    key_file.chmod(0o600)
    config = workspace_dir / "bulletin.toml"
    config.write_text(
        config.read_text(encoding="utf-8")
        + '\n[webhooks]\npostmark_secret_file = "postmark.secret"\n'
        'sendgrid_public_key_file = "sendgrid.key"\n',
        encoding="utf-8",
    )
    workspace = ws.load(workspace_dir)
    with pytest.raises(BulletinError, match="readable by other users") as caught:
        Webhooks.from_workspace(workspace)
    assert POSTMARK_SECRET not in str(caught.value)
    secret.chmod(0o600)
    webhooks = Webhooks.from_workspace(workspace)
    assert webhooks.enabled("postmark") and webhooks.enabled("sendgrid")
    assert not webhooks.enabled("mailgun") and not webhooks.enabled("ses")
    assert webhooks.postmark_secret == POSTMARK_SECRET
    monkeypatch.setenv("BULLETIN_SENDGRID_PUBLIC_KEY", "bm90IGEga2V5")
    with pytest.raises(BulletinError, match="BULLETIN_SENDGRID_PUBLIC_KEY .* is not a public key"):
        Webhooks.from_workspace(workspace)


# --- the real `bulletin serve` -------------------------------------------------------------------


def test_bulletin_serve_takes_each_provider_s_events(
    tmp_path: Path, keys: Keys, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = make_workspace(
        tmp_path / "ws",
        f'\n[webhooks]\nses_topics = "{TOPIC}"\nmailgun_signing_key_file = "mailgun.key"\n',
        database_url=pass_database_url(request),
    )
    (root / "mailgun.key").write_text(MAILGUN_KEY, encoding="utf-8")
    (root / "mailgun.key").chmod(0o600)
    monkeypatch.setenv("BULLETIN_POSTMARK_WEBHOOK_SECRET", POSTMARK_SECRET)
    monkeypatch.setenv("BULLETIN_SENDGRID_PUBLIC_KEY", keys.sendgrid_public())
    workspace = ws.load(root)
    TokenSigner.from_workspace(workspace)  # the key serve needs
    # No network here: serve finds the SNS certificate in its cache, as it would after its
    # first download from AWS (what the fetch itself does is tested above).
    verifier = SnsVerifier(frozenset(), cache_dir=workspace.secrets_dir / "sns-certs")
    cache = verifier._cache_path(CERT_URL)
    assert cache is not None
    cache.parent.mkdir(mode=0o700, parents=True)
    from webhookkit import pem

    cache.write_bytes(pem(keys.sns_cert))
    engine = open_store(workspace.database_url())
    people = [
        "ses@example.org",
        "postmark@example.org",
        "sendgrid@example.org",
        "mailgun@example.ro",
    ]
    with write_transaction(engine) as conn:
        create_list(conn, "news", "Știri")
        for email in people:
            add_subscriber(conn, email, "news")
    server = ServeProcess(root)
    try:
        with httpx.Client(base_url=server.url, timeout=20) as client:

            def post(provider: str, body: bytes, headers: dict[str, str]) -> int:
                return client.post(f"/hooks/{provider}", content=body, headers=headers).status_code

            ses = json.dumps(ses_notification(keys, ses_bounce([people[0]]))).encode()
            assert post("ses", ses, JSON) == 200
            postmark = json.dumps(postmark_bounce(people[1])).encode()
            assert post("postmark", postmark, basic_auth(POSTMARK_SECRET)) == 200
            sendgrid = json.dumps([{"email": people[2], "event": "spamreport"}]).encode()
            assert post("sendgrid", sendgrid, sendgrid_headers(keys.sendgrid_key, sendgrid)) == 200
            mailgun = mailgun_body(mailgun_failed(people[3]))
            assert post("mailgun", mailgun, JSON) == 200
            # A replay through the real server: the same 403, nothing more recorded.
            assert post("mailgun", mailgun, JSON) == 403
            assert post("ses", ses, JSON) == 403
        with engine.connect() as conn:
            found = [find_subscriber(conn, e) for e in people]
        assert [s.status if s else None for s in found] == [
            "bounced",
            "bounced",
            "complained",
            "bounced",
        ]
    finally:
        server.stop()
        engine.dispose()
    log = "".join(server.output)
    hooks_on = ", ".join(f"http://127.0.0.1:8080/hooks/{p}" for p in PROVIDERS)
    assert f"Provider webhooks: {hooks_on}" in log
    assert "webhook mailgun: refused: replayed" in log
    assert POSTMARK_SECRET not in log and MAILGUN_KEY not in log


def test_two_processes_given_the_same_event_at_once_apply_it_once(
    workspace_dir: Path, keys: Keys, sns_host: FakeSnsHost
) -> None:
    # Two serve processes behind a proxy, a provider retrying while the first delivery is
    # still being written: the second waits for the first's receipt and then finds it (on
    # PostgreSQL the unique key does this; the events history alone would not show an
    # uncommitted soft bounce to the other transaction).
    import threading

    workspace = ws.load(workspace_dir)
    engine = open_store(workspace.database_url())
    with write_transaction(engine) as conn:
        create_list(conn, "news", "News")
        add_subscriber(conn, "ana@example.org", "news")
    webhooks = make_hooks(workspace, keys, sns_host, topics=frozenset({TOPIC}))
    headers = {"authorization": basic_auth(POSTMARK_SECRET)["Authorization"]}
    body = json.dumps(postmark_bounce("ana@example.org", "SoftBounce")).encode()
    first = webhooks.authenticate("postmark", headers, body)
    outcomes: list[Any] = []
    with write_transaction(engine) as conn:
        outcomes.append(webhooks.apply(conn, first))
        other = threading.Thread(
            target=lambda: outcomes.append(_apply_in_own_transaction(engine, webhooks, first))
        )
        other.start()
        other.join(1.0)
        assert other.is_alive()  # waiting for this transaction
    other.join(20)
    assert [(o.events, o.repeated) for o in outcomes] == [(1, 0), (1, 1)]
    with engine.connect() as conn:
        found = find_subscriber(conn, "ana@example.org")
        assert found is not None
        kinds = conn.scalars(sa.select(events.c.kind).where(events.c.subscriber_id == found.id))
        assert list(kinds) == ["soft-bounce"]
    engine.dispose()


def _apply_in_own_transaction(engine: sa.Engine, webhooks: Webhooks, delivery: Any) -> Any:
    with write_transaction(engine) as conn:
        return webhooks.apply(conn, delivery)


def test_migration_5_adds_the_receipts_to_a_version_4_store_and_keeps_its_rows(
    database_url: str,
) -> None:
    from bulletin.store import db
    from bulletin.store.migrations import MIGRATIONS

    engine = db.connect(database_url)
    db.migrate(engine, target=4)
    with write_transaction(engine) as conn:
        create_list(conn, "news", "Știri")
        add_subscriber(conn, "ștefan@example.ro", "news")
    report = db.migrate(engine)
    assert (report.before, report.after) == (4, MIGRATIONS[-1].version)
    assert 5 in {m.version for m in MIGRATIONS[4:]}
    with write_transaction(engine) as conn:
        found = find_subscriber(conn, "ȘTEFAN@example.ro")
        assert found is not None and found.email == "ștefan@example.ro"
        assert conn.scalar(sa.select(sa.func.count()).select_from(webhook_receipts)) == 0
    engine.dispose()


def test_a_relay_posting_faster_than_a_person_may_is_not_rate_limited(
    workspace_dir: Path, keys: Keys, sns_host: FakeSnsHost
) -> None:
    """A big send's bounces come from a few provider addresses: a 429 would lose events."""
    with (workspace_dir / "bulletin.toml").open("a", encoding="utf-8") as f:
        f.write("\n[serve]\nrate_per_minute = 3\n")
    workspace = ws.load(workspace_dir)
    engine = open_store(workspace.database_url())
    people = [f"p{n}@example.org" for n in range(8)]
    with write_transaction(engine) as conn:
        create_list(conn, "news", "Știri")
        for email in people:
            add_subscriber(conn, email, "news")
    webhooks = make_hooks(workspace, keys, sns_host, topics=frozenset({TOPIC}))
    app = create_public_app(
        workspace, engine=engine, signer=TokenSigner(["k" * 32]), webhooks=webhooks
    )
    try:
        with running(app) as url, httpx.Client(base_url=url, timeout=20) as client:
            auth = basic_auth(POSTMARK_SECRET)
            for email in people:
                body = json.dumps(postmark_bounce(email)).encode("utf-8")
                answer = client.post("/hooks/postmark", content=body, headers=auth)
                assert answer.status_code == 200, (email, answer.status_code)
            # The same client on a page is limited as before.
            codes = [client.get("/archive/").status_code for _ in range(5)]
            assert 429 in codes, codes
        with engine.connect() as conn:
            for email in people:
                found = find_subscriber(conn, email)
                assert found is not None and found.status == "bounced", email
    finally:
        engine.dispose()
