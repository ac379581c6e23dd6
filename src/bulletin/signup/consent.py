"""The consent text a person is shown, and the language of a list's pages and mails.

A list's own text (``lists edit --consent-text``) is shown as written; without one, the
default below names the newsletter in the list's language, so a public list works without
writing one. The text a consent record keeps is the one this module returns at the moment
of signing up: what the person saw.
"""

from __future__ import annotations

from bulletin.render.i18n import base_language
from bulletin.store.subscribers import MailingList
from bulletin.workspace import Config

DEFAULT_CONSENT: dict[str, str] = {
    "en": "I agree to receive {newsletter} by email. I can unsubscribe at any time with the "
    "link at the end of every message.",
    "ro": "Sunt de acord să primesc {newsletter} prin e-mail. Mă pot dezabona oricând "
    "folosind linkul de la sfârșitul fiecărui mesaj.",
}
"""The default consent text per language (``{newsletter}``: newsletter.name)."""

LANGUAGES = ("ro", "en")
"""Languages the signup pages and mails are written in (others fall back to English)."""


def supported(lang: str | None) -> str | None:
    """``lang``'s base language if we have pages in it (``ro-RO`` -> ``ro``), else None."""
    if not lang:
        return None
    base = base_language(lang)
    return base if base in LANGUAGES else None


def list_language(the_list: MailingList, config: Config) -> str:
    """The language a list speaks: its own, else the newsletter's."""
    return the_list.language or config.newsletter.language


def consent_text(the_list: MailingList, config: Config, lang: str | None = None) -> str:
    """What the person agrees to: the list's text, else the default in ``lang``.

    ``lang`` (default: the list's language) picks the default's language; a list's own text
    is shown whatever the page's language, since it is the officer's wording.
    """
    if the_list.consent_text:
        return the_list.consent_text
    chosen = supported(lang) or supported(list_language(the_list, config)) or "en"
    return DEFAULT_CONSENT[chosen].format(newsletter=config.newsletter.name)
