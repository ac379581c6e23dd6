"""The public URL scheme: every address that mail and pages link to, in one place.

``bulletin serve`` answers under ``newsletter.base_url``; a reverse proxy maps that address
to it, maybe under a path prefix. Each public page is a :class:`Page`: a path pattern in
Starlette's route syntax and a builder for the absolute URL. :mod:`bulletin.web.public`
declares its routes from these patterns, and everything that writes a link (the mail
composer, the archive, the pages) builds it here, so a path cannot be spelt two ways.

A path, once mailed, must keep working for as long as the mail may be read: change a
pattern only by keeping the old one as an alias.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import quote

_PARAM = re.compile(r"\{(\w+)\}")


@dataclass(frozen=True)
class Page:
    """One public page: its name, its path pattern (``/u/{token}``) and its URL builder."""

    name: str
    pattern: str

    @property
    def params(self) -> tuple[str, ...]:
        """The names of the pattern's ``{parameters}``, in order."""
        return tuple(_PARAM.findall(self.pattern))

    def path(self, **params: str) -> str:
        """The path with each parameter filled in (percent-encoded as one path segment)."""
        missing = set(self.params) - set(params)
        if missing:
            raise KeyError(f"{self.name}: missing {', '.join(sorted(missing))}")
        return _PARAM.sub(lambda m: quote(params[m.group(1)], safe=""), self.pattern)

    def url(self, base_url: str, **params: str) -> str:
        """The absolute URL under ``base_url`` (``newsletter.base_url``)."""
        return base_url.rstrip("/") + self.path(**params)

    def url_builder(self, base_url: str) -> Callable[[str], str]:
        """:meth:`url` of a one-parameter page as a function of that parameter.

        The constant parts are joined once: the send builds two links per recipient.
        """
        (name,) = self.params
        before, _, after = self.pattern.partition("{" + name + "}")
        prefix = base_url.rstrip("/") + before

        def build(value: str) -> str:
            return prefix + quote(value, safe="") + after

        return build


UNSUBSCRIBE = Page("unsubscribe", "/u/{token}")
"""GET: a confirmation page that changes nothing; POST: unsubscribes (RFC 8058 one-click)."""

ARCHIVE = Page("archive", "/archive/")
"""The published issues, newest first."""

ARCHIVE_ISSUE = Page("archive-issue", "/archive/{slug}")
"""One issue as a web page: the "view online" link of every email."""

IMAGE = Page("image", "/archive/images/{image}")
"""An issue's local image, prepared for mail (content-hashed name, cached for a year)."""

STATIC = Page("static", "/static/{name}")
"""The stylesheet of the public pages."""

HEALTH = Page("health", "/healthz")
"""``ok`` while the database answers (for the reverse proxy)."""

SUBSCRIBE = Page("subscribe", "/subscribe/{list}")
"""GET: a public list's signup form; POST: a sign-up (from that form or another website's)."""

CONFIRM = Page("confirm", "/confirm/{token}")
"""GET: a page that confirms a sign-up by posting itself (a bare GET changes nothing);
POST: confirms it."""

PREFERENCES = Page("preferences", "/preferences/{token}")
"""GET: a subscriber's public lists, name and language; POST: changes them."""

HOOK = Page("hook", "/hooks/{provider}")
"""POST: bounce and complaint events from a relay provider (``ses``, ``postmark``,
``sendgrid``, ``mailgun``); the address given to the provider."""

PAGES = (
    UNSUBSCRIBE,
    ARCHIVE,
    ARCHIVE_ISSUE,
    IMAGE,
    STATIC,
    HEALTH,
    SUBSCRIBE,
    CONFIRM,
    PREFERENCES,
    HOOK,
)
"""Every public page (the web app declares a route for each)."""

PREVIEW_TOKEN = "preview"
"""Stands in for a signed token in previews and proofs for addresses not in the store: the
link shows the "not valid" page instead of unsubscribing anybody."""

ARCHIVE_UNSUBSCRIBE_ANCHOR = "unsubscribe"
"""Where an archive copy's unsubscribe link points: the archive page's paragraph saying that
every email carries its own link (an archive copy carries no token)."""


def unsubscribe_url(base_url: str, token: str) -> str:
    """The unsubscribe page of a signed token."""
    return UNSUBSCRIBE.url(base_url, token=token)


def subscribe_url(base_url: str, list_slug: str) -> str:
    """A public list's signup form (and where embedded forms post)."""
    return SUBSCRIBE.url(base_url, list=list_slug)


def confirm_url(base_url: str, token: str) -> str:
    """The confirmation link of a sign-up (mailed to the address that signed up)."""
    return CONFIRM.url(base_url, token=token)


def preferences_url(base_url: str, token: str) -> str:
    """A subscriber's preferences page (the footer link of every message)."""
    return PREFERENCES.url(base_url, token=token)


def preview_preferences_url(base_url: str) -> str:
    """The preferences link of previews and sample renders (shows the "not valid" page)."""
    return PREFERENCES.url(base_url, token=PREVIEW_TOKEN)


def preview_unsubscribe_url(base_url: str) -> str:
    """The unsubscribe link of previews and sample renders (unsubscribes nobody)."""
    return UNSUBSCRIBE.url(base_url, token=PREVIEW_TOKEN)


def view_online_url(base_url: str, slug: str) -> str:
    """The archive page of an issue (the same for every recipient)."""
    return ARCHIVE_ISSUE.url(base_url, slug=slug)


def image_url(base_url: str, name: str) -> str:
    """A prepared local image, as mail and archive pages show it."""
    return IMAGE.url(base_url, image=name)


def archive_url(base_url: str) -> str:
    """The archive's list of issues."""
    return ARCHIVE.url(base_url)


def archive_unsubscribe_url(base_url: str) -> str:
    """The unsubscribe link of an archive copy (see :data:`ARCHIVE_UNSUBSCRIBE_ANCHOR`)."""
    return f"{archive_url(base_url)}#{ARCHIVE_UNSUBSCRIBE_ANCHOR}"


def hook_url(base_url: str, provider: str) -> str:
    """Where a relay provider posts its events (``/hooks/ses``...)."""
    return HOOK.url(base_url, provider=provider)
