"""``bulletin init``, ``render``, ``check`` and ``preview``: writing and looking at an issue."""

from __future__ import annotations

from pathlib import Path

import click

from bulletin.cli._common import Context, console, err_console, pass_ctx
from bulletin.errors import BulletinError


@click.command(
    "init",
    epilog="Example:\n\n\b\n  bulletin init my-newsletter\n  cd my-newsletter && bulletin check"
    " 2014-10-clusterpolisee-03",
)
@click.argument("directory", type=click.Path(path_type=Path))
def init_cmd(directory: Path) -> None:
    """Create a workspace in DIRECTORY with the default templates and an example issue.

    DIRECTORY may be missing or empty; a folder that already holds bulletin.toml is refused.
    """
    from bulletin.scaffold import init_workspace

    result = init_workspace(directory)
    console.print(f"Created a bulletin workspace in {result.root}", markup=False)
    console.print("Edit the placeholders marked EDIT in bulletin.toml, then run:", markup=False)
    console.print(f"  {result.next_commands(str(directory))}", markup=False, soft_wrap=True)


@click.command(
    "preview",
    epilog="Examples:\n\n\b\n  bulletin preview 2014-10-clusterpolisee-03\n"
    "  bulletin preview 2014-10-clusterpolisee-03 --port 8001 --no-open",
)
@click.argument("issue")
@click.option(
    "--port",
    "-p",
    type=click.IntRange(0, 65535),
    default=8000,
    show_default=True,
    help="Port on 127.0.0.1 (0 picks any free port).",
)
@click.option("--no-open", is_flag=True, help="Do not open a browser tab.")
@pass_ctx
def preview_cmd(ctx: Context, issue: str, port: int, no_open: bool) -> None:
    """Serve a live preview of ISSUE (a slug under issues/ or a folder) in the browser.

    Shows the email at desktop and mobile widths, the plain text and a summary with the
    check findings. Saving issue.yaml, its Markdown files or a template reloads the page.
    """
    from bulletin.web.preview import serve_preview

    workspace = ctx.workspace
    serve_preview(workspace, workspace.issue_dir(issue), port=port, open_browser=not no_open)


@click.command(
    "check",
    epilog="Example:\n\n\b\n  bulletin check 2014-10-clusterpolisee-03 --strict",
)
@click.argument("issue")
@click.option("--strict", is_flag=True, help="Treat warnings as errors (exit 1 on any finding).")
@pass_ctx
def check_cmd(ctx: Context, issue: str, strict: bool) -> None:
    """Check ISSUE (a slug under issues/ or a folder) before sending it.

    Validates issue.yaml, renders it, lints the MJML the templates produce and checks the
    result: HTML size (Gmail clips over ~102 KB), links, image alt text, empty sections,
    subject and preheader, the unsubscribe link, Romanian diacritics. Every finding is
    printed with its file:line. Exits 1 when there are errors (with --strict, any finding).
    """
    from rich.text import Text

    from bulletin.render.checks import run_check

    workspace = ctx.workspace
    report = run_check(workspace, workspace.issue_dir(issue), strict=strict)
    for problem in report.problems:
        colour = "red" if problem.severity == "error" else "yellow"
        line = Text(f"{problem.severity}: ", style=f"bold {colour}")
        line.append(str(problem))
        console.print(line, soft_wrap=True)
    if report.errors:
        console.print(Text(report.summary(), style="bold red"))
        click.get_current_context().exit(1)
    console.print(Text(report.summary(), style="yellow" if report.warnings else "green"))


@click.command(
    "render",
    epilog="Examples:\n\n\b\n  bulletin render 2014-10-clusterpolisee-03\n"
    "  bulletin render 2014-10-clusterpolisee-03 -o out/nr3.html --eml out/nr3.eml\n"
    "  bulletin render 2014-10-clusterpolisee-03 --subscriber ana@example.org",
)
@click.argument("issue")
@click.option(
    "--output",
    "-o",
    "output",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="HTML file to write; the text goes beside it as .txt (default: out/<slug>.html).",
)
@click.option(
    "--subscriber",
    metavar="EMAIL",
    default=None,
    help="Fill the per-reader values for this address (default: a sample reader).",
)
@click.option(
    "--eml",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Also write the complete message (headers, text and HTML parts) as an .eml file.",
)
@pass_ctx
def render_cmd(
    ctx: Context, issue: str, output: Path | None, subscriber: str | None, eml: Path | None
) -> None:
    """Render ISSUE (a slug under issues/ or a folder) to HTML and plain text files.

    The files are what one reader receives, filled with sample values or for --subscriber.
    """
    from bulletin.content.loader import load_issue
    from bulletin.render.pipeline import write_rendered

    workspace = ctx.workspace
    loaded = load_issue(workspace, workspace.issue_dir(issue))
    name, attributes = "", None
    if subscriber is not None:
        from bulletin.store.subscribers import find_subscriber

        with ctx.store().connect() as conn:
            found = find_subscriber(conn, subscriber)
        if found is None:
            err_console.print(
                f"note: {subscriber} is not in the subscriber store; only the address is filled.",
                markup=False,
            )
        else:
            name, attributes = found.name, found.attributes
    result = write_rendered(
        workspace, loaded, output, email=subscriber, name=name, attributes=attributes
    )
    for problem in result.rendered.problems:
        err_console.print(f"{problem.severity}: {problem}", markup=False, soft_wrap=True)
    console.print(
        f"HTML {result.html_bytes / 1024:.1f} KB -> {result.html_path}\n"
        f"Text {result.text_bytes / 1024:.1f} KB -> {result.text_path}",
        markup=False,
        soft_wrap=True,
    )
    if eml is not None:
        from bulletin.mail.compose import Recipient, build_message_template

        message = build_message_template(workspace.config, result.rendered)
        to_email = subscriber or result.values["email"]
        data = message.personalise(Recipient(to_email, "", result.values))
        try:
            eml.parent.mkdir(parents=True, exist_ok=True)
            eml.write_bytes(data)
        except OSError as exc:
            raise BulletinError(f"Cannot write {eml}: {exc.strerror}.") from None
        console.print(f"Message {len(data) / 1024:.1f} KB -> {eml}", markup=False, soft_wrap=True)


COMMANDS = (
    init_cmd,
    preview_cmd,
    check_cmd,
    render_cmd,
)
