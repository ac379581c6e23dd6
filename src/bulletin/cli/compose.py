"""``bulletin init``, ``render``, ``check`` and ``preview``: writing and looking at an issue."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import click

from bulletin.cli._common import Context, console, err_console, pass_ctx


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
    "new",
    epilog="Examples:\n\n\b\n  bulletin new 2014-11-clusterpolisee-04\n"
    "  bulletin new 2014-11-clusterpolisee-04 --from 2014-10-clusterpolisee-03\n"
    '  bulletin new 2014-11-news --title "Open Days 2014" --language en --date 2014-11-05',
)
@click.argument("slug")
@click.option("--title", default=None, help="The subject line (default: a placeholder).")
@click.option(
    "--language", default=None, help="Language of the issue (default: newsletter.language)."
)
@click.option(
    "--date",
    "date",
    type=click.DateTime(formats=["%Y-%m-%d"]),
    default=None,
    help="Issue date, YYYY-MM-DD (default: today).",
)
@click.option(
    "--from",
    "previous",
    metavar="PREVIOUS_SLUG",
    default=None,
    help="Keep the sections (types, headings) and settings of an earlier issue.",
)
@pass_ctx
def new_cmd(
    ctx: Context,
    slug: str,
    title: str | None,
    language: str | None,
    date: datetime | None,
    previous: str | None,
) -> None:
    """Start issue SLUG: issues/SLUG/issue.yaml with the next number and a skeleton.

    Every section type is in it, commented, with its fields; what you must write is marked
    [EDIT], and `bulletin check --strict SLUG` fails until none is left.
    """
    from bulletin.content.skeleton import new_issue

    workspace = ctx.workspace
    made = new_issue(
        workspace,
        slug,
        subject=title,
        language=language,
        date=date.date() if date else None,
        previous=previous,
    )
    based = f", sections from {made.based_on}" if made.based_on else ""
    console.print(
        f"Created {workspace.relpath(made.path)}: issue {made.number}, dated "
        f"{made.date.isoformat()}{based}.",
        markup=False,
    )
    console.print(f"Fill the [EDIT] placeholders, then: bulletin preview {slug}", markup=False)


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
    help="Render what this stored subscriber gets, signed links included (default: a "
    "sample reader).",
)
@click.option(
    "--list",
    "list_slug",
    metavar="SLUG",
    default=None,
    help="With --subscriber: the list the message goes through (default: their first list).",
)
@click.option(
    "--eml",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Also write the complete message (headers, text and HTML parts) as an .eml file.",
)
@pass_ctx
def render_cmd(
    ctx: Context,
    issue: str,
    output: Path | None,
    subscriber: str | None,
    list_slug: str | None,
    eml: Path | None,
) -> None:
    """Render ISSUE (a slug under issues/ or a folder) to HTML and plain text files.

    The files are what one reader receives: a sample reader, or with --subscriber a stored
    subscriber exactly as the send builds their message (the .eml differs only in its Date).
    """
    from bulletin.dispatch.proof import write_proof

    if list_slug is not None and subscriber is None:
        raise click.UsageError("--list goes with --subscriber.")
    workspace = ctx.workspace
    proof = write_proof(
        workspace,
        workspace.issue_dir(issue),
        output=output,
        eml=eml,
        subscriber=subscriber,
        list_slug=list_slug,
        store=ctx.store,
    )
    for problem in proof.rendered.problems:
        err_console.print(f"{problem.severity}: {problem}", markup=False, soft_wrap=True)
    for note in proof.notes:
        err_console.print(f"note: {note}", markup=False, soft_wrap=True)
    who = proof.recipient.email + (f" (list {proof.list_slug})" if proof.list_slug else "")
    lines = [
        f"For {who}",
        f"HTML {proof.html_bytes / 1024:.1f} KB -> {proof.html_path}",
        f"Text {proof.text_bytes / 1024:.1f} KB -> {proof.text_path}",
    ]
    if proof.eml_path is not None:
        lines.append(f"Message {proof.eml_bytes / 1024:.1f} KB -> {proof.eml_path}")
    console.print("\n".join(lines), markup=False, soft_wrap=True)


COMMANDS = (
    init_cmd,
    new_cmd,
    preview_cmd,
    check_cmd,
    render_cmd,
)
