"""The sign-up pieces around the web pages: the welcome mail, privacy.store_ip, the purge,
``bulletin form``, the mail templates of ``bulletin init`` -- on the pass's database, with a
real SMTP relay (:class:`smtpfaults.FaultServer`)."""

from __future__ import annotations

import email
import email.policy
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from bulletin import workspace as ws
from bulletin.cli import cli
from bulletin.signup.mail import NoticeTemplateError, render_notice
from bulletin.signup.service import Signups, Submitted, accept_language
from bulletin.store.consent import consents_of
from bulletin.store.db import open_store, write_transaction
from bulletin.store.schema import signups, utcnow
from bulletin.store.subscribers import ListSettings, create_list, find_subscriber
from bulletin.tokens import TokenSigner
from conftest import set_config
from smtpfaults import FaultServer


@pytest.fixture
def relay() -> Iterator[FaultServer]:
    with FaultServer() as server:
        yield server


def service(root: Path) -> tuple[Signups, sa.Engine]:
    workspace = ws.load(root)
    engine = open_store(workspace.database_url())
    with write_transaction(engine) as conn:
        create_list(conn, "stiri", "Știri", ListSettings(public=True, language="ro"))
    return Signups(workspace, engine, TokenSigner.from_workspace(workspace)), engine


def sign_up(signups_: Signups, address: str, ip: str | None = None) -> Submitted:
    result = signups_.submit_in_transaction(
        "stiri", {"email": [address], "consent": ["yes"], "name": ["Ana"]}, "ro", ip
    )
    assert result is not None
    outcome = result[2]
    assert isinstance(outcome, Submitted) and outcome.to_mail is not None
    return outcome


def test_welcome_mail_and_stored_client_address(workspace_dir: Path, relay: FaultServer) -> None:
    set_config(workspace_dir, "smtp", url=relay.url)
    (workspace_dir / "bulletin.toml").write_text(
        (workspace_dir / "bulletin.toml").read_text(encoding="utf-8")
        + "\n[privacy]\nstore_ip = true\n\n[signup]\nwelcome = true\n",
        encoding="utf-8",
    )
    signups_, engine = service(workspace_dir)
    outcome = sign_up(signups_, "ana@example.ro", ip="203.0.113.7")
    assert outcome.to_mail is not None and outcome.to_mail.ip == "203.0.113.7"
    signups_.send_confirmation(outcome.to_mail)
    token = signups_.signer.confirm_token(outcome.to_mail.id, time.time())
    done = signups_.confirm(token, "203.0.113.8")
    assert done is not None and signups_.wants_welcome(done)
    signups_.send_welcome(done)
    subjects = [
        email.message_from_bytes(m.data, policy=email.policy.default)["Subject"]
        for m in relay.messages
    ]
    assert subjects == ["Confirmați abonarea la Știri", "Bun venit la Știri"]
    welcome = email.message_from_bytes(relay.messages[1].data, policy=email.policy.default)
    text = welcome.get_body(("plain",))  # type: ignore[attr-defined]
    assert "/preferences/" in text.get_content() and "/archive/" in text.get_content()
    with engine.connect() as conn:
        sub = find_subscriber(conn, "ana@example.ro")
        assert sub is not None
        records = consents_of(conn, sub.id)
    assert [r.ip for r in records] == ["203.0.113.8"]  # the confirming client's
    engine.dispose()


def test_purge_deletes_only_sign_ups_older_than_30_days(workspace_dir: Path) -> None:
    signups_, engine = service(workspace_dir)
    for address in ("old@example.ro", "new@example.ro"):
        sign_up(signups_, address)
    with write_transaction(engine) as conn:
        conn.execute(
            signups.update()
            .where(signups.c.email_key == "old@example.ro")
            .values(created_at=utcnow() - timedelta(days=30, minutes=1))
        )
    assert signups_.purge() == 1
    with engine.connect() as conn:
        left = list(conn.scalars(sa.select(signups.c.email_key)))
    assert left == ["new@example.ro"]
    assert not signups_.purge_due()
    engine.dispose()


def test_accept_language_ranking() -> None:
    assert accept_language("en-GB,en;q=0.9,ro;q=0.8") == ["en", "ro"]
    assert accept_language("ro;q=0.2, en;q=0.9") == ["en", "ro"]
    assert accept_language("de, fr;q=0.5, ro;q=0") == []
    assert accept_language("") == []


def test_bulletin_form_prints_the_snippet_of_a_public_list(workspace_dir: Path) -> None:
    runner = CliRunner()
    w = ["-w", str(workspace_dir)]
    assert runner.invoke(cli, [*w, "lists", "create", "intern"]).exit_code == 0
    private = runner.invoke(cli, [*w, "form", "intern"])
    assert private.exit_code == 1 and "List 'intern' is private" in private.output
    assert "bulletin lists edit intern --public" in private.output
    assert "Traceback" not in private.output
    assert runner.invoke(cli, [*w, "lists", "edit", "intern", "--public"]).exit_code == 0
    snippet = runner.invoke(cli, [*w, "form", "intern"])
    assert snippet.exit_code == 0, snippet.output
    html = snippet.output
    assert 'action="http://127.0.0.1:8080/subscribe/intern"' in html
    for field in ("email", "name", "language", "consent", "website"):
        assert f'name="{field}"' in html
    assert "Sunt de acord să primesc ClusterPoliSEE e-newsletter" in html  # newsletter.language
    english = runner.invoke(cli, [*w, "form", "intern", "--language", "en"])
    assert "I agree to receive ClusterPoliSEE e-newsletter" in english.output
    bad = runner.invoke(cli, [*w, "form", "intern", "--language", "de"])
    assert bad.exit_code == 1 and "no signup form in language 'de'" in bad.output
    unknown = runner.invoke(cli, [*w, "form", "nope"])
    assert unknown.exit_code == 1 and "List 'nope' does not exist" in unknown.output


def test_init_copies_editable_mail_templates(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["init", str(tmp_path / "new")])
    assert result.exit_code == 0, result.output
    mail = tmp_path / "new" / "templates" / "mail"
    names = sorted(p.name for p in mail.iterdir())
    for kind in ("confirm", "welcome"):
        for lang in ("en", "ro"):
            assert f"{kind}.{lang}.txt.j2" in names and f"{kind}.{lang}.html.j2" in names
    # An edited template is the one used.
    path = mail / "confirm.en.txt.j2"
    path.write_text("Subject: Please confirm {{ list_name }}\n\nGo: {{ confirm_url }}\n", "utf-8")
    workspace = ws.load(tmp_path / "new")
    notice = render_notice(
        workspace,
        "confirm",
        "en-GB",
        {
            "list_name": "Știri",
            "confirm_url": "u",
            "name": "",
            "email": "a@b.c",
            "newsletter": "N",
            "organisation": "",
            "postal_address": "",
            "valid_days": 7,
        },
    )
    assert (notice.subject, notice.text, notice.language) == (
        "Please confirm Știri",
        "Go: u\n",
        "en",
    )
    path.write_text("Subject: x\n\n{{ confirm_url(", "utf-8")
    with pytest.raises(NoticeTemplateError) as excinfo:
        render_notice(workspace, "confirm", "en", {"confirm_url": "u"})
    assert "confirm.en.txt.j2:3" in str(excinfo.value)
