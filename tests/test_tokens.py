"""Signed unsubscribe and bounce tokens: format, tamper resistance, keys and rotation."""

from __future__ import annotations

import hmac
import random
import re
import stat
import string
from pathlib import Path

import pytest

from bulletin import workspace as ws
from bulletin.errors import BulletinError
from bulletin.mail import Recipient, build_message_template
from bulletin.mail.headers import check_token
from bulletin.tokens import (
    KEY_ENV,
    BounceToken,
    TokenSigner,
    UnsubscribeToken,
    key_file,
    load_keys,
    rotate_key,
)
from bulletin.urls import unsubscribe_url

KEY = "k3y-for-tests-only-aaaaaaaaaaaaaaaaaaaaaaa"
OTHER = "another-key-bbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"
ALPHABET = string.ascii_letters + string.digits + "-_"
URL_SAFE = re.compile(r"[A-Za-z0-9_-]+")


@pytest.fixture(autouse=True)
def _no_key_env(monkeypatch: pytest.MonkeyPatch) -> None:
    # The developer's own environment must not decide where keys come from.
    monkeypatch.delenv(KEY_ENV, raising=False)


@pytest.fixture
def workspace(workspace_dir: Path) -> ws.Workspace:
    return ws.load(workspace_dir)


def test_round_trip_for_many_random_ids() -> None:
    signer = TokenSigner([KEY])
    rng = random.Random(5)
    cases = [(0, None), (1, 0), (1, 1), (2**40, 2**40), (2**63 - 1, 2**63 - 1), (127, 128)]
    for _ in range(2000):
        bits = rng.randint(1, 42)
        list_id = None if rng.random() < 0.1 else rng.randrange(2 ** rng.randint(1, 42))
        cases.append((rng.randrange(2**bits), list_id))
    for subscriber_id, list_id in cases:
        token = signer.unsubscribe_token(subscriber_id, list_id)
        assert signer.verify_unsubscribe(token) == UnsubscribeToken(subscriber_id, list_id)
        bounce = signer.bounce_token(subscriber_id, list_id)
        assert signer.verify_bounce(bounce) == BounceToken(subscriber_id, list_id)
        assert bounce != token


def test_tokens_are_short_url_safe_and_deterministic() -> None:
    signer = TokenSigner([KEY])
    longest = signer.unsubscribe_token(2**40, 2**40)
    assert len(longest) <= 40, longest
    assert len(signer.unsubscribe_token(1, 1)) == 26
    rng = random.Random(2)
    for _ in range(500):
        token = signer.unsubscribe_token(rng.randrange(2**40 + 1), rng.randrange(2**40 + 1))
        assert URL_SAFE.fullmatch(token) and len(token) <= 40
        assert check_token(token) == token  # what the mail composer accepts
    # No expiry, no nonce: the same subscriber and list always get the same token.
    assert signer.unsubscribe_token(42, 7) == TokenSigner([KEY]).unsubscribe_token(42, 7)
    # A mailto plus-address with the longest token stays within the 64-octet local part.
    assert len(f"unsubscribe+{longest}") <= 64


def test_tokens_already_mailed_keep_their_exact_text() -> None:
    # Made by the hmac-module signer before the signing path was rewritten for speed: the
    # same key must give the same text, or links in mail already sent change meaning.
    signer = TokenSigner(["token-tests-key-0123456789abcdef", "older-key-0123456789abcdef"])
    assert signer.unsubscribe_token(42, 7) == "ECoISUp_XZil8Pvk3-9GeAxoeQ"
    assert signer.bounce_token(2**40, None) == "EICAgICAIACW5qrttby-_zyPonR5csI3"
    assert signer.preferences_token(1) == "EAEAtrLY_nER1a8yn0As1Xczpg"
    assert signer.confirm_token(5, 1700000000) == "EAWA4s-qBgKj-OmJNei7ipr0Mynpxb8"


def test_every_single_character_change_is_rejected() -> None:
    signer = TokenSigner([KEY])
    token = signer.unsubscribe_token(123456, 42)
    for i, original in enumerate(token):
        for c in ALPHABET:
            if c != original:
                forged = token[:i] + c + token[i + 1 :]
                assert signer.verify_unsubscribe(forged) is None, (i, c)


