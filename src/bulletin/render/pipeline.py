"""Render an issue once: Jinja2 -> MJML -> HTML -> inlined CSS, plus the plain-text version.

Per-recipient values never reach this pipeline. Templates see ``subscriber`` (a
:class:`~bulletin.render.slots.SubscriberProxy`) and ``unsubscribe_url``/``view_online_url``
as placeholder tokens; the finished HTML and text are split at the tokens into
:class:`~bulletin.render.slots.CompiledTemplate` s, and personalising a message is
``rendered.html.fill(values)``: a string join, with HTML escaping for the HTML part.

Where the MJML came from: every template's output is bracketed by markers while Jinja runs
(see :mod:`bulletin.render.sourcemap`); they are removed before MRML sees the MJML, and
``RenderedIssue.mjml_sources`` maps each stretch of MJML lines to the template file that
wrote it, so MJML errors and lint findings point at a template.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import jinja2

from bulletin.content import merge
from bulletin.content.model import LoadedIssue
from bulletin.errors import Location, Problem, TemplateError
from bulletin.render import compiler, sourcemap, templating
from bulletin.render import i18n as i18n_
from bulletin.render.slots import CompiledTemplate, SlotRegistry, SubscriberProxy
from bulletin.render.text import SEPARATOR, render_text
from bulletin.render.types import RenderedIssue, SourceSpan
from bulletin.workspace import Workspace

TEMPLATE_VARIABLES = (
    "issue",
    "newsletter",
    "sender",
    "from_name",
    "sections",
    "subscriber",
    "unsubscribe_url",
    "view_online_url",
    "preferences_url",
    "lang",
)
"""Names every layout can use (plus the filters markdown, date, month and ``_()``)."""


def render_issue(workspace: Workspace, loaded: LoadedIssue) -> RenderedIssue:
    """Compile an issue once into HTML and text with per-recipient slots.

    Raises :class:`~bulletin.errors.TemplateError` (located at a template file and line)
    when a template is missing, invalid or uses an undefined variable, or when the MJML it
    produces is invalid. Markdown problems that do not stop rendering (a relative link) are
    returned as warnings in ``problems``.
    """
    config = workspace.config
    registry = SlotRegistry()
    unsubscribe = registry.token("unsubscribe_url")
    view_online = registry.token("view_online_url")
    preferences = registry.token("preferences_url")
    # Merge fields in content become slots like the templates' own, so the HTML, the text
    # and the subject are personalised alike (the loader has refused any other "{{").
    issue = merge.substitute_all(loaded.issue, lambda f: registry.token(f.name, f.fallback))
    problems: list[Problem] = []
    report = _reporter(loaded, problems)
    templates_dir = workspace.templates_dir
    summary = f"Cannot render issue {loaded.slug}:"

    def template_source(name: str) -> str | None:
        path = templates_dir / name
        return path.read_text(encoding="utf-8") if path.is_file() else None

    source_of = functools.lru_cache(maxsize=None)(template_source)
    files = templating.TemplateFiles(templates_dir, workspace.relpath)
    env = templating.environment(templates_dir)
    layout = issue.template + templating.LAYOUT_SUFFIX

    context: dict[str, Any] = {
        "issue": issue,
        "newsletter": config.newsletter,
        "sender": config.sender,
        "from_name": issue.from_name or config.sender.from_name,
        "sections": issue.sections,
        "subscriber": SubscriberProxy(registry),
        "unsubscribe_url": unsubscribe,
        "view_online_url": view_online,
        "preferences_url": preferences,
        "lang": issue.language,
        templating.STATE_KEY: templating.RenderState(
            issue.language, report, config.newsletter.timezone
        ),
    }
    marked = _run_jinja(env, layout, context, files, summary, workspace)
    mjml, spans = sourcemap.strip_markers(marked, source_of)
    try:
        html = compiler.compile_mjml(mjml)
    except compiler.MjmlFailure as failure:
        raise _mjml_error(failure, mjml, spans, files, source_of, summary) from None
    html = compiler.inline_css(html)

    if loaded.text_override is not None:
        text = _render_override(workspace, loaded, context, unsubscribe, view_online, summary)
    else:
        text = render_text(
            issue,
            config,
            unsubscribe_url=unsubscribe,
            view_online_url=view_online,
            preferences_url=preferences,
            recipient_email=registry.token("email"),
            report=report,
        )

    return RenderedIssue(
        loaded=loaded,
        subject=merge.substitute(loaded.issue.subject, _as_written),
        preheader=merge.substitute(loaded.issue.preheader, _as_written),
        language=issue.language,
        from_name=issue.from_name or config.sender.from_name,
        html=CompiledTemplate.compile(html, registry, "html"),
        text=CompiledTemplate.compile(text, registry, "text"),
        mjml=mjml,
        mjml_sources=tuple(
            replace(s, template=workspace.relpath(templates_dir / s.template)) for s in spans
        ),
        problems=tuple(problems),
        subject_template=CompiledTemplate.compile(issue.subject, registry, "text"),
        preheader_template=CompiledTemplate.compile(issue.preheader, registry, "text"),
    )


def _as_written(field: merge.Field) -> str:
    """A merge field shown as the author wrote it (send plans, the archive's list)."""
    fallback = f' | default("{field.fallback}")' if field.fallback else ""
    return f"{{{{ {field.name}{fallback} }}}}"


def _reporter(loaded: LoadedIssue, problems: list[Problem]) -> Callable[[str, Any], None]:
    """A callback for filters: record a warning at the section's line in issue.yaml."""
    seen: set[tuple[str, int | None]] = set()
    sections = loaded.issue.sections

    def report(message: str, section: Any) -> None:
        line = None
        for idx, candidate in enumerate(sections):
            if candidate is section and idx < len(loaded.section_lines):
                line = loaded.section_lines[idx]
                break
        if (message, line) in seen:
            return  # the HTML and the text version report the same Markdown twice
        seen.add((message, line))
        problems.append(
            Problem(message, Location(loaded.path, line), severity="warning", code="markdown")
        )

    return report


def _run_jinja(
    env: jinja2.Environment,
    layout: str,
    context: dict[str, Any],
    files: templating.TemplateFiles,
    summary: str,
    workspace: Workspace,
) -> str:
    """Render the layout to (marked) MJML, turning template faults into TemplateError."""
    try:
        template = env.get_template(layout)
        return template.render(context)
    except jinja2.TemplateNotFound as exc:
        if exc.name == layout:
            raise _missing_layout(workspace, layout, summary) from None
        templating.raise_template_error(exc, files, summary=summary)
    except jinja2.UndefinedError as exc:
        templating.raise_template_error(
            exc,
            files,
            summary=summary,
            hint="Templates can use: " + ", ".join(TEMPLATE_VARIABLES) + ".",
        )
    except jinja2.TemplateError as exc:
        templating.raise_template_error(exc, files, summary=summary)
    except Exception as exc:
        if templating.is_template_fault(exc, files):
            templating.raise_template_error(exc, files, summary=summary)
        raise


def _missing_layout(workspace: Workspace, layout: str, summary: str) -> TemplateError:
    expected = workspace.relpath(workspace.templates_dir / layout)
    available = templating.layouts(workspace.templates_dir)
    hint = (
        "Available layouts: " + ", ".join(available) + " (set `template:` in issue.yaml)."
        if available
        else "templates/ has no layouts; copy the default templates with `bulletin init`."
    )
    problem = Problem(
        f"layout {layout[: -len(templating.LAYOUT_SUFFIX)]!r} not found: expected {expected}",
        Location(expected),
        code="template.missing",
    )
    return TemplateError([problem], summary=summary, hint=hint)


def _mjml_error(
    failure: compiler.MjmlFailure,
    mjml: str,
    spans: tuple[SourceSpan, ...],
    files: templating.TemplateFiles,
    source_of: Callable[[str], str | None],
    summary: str,
) -> TemplateError:
    """An MRML failure located at the template line that most likely produced it."""
    hint = (
        "MJML must be well-formed XML: close every mj-* tag, quote attribute values, and "
        "write &lt; for a literal '<'."
    )
    if failure.line is None:
        problem = Problem(f"invalid MJML: {failure.message}", code="mjml.parse")
        return TemplateError([problem], summary=summary, hint=hint)
    lines = mjml.split("\n")
    excerpt = lines[failure.line - 1].strip() if failure.line <= len(lines) else ""
    if len(excerpt) > 100:
        excerpt = excerpt[:97] + "..."
    where_mjml = f"generated MJML line {failure.line}, column {failure.column}"
    origin = sourcemap.locate(spans, mjml, failure.line, source_of)
    if origin is None:
        location = Location(sourcemap.GENERATED_MJML, failure.line, failure.column)
        message = f"invalid MJML: {failure.message}: {excerpt}"
    else:
        location = Location(files.relpath(files.templates_dir / origin.template), origin.line)
        approx = "" if origin.exact else "; template line approximate"
        message = f"invalid MJML: {failure.message} ({where_mjml}{approx}): {excerpt}"
    return TemplateError(
        [Problem(message, location, code="mjml.parse")], summary=summary, hint=hint
    )


_text_env = jinja2.Environment(
    undefined=jinja2.StrictUndefined, autoescape=False, keep_trailing_newline=True
)
_text_env.filters["date"] = templating.date_filter
_text_env.filters["month"] = templating.month_filter
_text_env.globals["_"] = templating.translate


def _render_override(
    workspace: Workspace,
    loaded: LoadedIssue,
    context: dict[str, Any],
    unsubscribe: str,
    view_online: str,
    summary: str,
) -> str:
    """The issue's hand-written text version, rendered with the same variables.

    It may use ``{{ unsubscribe_url }}`` and ``{{ subscriber.name }}`` like a template; if
    it does not print the unsubscribe address, the standard footer is appended (every
    message must carry a working unsubscribe link).
    """
    assert loaded.text_override is not None
    name = loaded.issue.text_override or "text override"
    path = (workspace.root / loaded.path).parent / name
    files = templating.TemplateFiles(
        workspace.templates_dir, workspace.relpath, extra=frozenset({str(path)})
    )
    try:
        code = _text_env.compile(loaded.text_override, name=name, filename=str(path))
        template = _text_env.template_class.from_code(
            _text_env, code, _text_env.make_globals(None), None
        )
        text = template.render(context)
    except jinja2.TemplateError as exc:
        templating.raise_template_error(exc, files, summary=summary)
    except Exception as exc:
        if templating.is_template_fault(exc, files):
            templating.raise_template_error(exc, files, summary=summary)
        raise
    text = text.rstrip() + "\n"
    if unsubscribe not in text:
        lang = loaded.issue.language
        text += (
            f"\n{SEPARATOR}\n{i18n_.translate(lang, 'View online')}:\n<{view_online}>\n\n"
            f"{i18n_.translate(lang, 'Unsubscribe')}:\n<{unsubscribe}>\n"
        )
    return text
