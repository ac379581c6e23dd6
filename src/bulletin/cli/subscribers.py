"""``bulletin subscribers ...`` and ``bulletin lists ...``: the subscriber store."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from bulletin.cli._common import (
    Context,
    console,
    err_console,
    pass_ctx,
    print_summary,
    visible,
)
from bulletin.errors import BulletinError

if TYPE_CHECKING:
    from rich.progress import TaskID

    from bulletin.store.importer import ImportReport
    from bulletin.store.subscribers import Subscriber


@click.group(
    "subscribers",
    epilog="Examples:\n\n\b\n  bulletin subscribers import contacts.csv --list "
    "newsletter-ro --create-list\n  bulletin subscribers show ion@example.ro",
)
def subscribers_group() -> None:
    """Import, export, add, remove, unsubscribe, block, show and count subscribers.

    Subscribers live in the database named by database.url in bulletin.toml (by default
    subscribers/bulletin.db). An address that unsubscribed, bounced or complained is never
    subscribed again unless --resubscribe is given.
    """


@subscribers_group.command(
    "import",
    epilog="Examples:\n\n\b\n  bulletin subscribers import contacts.csv --list newsletter-ro "
    "--create-list --dry-run\n  bulletin subscribers import cleaned_members_export_1a2b.csv "
    "--list newsletter-ro\n  bulletin subscribers import bounces.csv --status bounced",
)
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--list",
    "list_slug",
    metavar="SLUG",
    help="List to import into (needed unless --status bounced, complained, blocked, or "
    "unsubscribed from every list).",
)
@click.option(
    "--status",
    type=click.Choice(["unsubscribed", "bounced", "complained", "blocked"]),
    help="Import every address as a suppression: unsubscribed from --list (from every list "
    "without --list), or bounced, complained, blocked for every list.",
)
@click.option(
    "--tags-as-lists",
    is_flag=True,
    help="Mailchimp exports: subscribe tagged people to a list per tag (created private).",
)
@click.option("--dry-run", is_flag=True, help="Report what would happen; change nothing.")
@click.option("--encoding", metavar="ENC", help="File encoding (default: detected).")
@click.option("--create-list", is_flag=True, help="Create the list if it does not exist.")
@click.option(
    "--resubscribe",
    is_flag=True,
    help="Subscribe again addresses that unsubscribed, bounced or complained (only if they "
    "asked to be).",
)
@click.option("--check-dns", is_flag=True, help="Also check that each domain accepts mail.")
@click.option(
    "--rejects",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Where to write rejected rows (default: FILE's name + .rejects.csv beside it).",
)
@pass_ctx
def subscribers_import_cmd(
    ctx: Context,
    file: Path,
    list_slug: str | None,
    status: str | None,
    tags_as_lists: bool,
    dry_run: bool,
    encoding: str | None,
    create_list: bool,
    resubscribe: bool,
    check_dns: bool,
    rejects: Path | None,
) -> None:
    """Import subscribers from FILE (CSV, TSV or semicolon-separated) into a list.

    The header names the columns: email (or e-mail, Email Address), name or first name +
    last name, language; any other column becomes an attribute usable in templates. Rows
    with an invalid address are written to a rejects file; the rest is imported in one
    transaction. Exits 1 if the file as a whole cannot be imported (nothing is changed).

    Mailchimp audience exports (subscribed, unsubscribed, cleaned, non-subscribed files) and
    listmonk subscriber exports are recognised: their opt-outs, bounces and blocklist stay
    so, and opt-in times go into the consent records. No import ever subscribes an address
    that unsubscribed, bounced, complained or is blocked.
    """
    from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn

    from bulletin.store.importer import import_file

    if list_slug is None and status in (None,):
        raise click.UsageError("Give --list SLUG (or --status for a file of suppressions).")
    privacy = getattr(ctx.workspace.config, "privacy", None)
    store_ip = bool(getattr(privacy, "store_ip", False))
    engine = ctx.store()
    columns = (TextColumn("{task.description}"), BarColumn(), TaskProgressColumn())
    with Progress(
        *columns, console=err_console, transient=True, disable=not err_console.is_terminal
    ) as bar:
        tasks: dict[str, TaskID] = {}

        def on_progress(phase: str, done: int, total: int) -> None:
            if phase not in tasks:
                label = {"read": f"Reading {file.name}", "save": "Saving"}.get(phase, phase)
                tasks[phase] = bar.add_task(label, total=total)
            bar.update(tasks[phase], completed=done, total=total)

        report = import_file(
            engine,
            file,
            list_slug,
            dry_run=dry_run,
            encoding=encoding,
            create_list_if_missing=create_list,
            resubscribe=resubscribe,
            check_dns=check_dns,
            rejects_path=rejects,
            progress=on_progress,
            status=status,
            tags_as_lists=tags_as_lists,
            store_ip=store_ip,
        )
    _print_import_report(report)
    if report.list_created:
        # Imported people did not sign up through a form: a new list starts private.
        console.print(
            f"The new list {list_slug} is private (no signup form); give it one with "
            f"`bulletin lists edit {list_slug} --public`.",
            markup=False,
            soft_wrap=True,
        )


def _print_import_report(report: ImportReport) -> None:
    where = f" into {report.list_slug}" if report.list_slug else ""
    title = f"Import of {report.path.name}{where}"
    print_summary(title, report.summary_rows(), dry_run=report.dry_run, unit="rows")
    for note in report.notes():  # they quote the file's name and column names
        console.print(visible(note), soft_wrap=True)
    for r in report.rejected_sample:
        console.print(f"  rejected line {r.line}: {r.reason}", markup=False, soft_wrap=True)
    if report.rejects_path is not None:
        console.print(
            f"All {report.rejected:,} rejected rows, with reasons: {report.rejects_path}",
            markup=False,
            soft_wrap=True,
        )
    for email, was in report.suppressed_sample:
        console.print(f"  skipped {email} ({was})", markup=False, soft_wrap=True)
    for email, was in report.resubscribed_sample:
        console.print(f"  re-subscribed {email} (was {was})", markup=False, soft_wrap=True)
    more = report.resubscribed - len(report.resubscribed_sample)
    if more > 0:
        console.print(f"  ... and {more:,} more re-subscribed", markup=False)


@subscribers_group.command(
    "add",
    epilog='Example:\n\n\b\n  bulletin subscribers add "Ion Popescu <ion@example.ro>" '
    "--list newsletter-ro",
)
@click.argument("email")
@click.option("--list", "list_slug", required=True, metavar="SLUG", help="List to subscribe to.")
@click.option("--name", default=None, help="The subscriber's name.")
@click.option("--language", default=None, help="Language code, e.g. ro or en.")
@click.option("--resubscribe", is_flag=True, help="Subscribe again after an unsubscribe/bounce.")
@pass_ctx
def subscribers_add_cmd(
    ctx: Context,
    email: str,
    list_slug: str,
    name: str | None,
    language: str | None,
    resubscribe: bool,
) -> None:
    """Subscribe EMAIL to a list (accepts 'Name <address>').

    Records a consent (source cli) with the list's consent text: add only people who
    agreed to it.
    """
    from bulletin.signup.consent import consent_text
    from bulletin.store import operations

    config = ctx.workspace.config
    result = operations.add(
        ctx.store(),
        email,
        list_slug,
        name=name,
        language=language,
        resubscribe=resubscribe,
        consent_text=lambda the_list: consent_text(the_list, config),
    )
    what = {"added": "Subscribed", "resubscribed": "Re-subscribed", "already": "Already on"}
    extra = f" (was {result.was})" if result.was else ""
    console.print(
        f"{what[result.outcome]} {result.subscriber.email} to {list_slug}{extra}.", markup=False
    )
    if result.cleaned:
        fields = " and ".join(f.replace("attributes.", "attribute ") for f in result.cleaned)
        console.print(
            f"Note: line breaks or control characters in the {fields} were removed, as an "
            "import removes them.",
            markup=False,
            soft_wrap=True,
        )


@subscribers_group.command(
    "remove",
    epilog="Example:\n\n\b\n  bulletin subscribers remove ion@example.ro --yes",
)
@click.argument("email")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@pass_ctx
def subscribers_remove_cmd(ctx: Context, email: str, yes: bool) -> None:
    """Delete EMAIL with its subscriptions and history (erasure on request).

    The address is forgotten, so a later import may add it again; to keep someone from
    receiving mail, use `bulletin subscribers unsubscribe EMAIL --all` instead.
    """
    from bulletin.store import operations

    def ask(sub: Subscriber) -> bool:
        return click.confirm(f"Delete {visible(sub.email)} and all its history?", abort=True)

    removed = operations.forget(ctx.store(), email, None if yes else ask)
    if removed is not None:
        console.print(visible(f"Removed {removed.email}."))


@subscribers_group.command(
    "unsubscribe",
    epilog="Example:\n\n\b\n  bulletin subscribers unsubscribe ion@example.ro --list newsletter-ro",
)
@click.argument("email")
@click.option("--list", "list_slug", metavar="SLUG", help="Unsubscribe from this list only.")
@click.option("--all", "all_lists", is_flag=True, help="Unsubscribe from every list, for good.")
@pass_ctx
def subscribers_unsubscribe_cmd(
    ctx: Context, email: str, list_slug: str | None, all_lists: bool
) -> None:
    """Unsubscribe EMAIL from one list (--list SLUG) or from everything (--all)."""
    from bulletin.store import operations

    if bool(list_slug) == all_lists:
        raise click.UsageError("Give either --list SLUG or --all.")
    sub, changed = operations.unsubscribe(ctx.store(), email, None if all_lists else list_slug)
    where = "every list" if all_lists else list_slug
    state = f"Unsubscribed {sub.email} from {where}" if changed or all_lists else "No change"
    console.print(f"{state} ({changed} subscription(s) changed).", markup=False)


@subscribers_group.command(
    "block",
    epilog="Examples:\n\n\b\n  bulletin subscribers block spam@example.org\n"
    "  bulletin subscribers block @spam.example",
)
@click.argument("targets", nargs=-1, required=True, metavar="EMAIL|@DOMAIN...")
@pass_ctx
def subscribers_block_cmd(ctx: Context, targets: tuple[str, ...]) -> None:
    """Block addresses, or whole domains written as @example.org.

    A blocked address or any address at a blocked domain is never sent to and never
    subscribed again: not by an import, `subscribers add` or a signup form. Blocking an
    address is for good; a domain can be unblocked with `bulletin subscribers unblock`.
    """
    from bulletin.store import operations

    engine = ctx.store()
    for target in targets:
        what, new = operations.block(engine, target)
        kind = "domain" if target.strip().startswith("@") else "address"
        state = "Blocked" if new else "Already blocked:"
        console.print(visible(f"{state} {kind} {what}."))


@subscribers_group.command(
    "unblock",
    epilog="Example:\n\n\b\n  bulletin subscribers unblock @example.org",
)
@click.argument("domain", metavar="@DOMAIN")
@pass_ctx
def subscribers_unblock_cmd(ctx: Context, domain: str) -> None:
    """Take a domain off the blocklist (addresses at it may be subscribed again).

    Only domains: a blocked address stays blocked, because a block is an officer's decision
    about a person and lifting it must not be one command away. Should the person ask to
    receive mail again, remove the address (`bulletin subscribers remove`) and add it anew,
    which leaves a record of who did it. Addresses at the domain that unsubscribed, bounced
    or complained stay so.
    """
    from bulletin.store import operations

    if not domain.strip().startswith("@"):
        raise BulletinError(
            f"{domain!r} is not a domain; only domains can be unblocked.",
            hint="Write the domain as @example.org. A blocked address stays blocked; see "
            "`bulletin subscribers unblock --help`.",
        )
    what, was = operations.unblock_domain(ctx.store(), domain)
    if was:
        console.print(visible(f"Unblocked domain {what}."))
    else:
        console.print(visible(f"Domain {what} was not blocked; nothing changed."))


@subscribers_group.command(
    "blocked",
    epilog="Example:\n\n\b\n  bulletin subscribers blocked",
)
@pass_ctx
def subscribers_blocked_cmd(ctx: Context) -> None:
    """List the blocked domains (blocked addresses: `subscribers count --status blocked`)."""
    from rich.table import Table

    from bulletin.store import operations

    rows = operations.blocked_domains(ctx.store())
    if not rows:
        console.print("No blocked domains.", markup=False)
        return
    table = Table("domain", "addresses", "blocked (UTC)", "by", box=None, header_style="bold")
    for r in rows:
        table.add_row(
            visible(r.domain), f"{r.addresses:,}", f"{r.created_at:%Y-%m-%d %H:%M}", r.source
        )
    console.print(table)


@subscribers_group.command(
    "show",
    epilog="Example:\n\n\b\n  bulletin subscribers show ion@example.ro",
)
@click.argument("email")
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="Print everything stored about the person as JSON (an access request): subscriber, "
    "subscriptions, consents, history, deliveries per send, pending sign-ups.",
)
@pass_ctx
def subscribers_show_cmd(ctx: Context, email: str, as_json: bool) -> None:
    """Show EMAIL's details, lists, statuses and history."""
    from rich.table import Table

    from bulletin.store import operations

    if as_json:
        import json

        data = operations.personal_data(ctx.store(), email)
        # Plain stdout, not rich: the person's own words must come out byte for byte.
        click.echo(json.dumps(data, ensure_ascii=False, indent=2))
        return

    info = operations.details(ctx.store(), email)
    sub = info.subscriber
    card = Table(show_header=False, box=None)
    card.add_column(style="bold")
    card.add_column()
    smtputf8 = " (non-ASCII local part: needs SMTPUTF8)" if sub.smtputf8 else ""
    for label, value in (
        ("email", sub.email + smtputf8),
        ("id", str(sub.id)),
        ("name", sub.name),
        ("language", sub.language),
        ("status", sub.status),
        ("source", sub.source),
        ("created", f"{sub.created_at:%Y-%m-%d %H:%M} UTC"),
        ("updated", f"{sub.updated_at:%Y-%m-%d %H:%M} UTC"),
        *((f"attr.{k}", str(v)) for k, v in sorted(sub.attributes.items())),
    ):
        card.add_row(label, visible(value))
    console.print(card)
    # "since" is when the status last changed; the History below says who changed it.
    lists_table = Table(
        "list", "status", "since", "joined", "joined via", title="Lists", title_justify="left"
    )
    for m in info.memberships:
        lists_table.add_row(
            m.list_slug,
            m.effective,
            f"{m.updated_at:%Y-%m-%d}",
            f"{m.created_at:%Y-%m-%d}",
            visible(m.source),
        )
    console.print(lists_table)
    history = Table("when (UTC)", "event", "list", "detail", "source", title="History")
    history.title_justify = "left"
    for e in info.history:
        # A bounce's detail is the receiving server's text: anyone's words.
        history.add_row(
            f"{e.at:%Y-%m-%d %H:%M}",
            e.kind,
            e.list_slug or "",
            visible(e.detail),
            visible(e.source),
        )
    console.print(history)
    consents = Table(
        "list",
        "source",
        "given (UTC)",
        "confirmed (UTC)",
        "version",
        "consent text",
        title="Consent",
        title_justify="left",
    )
    for c in info.consents:
        if not c.recorded:
            source = f"{c.detail.partition(' (')[0]}, no record"
        else:
            source = f"{c.source} ({c.detail})" if c.detail else c.source
        if c.ip:
            source += f", from {c.ip}"
        consents.add_row(
            c.list_slug,
            visible(source),
            f"{c.given_at:%Y-%m-%d %H:%M}" if c.given_at else "",
            f"{c.confirmed_at:%Y-%m-%d %H:%M}" if c.confirmed_at else "",
            str(c.consent_version) if c.recorded else "",
            visible(c.consent_text),
        )
    if info.consents:
        console.print(consents)
    else:
        console.print("Consent: no record.")


