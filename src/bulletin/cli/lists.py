"""``bulletin lists`` and ``bulletin lists create``: mailing lists."""

from __future__ import annotations

import click

from bulletin.cli._common import Context, console, pass_ctx, visible


@click.group(
    "lists",
    invoke_without_command=True,
    epilog="Examples:\n\n\b\n  bulletin lists\n  bulletin lists create newsletter-ro --name "
    '"Newsletter (RO)"',
)
@click.pass_context
def lists_group(click_ctx: click.Context) -> None:
    """Show the mailing lists with member counts by status (or create one)."""
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
    table = Table("list", "name", box=None, pad_edge=False, header_style="bold")
    for status in (*EFFECTIVE_STATUSES, "total"):
        table.add_column(status, justify="right", min_width=len(status))
    for c in rows:
        counts = (f"{c.counts[s]:,}" for s in EFFECTIVE_STATUSES)
        table.add_row(c.slug, visible(c.name), *counts, f"{c.total:,}")
    console.print(table)


@lists_group.command(
    "create",
    epilog='Example:\n\n\b\n  bulletin lists create newsletter-ro --name "Newsletter în română"',
)
@click.argument("slug")
@click.option("--name", default=None, help="Display name (default: the slug).")
@pass_ctx
def lists_create_cmd(ctx: Context, slug: str, name: str | None) -> None:
    """Create the list SLUG (lower-case letters, digits, dashes)."""
    from bulletin.store import operations

    created = operations.create_list(ctx.store(), slug, name)
    console.print(visible(f"Created list {created.slug} ({created.name})."))


COMMANDS = (lists_group,)
