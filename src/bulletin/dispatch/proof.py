"""Proofs: what one reader gets, built exactly as the send builds it.

``bulletin render`` writes an issue's HTML and plain-text parts and, with ``--eml``, the
whole message, for a sample reader or for a stored subscriber (``--subscriber``). The
values, the links and the message come from the send's own :class:`Composer`: for a stored
subscriber the .eml file is byte for byte the message the send gives them (same headers,
signed links and Message-ID), except the Date line (and, with DKIM, the signature that
covers it). The list decides the signed unsubscribe link: ``--list``, else the subscriber's
list with the lowest id, which is the one a send to all of their lists goes through.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy.engine import Engine

from bulletin.content.loader import load_issue
from bulletin.dispatch.composer import composer_for
from bulletin.errors import BulletinError
from bulletin.mail.compose import Recipient
from bulletin.render.pipeline import render_issue
from bulletin.render.types import RenderedIssue
from bulletin.render.values import SAMPLE_EMAIL, SAMPLE_NAME, sample_values
from bulletin.store.subscribers import find_subscriber, get_list, subscribed_lists
from bulletin.workspace import Workspace


@dataclass(frozen=True)
class ProofFiles:
    """What :func:`write_proof` wrote, and for whom."""

    rendered: RenderedIssue
    recipient: Recipient
    list_slug: str | None
    """The list whose unsubscribe link the proof carries (None: a sample link)."""
    html_path: Path
    text_path: Path
    html_bytes: int
    text_bytes: int
    eml_path: Path | None = None
    eml_bytes: int = 0
    notes: list[str] = field(default_factory=list)


def _write(path: Path, data: bytes) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    except OSError as exc:
        raise BulletinError(
            f"Cannot write {path}: {exc.strerror}.", hint="Choose another output path."
        ) from None


def write_proof(
    workspace: Workspace,
    issue_dir: Path,
    *,
    output: Path | None = None,
    eml: Path | None = None,
    subscriber: str | None = None,
    list_slug: str | None = None,
    store: Callable[[], Engine] | None = None,
) -> ProofFiles:
    """Render an issue for one reader and write its HTML, text and (``eml``) message.

    Without ``subscriber`` the reader is the made-up sample one, whose unsubscribe link
    unsubscribes nobody. With it, ``store`` opens the subscriber store to look them up; an
    address that is not stored gets the sample's values with its own address.
    """
    rendered = render_issue(workspace, load_issue(workspace, issue_dir))
    slug = rendered.loaded.slug
    composer = composer_for(workspace, rendered, sign_links=subscriber is not None)
    notes: list[str] = []
    used_list: str | None = None
    if subscriber is None:
        values = sample_values(workspace, slug)
        recipient = Recipient(SAMPLE_EMAIL, SAMPLE_NAME, values)
    else:
        if store is None:
            raise ValueError("a subscriber's proof needs the store")
        with store().connect() as conn:
            found = find_subscriber(conn, subscriber)
            chosen = None
            if found is not None:
                if list_slug is not None:
                    chosen = get_list(conn, list_slug)
                else:
                    on = subscribed_lists(conn, found.id)
                    chosen = on[0] if on else None
        if found is None:
            notes.append(
                f"{subscriber} is not in the subscriber store; only the address is filled "
                "(and the unsubscribe link is a sample)."
            )
            values = sample_values(workspace, slug, email=subscriber, name="")
            recipient = Recipient(subscriber, "", values)
        else:
            if chosen is None:
                notes.append(
                    f"{found.email} is on no list; the unsubscribe link is for every list."
                )
            else:
                used_list = chosen.slug
            if found.status != "active":
                notes.append(f"{found.email} is {found.status}: a send would skip them.")
            recipient = composer.recipient(
                found.id,
                chosen.id if chosen is not None else None,
                found.email,
                found.name,
                found.attributes,
            )
    html = rendered.html.fill(recipient.values).encode("utf-8")
    text = rendered.text.fill(recipient.values).encode("utf-8")
    html_path = output or workspace.root / "out" / f"{slug}.html"
    text_path = html_path.with_suffix(".txt")
    _write(html_path, html)
    _write(text_path, text)
    eml_bytes = 0
    if eml is not None:
        message_id = composer.message_id_for(recipient.email)
        data = composer.envelope(recipient, message_id).data
        _write(eml, data)
        eml_bytes = len(data)
    return ProofFiles(
        rendered=rendered,
        recipient=recipient,
        list_slug=used_list,
        html_path=html_path,
        text_path=text_path,
        html_bytes=len(html),
        text_bytes=len(text),
        eml_path=eml,
        eml_bytes=eml_bytes,
        notes=notes,
    )
