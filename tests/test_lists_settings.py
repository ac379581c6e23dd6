"""List settings (public, opt-in, language, consent text and its version) and consent records
from the command line, through the real `bulletin` CLI on the pass's database."""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa
from click.testing import CliRunner, Result

from bulletin import workspace as ws
from bulletin.cli import cli
from bulletin.signup.consent import consent_text
from bulletin.store import db
from bulletin.store.consent import consents_of
from bulletin.store.subscribers import find_subscriber, get_list


def bulletin(root: Path, *args: str) -> Result:
    return CliRunner(env={"COLUMNS": "220"}).invoke(cli, ["-w", str(root), *args])


def _engine(root: Path) -> sa.Engine:
    return db.open_store(ws.load(root).database_url())


def test_create_edit_and_show_list_settings(workspace_dir: Path) -> None:
    made = bulletin(
        workspace_dir,
        "lists",
        "create",
        "stiri",
        "--name",
        "Știri și noutăți",
        "--description",
        "Noutăți din proiect",
        "--public",
        "--language",
        "ro",
    )
    assert made.exit_code == 0, made.output
    assert "Created list stiri (Știri și noutăți): public (signup form), double opt-in" in (
        made.output
    )
    assert bulletin(workspace_dir, "lists", "create", "intern").exit_code == 0
    table = bulletin(workspace_dir, "lists").output
    row = next(line for line in table.splitlines() if line.startswith("stiri"))
    assert row.split()[-7] == "double", table  # public, double opt-in
    row = next(line for line in table.splitlines() if line.startswith("intern"))
    assert row.split()[2] == "no", table  # private: no signup form
    assert "signup" in table.splitlines()[0]

    engine = _engine(workspace_dir)
    with engine.connect() as conn:
        first = get_list(conn, "stiri")
    assert (first.public, first.opt_in, first.language, first.consent_version) == (
        True,
        "double",
        "ro",
        1,
    )
    assert first.description == "Noutăți din proiect"
    # The default names the newsletter, in the list's language, with ș/ț comma-below kept.
    config = ws.load(workspace_dir).config
    default = consent_text(first, config)
    assert default.startswith("Sunt de acord să primesc ClusterPoliSEE e-newsletter")
    assert "oricând" in default and "sfârșitul" in default
    assert "I agree to receive ClusterPoliSEE e-newsletter" in consent_text(first, config, "en")

    edited = bulletin(
        workspace_dir, "lists", "edit", "stiri", "--consent-text", "Vreau știrile ț ș."
    )
    assert edited.exit_code == 0, edited.output
    assert "consent text version 2" in edited.output
    # The same text again is no change; other settings do not touch the version.
    again = bulletin(
        workspace_dir,
        "lists",
        "edit",
        "stiri",
        "--consent-text",
        "Vreau știrile ț ș.",
        "--private",
        "--single-opt-in",
    )
    assert again.exit_code == 0, again.output
    assert "private, single opt-in, consent text version 2" in again.output
    with engine.connect() as conn:
        now = get_list(conn, "stiri")
    assert (now.public, now.opt_in, now.consent_text) == (False, "single", "Vreau știrile ț ș.")
    assert consent_text(now, config, "en") == "Vreau știrile ț ș."

    bad = bulletin(workspace_dir, "lists", "edit", "stiri", "--language", "not a language")
    assert bad.exit_code == 1 and "Traceback" not in bad.output
    assert "List 'stiri'" in bad.output and "language" in bad.output
    missing = bulletin(workspace_dir, "lists", "edit", "nope", "--public")
    assert missing.exit_code == 1 and "List 'nope' does not exist" in missing.output


def test_subscribers_add_records_consent_and_show_prints_it(workspace_dir: Path) -> None:
    assert bulletin(workspace_dir, "lists", "create", "stiri", "--language", "ro").exit_code == 0
    added = bulletin(workspace_dir, "subscribers", "add", "ion@example.ro", "--list", "stiri")
    assert added.exit_code == 0, added.output
    # Already on the list: no new subscription began, so no new record.
    assert bulletin(workspace_dir, "subscribers", "add", "ion@example.ro", "--list", "stiri")
    engine = _engine(workspace_dir)
    with engine.connect() as conn:
        sub = find_subscriber(conn, "ion@example.ro")
        assert sub is not None
        records = consents_of(conn, sub.id)
    assert [(c.list_slug, c.source, c.consent_version) for c in records] == [("stiri", "cli", 1)]
    assert records[0].consent_text.startswith("Sunt de acord să primesc")
    assert records[0].ip is None and records[0].given_at is not None
    shown = bulletin(workspace_dir, "subscribers", "show", "ion@example.ro")
    assert shown.exit_code == 0, shown.output
    assert "Consent" in shown.output and "cli (bulletin subscribers add)" in shown.output
    assert "Sunt de acord să primesc" in shown.output

    assert bulletin(workspace_dir, "subscribers", "add", "ana@example.ro", "--list", "stiri")
    # Erasure takes the consent records with the person.
    assert (
        bulletin(workspace_dir, "subscribers", "remove", "ion@example.ro", "--yes").exit_code == 0
    )
    with engine.connect() as conn:
        left = conn.scalar(sa.text("SELECT count(*) FROM consents"))
    assert left == 1
    engine.dispose()
