"""Content checks run by ``bulletin check``: what a reader or a mail client would trip over.

Each finding is a :class:`~bulletin.errors.Problem` with a stable ``code`` (``check.size``,
``check.img-alt-missing``...) located where the author can fix it: the line of issue.yaml (or
of a Markdown file beside it) when the cause is content, the template otherwise.

:func:`run_check` is the whole command: load, render, lint, check; ``strict`` promotes
warnings to errors.
"""

from __future__ import annotations

import html
import re
import unicodedata
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

from bulletin import preflight
from bulletin.content import merge
from bulletin.content.loader import FILE_MAX_BYTES
from bulletin.content.model import LoadedIssue
from bulletin.errors import ContentError, Location, Problem, Severity, TemplateError
from bulletin.render import sourcemap, templating
from bulletin.render.lint import lint_mjml
from bulletin.render.markup import lint_html
from bulletin.render.slots import PREFIX, CompiledTemplate
from bulletin.render.templating import LAYOUT_SUFFIX
from bulletin.render.types import RenderedIssue
from bulletin.render.values import sample_values
from bulletin.workspace import Workspace

KB = 1024
SIZE_WARNING = 90 * KB
"""Above this the HTML is close to Gmail's clipping limit."""
SIZE_ERROR = 102 * KB
"""Gmail clips messages whose HTML exceeds ~102 KB ("[Message clipped] View entire message")."""
SUBJECT_MAX = 78
"""Longer subjects are cut in most inbox lists (and 78 is RFC 5322's line advice)."""

# Comma-below letters are the correct Romanian ones; cedilla forms come from old fonts and
# keyboard layouts and look wrong (or fail to match in search) on modern systems.
CEDILLA_FIXES = {
    "\u015f": "\u0219",  # ş -> ș
    "\u015e": "\u0218",  # Ş -> Ș
    "\u0163": "\u021b",  # ţ -> ț
    "\u0162": "\u021a",  # Ţ -> Ț
}

_SLOT_TOKEN = re.compile(PREFIX + r"([0-9]+)X")


def _with_tokens(template: CompiledTemplate) -> str:
    """The output with a placeholder where each slot goes (slot values are not content)."""
    out = [template.chunks[0]]
    for i, chunk in enumerate(template.chunks[1:]):
        out.append(f"{PREFIX}{i}X")
        out.append(chunk)
    return "".join(out)


# --- Where things are -------------------------------------------------------------------------


@dataclass
class _Sources:
    """The issue's files as text, to point at the line where a URL or a letter was written."""

    workspace: Workspace
    loaded: LoadedIssue
    rendered: RenderedIssue | None
    files: list[tuple[str, str]] = field(default_factory=list)
    _templates: dict[str, str | None] = field(default_factory=dict)

    @classmethod
    def read(
        cls, workspace: Workspace, loaded: LoadedIssue, rendered: RenderedIssue | None
    ) -> _Sources:
        found = cls(workspace, loaded, rendered)
        yaml_path = workspace.root / loaded.path
        found._add(yaml_path)
        # Markdown and text files beside issue.yaml ({file: name.md}, text_override).
        for path in sorted(yaml_path.parent.iterdir()):
            if path.is_file() and path.suffix.lower() in (".md", ".markdown", ".txt"):
                found._add(path)
        return found

    def _add(self, path: Path) -> None:
        try:
            if path.stat().st_size > FILE_MAX_BYTES:
                return  # too large to be part of a loaded issue: not worth reading
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            return  # the loader already reported unreadable files
        self.files.append((self.workspace.relpath(path), text))

    @property
    def issue_yaml(self) -> str:
        return self.files[0][1] if self.files else ""

    def find(self, needle: str) -> Location | None:
        """First line of the issue's files holding ``needle``."""
        if not needle:
            return None
        for rel, text in self.files:
            pos = text.find(needle)
            if pos >= 0:
                line = text.count("\n", 0, pos) + 1
                return Location(rel, line)
        return None

    def find_url(self, url: str) -> Location | None:
        """Where ``url`` is written: in the issue files, else in the template that emits it."""
        # The HTML holds the URL as Markdown normalised it (percent-encoded, a slash added).
        variants = list(dict.fromkeys([url, html.unescape(url), unquote(url)]))
        variants += [v.rstrip("/") for v in variants if v.endswith("/")]
        for v in variants:
            loc = self.find(v)
            if loc is not None:
                return loc
        return self.in_template(variants)

    def template_text(self, name: str) -> str | None:
        """A template's text from its workspace-relative name (``SourceSpan.template``)."""
        if name not in self._templates:
            try:
                text: str | None = (self.workspace.root / name).read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError):
                text = None
            self._templates[name] = text
        return self._templates[name]

    def in_template(self, needles: Sequence[str]) -> Location | None:
        """The template line that wrote the first of ``needles`` found in the MJML."""
        if self.rendered is None:
            return None
        mjml = self.rendered.mjml
        for needle in needles:
            pos = mjml.find(needle) if needle else -1
            if pos >= 0:
                line = mjml.count("\n", 0, pos) + 1
                return sourcemap.location(
                    self.rendered.mjml_sources, mjml, line, source_of=self.template_text
                )
        return None

    def key_line(self, key: str) -> Location:
        """The line of a top-level ``key:`` in issue.yaml (the file itself if absent)."""
        m = re.search(rf"^{re.escape(key)}\s*:", self.issue_yaml, re.MULTILINE)
        if m is None:
            return Location(self.loaded.path)
        return Location(self.loaded.path, self.issue_yaml.count("\n", 0, m.start()) + 1)

    def section(self, index: int) -> Location:
        lines = self.loaded.section_lines
        return Location(self.loaded.path, lines[index] if index < len(lines) else None)


