"""One recipient's message, exactly as the send builds it.

:class:`Composer` turns a recipient into an :class:`~bulletin.dispatch.transport.Envelope`:
the issue's message template (:mod:`bulletin.mail.compose`) filled with the recipient's
values (:mod:`bulletin.render.values`: name, first name, attributes) and their signed
links (an unsubscribe token naming them and the list, a separate bounce token for VERP, a
preferences token naming them when the templates link the preferences page).
The send engine's workers share one; ``bulletin render --eml`` and ``send --test`` use the
same, so what the officer looks at is what subscribers get.
"""

from __future__ import annotations

from collections.abc import Mapping

from bulletin import urls
from bulletin.dispatch.transport import Envelope
from bulletin.mail.compose import MessageTemplate, Recipient, build_message_template
from bulletin.render.types import RenderedIssue
from bulletin.render.values import reader_values
from bulletin.tokens import TokenSigner
from bulletin.workspace import Workspace


class Composer:
    """Builds each recipient's envelope from the issue's message template (thread-safe)."""

    def __init__(
        self,
        template: MessageTemplate,
        signer: TokenSigner | None,
        *,
        base_url: str,
        view_online_url: str,
        slot_names: frozenset[str],
    ) -> None:
        self.template = template
        self.signer = signer
        self.base_url = base_url
        self.view_online_url = view_online_url
        self.slot_names = slot_names
        self._unsubscribe_url = urls.UNSUBSCRIBE.url_builder(base_url)
        self._preferences_url = (
            urls.PREFERENCES.url_builder(base_url) if "preferences_url" in slot_names else None
        )

    def values(
        self,
        subscriber_id: int,
        list_id: int | None,
        email: str,
        name: str,
        attributes: Mapping[str, object],
    ) -> dict[str, str]:
        """The slot values of one recipient, with links signed for them and ``list_id``."""
        signer = self.signer
        if signer is None:
            raise RuntimeError("this composer was made without signing keys")
        token = signer.unsubscribe_token(subscriber_id, list_id)
        preferences = self._preferences_url
        values = reader_values(
            email,
            name,
            attributes,
            unsubscribe_url=self._unsubscribe_url(token),
            view_online_url=self.view_online_url,
            preferences_url=preferences(signer.preferences_token(subscriber_id))
            if preferences is not None
            else "",
            needed=self.slot_names,
        )
        values["unsubscribe_token"] = token
        values["bounce_token"] = signer.bounce_token(subscriber_id, list_id)
        return values

    def recipient(
        self,
        subscriber_id: int,
        list_id: int | None,
        email: str,
        name: str,
        attributes: Mapping[str, object],
    ) -> Recipient:
        """A stored subscriber as the recipient of this issue through ``list_id``."""
        return Recipient(email, name, self.values(subscriber_id, list_id, email, name, attributes))

    def envelope(self, recipient: Recipient, message_id: str, *, wire: bool = False) -> Envelope:
        """The message for one recipient; :class:`InvalidRecipient` if it cannot be built.

        ``wire``: the data as SMTP DATA carries it (dot-stuffed, ``Envelope.stuffed``),
        which the send engine asks for: cheaper than stuffing the whole message later.
        """
        mail_from, rcpt_to, data, smtputf8 = self.template.envelope(
            recipient, message_id=message_id, wire=wire
        )
        return Envelope(mail_from, rcpt_to, data, message_id, smtputf8, stuffed=wire)

    def message_id_for(self, email: str) -> str:
        """The Message-ID this issue always has for ``email`` (a resend keeps it)."""
        return self.template.message_id_for(email)


def composer_for(
    workspace: Workspace,
    rendered: RenderedIssue,
    *,
    subject_prefix: str = "",
    sign_links: bool = True,
) -> Composer:
    """The composer of a rendered issue: the workspace's sender, DKIM key and token keys.

    ``sign_links=False`` (sample proofs) leaves the keys alone: nothing is signed, and a
    workspace that never sent gets no key file just because an issue was rendered.
    """
    from bulletin.mail.dkim import load_dkim_signer

    base_url = workspace.config.newsletter.base_url
    template = build_message_template(
        workspace.config,
        rendered,
        subject_prefix=subject_prefix,
        sign=load_dkim_signer(workspace),
    )
    return Composer(
        template,
        TokenSigner.from_workspace(workspace) if sign_links else None,
        base_url=base_url,
        view_online_url=urls.view_online_url(base_url, rendered.loaded.slug),
        slot_names=rendered.html.slot_names | rendered.text.slot_names,
    )