def test_truncated_extended_and_malformed_tokens_are_rejected() -> None:
    signer = TokenSigner([KEY])
    token = signer.unsubscribe_token(2**35, 9)
    for n in range(len(token)):
        assert signer.verify_unsubscribe(token[:n]) is None
        assert signer.verify_unsubscribe(token[n:] if n else token + "A") is None
    for c in ALPHABET:
        assert signer.verify_unsubscribe(token + c) is None
        assert signer.verify_unsubscribe(c + token) is None
    for junk in [
        "",
        "preview",
        "a" * 26,
        "a" * 500,
        token + "=",
        token[:5] + "+" + token[6:],
        token[:5] + "/" + token[6:],
        token[:10] + "." + token[11:],
        token[:10] + "ș" + token[11:],
        " " + token,
    ]:
        assert signer.verify_unsubscribe(junk) is None, junk
    assert signer.verify_unsubscribe(None) is None  # type: ignore[arg-type]


def test_foreign_keys_and_other_purposes_are_rejected() -> None:
    ours, theirs = TokenSigner([KEY]), TokenSigner([OTHER])
    token = theirs.unsubscribe_token(5, 5)
    assert ours.verify_unsubscribe(token) is None
    # Domain separation: a bounce token is not an unsubscribe token, and the reverse.
    unsubscribe = ours.unsubscribe_token(5, 5)
    bounce = ours.bounce_token(5, 5)
    assert ours.verify_bounce(unsubscribe) is None
    assert ours.verify_unsubscribe(bounce) is None
    assert ours.verify("bounce", unsubscribe) is None


def test_verification_compares_in_constant_time(monkeypatch: pytest.MonkeyPatch) -> None:
    real = hmac.compare_digest
    calls: list[tuple[bytes, bytes]] = []

    def spy(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)
    signer = TokenSigner([KEY])
    token = signer.unsubscribe_token(10, 20)
    assert signer.verify_unsubscribe(token) is not None
    forged = token[:-2] + ("AA" if token[-2:] != "AA" else "BB")
    assert signer.verify_unsubscribe(forged) is None
    assert len(calls) == 2
    assert all(len(a) == len(b) == 16 for a, b in calls)  # the MACs, not the whole token


def test_signer_shows_no_key_material() -> None:
    signer = TokenSigner([KEY, OTHER])
    for text in (repr(signer), str(signer)):
        assert text == "<TokenSigner with 2 keys>"
    assert not hasattr(signer, "__dict__")


def test_unsubscribe_url() -> None:
    assert unsubscribe_url("https://news.example.org/", "abc_-1") == (
        "https://news.example.org/u/abc_-1"
    )


def test_key_file_is_created_private_on_first_use(workspace: ws.Workspace) -> None:
    path = key_file(workspace)
    assert not path.exists()
    signer = TokenSigner.from_workspace(workspace)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    (key,) = load_keys(workspace)
    assert len(key) >= 43 and key in path.read_text(encoding="utf-8")
    # The same key on the next run: tokens mailed before stay valid.
    token = signer.unsubscribe_token(3, 4)
    assert TokenSigner.from_workspace(workspace).verify_unsubscribe(token) is not None
    assert TokenSigner([key]).unsubscribe_token(3, 4) == token


def test_key_file_readable_by_others_is_refused(workspace: ws.Workspace) -> None:
    TokenSigner.from_workspace(workspace)
    path = key_file(workspace)
    path.chmod(0o644)
    with pytest.raises(BulletinError, match="readable by other users") as exc:
        TokenSigner.from_workspace(workspace)
    assert "chmod 600" in str(exc.value)
    path.chmod(0o600)
    (key,) = load_keys(workspace, create=False)
    assert key not in str(exc.value)


