"""bulletin.toml errors: located, all at once, no traceback."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from bulletin import workspace as ws
from bulletin.cli import cli
from bulletin.errors import BulletinError, ConfigError
from conftest import SAMPLE_SLUG, set_config


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


# --- every value checked at load, located at its line ------------------------------------


def _line_of(toml: Path, start: str) -> int:
    """The 1-based number of the first line of ``toml`` starting with ``start``."""
    lines = toml.read_text(encoding="utf-8").splitlines()
    return next(n for n, line in enumerate(lines, 1) if line.startswith(start))


def _problems(workspace_dir: Path) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        ws.load(workspace_dir)
    assert all(p.code == "config" for p in caught.value.problems)
    return [str(p) for p in caught.value.problems]


@pytest.mark.parametrize(
    ("value", "why"),
    [
        ("not an address", "is not an email address (An email address must have an @-sign.)"),
        ("newsletter@exa mple.org", "is not an email address (The part after the @-sign"),
        ("l" * 65 + "@example.org", "is not an email address (The email address is too long"),
        ("știri@example.org", "must be plain ASCII before the @: bulletin sends without SMTPUTF8"),
        ("Știri <news@example.org>", "must be the address alone, like news@example.org"),
        ("mailto:news@example.org", "must be the address alone, like news@example.org"),
        ('"news letter"@example.org', "is not an email address (Quoting the part before"),
        (" news@example.org", "has spaces around it"),
    ],
)
def test_a_bad_sender_address_is_refused_at_its_line(
    workspace_dir: Path, value: str, why: str
) -> None:
    set_config(workspace_dir, "sender", from_email=value)
    line = _line_of(workspace_dir / "bulletin.toml", "from_email =")
    [problem] = _problems(workspace_dir)
    assert problem.startswith(f"bulletin.toml:{line}: sender.from_email: {value!r} {why}")


def test_every_address_of_ours_is_checked_and_all_problems_are_reported(
    workspace_dir: Path,
) -> None:
    set_config(
        workspace_dir,
        "sender",
        reply_to="contact@",
        unsubscribe_mailto="u" * 30 + "-unsubscribe@example.org",
        return_path="bounces@{token}.example.org",
    )
    set_config(workspace_dir, "newsletter", list_id="not a domain")
    toml = workspace_dir / "bulletin.toml"
    problems = _problems(workspace_dir)
    assert len(problems) == 4, problems
    located = {p.split(": ", 2)[1]: p for p in problems}
    assert located["sender.reply_to"].startswith(
        f"bulletin.toml:{_line_of(toml, 'reply_to =')}: sender.reply_to: 'contact@' is not an "
        "email address"
    )
    assert located["sender.unsubscribe_mailto"].startswith(
        f"bulletin.toml:{_line_of(toml, 'unsubscribe_mailto =')}: sender.unsubscribe_mailto: "
    )
    assert "too long before the @ once a token" in located["sender.unsubscribe_mailto"]
    assert located["sender.return_path"].startswith(
        f"bulletin.toml:{_line_of(toml, 'return_path =')}: sender.return_path: "
        "'bounces@{token}.example.org' is not an email address"
    )
    assert located["newsletter.list_id"].startswith(
        f"bulletin.toml:{_line_of(toml, 'list_id =')}: newsletter.list_id: 'not a domain' is "
        "not a domain name"
    )


@pytest.mark.parametrize(
    ("template", "ok"),
    [
        ("bounces+{token}@example.org", True),
        ("{token}@bounces.example.org", True),
        ("b" * 25 + "+{token}@example.org", False),  # 25 + 1 + 39 > 64
        ("b" * 24 + "+{token}@example.org", True),
        ("bounces+{token}+{token}@example.org", False),
        ("bounces+{tok}@example.org", True),  # no placeholder: a fixed address, oddly spelt
    ],
)
def test_return_path_leaves_room_for_the_token(
    workspace_dir: Path, template: str, ok: bool
) -> None:
    set_config(workspace_dir, "sender", return_path=template)
    if ok:
        assert ws.load(workspace_dir).config.sender.return_path == template
    else:
        [problem] = _problems(workspace_dir)
        assert "sender.return_path" in problem


def test_a_token_fits_the_room_the_config_check_leaves() -> None:
    from bulletin.store import normalise
    from bulletin.tokens import TokenSigner

    signer = TokenSigner(["a-test-key-of-enough-length"])
    longest = max(
        len(signer.bounce_token(2**40 - 1, 2**40 - 2)),
        len(signer.unsubscribe_token(2**40 - 1, 2**40 - 2)),
    )
    assert longest == normalise._TOKEN_ROOM


@pytest.mark.parametrize(
    ("section", "key", "value", "what"),
    [
        ("sender", "from_name", "ClusterPoliSEE\r\nBcc: everyone@example.org", "a line break"),
        ("newsletter", "name", "Știri\n", "a line break"),
        ("newsletter", "organisation", "Proiect\u202e", "the invisible control character U+202E"),
        ("newsletter", "postal_address", "Str. Exemplu\t1", "a tab"),
        ("newsletter", "reason", "Abonat\x1b[2J", "the invisible control character U+001B"),
        ("smtp", "helo_name", "mail.example.org\r\nMAIL FROM:<x@y>", "a line break"),
    ],
)
def test_one_line_texts_refuse_control_characters(
    workspace_dir: Path, section: str, key: str, value: str, what: str
) -> None:
    set_config(workspace_dir, section, **{key: value})
    line = _line_of(workspace_dir / "bulletin.toml", f"{key} =")
    [problem] = _problems(workspace_dir)
    assert problem.startswith(f"bulletin.toml:{line}: {section}.{key}: ")
    assert f"contains {what}" in problem


def test_missing_and_unknown_keys_are_located(workspace_dir: Path) -> None:
    toml = workspace_dir / "bulletin.toml"
    text = toml.read_text(encoding="utf-8")
    text = text.replace('from_name = "ClusterPoliSEE"\n', "")
    text = text.replace(
        'url = "smtp://127.0.0.1:2525"',
        'url = "smtp://127.0.0.1:2525"\n"time out" = 5\nsignature = """\nfrom_email = 1\n"""\n'
        "timeout = [\n  1,\n]",
    )
    toml.write_text(text, encoding="utf-8")
    problems = _problems(workspace_dir)
    sender = _line_of(toml, "[sender]")
    assert f"bulletin.toml:{sender}: sender.from_name: is required" in problems
    quoted = _line_of(toml, '"time out"')
    assert f"bulletin.toml:{quoted}: smtp.time out: unknown key (check the spelling)" in problems
    signature = _line_of(toml, "signature =")
    assert f"bulletin.toml:{signature}: smtp.signature: unknown key (check the spelling)" in (
        problems
    )
    assert any(
        p.startswith(f"bulletin.toml:{_line_of(toml, 'timeout = [')}: smtp.timeout: ")
        for p in problems
    ), problems
    assert len(problems) == 4, problems


def test_dotted_keys_and_inline_tables_are_located(tmp_path: Path) -> None:
    toml = tmp_path / "bulletin.toml"
    toml.write_text(
        "# comment\n"
        'newsletter.name = "N"\n'
        "\n"
        "sender = { from_name = 'F', from_email = 'bad' }\n"
        "[smtp]\n"
        "  timeout = 'x'  # a comment\n",
        encoding="utf-8",
    )
    with pytest.raises(ConfigError) as caught:
        ws.load_config(toml)
    assert sorted(str(p) for p in caught.value.problems) == [
        "bulletin.toml:4: sender.from_email: 'bad' is not an email address (An email address "
        "must have an @-sign.)",
        "bulletin.toml:6: smtp.timeout: expected a number, got 'x'",
    ]


def test_check_refuses_a_bad_from_email_before_doing_anything(workspace_dir: Path) -> None:
    set_config(workspace_dir, "sender", from_email="not an address")
    line = _line_of(workspace_dir / "bulletin.toml", "from_email =")
    result = CliRunner().invoke(cli, ["-w", str(workspace_dir), "check", SAMPLE_SLUG])
    assert result.exit_code == 1
    assert isinstance(result.exception, SystemExit)  # a user error, no traceback
    assert (
        f"bulletin.toml:{line}: sender.from_email: 'not an address' is not an email address"
        in result.stderr
    )
    assert "Traceback" not in result.stderr
    assert result.stdout == ""  # nothing rendered, no "No problems"


def test_send_refuses_a_bad_from_email_before_doing_anything(workspace_dir: Path) -> None:
    def bulletin(*args: str) -> Result:
        return CliRunner().invoke(cli, ["-w", str(workspace_dir), *args])

    assert bulletin("lists", "create", "news").exit_code == 0
    assert bulletin("subscribers", "add", "ana@example.ro", "--list", "news").exit_code == 0
    set_config(workspace_dir, "sender", from_email="newsletter@exa mple.org")
    line = _line_of(workspace_dir / "bulletin.toml", "from_email =")
    result = bulletin("send", SAMPLE_SLUG, "--list", "news", "--yes")
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit)
    assert (
        f"bulletin.toml:{line}: sender.from_email: 'newsletter@exa mple.org' is not an email "
        "address"
    ) in result.stderr
    assert result.stdout == ""  # no plan, no progress: nothing was started


TRICKY_TOML = """\
# [not.a.table] in a comment
[newsletter]  # a comment after a header
name = "A [b] = c"
reason = \"\"\"
[fake]
organisation = "inside a string"
\"\"\"\"
'postal address' = 'has # no comment'
"quoted \\"key\\"" = 1
list.of = [
  { x = "]" },  # ] in a comment
  '[',
]

