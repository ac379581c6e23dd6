"""The public archive: every published issue as a web page, served or written as files.

What is published: each folder under ``issues/`` whose name is a plain slug (letters, digits,
``-`` and ``_``), whose issue date has come or whose send has started (the ledger knows: the
"view online" link of every message sent must answer, whatever date the issue carries; an
unsent issue dated next week appears next week) and which ``archive.exclude`` in
bulletin.toml does not list. ``bulletin serve`` answers
``/archive/`` (the list, newest first) and ``/archive/<slug>`` (the issue, which is what the
"view online" link in every email points at); ``bulletin archive build OUT/`` writes the same
bytes as ``OUT/index.html`` and ``OUT/<slug>/index.html`` for any static web server.

An archive copy is the rendered email filled for nobody: no address, no name. Two slots need
a neutral value rather than an empty one:

* ``email``: the footer says "This email was sent to {email}."; the archive fills in "the
  subscribers of <newsletter name>" in the issue's language, which reads sensibly and shows
  no address. No template change is needed.
* ``unsubscribe_url``: a copy cannot unsubscribe anyone (it carries no token), so the link
  leads to ``/archive/#unsubscribe``, a paragraph of the archive page explaining that each
  email has its own link. Removing the link would change the layout of the footer; a dead
  ``/u/`` link would show an error page.

Renders are cached in memory and redone when a file of the issue or of ``templates/``
changes (size or modification time); ``bulletin.toml`` is read once, at start.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
import threading
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from pathlib import Path

from bulletin import urls
from bulletin.content.loader import list_issues, load_issue
from bulletin.errors import BulletinError, Location, Problem, ProblemsError
from bulletin.render.i18n import format_date
from bulletin.render.images import MailImage
from bulletin.render.pipeline import render_issue
from bulletin.render.values import archive_values
from bulletin.web.pages import STYLESHEET, Words, render_page, stylesheet
from bulletin.workspace import Workspace

log = logging.getLogger(__name__)

SLUG_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,199}")
"""Issue folder names that are published: no dots, slashes or spaces, so never a path trick
and never the stylesheet's name."""

ISSUE_CSP = "; ".join(
    [
        "default-src 'none'",
        # Email HTML is styled inline and with <style> blocks, and shows remote images as a
        # mail client does; nothing else loads (no scripts, no web fonts, no forms).
        "img-src https: http: data:",
        "style-src 'unsafe-inline'",
        "font-src data:",
        "base-uri 'none'",
        "form-action 'none'",
    ]
)
"""Content-Security-Policy of an archived issue; also written into the page as a <meta> so
that a static copy is held to it too (the server adds ``frame-ancestors`` as a header)."""

_HEAD_RE = re.compile(r"<head\b[^>]*>", re.IGNORECASE)
_HEAD_EXTRA = (
    f'<meta http-equiv="Content-Security-Policy" content="{ISSUE_CSP}">\n'
    '<meta name="referrer" content="no-referrer">\n'
)


@dataclass(frozen=True)
class ArchiveEntry:
    """One issue as the archive lists it."""

    slug: str
    subject: str
    date: dt.date
    number: int | None
    language: str


@dataclass(frozen=True)
class _Render:
    fingerprint: tuple[tuple[str, int, int], ...]
    entry: ArchiveEntry | None
    html: bytes | None
    error: BulletinError | None
    images: tuple[MailImage, ...] = ()


@dataclass
class ArchiveBuild:
    """What :func:`build_archive` wrote, and which issues it left out and why."""

    out: Path
    written: list[Path] = field(default_factory=list)
    entries: list[ArchiveEntry] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)


def _with_head_extra(html: str) -> str:
    match = _HEAD_RE.search(html)
    if match is None:  # not a full document (a custom layout): put the policy first
        return _HEAD_EXTRA + html
    return html[: match.end()] + "\n" + _HEAD_EXTRA + html[match.end() :]


