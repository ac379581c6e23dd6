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
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import jinja2

from bulletin import urls
from bulletin.content import merge
from bulletin.content.model import Image, Issue, LoadedIssue
from bulletin.errors import ContentError, Location, Problem, TemplateError
from bulletin.render import compiler, images, sourcemap, templating
from bulletin.render import i18n as i18n_
from bulletin.render.slots import CompiledTemplate, SlotRegistry, SubscriberProxy
from bulletin.render.text import SEPARATOR, render_text
from bulletin.render.types import RenderedIssue, SourceSpan
from bulletin.workspace import CONFIG_NAME, Workspace, key_lines

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
    "logo",
)
"""Names every layout can use (plus the filters markdown, date, month and ``_()``)."""


STAGES = ("images", "jinja", "markers", "mjml", "inline", "text", "slots")
"""The pipeline's stages in order, as :func:`render_issue` times them (``timings``)."""


class _Laps:
    """Records how long each stage took into ``timings`` (seconds), when one is given."""

    def __init__(self, timings: dict[str, float] | None) -> None:
        self.timings = timings
        self.last = time.perf_counter() if timings is not None else 0.0

    def __call__(self, stage: str) -> None:
        if self.timings is None:
            return
        now = time.perf_counter()
        self.timings[stage] = self.timings.get(stage, 0.0) + now - self.last
        self.last = now


def render_issue(
    workspace: Workspace, loaded: LoadedIssue, *, timings: dict[str, float] | None = None
) -> RenderedIssue:
    """Compile an issue once into HTML and text with per-recipient slots.

    Local images are prepared (:mod:`bulletin.render.images`) and shown at their published
    address under ``newsletter.base_url`` (mail and the archive; the preview rewrites it to
    show them from disk). An image that cannot be used raises
    :class:`~bulletin.errors.ContentError` at the line of issue.yaml that names it.

    Raises :class:`~bulletin.errors.TemplateError` (located at a template file and line)
    when a template is missing, invalid or uses an undefined variable, or when the MJML it
    produces is invalid. Markdown problems that do not stop rendering (a relative link) are
    returned as warnings in ``problems``.

    ``timings``, when given, receives the seconds each of :data:`STAGES` took (added to what
    it holds, so a caller can sum several renders): the benchmark's breakdown.
    """
    lap = _Laps(timings)
    config = workspace.config
    base_url = config.newsletter.base_url

    def image_url(name: str) -> str:
        return urls.image_url(base_url, name)

    problems: list[Problem] = []
    issue, shown = _prepare_images(workspace, loaded, image_url, problems)
    logo = _prepare_logo(workspace, image_url, problems, shown)
    lap("images")
    registry = SlotRegistry()
    unsubscribe = registry.token("unsubscribe_url")
    view_online = registry.token("view_online_url")
    preferences = registry.token("preferences_url")
    # Merge fields in content become slots like the templates' own, so the HTML, the text
    # and the subject are personalised alike (the loader has refused any other "{{").
    issue = merge.substitute_all(issue, lambda f: registry.token(f.name, f.fallback))
    report = _reporter(loaded, issue.sections, problems)
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
        "logo": logo,
        templating.STATE_KEY: templating.RenderState(
            issue.language, report, config.newsletter.timezone
        ),
    }
    marked = _run_jinja(env, layout, context, files, summary, workspace)
    lap("jinja")
    mjml, spans = sourcemap.strip_markers(marked, source_of)
    lap("markers")
    try:
        html = compiler.compile_mjml(mjml)
    except compiler.MjmlFailure as failure:
        raise _mjml_error(failure, mjml, spans, files, source_of, summary) from None
    lap("mjml")
    html = compiler.inline_css(html)
    html = _fluid_heights(html, [image_url(i.name) for i in shown])
    lap("inline")

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
    lap("text")

    rendered = RenderedIssue(
        loaded=loaded,
        subject=merge.substitute(loaded.issue.subject, _as_written),
        preheader=merge.substitute(loaded.issue.preheader, _as_written),
        language=issue.language,
        from_name=issue.from_name or config.sender.from_name,
        html=CompiledTemplate.compile(html, registry, "html"),
        text=CompiledTemplate.compile(text, registry, "text"),
        mjml=mjml,
        mjml_sources=_named_spans(spans, workspace, templates_dir),
        problems=tuple(problems),
        subject_template=CompiledTemplate.compile(issue.subject, registry, "text"),
        preheader_template=CompiledTemplate.compile(issue.preheader, registry, "text"),
        images=tuple(shown),
    )
    lap("slots")
    return rendered


def _named_spans(
    spans: tuple[SourceSpan, ...], workspace: Workspace, templates_dir: Path
) -> tuple[SourceSpan, ...]:
    """Spans with their template named as :meth:`Workspace.relpath` names it.

    Resolving a path costs a system call per folder of it, for every template on every
    render: the templates folder is resolved once, and a template's own path is only
    resolved when a link in it would change where it points.
    """
    base = workspace.relpath(templates_dir)
    real_base = templates_dir.resolve()
    names: dict[str, str] = {}
    out = []
    for span in spans:
        name = names.get(span.template)
        if name is None:
            if _has_link(real_base, span.template):
                name = workspace.relpath(templates_dir / span.template)
            elif Path(base).is_absolute():
                name = str(templates_dir / span.template)  # as relpath gives it: unresolved
            else:
                name = str(Path(base) / span.template)
            names[span.template] = name
        out.append(replace(span, template=name))
    return tuple(out)


