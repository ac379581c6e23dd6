"""Pre-flight: a workspace that is not ready for real readers is caught by check and send.

Real things throughout: a workspace made by `bulletin init`, the `bulletin` CLI, an SMTP
server listening on a non-loopback address of this machine (so that the send really goes
through a relay that is "not loopback"), and the ledger.
"""

from __future__ import annotations

import datetime as dt
import re
import socket
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from bulletin import workspace as wsm
from bulletin.cli import cli
from bulletin.errors import Location
from bulletin.preflight import base_url_problems, future_date_problem, placeholder_problems
from bulletin.scaffold import init_workspace, placeholders
from conftest import SAMPLE_SLUG, set_config
from smtpfaults import FaultServer
from test_engine import KEY, open_store, populate
from test_send_cli import FAST_SEND, ledger_size


@pytest.fixture(autouse=True)
def _signing_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BULLETIN_SECRET_KEY", KEY)
    monkeypatch.setenv("COLUMNS", "250")


def bulletin(root: Path, *args: str) -> Result:
    return CliRunner().invoke(cli, ["-w", str(root), *args], catch_exceptions=False)


def outside_address() -> str:
    """An address of this machine that is not loopback (the relay then counts as remote)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("192.0.2.1", 9))  # no packet is sent: this only picks a route
        except OSError:
            pytest.skip("this machine has no non-loopback IPv4 address")
        address: str = s.getsockname()[0]
    if address.startswith("127."):
        pytest.skip("this machine has no non-loopback IPv4 address")
    return address


@pytest.fixture
def remote() -> Any:
    with FaultServer(host=outside_address()) as server:
        yield server


def line_of(path: Path, pattern: str) -> int:
    lines = path.read_text(encoding="utf-8").splitlines()
    return next(i for i, line in enumerate(lines, 1) if re.match(pattern, line))


def test_a_fresh_workspace_fails_check_strict_at_each_placeholder(tmp_path: Path) -> None:
    root = tmp_path / "fresh"
    init_workspace(root)
    config = root / "bulletin.toml"

    result = bulletin(root, "check", SAMPLE_SLUG, "--strict")

    assert result.exit_code == 1, result.output
    out = result.output
    for key, value in (
        ("name", "My Newsletter"),
        ("from_email", "newsletter@example.org"),
        ("postal_address", "1 Example Street, 00000 Example City, Country"),
    ):
        line = line_of(config, rf"{key} = ")
        assert f"bulletin.toml:{line}: " in out and f'is still "{value}"' in out, out
    # Without --strict these are warnings: a fresh workspace still renders and previews.
    relaxed = bulletin(root, "check", SAMPLE_SLUG)
    assert relaxed.exit_code == 0 and "preflight" not in relaxed.output
    assert "the placeholder from `bulletin init`" in relaxed.output


def test_placeholders_come_from_the_scaffold_and_leave_with_the_officers_values(
    tmp_path: Path,
) -> None:
    root = tmp_path / "fresh"
    init_workspace(root)
    found = {p.message.split(" ")[0] for p in placeholder_problems(wsm.load(root))}
    live = {f"{s}.{k}" for (s, k) in placeholders()}
    # Every placeholder that is a live key in the new file is reported; the commented
    # examples (smtp.username...) are not set, so not reported.
    assert found == live & {
        "newsletter.name",
        "newsletter.organisation",
        "newsletter.postal_address",
        "newsletter.reason",
        "sender.from_name",
        "sender.from_email",
    }
    assert found  # and the set above is not empty by accident
    assert ("smtp", "password_file") not in placeholders()  # a real default, not a placeholder

    set_config(root, "newsletter", name="Știri din Iași", organisation="Asociația Țesătorilor")
    set_config(
        root,
        "newsletter",
        postal_address="Str. Lăpușneanu 1, Iași",
        reason="Primiți această scrisoare pentru că v-ați abonat.",
    )
    set_config(root, "sender", from_name="Știri", from_email="stiri@tesatori.ro")
    assert placeholder_problems(wsm.load(root)) == []


def test_base_url_rules(workspace_dir: Path) -> None:
    # The sample config sends to the local sink with a loopback base_url: nothing to say.
    assert base_url_problems(wsm.load(workspace_dir)) == []

    set_config(workspace_dir, "smtp", url="smtp://mail.example.org:587")
    [problem] = base_url_problems(wsm.load(workspace_dir))
    assert problem.code == "preflight.base-url" and problem.severity == "warning"
    assert "cannot open unsubscribe" in problem.message
    assert problem.location == Location(
        "bulletin.toml", line_of(workspace_dir / "bulletin.toml", "base_url = ")
    )

    # Plain http on a public host: a warning even when the mail stays local.
    set_config(workspace_dir, "smtp", url="smtp://127.0.0.1:2525")
    set_config(workspace_dir, "newsletter", base_url="http://news.example.org")
    [problem] = base_url_problems(wsm.load(workspace_dir))
    assert "https" in problem.message and "one-click" in problem.message

    set_config(workspace_dir, "newsletter", base_url="https://news.example.org")
    assert base_url_problems(wsm.load(workspace_dir)) == []


def test_an_issue_dated_in_the_future_is_a_warning_at_its_date_line(workspace_dir: Path) -> None:
    where = Location("issues/x/issue.yaml", 3)
    today = dt.date(2014, 10, 15)
    assert future_date_problem(dt.date(2014, 10, 15), where, lambda: today) == []
    [problem] = future_date_problem(dt.date(2014, 10, 16), where, lambda: today)
    assert problem.code == "preflight.future-date" and problem.location == where

    issue = workspace_dir / "issues" / SAMPLE_SLUG / "issue.yaml"
    text = issue.read_text(encoding="utf-8")
    tomorrow = dt.date.today() + dt.timedelta(days=1)
    text = re.sub(r"^date: .*$", f"date: {tomorrow.isoformat()}", text, count=1, flags=re.M)
    issue.write_text(text, encoding="utf-8")
    result = bulletin(workspace_dir, "check", SAMPLE_SLUG, "--strict")
    assert result.exit_code == 1
    line = line_of(issue, "date: ")
    assert f"issues/{SAMPLE_SLUG}/issue.yaml:{line}: " in result.output
    assert f"dated {tomorrow.isoformat()}, after today" in result.output


def remote_workspace(root: Path, server: FaultServer) -> Any:
    from test_engine import configure

    workspace = configure(root, server.url, send=FAST_SEND)
    set_config(root, "smtp", starttls="off")  # the test relay has no certificate
    db = open_store(workspace.database_url())
    populate(db, "news", 3, folder=root)
    return db


def test_send_through_a_remote_relay_refuses_until_the_workspace_is_ready(
    workspace_dir: Path, remote: FaultServer
) -> None:
    db = remote_workspace(workspace_dir, remote)
    config = workspace_dir / "bulletin.toml"
    set_config(workspace_dir, "sender", from_email="newsletter@example.org")
    issue = workspace_dir / "issues" / SAMPLE_SLUG / "issue.yaml"
    dated = issue.read_text(encoding="utf-8")
    date_issue(workspace_dir, dt.date.today() + dt.timedelta(days=2))
    with config.open("a", encoding="utf-8") as f:  # as `bulletin init` leaves it
        f.write(f'\n[archive]\nexclude = "{SAMPLE_SLUG}"\n')

    refused = bulletin(workspace_dir, "send", SAMPLE_SLUG, "--list", "news", "--yes")

    assert refused.exit_code == 1, refused.output
    out = refused.output
    assert f"Not sending {SAMPLE_SLUG} through {remote.host}" in out
    assert f"bulletin.toml:{line_of(config, 'from_email = ')}: sender.from_email" in out
    assert f"bulletin.toml:{line_of(config, 'base_url = ')}: newsletter.base_url" in out
    assert f"issue.yaml:{line_of(issue, 'date: ')}: The issue is dated" in out
    assert f"bulletin.toml:{line_of(config, 'exclude = ')}: Issue {SAMPLE_SLUG} is not " in out
    assert remote.sessions == 0 and ledger_size(db) == (0, 0)

    # A test send to the officer goes through, with the findings as warnings.
    test = bulletin(workspace_dir, "send", SAMPLE_SLUG, "--test", "redactor@example.org")
    assert test.exit_code == 0, test.output
    assert "warning: bulletin.toml:" in test.output and len(remote.messages) == 1

    set_config(workspace_dir, "sender", from_email="newsletter@clusterpolisee.example.org")
    set_config(workspace_dir, "newsletter", base_url="https://news.clusterpolisee.ro")
    issue.write_text(dated, encoding="utf-8")
    set_config(workspace_dir, "archive", exclude="")

    sent = bulletin(workspace_dir, "send", SAMPLE_SLUG, "--list", "news", "--yes")

    assert sent.exit_code == 0, sent.output
    assert len(remote.messages) == 1 + 3 and ledger_size(db) == (1, 3)


def test_the_local_sink_takes_a_fresh_workspace_send(
    workspace_dir: Path,
) -> None:
    with FaultServer() as local:
        db = remote_workspace(workspace_dir, local)
        set_config(workspace_dir, "sender", from_email="newsletter@example.org")
        sent = bulletin(workspace_dir, "send", SAMPLE_SLUG, "--list", "news", "--yes")
        assert sent.exit_code == 0, sent.output
        assert "warning: bulletin.toml:" in sent.output and "newsletter@example.org" in sent.output
        assert len(local.messages) == 3 and ledger_size(db) == (1, 3)


def test_the_plan_shows_from_reply_to_links_and_one_unsubscribe_header(
    workspace_dir: Path,
) -> None:
    with FaultServer() as local:
        remote_workspace(workspace_dir, local)
        result = bulletin(workspace_dir, "send", SAMPLE_SLUG, "--list", "news", "--yes")
    assert result.exit_code == 0, result.output
    rows = dict(
        re.match(r"(\S+)\s+(.*?)\s*$", line).groups()  # type: ignore[union-attr]
        for line in result.output.splitlines()
        if re.match(r"(From|Reply-To|Links|Unsubscribe) ", line)
    )
    assert rows["From"] == "ClusterPoliSEE <newsletter@clusterpolisee.example.org>"
    assert rows["Reply-To"] == "contact@clusterpolisee.example.org"
    assert rows["Links"] == "http://127.0.0.1:8080"
    assert rows["Unsubscribe"].startswith("<http://127.0.0.1:8080/u/")
    assert "mailto:unsubscribe+" in rows["Unsubscribe"]
    assert rows["Unsubscribe"].endswith("(one recipient's)")


def date_issue(root: Path, day: dt.date) -> None:
    issue = root / "issues" / SAMPLE_SLUG / "issue.yaml"
    text = issue.read_text(encoding="utf-8")
    issue.write_text(
        re.sub(r"^date: .*$", f"date: {day.isoformat()}", text, count=1, flags=re.M),
        encoding="utf-8",
    )


def test_the_archive_publishes_an_issue_from_its_send(workspace_dir: Path) -> None:
    import httpx

    from test_public import ServeProcess

    date_issue(workspace_dir, dt.date.today() + dt.timedelta(days=7))
    with FaultServer() as local:
        remote_workspace(workspace_dir, local)
        server = ServeProcess(workspace_dir)
        try:
            page = f"{server.url}/archive/{SAMPLE_SLUG}"
            assert httpx.get(page, timeout=10).status_code == 404
            assert SAMPLE_SLUG not in httpx.get(f"{server.url}/archive/", timeout=10).text

            sent = bulletin(workspace_dir, "send", SAMPLE_SLUG, "--list", "news", "--yes")
            assert sent.exit_code == 0, sent.output
            assert "preflight" not in sent.output and "after today" in sent.output

            answer = httpx.get(page, timeout=10)
            assert answer.status_code == 200 and "ClusterPoliSEE" in answer.text
            assert SAMPLE_SLUG in httpx.get(f"{server.url}/archive/", timeout=10).text
        finally:
            server.stop()

    built = bulletin(workspace_dir, "archive", "build", str(workspace_dir / "site"))
    assert built.exit_code == 0, built.output
    assert (workspace_dir / "site" / SAMPLE_SLUG / "index.html").is_file()