def _files_fingerprint(folder: Path) -> list[tuple[str, int, int]]:
    out = []
    for path in sorted(folder.rglob("*")):
        try:
            st = path.stat()
        except OSError:
            continue  # removed while we looked; the next request sees the change
        if path.is_file():
            out.append((str(path), st.st_mtime_ns, st.st_size))
    return out


def why_not_published(slug: str, exclude: Collection[str]) -> str | None:
    """None if issue ``slug`` may be published by name; else the reason (the one rule for the
    archive, ``archive build`` and the send's pre-flight)."""
    if SLUG_RE.fullmatch(slug) is None:
        return "its folder name is not a plain slug (letters, digits, '-' and '_')"
    if slug in exclude:
        return "archive.exclude lists it"
    return None


class Archive:
    """The published issues of a workspace, rendered on demand and cached until files change.

    Safe to use from several threads (the web server runs it in a thread pool): renders run
    one at a time under a lock, so a burst of requests for a new issue renders it once.
    """

    def __init__(
        self,
        workspace: Workspace,
        *,
        today: Callable[[], dt.date] = dt.date.today,
        sent: Callable[[], Collection[str]] = frozenset,
    ) -> None:
        self.workspace = workspace
        self._today = today
        self._sent = sent
        self._exclude = workspace.config.archive.excluded
        self._cache: dict[str, _Render] = {}
        self._lock = threading.Lock()
        self._logged: set[tuple[str, tuple[tuple[str, int, int], ...]]] = set()

    # -- which issues ----------------------------------------------------------------------

    def why_not_published(self, slug: str) -> str | None:
        """None if ``slug`` may be published by name; else the reason, for reports."""
        return why_not_published(slug, self._exclude)

    def _render(self, slug: str, templates: list[tuple[str, int, int]]) -> _Render:
        issue_dir = self.workspace.issues_dir / slug
        fingerprint = tuple(templates + _files_fingerprint(issue_dir))
        with self._lock:
            cached = self._cache.get(slug)
            if cached is not None and cached.fingerprint == fingerprint:
                return cached
            try:
                loaded = load_issue(self.workspace, issue_dir)
                rendered = render_issue(self.workspace, loaded)
            except BulletinError as exc:
                result = _Render(fingerprint, None, None, exc)
            else:
                issue = loaded.issue
                recipients = Words(issue.language)(
                    "archive.recipients", newsletter=self.workspace.config.newsletter.name
                )
                values = archive_values(self.workspace, slug, recipients)
                # A subject with merge fields is listed as a reader without values sees it.
                subject = rendered.subject_for(values)
                entry = ArchiveEntry(slug, subject, issue.date, issue.number, issue.language)
                html = _with_head_extra(rendered.html.fill(values)).encode("utf-8")
                result = _Render(fingerprint, entry, html, None, rendered.images)
            self._cache[slug] = result
        return result

    def _published_render(self, slug: str, templates: list[tuple[str, int, int]]) -> _Render | None:
        if self.why_not_published(slug) is not None:
            return None
        if not (self.workspace.issues_dir / slug / "issue.yaml").is_file():
            return None
        result = self._render(slug, templates)
        if result.error is not None and (slug, result.fingerprint) not in self._logged:
            # Once per version of the files: the server must not flood the log on every hit.
            self._logged.add((slug, result.fingerprint))
            log.warning("archive: issue %s is not published: %s", slug, result.error)
        if result.entry is None or not self.is_due(result.entry):
            return None
        return result

    def is_due(self, entry: ArchiveEntry) -> bool:
        """Whether an issue's day has come: its date, or the start of its send if earlier."""
        return entry.date <= self._today() or entry.slug in self._sent()

    def entries(self) -> list[ArchiveEntry]:
        """The published issues, newest first (by date, then number, then slug)."""
        templates = _files_fingerprint(self.workspace.templates_dir)
        found = []
        for slug in list_issues(self.workspace):
            result = self._published_render(slug, templates)
            if result is not None and result.entry is not None:
                found.append(result.entry)
        found.sort(key=lambda e: (e.date, e.number or 0, e.slug), reverse=True)
        return found

    # -- pages -----------------------------------------------------------------------------

    def issue_page(self, slug: str) -> bytes | None:
        """The archived issue ``slug`` as an HTML document, or None if it is not published."""
        if SLUG_RE.fullmatch(slug) is None:  # before touching the file system with it
            return None
        result = self._published_render(slug, _files_fingerprint(self.workspace.templates_dir))
        return result.html if result is not None else None

    def image(self, name: str) -> MailImage | None:
        """A prepared image that a published issue shows, or None (drafts' images stay private)."""
        templates = _files_fingerprint(self.workspace.templates_dir)
        for slug in list_issues(self.workspace):
            result = self._published_render(slug, templates)
            if result is None:
                continue
            for image in result.images:
                if image.name == name and image.path.is_file():
                    return image
        return None

    def index_page(self) -> bytes:
        """The archive's list of issues, newest first, with a note on unsubscribing."""
        config = self.workspace.config
        lang = config.newsletter.language
        words = Words(lang)
        items = [
            {
                "slug": e.slug,
                "subject": e.subject,
                "date": format_date(e.date, words.lang),
                "iso": e.date.isoformat(),
                "number": words("archive.number", number=e.number) if e.number else "",
            }
            for e in self.entries()
        ]
        html = render_page(
            "archive_index.html",
            lang,
            newsletter=config.newsletter.name,
            css=STYLESHEET,
            issues=items,
            contact=config.sender.reply_to or "",
        )
        return html.encode("utf-8")


