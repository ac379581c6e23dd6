"""Links in the mail: one link per address in an item, and link text that says where it goes.

Rendered for real (Jinja2, MJML, premailer, plain text) from purpose-made issues.
"""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import pytest

from bulletin import workspace
from bulletin.content.loader import load_issue
from bulletin.errors import Location
from bulletin.render.checks import RAW_URL_TEXT_MAX, run_check
from bulletin.render.markdown import links_to
from bulletin.render.pipeline import render_issue
from bulletin.render.values import sample_values
from bulletin.workspace import Workspace
from conftest import SAMPLE_SLUG
from test_checks import HEAD

LONG = "https://www.clusterpolisee.example.org/ro/stiri/fondul-start-pentru-regiunea-dunarii-183"
assert len(LONG) > RAW_URL_TEXT_MAX

NEWS = f"""\
  - type: news
    title: Știri
    items:
      - title: Linked in its text
        url: "{LONG}"
        text: Fondul START finanțează proiecte. [Anunțul fondului START]({LONG}).
      - title: Bare URL in its text
        url: "https://cluster.example.org/a"
        text: Detalii la https://cluster.example.org/a.
      - title: Not linked in its text
        url: "https://cluster.example.org/b"
        text: Asociația Țesătorilor din Iași s-a alăturat rețelei.
  - type: events
    title: Evenimente
    items:
      - title: Conferința
        start: 2014-10-22
        url: "https://cluster.example.org/conf"
        description: "[Pagina conferinței](https://cluster.example.org/conf)"
      - title: Târgul
        start: 2014-10-23
        url: "https://cluster.example.org/targ"
"""


@pytest.fixture
def ws(workspace_dir: Path) -> Workspace:
    return workspace.load(workspace_dir)


def write_issue(ws: Workspace, text: str) -> Path:
    folder = ws.issues_dir / "x"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "issue.yaml").write_text(textwrap.dedent(text), encoding="utf-8")
    return folder


def rendered(ws: Workspace, folder: Path) -> tuple[str, str]:
    loaded = load_issue(ws, folder)
    out = render_issue(ws, loaded)
    values = sample_values(ws, loaded.slug)
    return out.html.fill(values), out.text.fill(values)


def test_links_to_compares_as_the_html_holds_addresses() -> None:
    assert links_to("[x](http://www.example.org/)", "http://www.example.org")
    assert links_to("see http://www.example.org/a%20b.", "http://www.example.org/a b")
    assert links_to("[Știri](https://e.org/știri)", "https://e.org/%C8%99tiri")
    assert not links_to("[x](https://e.org/a)", "https://e.org/b")
    assert not links_to(None, "https://e.org/a") and not links_to("", "https://e.org/a")


def test_read_more_only_where_the_text_does_not_link_the_address(ws: Workspace) -> None:
    html, text = rendered(ws, write_issue(ws, HEAD + NEWS))

    hrefs = re.findall(r'<a [^>]*href="([^"]+)"', html)
    for url in (LONG, "https://cluster.example.org/a", "https://cluster.example.org/conf"):
        assert hrefs.count(url) == 1, (url, hrefs)
    # Not linked by its text: the item keeps its "read more" / "more information" link.
    assert hrefs.count("https://cluster.example.org/b") == 1
    assert hrefs.count("https://cluster.example.org/targ") == 1
    assert html.count("Citiți mai mult") == 1 and html.count("Mai multe informații") == 1
    # The plain text says the same, each address once.
    assert text.count("Citiți mai mult") == 1 and text.count("Mai multe informații") == 1
    assert "Citiți mai mult: <https://cluster.example.org/b>" in text
    assert "Mai multe informații: <https://cluster.example.org/targ>" in text
    for url in (LONG, "https://cluster.example.org/a", "https://cluster.example.org/conf"):
        assert text.count(f"<{url}>") == 1, url


def test_a_long_raw_url_as_link_text_is_a_warning_at_its_line(ws: Workspace) -> None:
    short = "https://e.org/scurt"
    issue = HEAD + textwrap.dedent(f"""\
          - type: text
            title: Linkuri
            body: >-
              Scurt: [{short}]({short}). Descriptiv: [anunțul]({LONG}).


              Lung: [{LONG}]({LONG}).
        """)
    folder = write_issue(ws, issue)

    report = run_check(ws, folder)

    found = [p for p in report.problems if p.code == "check.link-raw-url"]
    (problem,) = found
    assert problem.severity == "warning"
    lines = (folder / "issue.yaml").read_text(encoding="utf-8").splitlines()
    line = next(i for i, x in enumerate(lines, 1) if x.strip().startswith("Lung:"))
    assert problem.location == Location("issues/x/issue.yaml", line)
    assert f"({len(LONG)} characters)" in problem.message
    assert run_check(ws, folder, strict=True).errors >= 1


def test_the_sample_links_each_address_once_per_item_with_descriptive_text(
    ws: Workspace,
) -> None:
    html, text = rendered(ws, ws.issue_dir(SAMPLE_SLUG))
    links = re.findall(r'<a [^>]*href="([^"]+)"[^>]*>(.*?)</a>', html, re.S)
    texts = [re.sub(r"<[^>]+>|\s+", " ", t).strip() for _, t in links]
    assert not [t for t in texts if re.match(r"(https?://|www\.)", t)], texts
    assert "Citiți mai mult" not in html and "Citiți mai mult" not in text
    # The sample's addresses are those the 2014 edition printed.
    yaml = (ws.issue_dir(SAMPLE_SLUG) / "issue.yaml").read_text(encoding="utf-8")
    assert "[site-ul ClusterPoliSEE](http://www.clusterpolisee.eu/)" in yaml
    assert "Clusterele și managementul cunoașterii în perspectiva" in yaml  # ș/ț kept
    assert run_check(ws, ws.issue_dir(SAMPLE_SLUG), strict=True).problems == ()
