"""``bulletin render``: files written, summary printed, errors without tracebacks."""

from __future__ import annotations

from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path

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