[[servers]]
host = "a"
[ dkim ]
selector = 'x'
"""


def _leaves(table: dict[str, object], prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    out = []
    for key, value in table.items():
        if isinstance(value, dict):
            out += _leaves(value, (*prefix, key))
        else:
            out.append((*prefix, key))
    return out


@pytest.mark.parametrize("newline", ["\n", "\r\n"])
def test_key_lines_locate_every_key_and_nothing_inside_strings(newline: str) -> None:
    import tomllib

    from bulletin.scaffold import config_text

    repo_toml = (Path(__file__).resolve().parent.parent / "bulletin.toml").read_text("utf-8")
    for text in (repo_toml, config_text(), TRICKY_TOML):
        text = text.replace("\n", newline)
        found = ws.key_lines(text)
        lines = text.split(newline)
        data = tomllib.loads(text)
        for path in _leaves({k: v for k, v in data.items() if k != "servers"}):
            assert path in found, path
            assert path[-1].split()[0] in lines[found[path] - 1], (path, found[path])
    found = ws.key_lines(TRICKY_TOML)
    assert found[("newsletter",)] == 2 and found[("dkim",)] == 17
    assert found[("newsletter", "reason")] == 4
    assert found[("newsletter", "postal address")] == 8
    assert found[("newsletter", 'quoted "key"')] == 9
    assert found[("newsletter", "list", "of")] == 10
    assert found[("servers", "host")] == 16 and found[("dkim", "selector")] == 18
    assert ("fake",) not in found and ("not", "a", "table") not in found
    assert ("newsletter", "organisation") not in found and ("newsletter", "x") not in found


def test_smtp_url_and_language_are_checked_at_load_at_their_lines(tmp_path: Path) -> None:
    """Issue 8 defect 6: a bad relay URL surfaced only when a send connected."""
    from bulletin.errors import ConfigError
    from bulletin.workspace import load_config

    path = tmp_path / "bulletin.toml"
    path.write_text(
        '[newsletter]\nname = "N"\nlanguage = "ro_RO!"\n'
        '[sender]\nfrom_name = "N"\nfrom_email = "n@example.org"\n'
        '[smtp]\nurl = "smtp://ana:hunter2@mail.example.org:587"\n',
        encoding="utf-8",
    )
    with pytest.raises(ConfigError) as info:
        load_config(path)
    text = str(info.value)
    assert "bulletin.toml:3: newsletter.language: language 'ro_RO!' is not a language code" in text
    assert "bulletin.toml:8: smtp.url: must not contain a user name or password" in text
    assert "hunter2" not in text
    path.write_text(path.read_text().replace("ro_RO!", "ro_ro").replace("ana:hunter2@", ""))
    config = load_config(path)
    assert config.newsletter.language == "ro-RO"


# --- database.url: a URL bulletin can use, and never a password in bulletin.toml ----------


@pytest.mark.parametrize(
    ("url", "why"),
    [
        (
            "postgresql+psycopg://news:s3cret@db.example.org/news",
            "holds a password, and bulletin.toml is shared with the workspace",
        ),
        ("mysql://news@db.example.org/news", "bulletin works with SQLite and PostgreSQL"),
        ("not a url", "not a database URL"),
    ],
)
def test_a_database_url_is_checked_at_its_line_and_its_password_never_shown(
    workspace_dir: Path, url: str, why: str
) -> None:
    set_config(workspace_dir, "database", url=url)
    lines = (workspace_dir / "bulletin.toml").read_text(encoding="utf-8").splitlines()
    section = lines.index("[database]")
    line = next(n for n, text in enumerate(lines, 1) if n > section and text.startswith("url ="))
    [problem] = _problems(workspace_dir)
    assert problem.startswith(f"bulletin.toml:{line}: database.url: {why}"), problem
    assert "s3cret" not in problem
    result = CliRunner().invoke(cli, ["-w", str(workspace_dir), "lists"])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "s3cret" not in result.output and why in " ".join(result.output.split())


def test_the_database_url_and_password_come_from_the_environment(
    workspace_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    set_config(workspace_dir, "database", url="postgresql+psycopg://news@db.example.org/news")
    workspace = ws.load(workspace_dir)
    assert workspace.database_url() == "postgresql+psycopg://news@db.example.org/news"
    monkeypatch.setenv("BULLETIN_DATABASE_PASSWORD", "pa:ss/w@rd")
    # Quoted into the URL, so any character survives.
    assert (
        workspace.database_url() == "postgresql+psycopg://news:pa%3Ass%2Fw%40rd@db.example.org/news"
    )
    other = tmp_path / "other.db"
    monkeypatch.setenv("BULLETIN_DATABASE_URL", f"sqlite:///{other}")
    assert workspace.database_url() == f"sqlite:///{other}"
    monkeypatch.setenv("BULLETIN_DATABASE_URL", "oracle://x@y/z")
    with pytest.raises(BulletinError, match="BULLETIN_DATABASE_URL: bulletin works with"):
        workspace.database_url()


def test_a_database_password_file_readable_by_others_is_refused(workspace_dir: Path) -> None:
    secret = workspace_dir.parent / "db-password"
    secret.write_text("s3cret\n", encoding="utf-8")
    secret.chmod(0o644)
    set_config(
        workspace_dir,
        "database",
        url="postgresql+psycopg://news@db.example.org/news",
        password_file=str(secret),
    )
    result = CliRunner().invoke(cli, ["-w", str(workspace_dir), "lists"])
    assert result.exit_code == 1 and "Traceback" not in result.output, result.output
    assert "db-password" in result.output and "s3cret" not in result.output
