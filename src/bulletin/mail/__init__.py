"""Mail: compile a rendered issue once into a message template; personalise per recipient.

Pure: no network, no database. Transports deliver the bytes :meth:`MessageTemplate.personalise`
returns; DKIM signing plugs in as a :data:`Signer`.
"""

from bulletin.mail.compose import (
    InvalidRecipient,
    MessageTemplate,
    Recipient,
    Signer,
    build_message_template,
)

__all__ = [
    "InvalidRecipient",
    "MessageTemplate",
    "Recipient",
    "Signer",
    "build_message_template",
]
