"""Templates and wording of the public pages (unsubscribe and archive), in Romanian and English.

The pages are few and short, so their words live here as a small catalogue keyed by message
name rather than in gettext files. A page is in the subscriber's language when we know it,
else the newsletter's (``newsletter.language``), else English.

Everything a template prints is escaped (Jinja2 autoescape): catalogue strings hold no HTML,
and the values formatted into them (list names, addresses) come from the database or config.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from importlib import resources
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

from bulletin.render.i18n import base_language

DEFAULT_LANGUAGE = "en"

STRINGS: dict[str, dict[str, str]] = {
    "en": {
        "unsubscribe.title": "Unsubscribe",
        "unsubscribe.question_list": "Unsubscribe from {list}?",
        "unsubscribe.question_all": "Unsubscribe from {newsletter}?",
        "unsubscribe.address": "Address: {address}",
        "unsubscribe.explain_list": "You will no longer receive the messages of {list}. "
        "Nothing changes until you press the button.",
        "unsubscribe.explain_all": "You will no longer receive any message from "
        "{newsletter}. Nothing changes until you press the button.",
        "unsubscribe.all_option": "Also unsubscribe from every other list of {newsletter}",
        "unsubscribe.button": "Unsubscribe",
        "unsubscribe.all_button": "Unsubscribe from all lists",
        "unsubscribe.already_list": "This address is already unsubscribed from {list}.",
        "unsubscribe.already_all": "This address is already unsubscribed from all lists "
        "of {newsletter}.",
        "done.title": "Unsubscribed",
        "done.list": "Done: {address} is unsubscribed from {list}.",
        "done.all": "Done: {address} is unsubscribed from all lists of {newsletter}.",
        "done.already_list": "{address} was already unsubscribed from {list}; nothing changed.",
        "done.already_all": "{address} was already unsubscribed from all lists of "
        "{newsletter}; nothing changed.",
        "done.note": "No further messages will be sent to you. A message that was already "
        "on its way may still arrive.",
        "done.contact": "Unsubscribed by mistake? Write to {contact}.",
        "invalid.title": "This link is not valid",
        "invalid.text": "This unsubscribe link is not valid. Check that the whole address "
        "was copied from the email, or use the unsubscribe link at the end of a more recent "
        "email.",
        "notfound.title": "Page not found",
        "notfound.text": "There is no page at this address.",
        "method.title": "Method not allowed",
        "method.text": "This address answers GET and POST requests only.",
        "ratelimited.title": "Too many requests",
        "ratelimited.text": "Too many requests came from your address. Please wait a minute "
        "and try again.",
        "toolarge.title": "Request too large",
        "toolarge.text": "The request is larger than this page accepts.",
        "busy.title": "Please try again shortly",
        "busy.text": "The service is busy right now and nothing was changed. Please try "
        "again in a minute.",
        "error.title": "Something went wrong",
        "error.text": "The request could not be handled and nothing was changed. Please try "
        "again later.",
        "archive.title": "Archive",
        "archive.intro": "The issues of {newsletter}, newest first.",
        "archive.empty": "No issues have been published yet.",
        "archive.number": "No. {number}",
        "archive.unsubscribe_title": "Unsubscribing",
        "archive.unsubscribe_text": "Every email carries a personal unsubscribe link at its "
        "end. The copies in this archive hold no personal data, so their unsubscribe link "
        "leads here: to unsubscribe, use the link in an email you received.",
        "archive.contact": "Or write to {contact}.",
        "archive.recipients": "the subscribers of {newsletter}",
    },
    "ro": {
        "unsubscribe.title": "Dezabonare",
        "unsubscribe.question_list": "Vă dezabonați de la {list}?",
        "unsubscribe.question_all": "Vă dezabonați de la {newsletter}?",
        "unsubscribe.address": "Adresa: {address}",
        "unsubscribe.explain_list": "Nu veți mai primi mesajele listei {list}. Nimic nu se "
        "schimbă până nu apăsați butonul.",
        "unsubscribe.explain_all": "Nu veți mai primi niciun mesaj de la {newsletter}. Nimic "
        "nu se schimbă până nu apăsați butonul.",
        "unsubscribe.all_option": "Dezabonare și de la toate celelalte liste {newsletter}",
        "unsubscribe.button": "Dezabonare",
        "unsubscribe.all_button": "Dezabonare de la toate listele",
        "unsubscribe.already_list": "Această adresă este deja dezabonată de la {list}.",
        "unsubscribe.already_all": "Această adresă este deja dezabonată de la toate listele "
        "{newsletter}.",
        "done.title": "Dezabonare confirmată",
        "done.list": "Gata: adresa {address} a fost dezabonată de la {list}.",
        "done.all": "Gata: adresa {address} a fost dezabonată de la toate listele {newsletter}.",
        "done.already_list": "Adresa {address} era deja dezabonată de la {list}; nu s-a "
        "schimbat nimic.",
        "done.already_all": "Adresa {address} era deja dezabonată de la toate listele "
        "{newsletter}; nu s-a schimbat nimic.",
        "done.note": "Nu vă vom mai trimite mesaje. Un mesaj aflat deja pe drum poate totuși "
        "să mai sosească.",
        "done.contact": "V-ați dezabonat din greșeală? Scrieți-ne la {contact}.",
        "invalid.title": "Acest link nu este valid",
        "invalid.text": "Acest link de dezabonare nu este valid. Verificați că ați copiat "
        "adresa întreagă din e-mail sau folosiți linkul de dezabonare de la sfârșitul unui "
        "mesaj mai recent.",
        "notfound.title": "Pagina nu există",
        "notfound.text": "Nu există nicio pagină la această adresă.",
        "method.title": "Metodă nepermisă",
        "method.text": "Această adresă acceptă doar cereri GET și POST.",
        "ratelimited.title": "Prea multe cereri",
        "ratelimited.text": "De la adresa dumneavoastră au venit prea multe cereri. Așteptați "
        "un minut și încercați din nou.",
        "toolarge.title": "Cerere prea mare",
        "toolarge.text": "Cererea depășește dimensiunea pe care o acceptă această pagină.",
        "busy.title": "Încercați din nou în curând",
        "busy.text": "Serviciul este ocupat acum și nu s-a schimbat nimic. Încercați din nou "
        "peste un minut.",
        "error.title": "A apărut o eroare",
        "error.text": "Cererea nu a putut fi tratată și nu s-a schimbat nimic. Încercați din "
        "nou mai târziu.",
        "archive.title": "Arhivă",
        "archive.intro": "Numerele {newsletter}, de la cel mai recent.",
        "archive.empty": "Niciun număr nu a fost publicat încă.",
        "archive.number": "Nr. {number}",
        "archive.unsubscribe_title": "Dezabonare",
        "archive.unsubscribe_text": "Fiecare e-mail conține la sfârșit un link personal de "
        "dezabonare. Copiile din această arhivă nu conțin date personale, de aceea linkul lor "
        "de dezabonare duce aici: pentru dezabonare folosiți linkul dintr-un e-mail primit.",
        "archive.contact": "Sau scrieți-ne la {contact}.",
        "archive.recipients": "abonații {newsletter}",
    },
}
"""Message name -> text per language; ``{name}`` fields are filled by :func:`words`."""

STYLESHEET = "public.css"


def page_language(*candidates: str | None) -> str:
    """The first candidate language we have words for (``ro-RO`` counts as ``ro``)."""
    for lang in candidates:
        if lang and base_language(lang) in STRINGS:
            return base_language(lang)
    return DEFAULT_LANGUAGE


class Words:
    """The catalogue in one language: ``words("done.list", list="Știri")`` in templates."""

    def __init__(self, lang: str) -> None:
        self.lang = page_language(lang)
        self._table: Mapping[str, str] = STRINGS[self.lang]

    def __call__(self, key: str, **fields: Any) -> str:
        # A missing key is a bug in this module, not a user error: let it raise.
        text = self._table[key]
        return text.format(**fields) if fields else text


@functools.cache
def environment() -> Environment:
    """The Jinja2 environment of the page templates (``templates/public/`` in this package)."""
    return Environment(
        loader=PackageLoader("bulletin.web", "templates"),
        autoescape=select_autoescape(default=True, default_for_string=True),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def render_page(template: str, lang: str, **context: Any) -> str:
    """Render ``templates/public/<template>`` in ``lang`` with ``t`` (the words) available."""
    words = Words(lang)
    return (
        environment().get_template(f"public/{template}").render(lang=words.lang, t=words, **context)
    )


@functools.cache
def stylesheet() -> bytes:
    """The pages' stylesheet (``static/public.css`` in this package)."""
    return resources.files("bulletin.web").joinpath("static", STYLESHEET).read_bytes()


def mask_email(email: str) -> str:
    """``ana.popescu@example.org`` -> ``a***@example.org``: enough to recognise, not to copy.

    The page is reached through a link that may have been forwarded, so it does not show
    the whole address to whoever holds the link.
    """
    local, at, domain = email.rpartition("@")
    if not at:
        return email[:1] + "***"
    return f"{local[:1]}***@{domain}"
