"""Templates and wording of the public pages, in Romanian and English.

The pages: unsubscribe, signup form, confirmation, preferences, and the archive index.

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
        "embed.comment": "Signup form of {newsletter}, made by `bulletin form`. Keep the field "
        "names; style it as you like.",
        "subscribe.title": "Subscribe to {list}",
        "subscribe.email": "Email address",
        "subscribe.name": "Name (optional)",
        "subscribe.language": "Language",
        "subscribe.honeypot": "Leave this field empty",
        "subscribe.button": "Subscribe",
        "subscribe.fix": "Please check the form: something is missing or not right.",
        "subscribe.bad_email": "This is not an email address we can write to.",
        "subscribe.need_consent": "Please tick the box to agree.",
        "subscribe.double": "We will send you an email with a link to confirm. Nothing is sent "
        "until you confirm.",
        "subscribe.single": "You can unsubscribe at any time with the link at the end of every "
        "message.",
        "subscribed.title": "Thank you",
        "subscribed.double": "Thank you for signing up to {list}. Unless this address is "
        "already subscribed, you will find a message from us in your inbox: open its link to "
        "confirm.",
        "subscribed.single": "Thank you for signing up to {list}. If we need you to confirm, "
        "you will find a message from us in your inbox.",
        "subscribed.note": "No message? Look in the spam folder, or sign up again tomorrow.",
        "confirm.title": "Confirm your subscription",
        "confirm.question": "Confirm your subscription to {list}",
        "confirm.button": "Confirm my subscription",
        "confirm.wait": "If nothing happens, press the button.",
        "confirmed.title": "Subscription confirmed",
        "confirmed.text": "Thank you: {address} is subscribed to {list}.",
        "confirmed.preferences": "Your preferences",
        "confirm_invalid.title": "This link is not valid",
        "confirm_invalid.text": "This confirmation link is not valid or has expired (links work "
        "for 7 days). Sign up again to get a new one.",
        "preferences.title": "Your preferences",
        "preferences.lists": "Lists you receive",
        "preferences.no_lists": "There are no lists to choose from.",
        "preferences.save": "Save",
        "preferences.saved": "Saved.",
        "preferences.leave_all": "Unsubscribe from all lists",
        "preferences.bad_name": "The name is too long; nothing was changed.",
        "preferences.suppressed": "This address receives no messages now. Ticking a list and "
        "saving subscribes it again.",
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
        "embed.comment": "Formularul de abonare {newsletter}, generat de `bulletin form`. "
        "Păstrați numele câmpurilor; stilul este la alegerea dumneavoastră.",
        "subscribe.title": "Abonare la {list}",
        "subscribe.email": "Adresa de e-mail",
        "subscribe.name": "Nume (opțional)",
        "subscribe.language": "Limba",
        "subscribe.honeypot": "Lăsați acest câmp gol",
        "subscribe.button": "Abonare",
        "subscribe.fix": "Verificați formularul: lipsește ceva sau ceva nu este corect.",
        "subscribe.bad_email": "Aceasta nu este o adresă de e-mail la care putem scrie.",
        "subscribe.need_consent": "Bifați căsuța pentru a vă da acordul.",
        "subscribe.double": "Vă vom trimite un e-mail cu un link de confirmare. Nu vă trimitem "
        "nimic până nu confirmați.",
        "subscribe.single": "Vă puteți dezabona oricând folosind linkul de la sfârșitul "
        "fiecărui mesaj.",
        "subscribed.title": "Vă mulțumim",
        "subscribed.double": "Vă mulțumim pentru înscrierea la {list}. Dacă adresa nu este deja "
        "abonată, veți găsi un mesaj de la noi în căsuța de e-mail: deschideți linkul din el "
        "pentru confirmare.",
        "subscribed.single": "Vă mulțumim pentru înscrierea la {list}. Dacă este nevoie să "
        "confirmați, veți găsi un mesaj de la noi în căsuța de e-mail.",
        "subscribed.note": "Niciun mesaj? Căutați în dosarul de spam sau înscrieți-vă din nou "
        "mâine.",
        "confirm.title": "Confirmați abonarea",
        "confirm.question": "Confirmați abonarea la {list}",
        "confirm.button": "Confirm abonarea",
        "confirm.wait": "Dacă nu se întâmplă nimic, apăsați butonul.",
        "confirmed.title": "Abonare confirmată",
        "confirmed.text": "Vă mulțumim: adresa {address} este abonată la {list}.",
        "confirmed.preferences": "Preferințele dumneavoastră",
        "confirm_invalid.title": "Acest link nu este valid",
        "confirm_invalid.text": "Acest link de confirmare nu este valid sau a expirat (linkurile "
        "sunt valabile 7 zile). Înscrieți-vă din nou pentru a primi unul nou.",
        "preferences.title": "Preferințele dumneavoastră",
        "preferences.lists": "Listele pe care le primiți",
        "preferences.no_lists": "Nu există liste din care să alegeți.",
        "preferences.save": "Salvare",
        "preferences.saved": "Salvat.",
        "preferences.leave_all": "Dezabonare de la toate listele",
        "preferences.bad_name": "Numele este prea lung; nu s-a schimbat nimic.",
        "preferences.suppressed": "Această adresă nu primește acum niciun mesaj. Dacă bifați o "
        "listă și salvați, va fi abonată din nou.",
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
        # The templates are package data, fixed while serve runs: no stat() of each file
        # on every page (a cost per one-click answer).
        auto_reload=False,
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