def test_env_keys_win_over_the_file(
    workspace: ws.Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    TokenSigner.from_workspace(workspace)  # creates the file
    from_file = TokenSigner.from_workspace(workspace)
    monkeypatch.setenv(KEY_ENV, f" {OTHER}, {KEY}\n")
    assert load_keys(workspace) == (OTHER, KEY)
    signer = TokenSigner.from_workspace(workspace)
    token = signer.unsubscribe_token(8, 9)
    assert TokenSigner([OTHER]).verify_unsubscribe(token) is not None  # first key signs
    assert signer.verify_unsubscribe(TokenSigner([KEY]).unsubscribe_token(1, 2)) is not None
    assert from_file.verify_unsubscribe(token) is None


def test_env_key_without_a_file_creates_none(
    workspace: ws.Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(KEY_ENV, KEY)
    TokenSigner.from_workspace(workspace)
    assert not key_file(workspace).exists()


def test_short_or_missing_keys_are_refused_without_showing_them(
    workspace: ws.Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(KEY_ENV, f"{KEY},s3cr3t")
    with pytest.raises(BulletinError, match="Key 2 in BULLETIN_SECRET_KEY is 6 characters") as e:
        TokenSigner.from_workspace(workspace)
    assert "s3cr3t" not in str(e.value)
    monkeypatch.delenv(KEY_ENV)
    path = key_file(workspace)
    path.parent.mkdir(mode=0o700)
    path.write_text("# only a comment\n", encoding="utf-8")
    path.chmod(0o600)
    with pytest.raises(BulletinError, match="holds no key"):
        TokenSigner.from_workspace(workspace)


def test_rotation_keeps_old_tokens_valid_and_signs_with_the_new_key(
    workspace: ws.Workspace,
) -> None:
    before = TokenSigner.from_workspace(workspace)
    old_token = before.unsubscribe_token(77, 1)
    (old_key,) = load_keys(workspace)

    assert rotate_key(workspace) == 2
    new_key, kept = load_keys(workspace)
    assert kept == old_key and new_key != old_key
    path = key_file(workspace)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_text(encoding="utf-8").startswith("#")  # the explanation stays on top

    after = TokenSigner.from_workspace(workspace)
    assert after.verify_unsubscribe(old_token) == UnsubscribeToken(77, 1)
    new_token = after.unsubscribe_token(77, 1)
    assert new_token != old_token
    assert TokenSigner([new_key]).verify_unsubscribe(new_token) is not None
    assert before.verify_unsubscribe(new_token) is None  # only the new key made it

    assert rotate_key(workspace) == 3
    assert TokenSigner.from_workspace(workspace).verify_unsubscribe(old_token) is not None


def test_rotation_is_refused_when_keys_come_from_the_environment(
    workspace: ws.Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(KEY_ENV, KEY)
    with pytest.raises(BulletinError, match="BULLETIN_SECRET_KEY"):
        rotate_key(workspace)
    assert not key_file(workspace).exists()


def test_tokens_fit_the_composer_headers_and_verp(workspace: ws.Workspace) -> None:
    from bulletin.content.loader import load_issue
    from bulletin.render.pipeline import render_issue
    from bulletin.render.values import sample_values

    config = workspace.config.model_copy(
        update={
            "sender": workspace.config.sender.model_copy(
                update={
                    "unsubscribe_mailto": "unsubscribe@clusterpolisee.example.org",
                    "return_path": "bounces+{token}@clusterpolisee.example.org",
                }
            )
        }
    )
    loaded = load_issue(workspace, workspace.issue_dir("2014-10-clusterpolisee-03"))
    template = build_message_template(config, render_issue(workspace, loaded))
    signer = TokenSigner.from_workspace(workspace)
    token = signer.unsubscribe_token(2**40, 2**40)
    url = unsubscribe_url(workspace.config.newsletter.base_url, token)
    values = {**sample_values(workspace, loaded.slug), "unsubscribe_url": url}
    recipient = Recipient("ana@example.ro", "Ana Popescu", values)
    data = template.personalise(recipient)
    assert f"<{url}>".encode() in data
    mailto = re.search(rb"<mailto:([^@>]+)@", data)
    assert mailto is not None and len(mailto.group(1)) <= 64
    assert signer.verify_unsubscribe(mailto.group(1).decode().partition("+")[2]) is not None
    # VERP: a bounce token is as long as an unsubscribe token for the same ids.
    local = template.envelope_from(recipient).partition("@")[0]
    assert local.startswith("bounces+") and len(local) <= 64
    assert len(signer.bounce_token(2**40, 2**40)) == len(token)
