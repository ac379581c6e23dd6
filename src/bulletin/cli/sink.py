"""``bulletin sink``: capture mail locally instead of delivering it."""

from __future__ import annotations

from pathlib import Path

import click

from bulletin.cli._common import Context, console, pass_ctx


@click.command(
    "sink",
    epilog="Examples:\n\n\b\n  bulletin sink\n  bulletin sink --port 2526 --maildir /tmp/captured",
)
@click.option(
    "--port",
    "-p",
    type=click.IntRange(0, 65535),
    default=2525,
    show_default=True,
    help="Port to listen on (0 picks any free port).",
)
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option(
    "--maildir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Maildir folder for the messages (default: mail/sink in the workspace).",
)
@pass_ctx
def sink_cmd(ctx: Context, port: int, host: str, maildir: Path | None) -> None:
    """Capture mail locally: an SMTP server that stores every message, delivers none.

    With smtp.url = "smtp://127.0.0.1:2525" (the default) an issue can be sent for real
    without reaching anyone. Each message is stored once per recipient in a Maildir, with
    X-Bulletin-Envelope-From and Delivered-To header lines added; any mail client opens it.
    Ctrl-C stops the server and prints how many messages it captured.
    """
    from bulletin.sink import DEFAULT_MAILDIR, SinkActivity, run_sink, start_sink

    configured: str | None = None
    if maildir is None:
        workspace = ctx.workspace
        maildir = workspace.root / DEFAULT_MAILDIR
        configured = workspace.config.smtp.url
    handle = start_sink(maildir, host, port)
    console.print(
        f"Capturing mail at {handle.url} into {maildir} (Ctrl-C to stop)",
        markup=False,
        soft_wrap=True,
    )
    if configured is not None and configured.rstrip("/") != handle.url:
        console.print(
            f'Note: bulletin.toml sends to {configured}; set smtp.url = "{handle.url}" '
            "to send here.",
            markup=False,
            soft_wrap=True,
        )

    def on_activity(a: SinkActivity) -> None:
        if a.new == 1 and a.last is not None:
            rcpt, subject = a.last
            console.print(f"{a.count:>7,}  {rcpt}  {subject}", markup=False, soft_wrap=True)
        else:
            console.print(f"{a.count:>7,}  (+{a.new:,} messages)", markup=False)

    count = run_sink(handle, on_activity)
    noun = "message" if count == 1 else "messages"
    console.print(f"Stopped. Captured {count:,} {noun} in {maildir}.", markup=False, soft_wrap=True)


COMMANDS = (sink_cmd,)
