"""The Jinja2 environment over a workspace's ``templates/`` and its error reporting.

Templates produce MJML. Variables are strict: a misspelt name is an error at the template's
file and line, never an empty string in a sent newsletter. Values are autoescaped (MJML is
XML: a ``<`` or ``&`` in an issue title must not break it); filters that produce markup
(``markdown``) return :class:`markupsafe.Markup`.
"""

from __future__ import annotations

import datetime as dt
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from threading import Lock
from typing import Any, NoReturn

import jinja2
from jinja2 import pass_context
from jinja2.runtime import Context
from markupsafe import Markup

from bulletin.errors import Location, Problem, TemplateError
from bulletin.render import i18n, sourcemap
from bulletin.render import markdown as md

LAYOUT_SUFFIX = ".mjml.j2"
SLOTS_MODULE = str(Path(__file__).with_name("slots.py"))


class MarkedLoader(jinja2.FileSystemLoader):
    """A file loader that wraps each template in source markers (see :mod:`sourcemap`)."""

    def get_source(
        self, environment: jinja2.Environment, template: str
    ) -> tuple[str, str, Callable[[], bool]]:
        source, filename, uptodate = super().get_source(environment, template)
        return sourcemap.wrap_source(template, source), filename, uptodate


@dataclass
class RenderState:
    """Per-render information the filters need: the language and where to report."""

    lang: str
    report: Callable[[str, Any], None] = field(default=lambda message, section: None)
    zone: str | None = None
    """The workspace's time zone (``newsletter.timezone``), which event times are in."""


STATE_KEY = "_bulletin"


def _state(ctx: Context) -> RenderState:
    state = ctx.get(STATE_KEY)
    if not isinstance(state, RenderState):
        # A template rendered outside render_issue (e.g. a test or a custom tool).
        return RenderState(lang=str(ctx.get("lang", i18n.DEFAULT_LANGUAGE)))
    return state


@pass_context
def markdown_filter(ctx: Context, text: str | None, shift: int = 2, inline: bool = False) -> Markup:
    """``{{ section.body | markdown }}``: CommonMark to email-safe HTML.

    ``shift`` demotes headings (2: ``#`` becomes ``<h3>``, below the section's ``<h2>``);
    ``inline=True`` drops the ``<p>`` around a single paragraph (list items).
    """
    if text is None:
        return Markup("")
    state = _state(ctx)
    section = ctx.get("section")
    return md.to_html(
        str(text), shift=shift, inline=inline, warn=lambda msg: state.report(msg, section)
    )


@pass_context
def date_filter(ctx: Context, value: dt.date | None, end: dt.date | None = None) -> str:
    """``{{ issue.date | date }}`` or ``{{ event.start | date(event.end) }}`` in ``lang``."""
    if value is None:
        return ""
    if not isinstance(value, dt.date):
        raise jinja2.TemplateRuntimeError(f"date filter needs a date, got {value!r}")
    state = _state(ctx)
    return i18n.format_date_range(value, end, state.lang, state.zone)


@pass_context
def month_filter(ctx: Context, value: dt.date) -> str:
    """``{{ event.start | month }}``: the abbreviated month for a date block (``oct.``)."""
    return i18n.short_month(value, _state(ctx).lang)


@pass_context
def translate(ctx: Context, msgid: str) -> str:
    """``{{ _("View online") }}``: a template string in the issue's language."""
    return i18n.translate(_state(ctx).lang, msgid)


_environments: dict[str, jinja2.Environment] = {}
_env_lock = Lock()


def environment(templates_dir: Path) -> jinja2.Environment:
    """The (cached) environment for a templates folder; templates reload when edited."""
    key = str(templates_dir.resolve())
    with _env_lock:
        env = _environments.get(key)
        if env is None:
            env = jinja2.Environment(
                loader=MarkedLoader(key),
                undefined=jinja2.StrictUndefined,
                autoescape=True,
                trim_blocks=True,
                lstrip_blocks=True,
                keep_trailing_newline=True,
                auto_reload=True,
            )
            env.filters["markdown"] = markdown_filter
            env.filters["date"] = date_filter
            env.filters["month"] = month_filter
            env.globals["_"] = translate
            # {% if item.url is not linked_in(item.text) %}: no second link to one address.
            env.tests["linked_in"] = lambda url, text: md.links_to(text, str(url))
            _environments[key] = env
        return env


def layouts(templates_dir: Path) -> list[str]:
    """Layout names available in ``templates_dir`` (``default`` for default.mjml.j2)."""
    return sorted(p.name[: -len(LAYOUT_SUFFIX)] for p in templates_dir.glob("*" + LAYOUT_SUFFIX))


@dataclass(frozen=True)
class TemplateFiles:
    """How to name template files in messages: relative to the workspace."""

    templates_dir: Path
    relpath: Callable[[Path], str]
    extra: frozenset[str] = frozenset()
    """Other files rendered as templates (a hand-written text version)."""

    def name(self, filename: str | None) -> str:
        if not filename:
            return "<template>"
        return self.relpath(Path(filename))

    def is_template(self, filename: str) -> bool:
        if filename in self.extra:
            return True
        try:
            Path(filename).resolve().relative_to(self.templates_dir.resolve())
        except (ValueError, OSError):
            return False
        return True


def _template_frame(exc: BaseException, files: TemplateFiles) -> tuple[str, int] | None:
    """The innermost traceback frame in a template file (Jinja rewrites frames to them)."""
    found: tuple[str, int] | None = None
    for frame in traceback.extract_tb(exc.__traceback__):
        if files.is_template(frame.filename) and frame.lineno is not None:
            found = (frame.filename, frame.lineno)
    return found


def is_template_fault(exc: BaseException, files: TemplateFiles) -> bool:
    """Whether a non-Jinja exception was raised by template code, not by our Python.

    True when the innermost frame is a template, or is the subscriber proxy called directly
    from a template (``{% if subscriber.name %}`` raises TypeError there on purpose).
    """
    frames = traceback.extract_tb(exc.__traceback__)
    if not frames:
        return False
    last = frames[-1]
    if files.is_template(last.filename):
        return True
    return (
        len(frames) >= 2
        and last.filename == SLOTS_MODULE
        and files.is_template(frames[-2].filename)
    )


def raise_template_error(
    exc: BaseException, files: TemplateFiles, *, summary: str, hint: str | None = None
) -> NoReturn:
    """Turn a Jinja (or template-caused) exception into a located :class:`TemplateError`."""
    where: Location | None
    if isinstance(exc, jinja2.TemplateSyntaxError):
        where = Location(files.name(exc.filename), exc.lineno)
        problem = Problem(f"syntax error: {exc.message}", where, code="template.syntax")
        raise TemplateError([problem], summary=summary, hint=hint) from None
    frame = _template_frame(exc, files)
    where = Location(files.name(frame[0]), frame[1]) if frame else None
    if isinstance(exc, jinja2.TemplateNotFound):
        missing = exc.name if isinstance(exc.name, str) else str(exc.name)
        expected = files.relpath(files.templates_dir / missing)
        problem = Problem(
            f"template {missing!r} not found (expected {expected})",
            where,
            code="template.missing",
        )
    elif isinstance(exc, jinja2.UndefinedError):
        problem = Problem(f"undefined: {exc.message}", where, code="template.undefined")
    else:
        message = getattr(exc, "message", None) or str(exc) or type(exc).__name__
        problem = Problem(str(message), where, code="template.runtime")
    raise TemplateError([problem], summary=summary, hint=hint) from None