def _has_link(base: Path, name: str) -> bool:
    """Whether a folder or file of template ``name`` under ``base`` is a symbolic link."""
    path = base
    for part in Path(name).parts:
        path = path / part
        if part in ("..", ".") or path.is_symlink():
            return True
    return False


def _as_written(field: merge.Field) -> str:
    """A merge field shown as the author wrote it (send plans, the archive's list)."""
    fallback = f' | default("{field.fallback}")' if field.fallback else ""
    return f"{{{{ {field.name}{fallback} }}}}"


def _fluid_heights(html: str, srcs: list[str]) -> str:
    """Let prepared images keep their proportions when a phone narrows them.

    MJML writes a given height both as the ``height`` attribute (which Outlook needs to
    reserve the space) and as ``height:NNNpx`` in the style next to ``width:100%``, which would
    squash the picture on a narrow screen; the style's height becomes ``auto``.
    """
    for src in srcs:
        pattern = re.compile(r'<img\b[^>]*\bsrc="' + re.escape(src) + r'"[^>]*>')
        html = pattern.sub(lambda m: re.sub(r"height:\s*\d+px", "height:auto", m.group(0)), html)
    return html


@dataclass(frozen=True)
class ShownImage:
    """What templates see as an image once local files are prepared: ``src`` is the
    published address, ``width``/``height`` the 1x display size (None for web images)."""

    src: str
    alt: str
    width: int | None
    height: int | None
    url: Any


def _prepare_logo(
    workspace: Workspace,
    image_url: Callable[[str], str],
    problems: list[Problem],
    shown: list[images.MailImage],
) -> ShownImage | None:
    """The header logo (``newsletter.logo``, else ``logo_url``) as templates show it."""
    newsletter = workspace.config.newsletter
    alt = newsletter.logo_alt or newsletter.name
    src = newsletter.logo or newsletter.logo_url
    if not src:
        return None
    if newsletter.logo is None or not images.is_local(src):
        return ShownImage(src, alt, images.LOGO_WIDTH, None, None)
    config = workspace.root / CONFIG_NAME
    line = key_lines(config.read_text(encoding="utf-8")).get(("newsletter", "logo"))
    where = Location(CONFIG_NAME, line)
    try:
        mail_image, warnings = images.prepare(
            workspace.root, workspace.root, src, width=images.LOGO_WIDTH, where=where, field="logo"
        )
    except images.ImageProblem as exc:
        raise ContentError(
            [exc.problem],
            summary="Cannot render: newsletter.logo cannot be used.",
            hint="Set newsletter.logo to an image file in the workspace (relative to "
            "bulletin.toml) or to an https URL.",
        ) from None
    problems.extend(warnings)
    shown.append(mail_image)
    return ShownImage(image_url(mail_image.name), alt, mail_image.width, mail_image.height, None)


def _prepare_images(
    workspace: Workspace,
    loaded: LoadedIssue,
    image_url: Callable[[str], str],
    problems: list[Problem],
) -> tuple[Issue, list[images.MailImage]]:
    """The issue with each local image replaced by its prepared, published version.

    Every unusable image is reported before raising, so one run lists them all.
    """
    issue = loaded.issue
    issue_dir = (workspace.root / loaded.path).parent
    errors: list[Problem] = []
    prepared: dict[str, images.MailImage] = {}
    sections = list(issue.sections)
    for idx, section in enumerate(sections):
        image = getattr(section, "image", None)
        if not isinstance(image, Image) or not images.is_local(image.src):
            continue
        line = loaded.section_lines[idx] if idx < len(loaded.section_lines) else None
        where = Location(loaded.path, line)
        width = image.width or images.CONTENT_WIDTH
        try:
            mail_image, warnings = images.prepare(
                workspace.root, issue_dir, image.src, width=width, where=where
            )
        except images.ImageProblem as exc:
            errors.append(exc.problem)
            continue
        problems.extend(warnings)
        prepared[mail_image.name] = mail_image
        shown = ShownImage(
            image_url(mail_image.name),
            image.alt,
            mail_image.width,
            mail_image.height,
            image.url,
        )
        sections[idx] = section.model_copy(update={"image": shown})
    if errors:
        raise ContentError(
            errors,
            summary=f"Cannot render issue {loaded.slug}: images cannot be used.",
            hint="Put the image files in the issue folder (paths are relative to it) and make "
            "sure each is a JPEG, PNG, GIF or WebP picture.",
        )
    if not prepared:
        return issue, []
    return issue.model_copy(update={"sections": sections}), list(prepared.values())


def _reporter(
    loaded: LoadedIssue, sections: Sequence[Any], problems: list[Problem]
) -> Callable[[str, Any], None]:
    """A callback for filters: record a warning at the section's line in issue.yaml.

    ``sections`` are the ones the templates see (with local images prepared), in file order.
    """
    seen: set[tuple[str, int | None]] = set()

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
