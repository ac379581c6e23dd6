"""The README's promises that can drift: the two commands and the configuration table."""

from __future__ import annotations

import re

from bulletin.workspace import config_reference
from conftest import REPO


def test_readme_configuration_table_matches_the_schema() -> None:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    match = re.search(r"<!-- config-reference.*?-->\n(.*?)\n<!-- /config-reference -->", text, re.S)
    assert match, "README lost its generated configuration table"
    assert match.group(1).strip() == config_reference().strip(), (
        "README configuration table is stale: regenerate it with `python -m bulletin.workspace`"
    )


def test_readme_shows_the_two_commands() -> None:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    assert "make demo" in text and "make test" in text
    makefile = (REPO / "Makefile").read_text(encoding="utf-8")
    assert re.search(r"^demo:", makefile, re.M) and re.search(r"^test:", makefile, re.M)