@subscribers_group.command(
    "count",
    epilog="Example:\n\n\b\n  bulletin subscribers count --list newsletter-ro --status "
    "unsubscribed",
)
@click.option("--list", "list_slug", metavar="SLUG", help="Count the members of this list.")
@click.option(
    "--status",
    default="subscribed",
    show_default=True,
    type=click.Choice(["subscribed", "unsubscribed", "bounced", "complained", "blocked", "all"]),
    help="Which members to count.",
)
@pass_ctx
def subscribers_count_cmd(ctx: Context, list_slug: str | None, status: str) -> None:
    """Print how many subscribers (on a list) are in a status."""
    from bulletin.store import operations

    console.print(str(operations.count(ctx.store(), list_slug, status)))


@subscribers_group.command(
    "export",
    epilog="Example:\n\n\b\n  bulletin subscribers export --list newsletter-ro -o "
    "newsletter-ro.csv",
)
@click.option("--list", "list_slug", required=True, metavar="SLUG", help="List to export.")
@click.option(
    "--output",
    "-o",
    type=click.Path(dir_okay=False, path_type=Path),
    help="CSV file to write (default: standard output).",
)
@click.option(
    "--status",
    "statuses",
    multiple=True,
    type=click.Choice(["subscribed", "unsubscribed", "bounced", "complained", "blocked", "all"]),
    help="Members to export; repeat for several (default: subscribed).",
)
@click.option(
    "--consent",
    is_flag=True,
    help="Add the latest consent of each member: consent_source, consent_given_at, "
    "consent_confirmed_at, consent_version.",
)
@pass_ctx
def subscribers_export_cmd(
    ctx: Context, list_slug: str, output: Path | None, statuses: tuple[str, ...], consent: bool
) -> None:
    """Export a list as CSV that `subscribers import` reads back unchanged.

    Cells that a spreadsheet would run as a formula get a leading apostrophe.
    """
    import sys

    from bulletin.store import operations

    wanted = statuses or ("subscribed",)
    engine = ctx.store()
    if output is None:
        operations.export(engine, list_slug, sys.stdout, wanted, consent=consent)
        return
    try:
        with open(output, "w", encoding="utf-8-sig", newline="") as f:
            n = operations.export(engine, list_slug, f, wanted, consent=consent)
    except OSError as exc:
        raise BulletinError(f"Cannot write {output}: {exc.strerror}.") from None
    err_console.print(f"Exported {n:,} subscribers of {list_slug} to {output}.", markup=False)


COMMANDS = (subscribers_group,)