# --- The rendered HTML ------------------------------------------------------------------------


@dataclass
class _Tag:
    name: str
    attrs: dict[str, str | None]
    text: str = ""
    """A link's text (``<a>`` only)."""


class _Collector(HTMLParser):
    """Collects ``<a>`` and ``<img>`` tags of the final HTML, and each link's text."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[_Tag] = []
        self._open_link: _Tag | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in ("a", "img", "area"):
            self.tags.append(_Tag(tag, dict(attrs)))
        if tag == "a":
            self._open_link = self.tags[-1]

    def handle_endtag(self, tag: str) -> None:
        if tag == "a":
            self._open_link = None

    def handle_data(self, data: str) -> None:
        if self._open_link is not None:
            self._open_link.text += data


def _html_tags(markup: str) -> list[_Tag]:
    collector = _Collector()
    collector.feed(markup)
    collector.close()
    return collector.tags


# --- Individual checks ------------------------------------------------------------------------


def check_size(html_bytes: int, where: Location | None) -> list[Problem]:
    """The HTML of one message against Gmail's clipping limit."""
    kb = html_bytes / KB
    if html_bytes >= SIZE_ERROR:
        return [
            Problem(
                f"the HTML is {kb:.1f} KB: Gmail clips messages over ~102 KB, hiding the end "
                "of the issue and the unsubscribe link; shorten the issue or split it",
                where,
                "error",
                "check.size",
            )
        ]
    if html_bytes >= SIZE_WARNING:
        return [
            Problem(
                f"the HTML is {kb:.1f} KB, close to Gmail's ~102 KB clipping limit",
                where,
                "warning",
                "check.size",
            )
        ]
    return []


def url_problem(url: str) -> tuple[Severity, str] | None:
    """Why a link target is wrong: ``(severity, reason)``, or ``None`` when it is fine."""
    if url != url.strip() or any(ch.isspace() for ch in url):
        return "error", "contains spaces; encode them as %20 or remove them"
    if any(unicodedata.category(ch) == "Cc" for ch in url):
        return "error", "contains control characters"
    try:
        parts = urlsplit(url)
    except ValueError as exc:
        return "error", f"cannot be parsed ({exc})"
    try:
        parts.port  # noqa: B018 - the property raises on a non-numeric or out-of-range port
    except ValueError:
        return "error", f"has an invalid port in {parts.netloc!r}"
    scheme = parts.scheme.lower()
    if not scheme:
        return "error", "is not an absolute URL: mail clients need the full https://... address"
    if scheme in ("mailto", "tel"):
        return None if parts.path else ("error", "has nothing after the scheme")
    if scheme not in ("http", "https"):
        return "error", f"uses the {scheme}: scheme, which mail clients block or cannot open"
    host = parts.hostname or ""
    if not host:
        return "error", "has no host name"
    valid_host = (
        not host.isascii()  # an internationalised name; the client converts it
        or re.fullmatch(
            r"\[[0-9a-f:.]+\]|[0-9a-z](?:[0-9a-z-]*[0-9a-z])?(?:\.[0-9a-z](?:[0-9a-z-]*[0-9a-z])?)*",
            host,
        )
    )
    if not valid_host:
        return "error", f"has an invalid host name {host!r}"
    if "." not in host and host != "localhost" and not host.startswith("["):
        return "error", f"has an incomplete host name {host!r} (no domain)"
    if scheme == "http":
        return "warning", "uses http://, not https://; use https:// if the site supports it"
    return None


