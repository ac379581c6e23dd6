"""Signup with double opt-in through a real ``bulletin serve`` and a real SMTP relay.

One server for the module over a copy of the sample workspace (SQLite, or PostgreSQL on that
pass) whose smtp.url is a :class:`smtpfaults.FaultServer`: the confirmation mails are real
SMTP transactions, read back from what the relay accepted. The database is checked through a
connection of the test's own. Every request names its own client address (see test_public).
"""

from __future__ import annotations

import email
import email.policy
import itertools
import os
import re
import time
from collections.abc import Iterator
from datetime import timedelta
from email.message import EmailMessage

import httpx
import pytest
import sqlalchemy as sa

from bulletin import workspace as ws
from bulletin.store.consent import consents_of
from bulletin.store.db import open_store, write_transaction
from bulletin.store.schema import blocked_domains, events, signups, subscribers, utcnow
from bulletin.store.subscribers import (
    ListSettings,
    add_subscriber,
    create_list,
    find_subscriber,
    suppress_address,
    unsubscribe,
)
from bulletin.tokens import CONFIRM_VALID_SECONDS, TokenSigner
from conftest import pass_database_url, set_config
from smtpfaults import FaultServer
from test_public import FORM, PAGE_CSP, ServeProcess, make_workspace, next_client_address

CONFIRM_LINK = re.compile(r"<(http://[^>]+/confirm/[A-Za-z0-9_-]+)>")


class Signup:
    """The running server, its relay, and the workspace, store and signer behind them."""

    def __init__(
        self,
        server: ServeProcess,
        relay: FaultServer,
        workspace: ws.Workspace,
        engine: sa.Engine,
        signer: TokenSigner,
    ) -> None:
        self.server = server
        self.relay = relay
        self.workspace = workspace
        self.engine = engine
        self.signer = signer

    @property
    def url(self) -> str:
        return self.server.url

    def mails_to(self, address: str) -> list[EmailMessage]:
        found = []
        for m in self.relay.messages:
            if address in m.rcpt_tos:
                parsed = email.message_from_bytes(m.data, policy=email.policy.default)
                assert isinstance(parsed, EmailMessage)
                found.append(parsed)
        return found

    def wait_for_mail(self, address: str, count: int = 1, timeout: float = 10) -> EmailMessage:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            mails = self.mails_to(address)
            if len(mails) >= count:
                return mails[count - 1]
            time.sleep(0.05)
        pytest.fail(f"no mail #{count} to {address}; server said:\n{''.join(self.server.output)}")


