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


def set_config(root: Path, section: str, **values: str | int | float | bool) -> None:
    """Set keys of one ``[section]`` in ``root/bulletin.toml``, replacing lines already there.

    Keeps the file as the user would edit it (comments and order stay); values are written as
    TOML scalars. The section must exist.
    """
    import json
    import re

    path = root / "bulletin.toml"
    text = path.read_text(encoding="utf-8")
    header = f"[{section}]\n"
    start = text.index(header) + len(header)
    nxt = re.search(r"^\[", text[start:], re.M)
    end = start + nxt.start() if nxt else len(text)
    body = text[start:end]
    for key in values:
        body = re.sub(rf"^{re.escape(key)}\s*=.*\n", "", body, flags=re.M)
    lines = "".join(
        f"{key} = {str(v).lower() if isinstance(v, bool) else json.dumps(v, ensure_ascii=False)}\n"
        for key, v in values.items()
    )
    path.write_text(text[:start] + lines + body + text[end:], encoding="utf-8")


CHROMIUM = Path("/usr/bin/chromium")
"""Debian's Chromium (installed by `make system-deps`); Playwright drives it, never downloads."""

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    # This machine's network is closed: background fetches would only fail, many at a time.
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    # Remote images in emails fail at once instead of waiting on DNS: browser tests depend
    # on nothing but servers on 127.0.0.1.
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
]
