"""``bulletin render``: files written, summary printed, errors without tracebacks."""

from __future__ import annotations

from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path

import pytest
from click.testing import CliRunner

from bulletin.cli import cli

SAMPLE_SLUG = "2014-10-clusterpolisee-03"


def run(workspace_dir: Path, *args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, ["-w", str(workspace_dir), "render", *args])
    return result.exit_code, result.stdout, result.stderr


def test_render_writes_html_and_text_under_out(workspace_dir: Path) -> None:
    code, out, _ = run(workspace_dir, SAMPLE_SLUG)
    assert code == 0, out
    html = workspace_dir / "out" / f"{SAMPLE_SLUG}.html"
    text = workspace_dir / "out" / f"{SAMPLE_SLUG}.txt"
    assert html.read_text(encoding="utf-8").startswith("<!doctype html>")
    assert "Dezabonare:\n<http://127.0.0.1:8080/u/preview>" in text.read_text(encoding="utf-8")
    assert "HTML " in out and "KB" in out and str(html) in out and str(text) in out


def test_render_for_a_subscriber_and_as_eml(workspace_dir: Path, tmp_path: Path) -> None:
    target = tmp_path / "o" / "nr3.html"
    eml = tmp_path / "o" / "nr3.eml"
    code, out, _ = run(
        workspace_dir, SAMPLE_SLUG, "-o", str(target), "--subscriber", "ion@example.org",
        "--eml", str(eml),
    )  # fmt: skip
    assert code == 0, out
    assert target.with_suffix(".txt").is_file()
    assert "Message" in out and str(eml) in out
    msg = message_from_bytes(eml.read_bytes(), policy=policy.default)
    assert isinstance(msg, EmailMessage)
    assert msg["To"] == "ion@example.org"
    assert msg.get_content_type() == "multipart/alternative"
    body = msg.get_body(("html",))
    assert body is not None
    html = body.get_content()
    assert "Citiți online" in html
    assert html.replace("\r\n", "\n") == target.read_text(encoding="utf-8")


def test_render_reports_template_errors_without_traceback(workspace_dir: Path) -> None:
    partial = workspace_dir / "templates" / "sections" / "text.mjml.j2"
    partial.write_text("<mj-section>{{ nope }}</mj-section>\n", encoding="utf-8")
    code, _, err = run(workspace_dir, SAMPLE_SLUG)
    assert code == 1
    assert "templates/sections/text.mjml.j2:1: undefined: 'nope' is undefined" in err
    assert "Traceback" not in err


def test_render_help_shows_an_example() -> None:
    result = CliRunner().invoke(cli, ["render", "--help"])
    assert result.exit_code == 0
    assert "bulletin render 2014-10-clusterpolisee-03 -o out/nr3.html --eml out/nr3.eml" in (
        result.output
    )


