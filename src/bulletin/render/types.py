"""Data passed between the render pipeline, checks, the preview and the mail composer."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from bulletin.content.model import LoadedIssue
from bulletin.errors import Problem
from bulletin.render.images import MailImage
from bulletin.render.slots import CompiledTemplate


@dataclass(frozen=True)
class SourceSpan:
    """Lines ``mjml_start..mjml_end`` (1-based, inclusive) of the generated MJML came from
    ``template`` starting at its line ``template_line``. Used to locate lint findings."""

    mjml_start: int
    mjml_end: int
    template: str
    template_line: int


@dataclass(frozen=True)
class RenderedIssue:
    """An issue compiled once: HTML and text with per-recipient slots, plus what produced it."""

    loaded: LoadedIssue
    subject: str
    preheader: str
    language: str
    from_name: str
    html: CompiledTemplate
    text: CompiledTemplate
    mjml: str
    mjml_sources: tuple[SourceSpan, ...]
    problems: tuple[Problem, ...]
    """Lint findings from rendering (errors and warnings); callers decide what to do."""
    subject_template: CompiledTemplate | None = None
    """The subject with its merge fields as slots (``subject`` shows them as written)."""
    preheader_template: CompiledTemplate | None = None
    """The preheader likewise (the HTML holds it already filled per reader)."""
    images: tuple[MailImage, ...] = ()
    """The workspace images the HTML shows, prepared for mail (published with the archive)."""

    def subject_for(self, values: Mapping[str, str]) -> str:
        """The subject one reader sees (merge fields filled from ``values``)."""
        if self.subject_template is None:
            return self.subject
        # An empty value at an end leaves a space there; the mail header drops it too.
        return self.subject_template.fill(values).strip()

    def preheader_for(self, values: Mapping[str, str]) -> str:
        """The preheader one reader sees (merge fields filled from ``values``)."""
        if self.preheader_template is None:
            return self.preheader
        return self.preheader_template.fill(values).strip()

    @property
    def ok(self) -> bool:
        return not any(p.severity == "error" for p in self.problems)