def _content_urls(loaded: LoadedIssue) -> Iterator[str]:
    """URL fields of the issue (links in Markdown text reach the HTML and are seen there)."""
    for section in loaded.issue.sections:
        yield from section.urls()


def check_links(
    tags: Sequence[_Tag], loaded: LoadedIssue, sources: _Sources, base_url: str = ""
) -> list[Problem]:
    """Malformed link and image targets (errors) and plain http:// ones (warnings).

    Addresses under ``base_url`` (the workspace's own: published images) are left to the
    pre-flight's base_url rule, which reports the setting once, at its line.
    """
    own = base_url.rstrip("/") + "/" if base_url else None
    urls: dict[str, str] = {}  # url -> what it is ("link" or "image")
    for tag in tags:
        attr = "src" if tag.name == "img" else "href"
        value = tag.attrs.get(attr)
        if value is None:
            continue
        urls.setdefault(value, "image" if tag.name == "img" else "link")
    for url in _content_urls(loaded):
        urls.setdefault(url, "link")
    allowed_http = {h.lower().rstrip(".") for h in loaded.issue.checks.allow_http}
    used_http: set[str] = set()
    problems: list[Problem] = []
    for url, kind in urls.items():
        if _SLOT_TOKEN.search(url) or url.startswith("#"):
            continue  # per-recipient values are checked elsewhere; anchors stay in the message
        if own is not None and url.startswith(own):
            continue
        verdict = url_problem(url)
        if verdict is None:
            continue
        severity, reason = verdict
        if severity == "warning":
            host = (urlsplit(url).hostname or "").rstrip(".")
            if host in allowed_http:
                used_http.add(host)
                continue
        code = "check.link-http" if severity == "warning" else "check.link-malformed"
        shown = url if len(url) <= 90 else url[:87] + "..."
        problems.append(Problem(f"{kind} {shown} {reason}", sources.find_url(url), severity, code))
    # An exception nobody needs any more should not stay to hide a future mistake.
    for host in sorted(allowed_http - used_http):
        problems.append(
            Problem(
                f"checks.allow_http lists {host}, but no http:// link goes there; remove it",
                sources.find(host) or sources.key_line("checks"),
                "warning",
                "check.allow-http-unused",
            )
        )
    return problems


RAW_URL_TEXT_MAX = 50
"""Longer addresses shown as a link's text break mid-word on a phone and tell little."""

_RAW_URL = re.compile(r"(?:https?://|www\.)\S+", re.IGNORECASE)


def check_link_text(tags: Sequence[_Tag], sources: _Sources) -> list[Problem]:
    """Links whose text is a long raw URL: readers are better told where a link leads."""
    problems: list[Problem] = []
    seen: set[str] = set()
    for tag in tags:
        text = " ".join(tag.text.split())
        if tag.name != "a" or text in seen or _SLOT_TOKEN.search(text):
            continue
        if len(text) <= RAW_URL_TEXT_MAX or not _RAW_URL.fullmatch(text):
            continue
        seen.add(text)
        shown = text if len(text) <= 90 else text[:87] + "..."
        problems.append(
            Problem(
                f"link text is the raw address {shown} ({len(text)} characters): it breaks "
                "mid-word on phones and does not say where it leads. Write "
                "[what the page is](URL) instead.",
                # Written as [URL](URL) in Markdown, or a bare URL that Markdown linked.
                sources.find(f"[{text}]")
                or sources.find(text)
                or sources.find_url(tag.attrs.get("href") or text),
                "warning",
                "check.link-raw-url",
            )
        )
    return problems


def check_markup(html_text: str, loaded: LoadedIssue, sources: _Sources) -> list[Problem]:
    """Outlook and hidden-text traps in the final HTML (:mod:`bulletin.render.markup`),
    at the template line that wrote the element when its class names it."""
    layout = Location(
        sources.workspace.relpath(
            sources.workspace.templates_dir / f"{loaded.issue.template}{LAYOUT_SUFFIX}"
        )
    )
    problems = []
    for finding in lint_html(html_text):
        where = sources.in_template([finding.needle]) if "class=" in finding.needle else None
        problems.append(Problem(finding.message, where or layout, "warning", finding.code))
    return problems


