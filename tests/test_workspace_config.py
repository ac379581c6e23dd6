"""bulletin.toml errors: located, all at once, no traceback."""

from __future__ import annotations

from pathlib import Path

import pytest

from bulletin import workspace as ws
from bulletin.errors import ConfigError


def test_toml_syntax_error_names_the_line(workspace_dir: Path) -> None:
    toml = workspace_dir / "bulletin.toml"
    toml.write_text(toml.read_text(encoding="utf-8") + "\n[smtp]\ntimeout = 5\n", "utf-8")
    line = toml.read_text(encoding="utf-8").count("\n") - 1
    with pytest.raises(ConfigError) as caught:
        ws.load(workspace_dir)
    [problem] = caught.value.problems
    assert problem.location is not None
    assert (problem.location.path, problem.location.line) == ("bulletin.toml", line)
    assert str(problem).startswith(f"bulletin.toml:{line}:")
    assert "invalid TOML" in problem.message and "(at line" not in problem.message


def test_schema_errors_are_all_reported(workspace_dir: Path) -> None:
    toml = workspace_dir / "bulletin.toml"
    text = toml.read_text(encoding="utf-8").replace(
        'url = "smtp://127.0.0.1:2525"', 'url = "smtp://127.0.0.1:2525"\ntimeout = "abc"\nportt = 1'
    )
    toml.write_text(text, "utf-8")
    with pytest.raises(ConfigError) as caught:
        ws.load(workspace_dir)
    messages = [p.message for p in caught.value.problems]
    assert "smtp.timeout: expected a number, got 'abc'" in messages
    assert "smtp.portt: unknown key (check the spelling)" in messages
