"""Event times: written in the workspace's time zone, shown in the issue's language."""

from __future__ import annotations

import datetime as dt
import re
import textwrap
from pathlib import Path

import pytest

from bulletin import workspace
from bulletin.content import load_issue
from bulletin.errors import ConfigError, ContentError
from bulletin.render.i18n import format_date_range
from bulletin.render.pipeline import render_issue
from bulletin.render.values import sample_values
from conftest import set_config

DAY = dt.date(2014, 10, 8)
NINE = dt.datetime(2014, 10, 8, 9, 0)
HALF_FIVE = dt.datetime(2014, 10, 8, 17, 30)

ISSUE = """\
subject: Evenimente
date: 2014-10-01
language: {lang}
sections:
  - type: events
    title: Evenimente
    items:
      - title: Open Days
        start: 2014-10-08 09:00
        end: 2014-10-08 17:30
        place: București
      - title: Conferința
        start: 2014-10-09 10:00
        end: 2014-10-10 13:00
      - title: Târg
        start: 2014-12-03
        end: 2014-12-05
"""


@pytest.mark.parametrize(
    ("start", "end", "lang", "zone", "shown"),
    [
        (DAY, None, "ro", "Europe/Bucharest", "8 octombrie 2014"),
        (DAY, dt.date(2014, 10, 9), "ro", None, "8–9 octombrie 2014"),
        (NINE, None, "ro", "Europe/Bucharest", "8 octombrie 2014, 09:00 EEST"),
        (NINE, HALF_FIVE, "ro", "Europe/Bucharest", "8 octombrie 2014, 09:00–17:30 EEST"),
        (NINE, HALF_FIVE, "en", "Europe/Bucharest", "8 October 2014, 9:00 am–5:30 pm EEST"),
        (NINE, HALF_FIVE, "en", "UTC", "8 October 2014, 9:00 am–5:30 pm UTC"),
        (
            dt.datetime(2014, 12, 3, 9, 0),
            dt.datetime(2014, 12, 4, 12, 0),
            "ro",
            "Europe/Bucharest",
            "3 decembrie 2014, 09:00 – 4 decembrie 2014, 12:00 EET",
        ),
        (NINE, dt.date(2014, 10, 10), "ro", None, "8–10 octombrie 2014, 09:00"),
    ],
)
def test_times_in_the_issue_language_with_the_zone(
    start: dt.date, end: dt.date | None, lang: str, zone: str | None, shown: str
) -> None:
    assert format_date_range(start, end, lang, zone) == shown


def issue(root: Path, lang: str = "ro") -> Path:
    folder = root / "issues" / "ev"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "issue.yaml").write_text(ISSUE.format(lang=lang), encoding="utf-8")
    return folder


def rendered_parts(root: Path) -> tuple[str, str]:
    ws = workspace.load(root)
    rendered = render_issue(ws, load_issue(ws, ws.issues_dir / "ev"))
    values = sample_values(ws, "ev")
    html = re.sub(r"\s+", " ", rendered.html.fill(values))
    return html, rendered.text.fill(values)


def test_an_issue_shows_event_times_in_html_and_text(workspace_dir: Path) -> None:
    issue(workspace_dir)
    html, text = rendered_parts(workspace_dir)
    for part in (html, text):
        assert "8 octombrie 2014, 09:00–17:30 EEST" in part
        assert "9 octombrie 2014, 10:00 – 10 octombrie 2014, 13:00 EEST" in part
        assert "3–5 decembrie 2014" in part and "3–5 decembrie 2014," not in part
    # The date badge counts days: one day with two times is "8", not "8–8".
    assert re.search(r"<b[^>]*>8</b>", html)
    assert re.search(r"<b[^>]*>3–5</b>", html)


def test_english_and_another_zone(workspace_dir: Path) -> None:
    set_config(workspace_dir, "newsletter", timezone="Europe/London")
    issue(workspace_dir, lang="en")
    html, text = rendered_parts(workspace_dir)
    for part in (html, text):
        assert "8 October 2014, 9:00 am–5:30 pm BST" in part


def test_a_bad_time_is_located_and_a_bad_zone_refused(workspace_dir: Path) -> None:
    folder = issue(workspace_dir)
    path = folder / "issue.yaml"
    path.write_text(
        path.read_text(encoding="utf-8").replace("end: 2014-10-08 17:30", "end: 2014-10-08 25:30"),
        encoding="utf-8",
    )
    with pytest.raises(ContentError) as info:
        load_issue(workspace.load(workspace_dir), folder)
    [problem] = info.value.problems
    assert str(problem) == (
        "issues/ev/issue.yaml:10: section 1 (events), item 1: 'end': expected a day YYYY-MM-DD "
        "or a day and time YYYY-MM-DD HH:MM, got '2014-10-08 25:30' (hour must be in 0..23)"
    )

    path.write_text(
        ISSUE.format(lang="ro").replace("end: 2014-10-08 17:30", "end: 2014-10-08 08:00"),
        encoding="utf-8",
    )
    with pytest.raises(ContentError) as info:
        load_issue(workspace.load(workspace_dir), folder)
    assert "'end' is before 'start'" in str(info.value)

    set_config(workspace_dir, "newsletter", timezone="Europe/Bucureşti")
    with pytest.raises(ConfigError) as config_info:
        workspace.load(workspace_dir)
    assert "newsletter.timezone" in str(config_info.value)
    assert "unknown time zone" in str(config_info.value)


def test_the_default_zone_is_bucharest(workspace_dir: Path) -> None:
    text = (workspace_dir / "bulletin.toml").read_text(encoding="utf-8")
    text = re.sub(r"(?m)^timezone\s*=.*\n", "", text)
    (workspace_dir / "bulletin.toml").write_text(textwrap.dedent(text), encoding="utf-8")
    assert workspace.load(workspace_dir).config.newsletter.timezone == "Europe/Bucharest"