def check_images(tags: Sequence[_Tag], loaded: LoadedIssue, sources: _Sources) -> list[Problem]:
    """Images without alt text: missing ``alt`` is an error, an empty one on content a warning.

    ``alt=""`` marks a decorative image, which a template may emit on purpose; an image the
    author put in the issue carries information and needs words for readers who do not see it.
    """
    problems: list[Problem] = []
    seen: set[str] = set()
    for tag in tags:
        if tag.name != "img":
            continue
        src = tag.attrs.get("src") or ""
        alt = tag.attrs.get("alt")
        if src in seen:
            continue
        where = sources.find(src) if src else None
        if alt is None:
            seen.add(src)
            problems.append(
                Problem(
                    f"image {src or '(no src)'} has no alt attribute: screen readers and mail "
                    'clients that block images show nothing; add alt text (alt="" only for '
                    "decoration)",
                    where or sources.in_template([src]),
                    "error",
                    "check.img-alt-missing",
                )
            )
        elif not alt.strip() and where is not None:
            seen.add(src)
            problems.append(
                Problem(
                    f"image {src} has empty alt text: describe what it shows (alt: ...)",
                    where,
                    "warning",
                    "check.img-alt-empty",
                )
            )
    return problems


_TAGS_RE = re.compile(r"<[^>]*>")
_INVISIBLE = re.compile("[\\s\u00a0\u200b\u200c\u200d\u2060\ufeff]+")


def _visible(markdown_text: str | None) -> str:
    """The visible text of a Markdown string once rendered to HTML."""
    if not markdown_text:
        return ""
    from bulletin.render import markdown as md

    rendered = str(md.to_html(markdown_text))
    text = html.unescape(_TAGS_RE.sub(" ", rendered))
    return _INVISIBLE.sub("", text)


def check_empty_sections(loaded: LoadedIssue, sources: _Sources) -> list[Problem]:
    """Sections whose text renders to nothing visible (``&nbsp;``, an empty link...)."""
    problems: list[Problem] = []
    for i, section in enumerate(loaded.issue.sections):
        if not section.shows_text:
            continue  # an image or a divider
        if any(_visible(text) for text in section.texts()):
            continue
        problems.append(
            Problem(
                f"section {i + 1} ({section.type}) renders no visible text; write its content "
                "or remove the section",
                sources.section(i),
                "error",
                "check.empty-section",
            )
        )
    return problems


def check_subject(rendered: RenderedIssue, sources: _Sources) -> list[Problem]:
    problems: list[Problem] = []
    length = len(rendered.subject)
    if length > SUBJECT_MAX:
        problems.append(
            Problem(
                f"the subject has {length} characters: inboxes cut it after about "
                f"{SUBJECT_MAX}; shorten it",
                sources.key_line("subject"),
                "warning",
                "check.subject-length",
            )
        )
    if not rendered.preheader.strip():
        problems.append(
            Problem(
                "no preheader: inboxes show the first text of the email after the subject "
                "instead; add `preheader:` with a one-line summary",
                sources.key_line("preheader"),
                "warning",
                "check.preheader",
            )
        )
    return problems


def check_unsubscribe(workspace: Workspace, rendered: RenderedIssue) -> list[Problem]:
    """The unsubscribe link must be in the HTML (as a link) and in the plain text."""
    layout = workspace.templates_dir / f"{rendered.loaded.issue.template}.mjml.j2"
    layout_loc = Location(workspace.relpath(layout))
    problems: list[Problem] = []
    # In the token version, slot i of the compiled template is the placeholder "...iX".
    slots = rendered.html.slots
    linked = False
    for tag in _html_tags(_with_tokens(rendered.html)):
        m = _SLOT_TOKEN.fullmatch((tag.attrs.get("href") or "").strip())
        if tag.name == "a" and m and slots[int(m.group(1))].name == "unsubscribe_url":
            linked = True
    if not linked:
        problems.append(
            Problem(
                "the HTML has no unsubscribe link: the footer must contain "
                '<a href="{{ subscriber.unsubscribe_url }}">; it is required by law and by '
                "Gmail and Yahoo for bulk mail",
                layout_loc,
                "error",
                "check.unsubscribe",
            )
        )
    if "unsubscribe_url" not in rendered.text.slot_names:
        problems.append(
            Problem(
                "the plain-text version has no unsubscribe link: it must print "
                "{{ subscriber.unsubscribe_url }}",
                _text_template(workspace, rendered) or layout_loc,
                "error",
                "check.unsubscribe",
            )
        )
    return problems


