"""The confirmation and welcome mails: workspace templates, localised, sent through the relay.

Templates live in the workspace's ``templates/mail/`` (``bulletin init`` copies them), one
pair per kind and language: ``confirm.ro.txt.j2`` (its first line is ``Subject: ...``) and
``confirm.ro.html.j2``. A language without its own pair uses English; a workspace made
before these templates existed uses the bundled ones. Values are escaped in the HTML part
(Jinja2 autoescape) and left as they are in the text part.

Mail goes out at once through the configured relay with the send engine's transport
(:class:`~bulletin.dispatch.smtp.SmtpTransport`), one connection per message: sign-ups are
few, and a long-lived connection would only time out between them. A failure is logged and
not retried (the person may sign up again; the 24-hour limit counts only mails handed over).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from jinja2 import (
    ChoiceLoader,
    FileSystemLoader,
    StrictUndefined,
    TemplateError,
    TemplateNotFound,
)
from jinja2.sandbox import SandboxedEnvironment

from bulletin import resources
from bulletin.dispatch.smtp import SmtpTransport
from bulletin.dispatch.transport import ConnectFailed, Delivery, Envelope
from bulletin.errors import BulletinError
from bulletin.mail.notice import Notice, build_notice
from bulletin.signup.consent import supported
from bulletin.workspace import Workspace

log = logging.getLogger(__name__)

Kind = Literal["confirm", "welcome"]

_SUBJECT = "Subject:"


class NoticeTemplateError(BulletinError):
    """A mail template under templates/mail/ cannot be rendered."""


@dataclass(frozen=True)
class RenderedNotice:
    """A notice's subject and bodies, in one language."""

    subject: str
    text: str
    html: str
    language: str


def _bundled_mail_dir() -> Path | None:
    try:
        folder = resources.bundled("templates/mail")
    except FileNotFoundError:  # pragma: no cover - a broken installation
        return None
    return Path(str(folder))


@functools.cache
def _environment(templates_dir: Path) -> SandboxedEnvironment:
    loaders = [FileSystemLoader(templates_dir / "mail")]
    bundled = _bundled_mail_dir()
    if bundled is not None:
        loaders.append(FileSystemLoader(bundled))
    # Sandboxed: the templates are the officer's, but the values come from strangers' forms.
    return SandboxedEnvironment(
        loader=ChoiceLoader(loaders),
        autoescape=lambda name: bool(name and name.endswith(".html.j2")),
        undefined=StrictUndefined,
        keep_trailing_newline=True,
    )


def render_notice(
    workspace: Workspace, kind: Kind, lang: str, values: Mapping[str, Any]
) -> RenderedNotice:
    """Render ``templates/mail/<kind>.<lang>.{txt,html}.j2`` (English when ``lang`` has none)."""
    env = _environment(workspace.templates_dir)
    chosen = supported(lang) or "en"
    for candidate in dict.fromkeys((chosen, "en")):
        name = f"{kind}.{candidate}"
        try:
            text = env.get_template(f"{name}.txt.j2").render(values)
            html = env.get_template(f"{name}.html.j2").render(values)
        except TemplateNotFound:
            continue
        except TemplateError as exc:
            where = getattr(exc, "filename", None) or f"templates/mail/{name}"
            line = getattr(exc, "lineno", None)
            at = f"{workspace.relpath(Path(where))}:{line}" if line else where
            raise NoticeTemplateError(
                f"{at}: {exc}", hint="Fix the template; see the bundled one for the values."
            ) from None
        first, _, rest = text.lstrip("\n").partition("\n")
        if not first.startswith(_SUBJECT):
            raise NoticeTemplateError(
                f"templates/mail/{name}.txt.j2:1: the first line must be 'Subject: ...'.",
                hint="Put the subject on the first line, then a blank line, then the text.",
            )
        return RenderedNotice(first[len(_SUBJECT) :].strip(), rest.lstrip("\n"), html, candidate)
    raise NoticeTemplateError(
        f"No templates/mail/{kind}.en.txt.j2 and .html.j2 in the workspace or bundled.",
        hint="Copy them from a new workspace (`bulletin init DIR`).",
    )


def compose(
    workspace: Workspace,
    kind: Kind,
    *,
    lang: str,
    to_email: str,
    to_name: str,
    values: Mapping[str, Any],
) -> Notice:
    """A notice ready for the relay: rendered in ``lang`` with the newsletter's values."""
    config = workspace.config
    news = config.newsletter
    everything = {
        "newsletter": news.name,
        "organisation": news.organisation,
        "postal_address": news.postal_address,
        "contact": config.sender.reply_to or "",
        "email": to_email,
        "name": to_name,
        **values,
    }
    rendered = render_notice(workspace, kind, lang, everything)
    return build_notice(
        config,
        to_email=to_email,
        to_name=to_name,
        subject=rendered.subject,
        text=rendered.text,
        html=rendered.html,
    )


def transport_for(workspace: Workspace) -> SmtpTransport:
    """The relay of ``[smtp]``, as the send engine opens it (the password never shown)."""
    return SmtpTransport(workspace.config.smtp, password=workspace.smtp_password())


def deliver(transport: SmtpTransport, notice: Notice, what: str) -> Delivery:
    """Hand one notice to the relay; logs the outcome (never the link inside it)."""
    envelope = Envelope(
        mail_from=notice.mail_from,
        rcpt_to=notice.rcpt_to,
        data=notice.data,
        message_id=notice.message_id,
        smtputf8=notice.smtputf8,
    )
    try:
        connection = transport.connect()
    except ConnectFailed as exc:
        log.error("%s not sent: the relay cannot be reached: %s", what, exc.reply)
        return Delivery("deferred", exc.code, exc.reply)
    except BulletinError as exc:  # a setup the relay refuses (TLS, login): say what it is
        log.error("%s not sent: %s %s", what, exc.message, exc.hint or "")
        return Delivery("failed", None, exc.message)
    try:
        result = connection.send(envelope)
    finally:
        connection.close()
    if result.outcome == "sent":
        log.info("%s sent (%s)", what, notice.message_id)
    else:
        log.error("%s not sent: %s %s", what, result.code or "", result.reply)
    return result
