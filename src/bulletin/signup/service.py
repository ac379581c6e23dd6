"""Sign-ups, confirmations and preferences for one workspace: what the web app calls.

Each method is one step a person takes, run in a worker thread by the web app: it checks
the input with the store's rules (:mod:`bulletin.store.normalise`), writes in one
transaction (:mod:`bulletin.store.signups`), and returns what the page needs. Mail goes out
after the transaction, through :mod:`bulletin.signup.mail`; the web app calls
:meth:`Signups.send_confirmation` after it has answered, so the answer takes as long for an
address that gets a mail as for one that does not.

A signup form is public and takes posts from any website, so there is no CSRF token to
check; what a stranger can do with it, and what stops them:

* **learn whether an address is known** -- the answer is one page for a new, pending,
  subscribed, suppressed or blocked address and for a bot in the honeypot, names no
  address, and the mail goes out after it;
* **mail-bomb someone** -- one confirmation per address and list a day (claimed in the
  database, so several serve processes agree), plus serve's per-client rate limit;
* **subscribe someone** -- nobody is subscribed without the mailbox owner's click
  (double opt-in); a single opt-in list subscribes at once only an address with no
  opt-out, and never lifts one;
* **fill the database** -- pending rows are one per address and list and go after 30
  days; bodies are capped by serve (16 KB) and fields here.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime

from sqlalchemy.engine import Connection, Engine

from bulletin import urls
from bulletin.signup import mail
from bulletin.signup.consent import consent_text, list_language, supported
from bulletin.store import signups
from bulletin.store.db import write_transaction
from bulletin.store.normalise import (
    AddressValidator,
    InvalidField,
    InvalidSubscriber,
    clean_language,
    clean_name,
    normalise_subscriber,
)
from bulletin.store.subscribers import MailingList, find_list, find_list_by_id
from bulletin.tokens import CONFIRM_VALID_SECONDS, TokenSigner
from bulletin.workspace import Workspace

log = logging.getLogger(__name__)

FIELDS = ("email", "name", "language", "consent", "website")
"""The form's field names: a public interface that websites embed, never renamed.
``website`` is the honeypot: hidden from people, filled in by bots."""

HONEYPOT = "website"

PURGE_EVERY_SECONDS = 3600.0


@dataclass(frozen=True)
class FormErrors:
    """What is wrong with a form post (the page shows the form again with these)."""

    email: bool = False
    consent: bool = False
    name: bool = False


@dataclass(frozen=True)
class Submitted:
    """A form post that was accepted; ``to_mail`` is a confirmation to send after answering."""

    to_mail: signups.Pending | None


@dataclass(frozen=True)
class ConfirmPage:
    """What the confirmation pages show: the list and the (masked by the page) address."""

    list: MailingList
    email: str
    language: str


def accept_language(header: str) -> list[str]:
    """The languages of an Accept-Language header we have pages in, best first."""
    ranked: list[tuple[float, int, str]] = []
    for i, item in enumerate(header.split(",")[:20]):
        tag, _, params = item.strip().partition(";")
        q = 1.0
        if params.strip().startswith("q="):
            try:
                q = float(params.strip()[2:])
            except ValueError:
                q = 0.0
        lang = supported(tag.strip())
        if lang and q > 0:
            ranked.append((-q, i, lang))
    return list(dict.fromkeys(lang for _, _, lang in sorted(ranked)))


class Signups:
    """Sign-ups, confirmations and preferences over one store and signer."""

    def __init__(
        self,
        workspace: Workspace,
        engine: Engine,
        signer: TokenSigner,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.workspace = workspace
        self.config = workspace.config
        self.engine = engine
        self.signer = signer
        self.clock = clock
        self.base_url = self.config.newsletter.base_url
        self._last_purge = 0.0

    # -- lists and languages ---------------------------------------------------------------

    def public_list(self, conn: Connection, slug: str) -> MailingList | None:
        """The public list with this slug; None for a private or unknown one (both 404)."""
        found = find_list(conn, slug)
        return found if found is not None and found.public else None

    def page_language(self, the_list: MailingList, accept: str, wanted: str = "") -> str:
        """A page's language: the one asked for, else the list's if the browser reads it,
        else the browser's best, else the list's."""
        if supported(wanted):
            return supported(wanted) or "en"
        own = supported(list_language(the_list, self.config)) or "en"
        browser = accept_language(accept)
        if not browser or own in browser:
            return own
        return browser[0]

    def consent_for(self, the_list: MailingList, lang: str) -> str:
        """The consent text the form shows in ``lang``."""
        return consent_text(the_list, self.config, lang)

    def store_ip(self, ip: str | None) -> str | None:
        """``ip`` if the workspace keeps client addresses (``privacy.store_ip``), else None."""
        return ip if self.config.privacy.store_ip and ip else None

    # -- sign-up ---------------------------------------------------------------------------

    def submit(
        self,
        conn: Connection,
        the_list: MailingList,
        fields: Mapping[str, Sequence[str]],
        lang: str,
        ip: str | None,
    ) -> FormErrors | Submitted:
        """Record a form post on ``the_list`` inside the caller's write transaction.

        Errors the person can fix (an address the store refuses, the consent box not ticked)
        come back as :class:`FormErrors` and change nothing. Everything else -- new,
        pending, subscribed, suppressed, blocked, a bot in the honeypot -- is a
        :class:`Submitted`, and the page says the same for all of them.
        """

        def one(name: str) -> str:
            values = fields.get(name) or [""]
            return values[0][:1000]

        if one(HONEYPOT).strip():
            return Submitted(None)
        consent = bool(one("consent").strip())
        try:
            entry = normalise_subscriber(
                one("email"),
                name=one("name"),
                language=supported(one("language")) or None,
                validator=AddressValidator(),
            )
        except InvalidSubscriber as exc:
            return FormErrors(
                email=exc.field == "email", name=exc.field == "name", consent=not consent
            )
        if not consent:
            return FormErrors(consent=True)
        # The language asked for, else the page's: the mail and later issues speak it.
        entry = replace(entry, language=entry.language or lang)
        outcome = signups.request(
            conn,
            the_list,
            entry,
            consent_text=self.consent_for(the_list, lang),
            ip=self.store_ip(ip),
            now=self._now(),
        )
        return Submitted(outcome.pending if outcome.action == "mail" else None)

    def submit_in_transaction(
        self,
        the_slug: str,
        fields: Mapping[str, Sequence[str]],
        accept: str,
        ip: str | None,
        *,
        wait: float | None = None,
    ) -> tuple[MailingList, str, FormErrors | Submitted] | None:
        """:meth:`submit` in a transaction of its own (None: no such public list)."""
        with write_transaction(self.engine, wait=wait) as conn:
            the_list = self.public_list(conn, the_slug)
            if the_list is None:
                return None
            lang = self.page_language(the_list, accept, (fields.get("language") or [""])[0])
            return the_list, lang, self.submit(conn, the_list, fields, lang, ip)

    def send_confirmation(self, pending: signups.Pending) -> None:
        """Compose and send a sign-up's confirmation mail (after the page was answered)."""
        try:
            with self.engine.connect() as conn:
                the_list = find_list_by_id(conn, pending.list_id)
            if the_list is None:
                return
            token = self.signer.confirm_token(pending.id, self._issued_at(pending))
            notice = mail.compose(
                self.workspace,
                "confirm",
                lang=pending.language or list_language(the_list, self.config),
                to_email=pending.email,
                # Not the name typed on the form: anyone can post any address with any
                # "name", and it would reach that inbox in our mail (a phishing line, an
                # insult). The person's own name is used once they have confirmed.
                to_name="",
                values={
                    "list_name": the_list.name,
                    "list_description": the_list.description,
                    "confirm_url": urls.confirm_url(self.base_url, token),
                    "valid_days": CONFIRM_VALID_SECONDS // 86400,
                },
            )
            mail.deliver(
                mail.transport_for(self.workspace), notice, f"confirmation for sign-up {pending.id}"
            )
        except Exception:  # a background task: log with the traceback, never the link
            log.exception("confirmation mail for sign-up %d failed", pending.id)

    def _issued_at(self, pending: signups.Pending) -> float:
        # The token is made when its mail is claimed; mailed_at is that moment.
        return (pending.mailed_at or pending.created_at).timestamp()

    def _now(self) -> datetime:
        return datetime.fromtimestamp(self.clock(), UTC)

    # -- confirmation ----------------------------------------------------------------------

    def confirm_page(self, token: str) -> ConfirmPage | None:
        """What the GET page shows for a valid, unexpired token of a pending sign-up."""
        data = self.signer.verify_confirm(token, self.clock())
        if data is None:
            return None
        with self.engine.connect() as conn:
            pending = signups.find(conn, data.signup_id)
            if pending is None or pending.created_at.timestamp() > data.issued_at + 1:
                return None
            the_list = find_list_by_id(conn, pending.list_id)
        if the_list is None:
            return None
        lang = pending.language or list_language(the_list, self.config)
        return ConfirmPage(the_list, pending.email, lang)

    def confirm(
        self, token: str, ip: str | None, *, wait: float | None = None
    ) -> signups.Confirmed | None:
        """Confirm a sign-up (the POST); None for an invalid, expired or used token."""
        data = self.signer.verify_confirm(token, self.clock())
        if data is None:
            return None
        with write_transaction(self.engine, wait=wait) as conn:
            return signups.confirm(
                conn, data.signup_id, data.issued_at, ip=self.store_ip(ip), now=self._now()
            )

    def wants_welcome(self, done: signups.Confirmed) -> bool:
        """Whether a confirmation is followed by the welcome mail (``signup.welcome``)."""
        return self.config.signup.welcome and done.outcome != "already"

    def send_welcome(self, done: signups.Confirmed) -> None:
        """Compose and send the welcome mail (after the confirmation page was answered)."""
        sub = done.subscriber
        try:
            notice = mail.compose(
                self.workspace,
                "welcome",
                lang=sub.language or list_language(done.list, self.config),
                to_email=sub.email,
                to_name=sub.name,
                values={
                    "list_name": done.list.name,
                    "list_description": done.list.description,
                    "preferences_url": urls.preferences_url(
                        self.base_url, self.signer.preferences_token(sub.id)
                    ),
                    "archive_url": urls.archive_url(self.base_url),
                },
            )
            mail.deliver(mail.transport_for(self.workspace), notice, f"welcome for {sub.id}")
        except Exception:
            log.exception("welcome mail for subscriber %d failed", sub.id)

    # -- preferences -----------------------------------------------------------------------

    def preferences(self, token: str) -> signups.Preferences | None:
        """A subscriber's preferences page, or None for any invalid token."""
        data = self.signer.verify_preferences(token)
        if data is None:
            return None
        with self.engine.connect() as conn:
            return signups.preferences(conn, data.subscriber_id)

    def change_preferences(
        self,
        token: str,
        fields: Mapping[str, Sequence[str]],
        ip: str | None,
        *,
        wait: float | None = None,
    ) -> signups.Preferences | FormErrors | None:
        """Apply a preferences POST (``list`` ids wanted, ``name``, ``language``, ``all``)."""
        data = self.signer.verify_preferences(token)
        if data is None:
            return None
        wanted = frozenset(int(v) for v in fields.get("list", []) if v.isdigit() and len(v) < 19)
        try:
            name = clean_name(fields["name"][0])[0] if fields.get("name") else None
            language = clean_language(fields["language"][0]) if fields.get("language") else None
        except InvalidField:
            return FormErrors(name=True)
        changes = signups.PreferenceChanges(
            wanted, name, language, leave_all=bool(fields.get("all"))
        )
        with write_transaction(self.engine, wait=wait) as conn:
            return signups.apply_preferences(
                conn,
                data.subscriber_id,
                changes,
                consent_text=lambda the_list: consent_text(
                    the_list, self.config, supported(language or "") or None
                ),
                ip=self.store_ip(ip),
            )

    # -- housekeeping ----------------------------------------------------------------------

    def purge(self) -> int:
        """Delete sign-ups older than 30 days; how many went."""
        with write_transaction(self.engine) as conn:
            gone = signups.purge(conn, now=self._now())
        self._last_purge = self.clock()
        if gone:
            log.info("purged %d sign-up(s) not confirmed within %d days", gone, 30)
        return gone

    def purge_due(self) -> bool:
        """Whether the periodic purge is due (at most once an hour per process)."""
        return self.clock() - self._last_purge >= PURGE_EVERY_SECONDS


__all__ = ["FIELDS", "HONEYPOT", "Signups", "accept_language"]
