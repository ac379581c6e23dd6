"""Is the workspace ready to mail real people? The findings ``check`` warns about and
``send`` refuses on.

Four things make a send embarrassing or broken although every message renders:

* placeholders left from ``bulletin init`` ("My Newsletter", newsletter@example.org,
  "1 Example Street"...): the list of them is :func:`bulletin.scaffold.placeholders`, read
  from the scaffold's own template, each finding at ``bulletin.toml:LINE``;
* a base_url readers cannot use: plain http on a public host (no one-click unsubscribe at
  the big mailbox providers, and links that can be tampered with), or a loopback address
  when the mail leaves this machine;
* an issue the archive never publishes (``archive.exclude`` lists it, as ``bulletin init``
  does for the sample issue) while its mail links the view-online page;
* an issue dated in the future: the archive publishes it from its date or from its send,
  whichever comes first, so a test message or a preview points at a "view online" page
  that answers 404, and the date printed in the mail is not the day it arrives.

``bulletin check`` reports each as a warning (``--strict`` fails on them). A send through a
relay that is not on loopback refuses on any of them; to the local sink (``bulletin
sink``, a loopback relay) the same send goes ahead, which keeps the demo and the tests
working in a workspace fresh from ``init``. Test sends (``send --test``) only warn: they go
to the officer, who is the one to fix what they show.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from urllib.parse import urlsplit

from bulletin.errors import Location, Problem, ProblemsError
from bulletin.workspace import CONFIG_NAME, Workspace


class NotReady(ProblemsError):
    """The workspace or the issue is not ready to be mailed to real people."""


def relay_is_local(workspace: Workspace) -> bool:
    """True when smtp.url names a loopback host (the local sink): mail stays on this machine."""
    from bulletin.dispatch.smtp import is_loopback

    return is_loopback(urlsplit(workspace.config.smtp.url).hostname or "")


def _config_lines(workspace: Workspace) -> dict[tuple[str, ...], int]:
    from bulletin.workspace import key_lines

    try:
        text = (workspace.root / CONFIG_NAME).read_text(encoding="utf-8")
    except OSError:
        return {}
    return key_lines(text)


def _quoted(value: str) -> str:
    # Double quotes as in the TOML file (repr would show Python's single quotes).
    return '"' + value + '"'


def placeholder_problems(workspace: Workspace) -> list[Problem]:
    """Every setting still holding the value ``bulletin init`` wrote as a placeholder."""
    from bulletin.scaffold import placeholders

    lines = _config_lines(workspace)
    config = workspace.config
    found = []
    for (section, key), value in placeholders().items():
        current = getattr(getattr(config, section), key, None)
        if current != value:
            continue
        found.append(
            Problem(
                f"{section}.{key} is still {_quoted(value)}, the placeholder from "
                "`bulletin init`; readers would see it. Set your own value.",
                Location(CONFIG_NAME, lines.get((section, key))),
                "warning",
                "preflight.placeholder",
            )
        )
    return found


def base_url_problems(workspace: Workspace) -> list[Problem]:
    """base_url on plain http at a public host, or on loopback when mail leaves the machine."""
    from bulletin.dispatch.smtp import is_loopback

    base = workspace.config.newsletter.base_url
    host = urlsplit(base).hostname or ""
    where = Location(CONFIG_NAME, _config_lines(workspace).get(("newsletter", "base_url")))
    if is_loopback(host):
        if relay_is_local(workspace):
            return []  # the local demo: links and mail both stay on this machine
        return [
            Problem(
                f"newsletter.base_url is {base}: readers cannot open unsubscribe or "
                "view-online links on this machine's loopback address. Set it to the public "
                "https address of `bulletin serve` before sending through a real relay.",
                where,
                "warning",
                "preflight.base-url",
            )
        ]
    if not base.startswith("https://"):
        return [
            Problem(
                f"newsletter.base_url is {base}: mail providers only offer one-click "
                "unsubscribe for https links. Serve it behind HTTPS (README, Deploying) and "
                "write https:// here.",
                where,
                "warning",
                "preflight.base-url",
            )
        ]
    return []


def future_date_problem(
    date: dt.date, where: Location, today: Callable[[], dt.date] = dt.date.today
) -> list[Problem]:
    """An issue dated after today: its view-online page does not exist yet."""
    now = today()
    if date <= now:
        return []
    return [
        Problem(
            f"The issue is dated {date.isoformat()}, after today ({now.isoformat()}): its "
            "view-online page is not published until it is sent or that day comes, and the "
            "mail shows a date that has not come. Set date: to the day you send it.",
            where,
            "warning",
            "preflight.future-date",
        )
    ]


def unpublished_problem(workspace: Workspace, slug: str, links_page: bool) -> list[Problem]:
    """An issue the archive never publishes although its mail links its view-online page."""
    from bulletin.web.archive import why_not_published

    reason = why_not_published(slug, workspace.config.archive.excluded)
    if not links_page or reason is None:
        return []
    line = _config_lines(workspace).get(("archive", "exclude"))
    where = Location(CONFIG_NAME, line) if line and "exclude" in reason else Location(CONFIG_NAME)
    return [
        Problem(
            f"Issue {slug} is not published in the archive ({reason}), but its mail links "
            "its view-online page: every reader who clicks it gets 404. Remove it from "
            "archive.exclude, or the view-online link from the template.",
            where,
            "warning",
            "preflight.unpublished",
        )
    ]


def workspace_problems(workspace: Workspace) -> list[Problem]:
    """The findings about bulletin.toml (placeholders, base_url), for check and send."""
    return placeholder_problems(workspace) + base_url_problems(workspace)


def refuse_unless_ready(workspace: Workspace, problems: list[Problem], slug: str) -> None:
    """Raise :class:`NotReady` on ``problems`` when the relay is not on loopback."""
    found = [p for p in problems if p.code.startswith("preflight.")]
    if not found or relay_is_local(workspace):
        return
    relay = urlsplit(workspace.config.smtp.url).hostname
    raise NotReady(
        [p.as_error() for p in found],
        summary=f"Not sending {slug} through {relay}: the workspace or the issue is not "
        "ready for real readers; nothing was sent.",
        hint="Fix these (`bulletin check` lists them too), or send to the local capture "
        "(`bulletin sink`) to try things out.",
    )