def _text_template(workspace: Workspace, rendered: RenderedIssue) -> Location | None:
    if rendered.loaded.text_override:
        return Location(rendered.loaded.path)
    for name in (f"{rendered.loaded.issue.template}.txt.j2", "default.txt.j2"):
        path = workspace.templates_dir / name
        if path.is_file():
            return Location(workspace.relpath(path))
    return None


_COMBINING_CEDILLA = "\u0327"


def _cedillas(line: str) -> list[tuple[int, str]]:
    """(column, letter) of each cedilla s/t in a line, precomposed or decomposed."""
    found: list[tuple[int, str]] = []
    for col, ch in enumerate(line, 1):
        if ch in CEDILLA_FIXES:
            found.append((col, ch))
        elif ch == _COMBINING_CEDILLA and col > 1 and line[col - 2] in "sStT":
            # "s" + U+0327 looks like ş; report it as the letter it composes to.
            found.append((col - 1, unicodedata.normalize("NFC", line[col - 2] + ch)))
    return found


def check_cedilla(sources: _Sources, language: str) -> list[Problem]:
    """Cedilla ş ţ where Romanian writes comma-below ș ț, at each line where they appear."""
    if language.split("-")[0].lower() != "ro":
        return []
    problems: list[Problem] = []
    for rel, text in sources.files:
        for number, line in enumerate(text.split("\n"), 1):
            found = _cedillas(line)
            if not found:
                continue
            letters = sorted({ch for _, ch in found})
            wrong = ", ".join(f"{ch} (U+{ord(ch):04X})" for ch in letters)
            right = ", ".join(
                f"{CEDILLA_FIXES[ch]} (U+{ord(CEDILLA_FIXES[ch]):04X})" for ch in letters
            )
            problems.append(
                Problem(
                    f"cedilla {wrong} in Romanian text: write {right} with comma below",
                    Location(rel, number, found[0][0]),
                    "warning",
                    "check.cedilla",
                )
            )
    return problems


# --- Placeholders -------------------------------------------------------------------------------


def check_placeholders(sources: _Sources) -> list[Problem]:
    """Every placeholder ``bulletin new`` wrote that is still there (comments aside)."""
    from bulletin.content.skeleton import PLACEHOLDER, PLACEHOLDER_URL

    problems = []
    for rel, text in sources.files:
        for number, line in enumerate(text.splitlines(), 1):
            if line.lstrip().startswith("#"):
                continue
            for marker in (PLACEHOLDER, PLACEHOLDER_URL):
                column = line.find(marker)
                if column >= 0:
                    problems.append(
                        Problem(
                            f"placeholder {marker} left by `bulletin new`: replace it with "
                            "the issue's own text or address, or remove the line",
                            Location(rel, number, column + 1),
                            "warning",
                            "check.placeholder",
                        )
                    )
                    break
    return problems


# --- Personalisation ----------------------------------------------------------------------------

_LINKS = frozenset({"unsubscribe_url", "view_online_url", "preferences_url"})
"""Slots that are links, not what the reader is told about themselves (checked elsewhere)."""


def check_personalisation(workspace: Workspace, rendered: RenderedIssue) -> list[Problem]:
    """Whatever one part (HTML or text) personalises, the other must show too.

    A reader whose client shows the text part would otherwise miss the greeting the HTML
    has: the text is written from the content, a layout's additions reach only the HTML.
    """
    loaded = rendered.loaded
    # The subject and the preheader reach the HTML (its title, the hidden preview line) but
    # are not the text part's to repeat: every client shows the subject whatever part it shows.
    headline = {
        f.name
        for text in (loaded.issue.subject, loaded.issue.preheader)
        for f in merge.fields(text)
    }
    html_fields = rendered.html.slot_names - _LINKS - headline
    text_fields = rendered.text.slot_names - _LINKS - headline
    layout = workspace.relpath(
        workspace.templates_dir / (loaded.issue.template + templating.LAYOUT_SUFFIX)
    )
    if loaded.text_override is not None and loaded.issue.text_override:
        text_file = workspace.relpath(
            (workspace.root / loaded.path).parent / loaded.issue.text_override
        )
    else:
        text_file = ""
    problems = []
    for name in sorted(html_fields - text_fields):
        hint = (
            f"add it to {text_file}"
            if text_file
            else "write it in the content (a merge field "
            "in Markdown reaches both parts) rather than in the layout only"
        )
        problems.append(
            Problem(
                f"the HTML part shows the reader's {name} but the plain-text part does not: {hint}",
                Location(layout),
                "warning",
                "check.personalisation",
            )
        )
    for name in sorted(text_fields - html_fields):
        problems.append(
            Problem(
                f"the plain-text part shows the reader's {name} but the HTML part does not: "
                f"add it to {layout} too",
                Location(text_file or layout),
                "warning",
                "check.personalisation",
            )
        )
    return problems


