"""The signup form another website embeds: ``bulletin form LIST`` prints it.

Plain HTML that works without JavaScript and posts to ``POST /subscribe/<list>`` under
``newsletter.base_url``; the answer is our own page. The words are the hosted form's, in the
list's language (or the one asked for), and the consent text is the one the hosted form
shows, so a consent given on either is the same consent.
"""

from __future__ import annotations

from bulletin import urls
from bulletin.errors import BulletinError
from bulletin.signup.consent import consent_text, list_language, supported
from bulletin.store.subscribers import MailingList
from bulletin.web.pages import render_page
from bulletin.workspace import Workspace


def form_snippet(workspace: Workspace, the_list: MailingList, lang: str | None = None) -> str:
    """The embeddable form of a public list; a BulletinError for a private one."""
    if not the_list.public:
        raise BulletinError(
            f"List {the_list.slug!r} is private, so it has no signup form.",
            hint=f"Make it public first: `bulletin lists edit {the_list.slug} --public`.",
        )
    config = workspace.config
    if lang is not None and supported(lang) is None:
        raise BulletinError(f"There is no signup form in language {lang!r}.", hint="Use ro or en.")
    chosen = supported(lang) or supported(list_language(the_list, config)) or "en"
    return render_page(
        "embed.html",
        chosen,
        newsletter=config.newsletter.name,
        action=urls.subscribe_url(config.newsletter.base_url, the_list.slug),
        consent_text=consent_text(the_list, config, chosen),
    )