def test_render_for_a_stored_subscriber_fills_name_and_attributes(workspace_dir: Path) -> None:
    """--subscriber looks the reader up in the store: name and attributes, not just the
    address; an unknown address is filled alone, with a note."""
    import subprocess

    from conftest import REPO

    bulletin = str(REPO / ".venv" / "bin" / "bulletin")
    partial = workspace_dir / "templates" / "partials" / "footer.mjml.j2"
    partial.write_text(
        partial.read_text(encoding="utf-8").replace(
            "{{ subscriber.email }}.",
            "{{ subscriber.email }} ({{ subscriber.name }}, {{ subscriber.attr('city') }}).",
        ),
        encoding="utf-8",
    )
    csv = workspace_dir / "people.csv"
    csv.write_text("email,name,city\nana@example.ro,Ana Țăranu,Iași\n", encoding="utf-8")
    run = [bulletin, "-w", str(workspace_dir)]
    imported = subprocess.run(
        [*run, "subscribers", "import", str(csv), "--list", "ro", "--create-list"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert imported.returncode == 0, imported.stderr
    out = workspace_dir / "out" / "ana.html"
    done = subprocess.run(
        [
            *run,
            "render",
            "2014-10-clusterpolisee-03",
            "-o",
            str(out),
            "--subscriber",
            "ana@example.ro",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert "ana@example.ro (Ana Țăranu, Iași)." in out.read_text(encoding="utf-8")

    other = subprocess.run(
        [
            *run,
            "render",
            "2014-10-clusterpolisee-03",
            "-o",
            str(out),
            "--subscriber",
            "nobody@example.ro",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert other.returncode == 0, other.stderr
    assert "not in the subscriber store" in other.stderr
    assert "nobody@example.ro (, )." in out.read_text(encoding="utf-8")


# --- what the officer renders is what the send delivers (issue 8, defect 5) --------------


def _without_date(message: bytes) -> bytes:
    """The message with its Date line removed: the one header a proof cannot share."""
    head, sep, body = message.partition(b"\r\n\r\n")
    lines = [line for line in head.split(b"\r\n") if not line.startswith(b"Date: ")]
    return b"\r\n".join(lines) + sep + body


def test_render_for_a_subscriber_is_byte_for_byte_what_the_send_delivers(
    workspace_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The subscriber's name, first_name attribute, To header and signed links match the send.

    Before: render filled first_name with the first word of the name ("Ana") while the send
    used the first_name attribute ("Ana Maria"), and --eml left the display name out of To.
    """
    from bulletin.sink import start_sink
    from conftest import set_config

    monkeypatch.setenv("BULLETIN_SECRET_KEY", "k" * 32)
    footer = workspace_dir / "templates" / "partials" / "footer.mjml.j2"
    footer.write_text(
        footer.read_text(encoding="utf-8").replace(
            '<p>{{ _("This email was sent to") }}',
            '<p>Dragă {{ subscriber.first_name }},</p>\n      <p>{{ _("This email was sent to") }}',
        ),
        encoding="utf-8",
    )
    contacts = tmp_path / "contacts.csv"
    contacts.write_text(
        "email,name,first_name,city\n"
        "ana@example.ro,Ana Maria Popescu,Ana Maria,Iași\n"
        "ion@example.ro,Ion Ionescu,,Cluj\n",
        encoding="utf-8",
    )
    runner = CliRunner()

    def bulletin(*args: str) -> str:
        result = runner.invoke(cli, ["-w", str(workspace_dir), *args], catch_exceptions=False)
        assert result.exit_code == 0, result.output
        return result.stdout

    bulletin("subscribers", "import", str(contacts), "--list", "demo", "--create-list")
    with start_sink(tmp_path / "sink", "127.0.0.1", 0) as sink:
        set_config(workspace_dir, "smtp", url=sink.url)
        bulletin("send", SAMPLE_SLUG, "--list", "demo", "--yes")
    captured = {}
    for path in (tmp_path / "sink" / "new").iterdir():
        data = path.read_bytes()
        # The sink puts two lines of its own in front: X-Bulletin-Envelope-From, Delivered-To.
        first, second, rest = data.split(b"\r\n", 2)
        assert first.startswith(b"X-Bulletin-Envelope-From:") and second.startswith(b"Delivered")
        captured[second.split(b": ", 1)[1].decode()] = rest

    eml = tmp_path / "proof" / "ana.eml"
    html = tmp_path / "proof" / "ana.html"
    out = bulletin(
        "render", SAMPLE_SLUG, "--subscriber", "ana@example.ro", "--eml", str(eml), "-o", str(html)
    )
    assert "For ana@example.ro (list demo)" in out
    proof = eml.read_bytes()
    assert _without_date(proof) == _without_date(captured["ana@example.ro"])
    msg = message_from_bytes(proof, policy=policy.default)
    assert isinstance(msg, EmailMessage)
    assert msg["To"] == "Ana Maria Popescu <ana@example.ro>"
    body = msg.get_body(("html",))
    assert body is not None
    assert body.get_content().replace("\r\n", "\n") == html.read_text(encoding="utf-8")
    assert "Dragă Ana Maria," in html.read_text(encoding="utf-8")
    # Without a first_name attribute the first word of the name is used, by both.
    ion = tmp_path / "proof" / "ion.eml"
    bulletin("render", SAMPLE_SLUG, "--subscriber", "ion@example.ro", "--list", "demo",
             "--eml", str(ion), "-o", str(tmp_path / "proof" / "ion.html"))  # fmt: skip
    assert _without_date(ion.read_bytes()) == _without_date(captured["ion@example.ro"])
    assert "Dragă Ion," in (tmp_path / "proof" / "ion.html").read_text(encoding="utf-8")


def test_render_sample_eml_names_the_sample_reader_and_signs_nothing(
    workspace_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("BULLETIN_SECRET_KEY", raising=False)
    eml = tmp_path / "sample.eml"
    code, out, _ = run(workspace_dir, SAMPLE_SLUG, "--eml", str(eml))
    assert code == 0, out
    msg = message_from_bytes(eml.read_bytes(), policy=policy.default)
    assert msg["To"] == "Ana Popescu <cititor@example.org>"
    assert "/u/preview" in msg["List-Unsubscribe"]
    # A sample proof needs no signing key, so rendering creates none.
    assert not (workspace_dir / ".bulletin" / "secret_key").exists()
