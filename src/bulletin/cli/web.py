"""``bulletin serve`` and ``bulletin archive build``: the public pages."""

from __future__ import annotations

from pathlib import Path

import click

from bulletin.cli._common import Context, console, pass_ctx


@click.command(
    "serve",
    epilog="Examples:\n\n\b\n  bulletin serve\n  bulletin serve --host 127.0.0.1 --port 8080",
)
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="Address to listen on (keep 127.0.0.1 behind a reverse proxy on the same host).",
)
@click.option(
    "--port",
    "-p",
    type=click.IntRange(0, 65535),
    default=8080,
    show_default=True,
    help="Port to listen on (0 picks any free port).",
)
@pass_ctx
def serve_cmd(ctx: Context, host: str, port: int) -> None:
    """Serve the public pages: unsubscribe, signup forms, preferences and the archive.

    GET /u/TOKEN shows a confirmation page and changes nothing; POST /u/TOKEN (its button,
    or a mail provider's RFC 8058 one-click request) unsubscribes at once. Public lists
    have a signup form at /subscribe/LIST (double opt-in: a confirmation mail through
    [smtp]); every message links /preferences/TOKEN. /archive/ lists
    the published issues; /healthz answers ok for a proxy. Relay providers post bounces and
    complaints to /hooks/ses, /hooks/postmark, /hooks/sendgrid or /hooks/mailgun once
    [webhooks] names their secret. Run it behind a reverse proxy
    with HTTPS at newsletter.base_url (see README, "Deploying bulletin serve").
    """
    from bulletin.web.public import serve_public

    serve_public(ctx.workspace, host=host, port=port)


@click.group(
    "archive",
    epilog="Example:\n\n\b\n  bulletin archive build public/archive",
)
def archive_group() -> None:
    """The public archive of issues (also served by `bulletin serve` at /archive/).

    Every issue under issues/ is published from its date on, or from its send if that comes
    first, unless archive.exclude in bulletin.toml lists it. Archive copies hold no
    personal data.
    """


@archive_group.command(
    "build",
    epilog="Example:\n\n\b\n  bulletin archive build public/archive\n"
    "  rsync -a public/archive/ web:/srv/www/news/archive/",
)
@click.argument("out", type=click.Path(file_okay=False, path_type=Path))
@pass_ctx
def archive_build_cmd(ctx: Context, out: Path) -> None:
    """Write the archive as static files into OUT: index.html and SLUG/index.html.

    The files are the pages `bulletin serve` answers at /archive/ and /archive/SLUG, so
    OUT can be published at <base_url>/archive/ by any web server instead.
    """
    from functools import cache

    from bulletin.store import operations
    from bulletin.web.archive import build_archive

    # The ledger is read (once) only when an issue is dated in the future: was it sent?
    report = build_archive(
        ctx.workspace, out, sent=cache(lambda: operations.sent_issues(ctx.store()))
    )
    for slug, reason in report.skipped:
        console.print(f"  not published: {slug} ({reason})", markup=False, soft_wrap=True)
    noun = "issue" if len(report.entries) == 1 else "issues"
    console.print(
        f"Wrote the archive of {len(report.entries)} {noun} to {out} "
        f"({len(report.written)} files).",
        markup=False,
        soft_wrap=True,
    )


@click.command(
    "form",
    epilog="Examples:\n\n\b\n  bulletin form newsletter-ro\n  bulletin form newsletter-ro "
    "--language en > signup.html",
)
@click.argument("list_slug", metavar="LIST")
@click.option("--language", default=None, metavar="LANG", help="ro or en (default: the list's).")
@pass_ctx
def form_cmd(ctx: Context, list_slug: str, language: str | None) -> None:
    """Print the HTML signup form of the public list LIST, to paste into a website.

    It works without JavaScript and posts to bulletin serve at newsletter.base_url; keep its
    field names (email, name, language, consent and the hidden honeypot "website").
    """
    from bulletin.store import operations
    from bulletin.web.embed import form_snippet

    the_list = operations.get_list(ctx.store(), list_slug)
    click.echo(form_snippet(ctx.workspace, the_list, language))


COMMANDS = (
    serve_cmd,
    archive_group,
    form_cmd,
)
