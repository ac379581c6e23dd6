"""Shared fixtures: a temporary copy of the repository's workspace."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SAMPLE_SLUG = "2014-10-clusterpolisee-03"


@pytest.fixture
def workspace_dir(tmp_path: Path) -> Path:
    """A fresh workspace: the repository's bulletin.toml, templates/ and issues/ copied."""
    root = tmp_path / "ws"
    root.mkdir()
    shutil.copy(REPO / "bulletin.toml", root / "bulletin.toml")
    shutil.copytree(REPO / "templates", root / "templates")
    shutil.copytree(REPO / "issues", root / "issues")
    (root / "subscribers").mkdir()
    return root