@pytest.fixture(scope="module")
def site(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[Signup]:
    relay = FaultServer().start()
    root = make_workspace(
        tmp_path_factory.mktemp("signup") / "ws", database_url=pass_database_url(request)
    )
    set_config(root, "smtp", url=relay.url)
    workspace = ws.load(root)
    engine = open_store(workspace.database_url())
    with write_transaction(engine) as conn:
        public = ListSettings(public=True, language="ro", description="Știri din proiect")
        create_list(conn, "stiri", "Știri ClusterPoliSEE", public)
        create_list(conn, "events-en", "Events", ListSettings(public=True, language="en"))
        create_list(conn, "quick", "Quick", ListSettings(public=True, opt_in="single"))
        create_list(conn, "staff", "Staff only")
        stiri = conn.scalar(sa.text("SELECT id FROM lists WHERE slug = 'stiri'"))
        # Two sign-ups from before: one past the 30 days (serve purges it as it starts), one
        # recent (kept).
        for age, who in ((31, "old"), (3, "recent")):
            conn.execute(
                signups.insert().values(
                    list_id=stiri,
                    email=f"{who}@example.org",
                    email_key=f"{who}@example.org",
                    name="",
                    language="",
                    consent_text="x",
                    consent_version=1,
                    created_at=utcnow() - timedelta(days=age),
                    mailed_at=utcnow() - timedelta(days=age),
                )
            )
    signer = TokenSigner.from_workspace(workspace)
    server = ServeProcess(root)
    try:
        yield Signup(server, relay, workspace, engine, signer)
    finally:
        server.stop()
        relay.stop()
        engine.dispose()


@pytest.fixture
def client(site: Signup) -> Iterator[httpx.Client]:
    headers = {"X-Forwarded-For": next_client_address(), "Accept-Language": "ro-RO,ro;q=0.9"}
    with httpx.Client(base_url=site.url, headers=headers, timeout=10) as c:
        yield c


_people = itertools.count(1)


def new_address() -> str:
    return f"cititor{next(_people)}.{os.getpid()}@example.org"


def form(address: str, **extra: str) -> dict[str, str]:
    return {"email": address, "consent": "yes", **extra}


def state(site: Signup, address: str) -> tuple[str, dict[str, str]] | None:
    with site.engine.connect() as conn:
        sub = find_subscriber(conn, address)
        if sub is None:
            return None
        rows = conn.execute(
            sa.text(
                "SELECT l.slug, s.status FROM subscriptions s JOIN lists l ON l.id = s.list_id "
                "WHERE s.subscriber_id = :id"
            ),
            {"id": sub.id},
        ).all()
    return sub.status, {slug: st for slug, st in rows}


def pending(site: Signup, address: str) -> int:
    with site.engine.connect() as conn:
        return int(
            conn.scalar(
                sa.select(sa.func.count())
                .select_from(signups)
                .where(signups.c.email_key == address.lower())
            )
            or 0
        )


def confirm_link(message: EmailMessage, site: Signup | None = None) -> str:
    """The mail's confirmation link; with ``site``, pointed at the test server (the mail
    names newsletter.base_url, where a reverse proxy would forward it)."""
    text = message.get_body(("plain",))
    assert text is not None
    found = CONFIRM_LINK.search(text.get_content())
    assert found is not None, text.get_content()
    link = found.group(1)
    if site is not None:
        base = site.workspace.config.newsletter.base_url
        assert link.startswith(base + "/confirm/")
        link = site.url + link[len(base) :]
    return link


# -- the form ----------------------------------------------------------------------------------


def test_form_page_language_and_fields(site: Signup, client: httpx.Client) -> None:
    page = client.get("/subscribe/stiri")
    assert page.status_code == 200
    assert page.headers["content-security-policy"] == PAGE_CSP
    assert 'lang="ro"' in page.text and "Abonare la Știri ClusterPoliSEE" in page.text
    assert "Știri din proiect" in page.text
    assert "Sunt de acord să primesc ClusterPoliSEE e-newsletter prin e-mail" in page.text
    # The public interface: these field names, posted back to the same path.
    for field in ('name="email"', 'name="name"', 'name="language"', 'name="consent"'):
        assert field in page.text
    assert 'name="website"' in page.text and 'tabindex="-1"' in page.text
    assert 'action="/subscribe/stiri"' in page.text
    assert "stiri" not in page.text.split("<main", 1)[1].replace("/subscribe/stiri", "")
    # A reader of English only gets English; one who also reads Romanian gets the list's.
    english = client.get("/subscribe/stiri", headers={"Accept-Language": "en-GB,en;q=0.8"})
    assert 'lang="en"' in english.text and "Subscribe to Știri ClusterPoliSEE" in english.text
    assert "I agree to receive ClusterPoliSEE e-newsletter by email" in english.text
    both = client.get("/subscribe/stiri", headers={"Accept-Language": "en;q=0.9, ro;q=0.5"})
    assert 'lang="ro"' in both.text
    other = client.get("/subscribe/events-en", headers={"Accept-Language": "de, fr"})
    assert 'lang="en"' in other.text


def test_private_and_unknown_lists_are_one_404(site: Signup, client: httpx.Client) -> None:
    answers = [
        client.get("/subscribe/staff"),
        client.get("/subscribe/no-such-list"),
        client.post("/subscribe/staff", data=form(new_address())),
        client.post("/subscribe/no-such-list", data=form(new_address())),
    ]
    assert {a.status_code for a in answers} == {404}
    assert len({a.text for a in answers}) == 1
    assert "Staff only" not in answers[0].text


def test_form_errors_show_the_form_again_and_change_nothing(
    site: Signup, client: httpx.Client
) -> None:
    address = new_address()
    no_consent = client.post("/subscribe/stiri", data={"email": address, "name": "Ana"})
    assert no_consent.status_code == 400
    assert "Bifați căsuța" in no_consent.text and f'value="{address}"' in no_consent.text
    bad = client.post("/subscribe/stiri", data=form("not an address"))
    assert bad.status_code == 400 and "nu este o adresă de e-mail" in bad.text
    assert pending(site, address) == 0 and state(site, address) is None


# -- one answer for every address; mail after the answer ---------------------------------------


def test_the_answer_is_the_same_for_every_state_of_the_address(
    site: Signup, client: httpx.Client
) -> None:
    new, waiting, subscribed, suppressed, blocked, bot = (new_address() for _ in range(6))
    blocked = blocked.replace("@example.org", "@blocked.example")
    with write_transaction(site.engine) as conn:
        add_subscriber(conn, subscribed, "stiri")
        add_subscriber(conn, suppressed, "stiri")
        suppress_address(conn, suppressed, "bounced", "test")
        conn.execute(
            sa.text(
                "INSERT INTO blocked_domains (domain, source, created_at) VALUES (:d, 't', :t)"
            ),
            {"d": "blocked.example", "t": utcnow()},
        )
    assert client.post("/subscribe/stiri", data=form(waiting)).status_code == 200
    site.wait_for_mail(waiting)

    answers = {
        "new": client.post("/subscribe/stiri", data=form(new)),
        "pending": client.post("/subscribe/stiri", data=form(waiting)),
        "subscribed": client.post("/subscribe/stiri", data=form(subscribed)),
        "suppressed": client.post("/subscribe/stiri", data=form(suppressed)),
        "blocked domain": client.post("/subscribe/stiri", data=form(blocked)),
        "honeypot": client.post("/subscribe/stiri", data=form(bot, website="http://spam")),
    }
    for what, answer in answers.items():
        assert answer.status_code == 200, what
        assert answer.headers["content-security-policy"] == PAGE_CSP, what
    bodies = {answer.text for answer in answers.values()}
    assert len(bodies) == 1, answers
    body = bodies.pop()
    assert "Vă mulțumim pentru înscrierea la Știri ClusterPoliSEE" in body
    assert "@" not in body.split("<main", 1)[1]  # no address, whichever it was

    site.wait_for_mail(new)
    site.wait_for_mail(suppressed)
    time.sleep(0.5)  # give a wrong mail time to arrive
    assert len(site.mails_to(waiting)) == 1  # one a day
    assert site.mails_to(blocked) == [] and site.mails_to(bot) == []
    assert pending(site, blocked) == 0 and pending(site, bot) == 0
    # Nobody was subscribed by the form itself, and the suppression stands.
    assert state(site, new) is None
    assert state(site, suppressed) == ("bounced", {"stiri": "subscribed"})


def test_confirmation_mail_headers_and_body(site: Signup, client: httpx.Client) -> None:
    address = new_address()
    # Anyone can post any address with any "name": the words typed on the form must not
    # reach that inbox in our mail before its owner has confirmed.
    lure = "Ștefan Țurcanu, sunați la 0700 000 000"
    answer = client.post("/subscribe/stiri", data=form(address, name=lure, language="ro"))
    assert answer.status_code == 200
    message = site.wait_for_mail(address)
    assert message["From"] == "ClusterPoliSEE <newsletter@clusterpolisee.example.org>"
    assert message["Reply-To"] == "contact@clusterpolisee.example.org"
    assert message["To"] == address
    assert message["Subject"] == "Confirmați abonarea la Știri ClusterPoliSEE"
    raw = next(m.data for m in site.relay.messages if address in m.rcpt_tos)
    assert b"Subject: =?utf-8?" in raw  # RFC 2047 on the wire, ș/ț intact once decoded
    assert message["Message-ID"].endswith("@clusterpolisee.example.org>")
    assert message["Date"] is not None
    assert "List-Unsubscribe" not in message
    text = message.get_body(("plain",))
    html = message.get_body(("html",))
    assert text is not None and html is not None
    assert "Bună ziua," in text.get_content()
    assert "0700" not in text.get_content() and "0700" not in html.get_content()
    link = confirm_link(message)
    assert link in html.get_content()
    assert "7 zile" in text.get_content()


# -- confirming ------------------------------------------------------------------------------


def test_a_scanner_fetching_the_link_subscribes_nobody_and_post_does(
    site: Signup, client: httpx.Client
) -> None:
    address = new_address()
    client.post("/subscribe/stiri", data=form(address, name="Ana"))
    link = confirm_link(site.wait_for_mail(address), site)
    for _ in range(3):  # a link scanner, a prefetcher, a preview: GET and HEAD, no scripts
        page = httpx.get(link, headers={"X-Forwarded-For": next_client_address()})
        assert page.status_code == 200
        csp = page.headers["content-security-policy"]
        assert re.search(r"script-src 'sha256-[A-Za-z0-9+/=]+'", csp), csp
        assert "'unsafe-inline'" not in csp and "form-action 'self'" in csp
        assert '<form method="post" id="confirm">' in page.text
        assert 'document.getElementById("confirm").submit();' in page.text
        assert "c***@example.org" in page.text and address not in page.text
    assert httpx.head(link).status_code == 200
    assert state(site, address) is None and pending(site, address) == 1

    done = httpx.post(link, headers={"X-Forwarded-For": next_client_address()})
    assert done.status_code == 200, done.text
    assert "Vă mulțumim: adresa c***@example.org este abonată la Știri ClusterPoliSEE" in done.text
    assert state(site, address) == ("active", {"stiri": "subscribed"})
    assert pending(site, address) == 0
    with site.engine.connect() as conn:
        sub = find_subscriber(conn, address)
        assert sub is not None and sub.name == "Ana"
        records = consents_of(conn, sub.id)
    assert len(records) == 1
    record = records[0]
    assert (record.list_slug, record.source, record.consent_version) == ("stiri", "form", 1)
    assert record.consent_text.startswith("Sunt de acord să primesc ClusterPoliSEE")
    assert record.given_at is not None and record.confirmed_at is not None
    assert record.given_at <= record.confirmed_at
    assert record.ip is None  # privacy.store_ip is off by default
    # The link is used up: the same 404 as a forged one.
    again = httpx.post(link)
    forged = httpx.post(link[:-3] + ("AAA" if not link.endswith("AAA") else "BBB"))
    assert again.status_code == forged.status_code == 404
    assert again.text == forged.text


def test_expired_and_forged_tokens_get_one_404(site: Signup, client: httpx.Client) -> None:
    address = new_address()
    client.post("/subscribe/stiri", data=form(address))
    site.wait_for_mail(address)
    with site.engine.connect() as conn:
        signup_id = conn.scalar(sa.select(signups.c.id).where(signups.c.email_key == address))
    assert signup_id is not None
    now = time.time()
    expired = site.signer.confirm_token(signup_id, now - CONFIRM_VALID_SECONDS - 60)
    fresh = site.signer.confirm_token(signup_id, now)
    unsubscribe_kind = site.signer.unsubscribe_token(signup_id, None)
    answers = [
        client.get(f"/confirm/{expired}"),
        client.post(f"/confirm/{expired}"),
        client.get(f"/confirm/{unsubscribe_kind}"),
        client.get("/confirm/not-a-token-at-all-000000000000"),
    ]
    assert {a.status_code for a in answers} == {404}
    assert len({a.text for a in answers}) == 1
    assert state(site, address) is None and pending(site, address) == 1
    # A token made before the row existed names another sign-up (ids may be reused).
    older = site.signer.confirm_token(signup_id, now - 3600)
    assert client.post(f"/confirm/{older}").status_code == 404
    assert client.post(f"/confirm/{fresh}").status_code == 200
    assert state(site, address) == ("active", {"stiri": "subscribed"})


def test_an_unsubscribed_person_comes_back_only_by_confirming(
    site: Signup, client: httpx.Client
) -> None:
    address = new_address()
    with write_transaction(site.engine) as conn:
        result = add_subscriber(conn, address, "stiri")
        unsubscribe(conn, result.subscriber.id, None, "web")
    client.post("/subscribe/stiri", data=form(address))
    link = confirm_link(site.wait_for_mail(address), site)
    assert state(site, address) == ("unsubscribed", {"stiri": "unsubscribed"})
    assert httpx.post(link).status_code == 200
    assert state(site, address) == ("active", {"stiri": "subscribed"})
    with site.engine.connect() as conn:
        kinds = conn.execute(
            sa.select(events.c.kind, events.c.source, events.c.detail)
            .where(events.c.subscriber_id == result.subscriber.id)
            .order_by(events.c.id)
        ).all()
    assert [tuple(k) for k in kinds][-1] == ("resubscribed", "form", "was unsubscribed")


def test_single_opt_in_subscribes_at_once_but_never_lifts_an_opt_out(
    site: Signup, client: httpx.Client
) -> None:
    fresh, left = new_address(), new_address()
    with write_transaction(site.engine) as conn:
        result = add_subscriber(conn, left, "quick")
        unsubscribe(conn, result.subscriber.id, "quick", "web")
    first = client.post("/subscribe/quick", data=form(fresh))
    second = client.post("/subscribe/quick", data=form(left))
    assert first.status_code == second.status_code == 200 and first.text == second.text
    assert state(site, fresh) == ("active", {"quick": "subscribed"})
    # The opt-out stands until the person confirms from the mail.
    link = confirm_link(site.wait_for_mail(left), site)
    assert state(site, left) == ("active", {"quick": "unsubscribed"})
    assert httpx.post(link).status_code == 200
    assert state(site, left) == ("active", {"quick": "subscribed"})
    assert site.mails_to(fresh) == []


# -- limits ------------------------------------------------------------------------------------


def test_one_confirmation_a_day_per_address_and_list(site: Signup) -> None:
    address = new_address()
    for _ in range(4):  # from four different clients: the limit is the address's
        with httpx.Client(
            base_url=site.url, headers={"X-Forwarded-For": next_client_address()}
        ) as c:
            assert c.post("/subscribe/stiri", data=form(address)).status_code == 200
    site.wait_for_mail(address)
    # Another list is another sign-up.
    with httpx.Client(base_url=site.url, headers={"X-Forwarded-For": next_client_address()}) as c:
        assert c.post("/subscribe/events-en", data=form(address)).status_code == 200
    site.wait_for_mail(address, 2)
    time.sleep(0.5)
    assert len(site.mails_to(address)) == 2
    # A day later the person may ask again.
    with write_transaction(site.engine) as conn:
        conn.execute(
            signups.update()
            .where(signups.c.email_key == address)
            .values(mailed_at=utcnow() - timedelta(hours=24, minutes=1))
        )
    with httpx.Client(base_url=site.url, headers={"X-Forwarded-For": next_client_address()}) as c:
        assert c.post("/subscribe/stiri", data=form(address)).status_code == 200
    site.wait_for_mail(address, 3)


def test_one_client_cannot_post_forms_without_limit(site: Signup) -> None:
    with httpx.Client(base_url=site.url, headers={"X-Forwarded-For": next_client_address()}) as c:
        codes = [
            c.post("/subscribe/stiri", content=b"email=x", headers=FORM).status_code
            for _ in range(40)
        ]
    assert 429 in codes
    assert codes.index(429) >= 25  # serve.rate_per_minute = 30 in the test workspace


# -- housekeeping ------------------------------------------------------------------------------


def test_serve_purges_sign_ups_older_than_30_days_as_it_starts(site: Signup) -> None:
    deadline = time.monotonic() + 10
    while pending(site, "old@example.org") and time.monotonic() < deadline:
        time.sleep(0.05)
    assert pending(site, "old@example.org") == 0
    assert pending(site, "recent@example.org") == 1


def test_tokens_and_addresses_stay_out_of_the_access_log(site: Signup, client: httpx.Client):
    address = new_address()
    client.post("/subscribe/stiri", data=form(address))
    link = confirm_link(site.wait_for_mail(address), site)
    token = link.rsplit("/", 1)[1]
    httpx.get(link)
    time.sleep(0.2)
    log = "".join(site.server.output)
    assert "/confirm/…" in log
    assert token not in log and address not in log


def test_subscribers_table_has_no_row_for_unconfirmed_people(site: Signup) -> None:
    with site.engine.connect() as conn:
        emails = set(conn.scalars(sa.select(subscribers.c.email_key)))
    assert "recent@example.org" not in emails


# -- preferences -------------------------------------------------------------------------------


def list_id(site: Signup, slug: str) -> int:
    with site.engine.connect() as conn:
        found = conn.scalar(sa.text("SELECT id FROM lists WHERE slug = :s"), {"s": slug})
    assert found is not None
    return int(found)


def test_every_message_links_its_reader_preferences_page(site: Signup) -> None:
    from bulletin.content.loader import load_issue
    from bulletin.dispatch.composer import composer_for
    from bulletin.render.pipeline import render_issue
    from conftest import SAMPLE_SLUG

    loaded = load_issue(site.workspace, site.workspace.issue_dir(SAMPLE_SLUG))
    composer = composer_for(site.workspace, render_issue(site.workspace, loaded))
    values = composer.values(41, 7, "ana@example.org", "Ana", {})
    prefix = site.workspace.config.newsletter.base_url + "/preferences/"
    assert values["preferences_url"].startswith(prefix)
    token = values["preferences_url"][len(prefix) :]
    verified = site.signer.verify_preferences(token)
    assert verified is not None and verified.subscriber_id == 41
    # Not an unsubscribe token, nor the other way round: one purpose per token.
    assert site.signer.verify_unsubscribe(token) is None
    assert site.signer.verify_preferences(values["unsubscribe_token"]) is None
    message = email.message_from_bytes(
        composer.envelope(composer.recipient(41, 7, "ana@example.org", "Ana", {}), "<x@y>").data,
        policy=email.policy.default,
    )
    assert isinstance(message, EmailMessage)
    for kind in ("plain", "html"):
        part = message.get_body((kind,))
        assert part is not None and values["preferences_url"] in part.get_content(), kind
    plain = message.get_body(("plain",))
    assert plain is not None and "Preferințele dumneavoastră:" in plain.get_content()


def test_the_preferences_page_joins_no_list_once_the_domain_is_blocked(
    site: Signup, client: httpx.Client
) -> None:
    # Subscribed first; the officer then blocks the whole domain.
    domain = f"blocat{os.getpid()}.example"
    address = f"ion@{domain}"
    with write_transaction(site.engine) as conn:
        sub_id = add_subscriber(conn, address, "stiri").subscriber.id
        conn.execute(
            blocked_domains.insert().values(domain=domain, source="test", created_at=utcnow())
        )
    url = "/preferences/" + site.signer.preferences_token(sub_id)
    saved = client.post(url, data={"list": [str(list_id(site, "events-en"))]})
    assert saved.status_code == 200, saved.text
    found = state(site, address)
    assert found is not None and "events-en" not in found[1], found
    with site.engine.connect() as conn:
        assert not [c for c in consents_of(conn, sub_id) if c.list_slug == "events-en"]


def test_the_preferences_page_changes_lists_name_and_language(
    site: Signup, client: httpx.Client
) -> None:
    address = new_address()
    with write_transaction(site.engine) as conn:
        result = add_subscriber(conn, address, "stiri", name="Ion", language="ro")
        add_subscriber(conn, address, "staff")
    sub_id = result.subscriber.id
    url = "/preferences/" + site.signer.preferences_token(sub_id)
    before = state(site, address)
    page = client.get(url)
    assert page.status_code == 200 and 'lang="ro"' in page.text
    assert "Preferințele dumneavoastră" in page.text and "c***@example.org" in page.text
    stiri, events_id, quick, staff = (
        list_id(site, s) for s in ("stiri", "events-en", "quick", "staff")
    )
    assert f'name="list" value="{stiri}" checked' in page.text
    assert f'name="list" value="{events_id}">' in page.text
    assert f'name="list" value="{staff}" checked' in page.text  # private, but they are on it
    assert "I agree to receive ClusterPoliSEE" not in page.text  # the page is in Romanian
    assert state(site, address) == before  # a GET changes nothing

    # Join events-en and quick, leave stiri and staff, and change name and language.
    saved = client.post(
        url,
        data={"list": [str(events_id), str(quick)], "name": "Ion Țepeș", "language": "en"},
    )
    assert saved.status_code == 200 and "Saved." in saved.text and 'lang="en"' in saved.text
    assert state(site, address) == (
        "active",
        {
            "stiri": "unsubscribed",
            "events-en": "subscribed",
            "quick": "subscribed",
            "staff": "unsubscribed",
        },
    )
    with site.engine.connect() as conn:
        sub = find_subscriber(conn, address)
        assert sub is not None and (sub.name, sub.language) == ("Ion Țepeș", "en")
        records = [c for c in consents_of(conn, sub_id) if c.recorded]
    assert sorted((c.list_slug, c.source) for c in records) == [
        ("events-en", "preferences"),
        ("quick", "preferences"),
    ]
    assert all(c.confirmed_at is not None and c.ip is None for c in records)
    # A private list they left is no longer on their page: they cannot join it there.
    page = client.get(url)
    assert f'value="{staff}"' not in page.text
    assert client.post(url, data={"list": [str(staff)]}).status_code == 200
    assert state(site, address)[1]["staff"] == "unsubscribed"  # type: ignore[index]

    # Leave all: unsubscribed for good, until they tick a list again themselves.
    client.post(url, data={"all": "1"})
    assert state(site, address) == (
        "unsubscribed",
        {
            "stiri": "unsubscribed",
            "events-en": "unsubscribed",
            "quick": "unsubscribed",
            "staff": "unsubscribed",
        },
    )
    page = client.get(url)
    assert 'id="suppressed"' in page.text
    client.post(url, data={"list": [str(stiri)]})
    assert state(site, address) == (
        "active",
        {
            "stiri": "subscribed",
            "events-en": "unsubscribed",
            "quick": "unsubscribed",
            "staff": "unsubscribed",
        },
    )


def test_preferences_tokens_get_the_unsubscribe_page_404(
    site: Signup, client: httpx.Client
) -> None:
    with write_transaction(site.engine) as conn:
        result = add_subscriber(conn, new_address(), "stiri")
    sub_id = result.subscriber.id
    good = site.signer.preferences_token(sub_id)
    answers = [
        client.get("/u/" + "A" * 30),  # the unsubscribe page's own 404
        client.get("/preferences/" + "A" * 30),
        client.post("/preferences/" + "A" * 30, data={"all": "1"}),
        client.get("/preferences/" + site.signer.unsubscribe_token(sub_id, None)),
        client.get("/preferences/" + good[:-2] + ("AA" if not good.endswith("AA") else "BB")),
        client.get("/preferences/" + site.signer.preferences_token(10**9)),  # nobody
    ]
    assert {a.status_code for a in answers} == {404}
    assert len({a.text for a in answers}) == 1
    assert state(site, result.subscriber.email) == ("active", {"stiri": "subscribed"})
