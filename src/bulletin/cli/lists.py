"""``bulletin lists``, ``bulletin lists create`` and ``bulletin lists edit``: mailing lists."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

from bulletin.cli._common import Context, console, pass_ctx, visible


@click.group(
    "lists",
    invoke_without_command=True,
    epilog="Examples:\n\n\b\n  bulletin lists\n  bulletin lists create newsletter-ro --name "
    '"Newsletter (RO)" --public --language ro\n  bulletin lists edit newsletter-ro '
    '--consent-text "Sunt de acord să primesc…"',
)
@click.pass_context
def lists_group(click_ctx: click.Context) -> None:
    """Show the mailing lists with member counts by status (or create or edit one)."""
    if click_ctx.invoked_subcommand is not None:
        return
    from rich.table import Table

    from bulletin.store import operations
    from bulletin.store.subscribers import EFFECTIVE_STATUSES

    assert isinstance(click_ctx.obj, Context)
    rows = operations.lists(click_ctx.obj.store())
    if not rows:
        console.print("No lists yet. Create one with `bulletin lists create SLUG`.", markup=False)
        return
    # "signup" says both whether a list is public and its opt-in mode: "no" (private, no
    # form), "double" or "single". One column and one space between columns keep the table
    # within 80 columns.
    table = Table(
        "list",
        "name",
        "signup",
        box=None,
        pad_edge=False,
        padding=(0, 1, 0, 0),
        header_style="bold",
    )
    for status in (*EFFECTIVE_STATUSES, "total"):
        table.add_column(status, justify="right", min_width=len(status))
    for c in rows:
        counts = (f"{c.counts[s]:,}" for s in EFFECTIVE_STATUSES)
        signup = c.opt_in if c.public else "no"
        table.add_row(c.slug, visible(c.name), signup, *counts, f"{c.total:,}")
    console.print(table)


def _setting_options(edit: bool) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """The options ``create`` and ``edit`` share (``edit`` also has the opposites)."""
    public_help = "Give the list a signup form and show it on the preferences page."
    public = (
        click.option("--public/--private", "public", default=None, help=public_help)
        if edit
        else click.option("--public", "public", is_flag=True, default=None, help=public_help)
    )
    single_help = "Subscribe form sign-ups at once, without a confirmation mail."
    opt_in = (
        click.option(
            "--single-opt-in/--double-opt-in", "single_opt_in", default=None, help=single_help
        )
        if edit
        else click.option("--single-opt-in", is_flag=True, default=None, help=single_help)
    )
    options = [
        click.option(
            "--name", default=None, help="Display name (public pages never show the slug)."
        ),
        click.option("--description", default=None, help="A sentence shown on the signup form."),
        public,
        opt_in,
        click.option(
            "--language",
            default=None,
            metavar="LANG",
            help="Language of the list's pages and mails (default: newsletter.language).",
        ),
        click.option(
            "--consent-text",
            default=None,
            metavar="TEXT",
            help="What people agree to on the form (default: a sentence naming the newsletter, "
            "in the list's language); changing it starts a new consent version.",
        ),
    ]

    def apply(f: Callable[..., Any]) -> Callable[..., Any]:
        for option in reversed(options):
            f = option(f)
        return f

    return apply


def _settings(
    name: str | None,
    description: str | None,
    public: bool | None,
    single_opt_in: bool | None,
    language: str | None,
    consent_text: str | None,
) -> Any:
    from bulletin.store.subscribers import ListSettings

    return ListSettings(
        name=name,
        description=description,
        public=public,
        opt_in=None if single_opt_in is None else ("single" if single_opt_in else "double"),
        language=language,
        consent_text=consent_text,
    )


def _describe(created: Any) -> str:
    public = "public (signup form)" if created.public else "private"
    return f"{public}, {created.opt_in} opt-in, consent text version {created.consent_version}"


@lists_group.command(
    "create",
    epilog='Example:\n\n\b\n  bulletin lists create newsletter-ro --name "Newsletter în română" '
    "--public --language ro",
)
@click.argument("slug")
@_setting_options(edit=False)
@pass_ctx
def lists_create_cmd(
    ctx: Context,
    slug: str,
    name: str | None,
    description: str | None,
    public: bool | None,
    single_opt_in: bool | None,
    language: str | None,
    consent_text: str | None,
) -> None:
    """Create the list SLUG (lower-case letters, digits, dashes); private unless --public."""
    from bulletin.store import operations

    settings = _settings(name, description, public, single_opt_in, language, consent_text)
    created = operations.create_list(ctx.store(), slug, None, settings)
    console.print(visible(f"Created list {created.slug} ({created.name}): {_describe(created)}."))


@lists_group.command(
    "edit",
    epilog="Examples:\n\n\b\n  bulletin lists edit newsletter-ro --public\n  bulletin lists "
    'edit newsletter-ro --consent-text "Sunt de acord să primesc știrile proiectului."',
)
@click.argument("slug")
@_setting_options(edit=True)
@pass_ctx
def lists_edit_cmd(
    ctx: Context,
    slug: str,
    name: str | None,
    description: str | None,
    public: bool | None,
    single_opt_in: bool | None,
    language: str | None,
    consent_text: str | None,
) -> None:
    """Change the name or signup settings of the list SLUG (options not given stay)."""
    from bulletin.store import operations

    settings = _settings(name, description, public, single_opt_in, language, consent_text)
    edited = operations.edit_list(ctx.store(), slug, settings)
    console.print(visible(f"List {edited.slug} ({edited.name}): {_describe(edited)}."))


COMMANDS = (lists_group,)
