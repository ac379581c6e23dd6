"""Per-recipient values: what fills a compiled issue's slots for one reader.

One builder for every place that fills an issue: the send (with signed links), ``bulletin
render`` (a sample reader or a stored subscriber), the preview, ``bulletin check`` (which
measures one real message) and the archive (a copy for nobody). The rules live here once:

* ``first_name`` is the subscriber's ``first_name`` attribute when it is set, else the first
  word of their name (so "Ana Maria" set by an import is kept whole);
* an attribute reaches templates as ``attr.<key>``, as text (``None`` becomes empty);
* the unsubscribe, preferences and view-online links come from :mod:`bulletin.urls`.

Which links a reader gets is the caller's decision (a signed token for a real recipient, a
link that unsubscribes nobody for a sample), the rest is not.
"""

from __future__ import annotations

from collections.abc import Mapping, Set

from bulletin import urls
from bulletin.workspace import Workspace

SAMPLE_EMAIL = "cititor@example.org"
SAMPLE_NAME = "Ana Popescu"
"""The made-up reader of previews and ``bulletin render`` without ``--subscriber``."""

SIGNED_TOKEN_CHARS = 88
"""Room for the longest signed token, so a measured sample is as long as a real message."""


def first_name(name: str, attributes: Mapping[str, object] | None = None) -> str:
    """The ``first_name`` attribute when set, else the first word of ``name``."""
    given = (attributes or {}).get("first_name")
    if given is not None and str(given).strip():
        return str(given).strip()
    words = name.split()
    return words[0] if words else ""


def reader_values(
    email: str,
    name: str = "",
    attributes: Mapping[str, object] | None = None,
    *,
    unsubscribe_url: str,
    view_online_url: str,
    preferences_url: str = "",
    needed: Set[str] | None = None,
) -> dict[str, str]:
    """The slot values of one reader.

    ``needed`` (the slot names of the compiled issue) limits the work to what the templates
    use; the send passes it, since it builds hundreds of thousands of these.
    """
    values = {
        "email": email,
        "name": name,
        "unsubscribe_url": unsubscribe_url,
        "view_online_url": view_online_url,
        "preferences_url": preferences_url,
    }
    attributes = attributes or {}
    if needed is None:
        values["first_name"] = first_name(name, attributes)
        for key, value in attributes.items():
            values[f"attr.{key}"] = "" if value is None else str(value)
        return values
    for slot in needed:
        if slot == "first_name":
            values["first_name"] = first_name(name, attributes)
        elif slot.startswith("attr."):
            value = attributes.get(slot[5:])
            values[slot] = "" if value is None else str(value)
    return values


def sample_values(
    workspace: Workspace,
    slug: str,
    *,
    email: str = SAMPLE_EMAIL,
    name: str = SAMPLE_NAME,
    attributes: Mapping[str, object] | None = None,
    measured: bool = False,
) -> dict[str, str]:
    """A sample reader's values: previews, ``bulletin render``, ``bulletin check``.

    The unsubscribe link unsubscribes nobody. ``measured``: the link is as long as a signed
    one, so that the size ``bulletin check`` reports is the size subscribers get.
    """
    base_url = workspace.config.newsletter.base_url
    token = "t" * SIGNED_TOKEN_CHARS if measured else urls.PREVIEW_TOKEN
    return reader_values(
        email,
        name,
        attributes,
        unsubscribe_url=urls.unsubscribe_url(base_url, token),
        view_online_url=urls.view_online_url(base_url, slug),
        preferences_url=urls.preferences_url(base_url, token)
        if measured
        else urls.preview_preferences_url(base_url),
    )


def archive_values(workspace: Workspace, slug: str, recipients: str) -> dict[str, str]:
    """An archive copy's values: no address, no name, no token.

    ``recipients`` stands where the footer names the address ("This email was sent to
    {email}."), e.g. "the subscribers of <newsletter>" in the issue's language.
    """
    base_url = workspace.config.newsletter.base_url
    return reader_values(
        recipients,
        "",
        None,
        unsubscribe_url=urls.archive_unsubscribe_url(base_url),
        view_online_url=urls.view_online_url(base_url, slug),
        # A copy for nobody has no preferences either: the paragraph on personal links.
        preferences_url=urls.archive_unsubscribe_url(base_url),
    )
