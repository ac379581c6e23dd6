"""Per-recipient slots: compile once, fill cheaply.

Templates render once per issue. Wherever a per-recipient value belongs (the subscriber's
name, the unsubscribe link...) Jinja2 emits a *placeholder*: an ASCII token made only of
characters that survive MJML, premailer/lxml (which percent-escapes unsafe characters in
``href``) and quoted-printable unchanged. After the whole pipeline has run, the output is
split at the placeholders into static chunks, so personalising a message is a join of
strings with escaped values -- no Jinja2, MJML or CSS inlining per recipient.
"""

from __future__ import annotations

import html
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Literal
from urllib.parse import quote

PREFIX = "BULLETINSLOT"
_TOKEN_RE = re.compile(PREFIX + r"([0-9]+)X")

FIELDS = (
    "email",
    "name",
    "first_name",
    "unsubscribe_url",
    "view_online_url",
    "preferences_url",
)
"""Per-recipient values every message has. Subscriber attributes are ``attr.<key>``."""

Escape = Literal["html", "text"]

_URL_LOOKBACK = 2048
"""How far before a placeholder to look for the link address it may sit in."""

_URL_TEXT = re.compile(r"""[^"'<>\s]+""")
"""What a link address is made of, up to a placeholder inside it."""

_URL_ATTRIBUTE = re.compile(r"""\b(?:href|src)\s*=\s*"\Z""", re.IGNORECASE)
"""The start of an attribute holding a link address."""

_URL_SCHEMES = ("http://", "https://", "mailto:")


def _inside_url(rendered: str, start: int, escape: Escape) -> bool:
    """True when the placeholder at ``start`` sits inside a link address, after its start:
    in an ``href``/``src`` attribute (HTML) or in a written-out URL (text). Found with a few
    backward searches rather than a regular expression tried at every position before it."""
    lo = max(0, start - _URL_LOOKBACK)
    if escape == "html":
        quote_at = rendered.rfind('"', lo, start)
        if quote_at < 0 or _URL_TEXT.fullmatch(rendered, quote_at + 1, start) is None:
            return False
        return _URL_ATTRIBUTE.search(rendered, max(0, quote_at - 16), quote_at + 1) is not None
    word = 1 + max(rendered.rfind(c, lo, start) for c in ' \n\t<>"')
    if word == start or _URL_TEXT.fullmatch(rendered, word, start) is None:
        return False
    return rendered[word : word + 8].lower().startswith(_URL_SCHEMES)


@dataclass(frozen=True)
class SlotSpec:
    """What a placeholder stands for: a recipient field and the text used when it is empty.

    ``in_url``: the placeholder sits inside a link address after its start
    (``https://example.org/form?e={{ email }}``), so its value is percent-encoded there: a
    ``+``, ``&`` or space in a value must not change the address.
    """

    name: str
    fallback: str = ""
    in_url: bool = False


@dataclass
class SlotRegistry:
    """Collects the placeholders one render emits; tokens are indexes into ``specs``."""

    specs: list[SlotSpec] = field(default_factory=list)
    _index: dict[SlotSpec, int] = field(default_factory=dict)

    def token(self, name: str, fallback: str = "") -> str:
        if name not in FIELDS and not name.startswith("attr."):
            raise KeyError(name)
        spec = SlotSpec(name, fallback)
        idx = self._index.get(spec)
        if idx is None:
            idx = len(self.specs)
            self.specs.append(spec)
            self._index[spec] = idx
        return f"{PREFIX}{idx}X"


class SubscriberProxy:
    """What templates see as ``subscriber``: every field renders as a placeholder.

    ``{{ subscriber.name }}`` or ``{{ subscriber.get('name', 'reader') }}`` (with a fallback
    for recipients without a name) or ``{{ subscriber.attr('city') }}``. Because the value is
    only known per recipient, it can be printed but not tested in ``{% if %}``.
    """

    def __init__(self, registry: SlotRegistry) -> None:
        self._registry = registry

    def __getattr__(self, name: str) -> str:
        if name.startswith("_"):
            raise AttributeError(name)
        try:
            return self._registry.token(name)
        except KeyError:
            raise AttributeError(
                f"subscriber has no field {name!r} (fields: {', '.join(FIELDS)}; "
                "attributes: subscriber.attr('key'))"
            ) from None

    def get(self, name: str, fallback: str = "") -> str:
        return self._registry.token(name, fallback)

    def attr(self, key: str, fallback: str = "") -> str:
        return self._registry.token(f"attr.{key}", fallback)

    def __bool__(self) -> bool:
        raise TypeError("subscriber values are per recipient; they cannot be tested in {% if %}")


@dataclass(frozen=True)
class CompiledTemplate:
    """Rendered output split at placeholders: ``chunks[0] slot[0] chunks[1] ... chunks[-1]``."""

    chunks: tuple[str, ...]
    slots: tuple[SlotSpec, ...]
    escape: Escape

    @classmethod
    def compile(cls, rendered: str, registry: SlotRegistry, escape: Escape) -> CompiledTemplate:
        chunks: list[str] = []
        slots: list[SlotSpec] = []
        pos = 0
        for m in _TOKEN_RE.finditer(rendered):
            chunks.append(rendered[pos : m.start()])
            spec = registry.specs[int(m.group(1))]
            if _inside_url(rendered, m.start(), escape):
                spec = replace(spec, in_url=True)
            slots.append(spec)
            pos = m.end()
        chunks.append(rendered[pos:])
        return cls(tuple(chunks), tuple(slots), escape)

    @property
    def slot_names(self) -> frozenset[str]:
        return frozenset(s.name for s in self.slots)

    def fill(self, values: Mapping[str, str]) -> str:
        """The output for one recipient. Values are HTML-escaped for ``html`` templates."""
        chunks = self.chunks
        out = [chunks[0]]
        esc = self.escape == "html"
        for i, spec in enumerate(self.slots, 1):
            v = values.get(spec.name) or spec.fallback
            if spec.in_url:
                v = quote(v, safe="@")
            out.append(html.escape(v, quote=True) if esc else v)
            out.append(chunks[i])
        return "".join(out)