# --- The whole check --------------------------------------------------------------------------


def html_size(workspace: Workspace, rendered: RenderedIssue) -> int:
    """Bytes of one message's HTML, filled for a sample reader."""
    values = sample_values(workspace, rendered.loaded.slug, measured=True)
    return len(rendered.html.fill(values).encode("utf-8"))


def check_issue(
    workspace: Workspace, loaded: LoadedIssue, rendered: RenderedIssue
) -> list[Problem]:
    """Every content finding for a rendered issue, lint findings from rendering first."""
    sources = _Sources.read(workspace, loaded, rendered)
    html_text = _with_tokens(rendered.html)
    tags = _html_tags(html_text)
    problems = list(rendered.problems)
    if not any(p.code.startswith("mjml.") for p in problems):
        # The pipeline did not lint (or found nothing, and linting again is harmless).
        problems += lint_mjml(rendered.mjml, rendered.mjml_sources, sources.template_text)
    problems += check_size(html_size(workspace, rendered), Location(loaded.path))
    problems += check_unsubscribe(workspace, rendered)
    problems += check_subject(rendered, sources)
    problems += check_personalisation(workspace, rendered)
    problems += check_placeholders(sources)
    problems += check_empty_sections(loaded, sources)
    problems += check_images(tags, loaded, sources)
    problems += check_links(tags, loaded, sources, workspace.config.newsletter.base_url)
    problems += check_link_text(tags, sources)
    problems += check_markup(html_text, loaded, sources)
    problems += check_cedilla(sources, rendered.language or loaded.issue.language)
    problems += preflight.workspace_problems(workspace)
    problems += preflight.future_date_problem(loaded.issue.date, sources.key_line("date"))
    problems += preflight.unpublished_problem(
        workspace, loaded.slug, "view_online_url" in rendered.html.slot_names
    )
    return problems


@dataclass(frozen=True)
class CheckReport:
    """The outcome of ``bulletin check``: every finding, and the HTML size when it rendered."""

    issue_path: str
    problems: tuple[Problem, ...]
    html_bytes: int | None = None
    rendered: RenderedIssue | None = None
    """The issue as checked (None when it failed to load or render): a send reuses it."""

    @property
    def errors(self) -> int:
        return sum(p.severity == "error" for p in self.problems)

    @property
    def warnings(self) -> int:
        return sum(p.severity == "warning" for p in self.problems)

    @property
    def ok(self) -> bool:
        return self.errors == 0

    def summary(self) -> str:
        """One line: ``2 errors, 1 warning`` or ``No problems: <issue>, 41.2 KB HTML``."""
        if not self.problems:
            size = f", {self.html_bytes / KB:.1f} KB HTML" if self.html_bytes is not None else ""
            return f"No problems: {self.issue_path}{size}"
        parts = []
        if self.errors:
            parts.append(f"{self.errors} error{'s' if self.errors != 1 else ''}")
        if self.warnings:
            parts.append(f"{self.warnings} warning{'s' if self.warnings != 1 else ''}")
        return ", ".join(parts)


def run_check(workspace: Workspace, issue_dir: Path, strict: bool = False) -> CheckReport:
    """Load, render and check an issue; a load or template failure is reported, not raised."""
    from bulletin.content.loader import load_issue
    from bulletin.render.pipeline import render_issue

    issue_path = workspace.relpath(issue_dir / "issue.yaml")
    html_bytes: int | None = None
    rendered: RenderedIssue | None = None
    try:
        loaded = load_issue(workspace, issue_dir)
    except ContentError as exc:
        problems = list(exc.problems)
    else:
        try:
            rendered = render_issue(workspace, loaded)
        except (TemplateError, ContentError) as exc:  # ContentError: an unusable image
            problems = list(exc.problems)
        else:
            problems = check_issue(workspace, loaded, rendered)
            html_bytes = html_size(workspace, rendered)
    if strict:
        problems = [p.as_error() for p in problems]
    return CheckReport(issue_path, tuple(problems), html_bytes, rendered)
