"""Issue content: the schema of ``issues/<slug>/issue.yaml`` and its loader."""

from bulletin.content.model import Issue, Section

__all__ = ["Issue", "Section"]
