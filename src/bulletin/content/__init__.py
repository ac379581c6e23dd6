"""Issue content: the schema of ``issues/<slug>/issue.yaml`` and its loader."""

from bulletin.content.loader import list_issues, load_issue
from bulletin.content.model import Issue, LoadedIssue, Section

__all__ = ["Issue", "LoadedIssue", "Section", "list_issues", "load_issue"]