def build_archive(
    workspace: Workspace,
    out: Path,
    *,
    today: Callable[[], dt.date] = dt.date.today,
    sent: Callable[[], Collection[str]] = frozenset,
) -> ArchiveBuild:
    """Write the archive as static files: ``OUT/index.html``, ``OUT/<slug>/index.html`` and
    the issues' local images in ``OUT/images/``.

    Every issue is rendered before anything is written; an issue that does not load or
    render stops the build (:class:`ProblemsError` listing each one), so a broken issue is
    never silently missing from the published archive. Files already in ``OUT`` that the
    build does not write are left alone.
    """
    archive = Archive(workspace, today=today, sent=sent)
    report = ArchiveBuild(out)
    templates = _files_fingerprint(workspace.templates_dir)
    pages: dict[str, bytes] = {}
    images: dict[str, Path] = {}
    problems: list[Problem] = []
    for slug in list_issues(workspace):
        reason = archive.why_not_published(slug)
        if reason is not None:
            report.skipped.append((slug, reason))
            continue
        result = archive._render(slug, templates)
        if result.error is not None:
            err = result.error
            found = err.problems if isinstance(err, ProblemsError) else ()
            problems += found or [Problem(err.message, Location(f"issues/{slug}"))]
            continue
        assert result.entry is not None and result.html is not None
        if not archive.is_due(result.entry):
            report.skipped.append((slug, f"dated {result.entry.date}, in the future"))
            continue
        pages[slug] = result.html
        images.update({image.name: image.path for image in result.images})
        report.entries.append(result.entry)
    if problems:
        raise ProblemsError(
            problems,
            summary="Cannot build the archive: these issues do not render.",
            hint="Fix them (see `bulletin check ISSUE`), or list their slugs in "
            "archive.exclude in bulletin.toml.",
        )
    report.entries.sort(key=lambda e: (e.date, e.number or 0, e.slug), reverse=True)
    files = {out / "index.html": archive.index_page(), out / STYLESHEET: stylesheet()}
    files.update({out / slug / "index.html": html for slug, html in pages.items()})
    # The archive folder is published at /archive/, so OUT/images/ is urls.IMAGE's path.
    image_dir = urls.IMAGE.path(image="").removeprefix(urls.ARCHIVE.path()).strip("/")
    files.update({out / image_dir / name: path.read_bytes() for name, path in images.items()})
    try:
        for path, data in files.items():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
            report.written.append(path)
    except OSError as exc:
        raise BulletinError(
            f"Cannot write {exc.filename}: {exc.strerror}.",
            hint="Choose another output folder.",
        ) from None
    return report
