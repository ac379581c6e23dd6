"""The workspace: a folder holding ``bulletin.toml``, ``issues/``, ``templates/``, ``subscribers/``.

Finding it, loading and validating its configuration, and resolving paths and secrets.
The configuration schema below is the reference: every field's description is the text of
the README's configuration table (``python -m bulletin.workspace`` prints it).
"""

from __future__ import annotations

import ipaddress
import os
import re
import tomllib
import zoneinfo
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from bulletin.errors import BulletinError, ConfigError, Location, Problem, WorkspaceNotFound
from bulletin.store import normalise

CONFIG_NAME = "bulletin.toml"


def _shown(value: str) -> str:
    return repr(value if len(value) <= 80 else value[:80] + "...")


def _one_line(value: str) -> str:
    # Names go into mail headers (CR/LF there would add header lines), the rest into pages
    # and footers, where an ESC or a U+202E has no business either.
    what = normalise.control_character(value)
    if what is not None:
        raise ValueError(f"{_shown(value)} contains {what}; write it on one line")
    return value


OneLine = Annotated[str, AfterValidator(_one_line)]
"""Text that must hold on one line: no line breaks, tabs or other control characters."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class NewsletterConfig(_Section):
    """[newsletter]: who the newsletter is and where its public pages live."""

    name: OneLine = Field(description="Newsletter name shown in the header and in List-Id.")
    base_url: OneLine = Field(
        "http://127.0.0.1:8080",
        description="Public address of `bulletin serve` (unsubscribe and view-online links).",
    )
    language: OneLine = Field("en", description="Default language of issues (BCP 47, e.g. `ro`).")
    timezone: OneLine = Field(
        "Europe/Bucharest",
        description="Time zone of event times in issues (IANA name, e.g. `Europe/London`, `UTC`).",
    )
    organisation: OneLine = Field("", description="Organisation line for the footer.")
    postal_address: OneLine = Field(
        "", description="Postal address for the footer (anti-spam laws)."
    )
    logo: OneLine | None = Field(
        None,
        description="Header logo: an image file in the workspace (`logo.png`, resized and "
        "published with the archive) or an https URL.",
    )
    logo_url: OneLine | None = Field(
        None, description="Optional https URL of a header logo (older spelling of `logo`)."
    )
    logo_alt: OneLine = Field("", description="Alt text of the logo (defaults to the name).")
    reason: OneLine = Field(
        "",
        description="Footer sentence saying why the reader receives the newsletter.",
    )
    list_id: str | None = Field(
        None,
        description="List-Id domain part, e.g. `news.example.org` (default: from the sender).",
    )

    @field_validator("base_url")
    @classmethod
    def _base_url(cls, v: str) -> str:
        if not v.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return v.rstrip("/")

    @field_validator("language")
    @classmethod
    def _language(cls, v: str) -> str:
        try:
            return normalise.clean_language(v) or "en"
        except normalise.InvalidField as exc:
            raise ValueError(f"{exc.reason}; {exc.hint[:1].lower()}{exc.hint[1:]}") from None

    @field_validator("timezone")
    @classmethod
    def _timezone(cls, v: str) -> str:
        try:
            zoneinfo.ZoneInfo(v.strip())
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise ValueError(
                f"unknown time zone {v!r}; use an IANA name such as Europe/Bucharest or UTC"
            ) from None
        return v.strip()

    @field_validator("list_id")
    @classmethod
    def _list_id(cls, v: str | None) -> str | None:
        if v is None:
            return v
        try:
            return normalise.domain_name(v)
        except normalise.InvalidAddress as exc:
            raise ValueError(f"{_shown(v)} {exc}") from None


class SenderConfig(_Section):
    """[sender]: the From identity and addresses for replies and bounces."""

    from_name: OneLine = Field(description="Display name in From.")
    from_email: str = Field(description="Address in From; its domain also names Message-IDs.")
    reply_to: str | None = Field(None, description="Optional Reply-To address.")
    return_path: str | None = Field(
        None,
        description="Envelope sender for bounces; `{token}` makes it VERP (e.g. `b+{token}@x`).",
    )
    unsubscribe_mailto: str | None = Field(
        None,
        description="Mailbox for mailto unsubscribes; `+token` is added to the local part.",
    )

    @field_validator("from_email", "reply_to", "return_path", "unsubscribe_mailto")
    @classmethod
    def _address(cls, v: str | None, info: ValidationInfo) -> str | None:
        # The store's address rules, plus what sending needs (see normalise.own_address).
        if v is None:
            return v
        token = None
        if info.field_name == "unsubscribe_mailto":
            token = "+"
        elif info.field_name == "return_path" and "{token}" in v:
            token = "{token}"
        try:
            normalise.own_address(v, token=token)
        except normalise.InvalidAddress as exc:
            raise ValueError(f"{_shown(v)} {exc}") from None
        return v


class SmtpConfig(_Section):
    """[smtp]: the relay that delivers messages."""

    url: OneLine = Field(
        "smtp://127.0.0.1:2525",
        description="`smtp://host:port` (STARTTLS) or `smtps://host:port` (implicit TLS).",
    )
    username: OneLine | None = Field(
        None, description="AUTH user; the password comes from BULLETIN_SMTP_PASSWORD."
    )
    password_file: OneLine | None = Field(
        None, description="File (mode 0600, outside git) holding the SMTP password."
    )
    starttls: Literal["auto", "required", "off"] = Field(
        "auto",
        description="`auto`: required for non-loopback hosts, used when offered on loopback.",
    )
    timeout: float = Field(30.0, gt=0, description="Seconds before an SMTP reply times out.")
    helo_name: OneLine | None = Field(None, description="Name sent in EHLO (default: local FQDN).")

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        smtp_url_parts(v)
        return v


SMTP_DEFAULT_PORTS = {"smtp": 25, "smtps": 465}


def smtp_url_parts(url: str) -> tuple[Literal["smtp", "smtps"], str, int]:
    """``(scheme, host, port)`` of an smtp.url; ValueError saying what is wrong otherwise.

    Never echoes the URL: a user name and password may be embedded in it.
    """
    parts = urlsplit(url)
    if parts.scheme not in SMTP_DEFAULT_PORTS:
        raise ValueError("must start with smtp:// or smtps://")
    if parts.username is not None or parts.password is not None:
        raise ValueError(
            "must not contain a user name or password; put the user in smtp.username and "
            "the password in BULLETIN_SMTP_PASSWORD"
        )
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ValueError("must be just scheme://host:port, without a path or query")
    if not parts.hostname:
        raise ValueError("names no host")
    try:
        port = parts.port
    except ValueError:
        raise ValueError("the port must be a number from 1 to 65535") from None
    scheme: Literal["smtp", "smtps"] = "smtps" if parts.scheme == "smtps" else "smtp"
    return scheme, parts.hostname, port or SMTP_DEFAULT_PORTS[scheme]


class SendConfig(_Section):
    """[send]: how fast and how persistently `bulletin send` delivers."""

    connections: int = Field(
        4, ge=1, le=64, description="SMTP connections used at once (`--connections`)."
    )
    rate: float = Field(
        20.0,
        ge=0,
        description="Most messages per second over all connections; 0: no limit (`--rate`).",
    )
    rate_hour: int = Field(
        0, ge=0, description="Most messages in any hour; 0: no limit (`--rate-hour`)."
    )
    batch_size: int = Field(
        200,
        ge=1,
        le=10_000,
        description="Recipients claimed from the ledger at a time (`--batch-size`); a crash "
        "leaves a few per connection in doubt, never more than one batch.",
    )
    max_attempts: int = Field(
        5, ge=1, description="Tries per recipient before a temporary failure becomes final."
    )
    max_age_hours: float = Field(
        48.0,
        gt=0,
        description="Hours after the first try when a still-deferred recipient is given up.",
    )
    backoff: float = Field(
        60.0,
        gt=0,
        description="Seconds before the first retry of a deferred recipient; doubles each "
        "time (with jitter).",
    )
    backoff_cap: float = Field(3600.0, gt=0, description="Longest wait between two retries.")
    max_wait: float = Field(
        300.0,
        ge=0,
        description="Seconds a send waits for deferred recipients to fall due before it stops "
        "and says when to run it again.",
    )
    pause_after: int = Field(
        10,
        ge=1,
        description="Failed connection attempts in a row before the send pauses (resumable).",
    )
    lease_seconds: float = Field(
        60.0,
        ge=2,
        le=3600,
        description="Seconds a sender holds the recipients it claimed (renewed while it "
        "works); a sender stopped or cut off longer loses them to the other senders, and "
        "sends none of them when it wakes.",
    )


class DatabaseConfig(_Section):
    """[database]: where subscribers and the delivery ledger live."""

    url: OneLine = Field(
        "sqlite:///subscribers/bulletin.db",
        description="SQLAlchemy URL: `sqlite:///path` (relative to the workspace) or "
        "`postgresql+psycopg://user@host/dbname`, without a password "
        "(BULLETIN_DATABASE_URL overrides it).",
    )
    password_file: OneLine | None = Field(
        None,
        description="File (mode 0600, outside git) holding the PostgreSQL password; or "
        "BULLETIN_DATABASE_PASSWORD, or libpq's ~/.pgpass.",
    )

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        database_url_problem(v, in_config=True)
        return v


def database_url_problem(url: str, *, in_config: bool) -> None:
    """ValueError when ``url`` is not a database URL bulletin can use; never echoes a password.

    bulletin.toml is committed with the workspace, so a password may not be written in it.
    """
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):
        raise ValueError(
            "not a database URL: write sqlite:///subscribers/bulletin.db or "
            "postgresql+psycopg://user@host/dbname"
        ) from None
    backend = parsed.get_backend_name()
    if backend not in ("sqlite", "postgresql"):
        raise ValueError(
            f"bulletin works with SQLite and PostgreSQL, not {backend}: write "
            "sqlite:///... or postgresql+psycopg://user@host/dbname"
        )
    if in_config and parsed.password is not None:
        raise ValueError(
            "holds a password, and bulletin.toml is shared with the workspace: remove it from "
            "the URL and put it in BULLETIN_DATABASE_PASSWORD, in a file named by "
            "database.password_file (mode 0600, outside git) or in ~/.pgpass"
        )


_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_DNS_NAME = re.compile(rf"{_LABEL}(?:\.{_LABEL})*")
_HEADER_NAME = re.compile(r"[!-9;-~]+")


class DkimConfig(_Section):
    """[dkim]: sign every message with DKIM (RSA-SHA256, relaxed/relaxed)."""

    selector: str = Field(
        "",
        description="DKIM selector: the public key is the TXT record "
        "`<selector>._domainkey.<domain>`.",
    )
    domain: str = Field(
        "", description="Signing domain (d=); empty: the domain of sender.from_email."
    )
    key_file: OneLine = Field(
        "",
        description="RSA private key, PEM (mode 0600, outside git); set it to sign messages.",
    )
    headers: str = Field(
        "",
        description="Header fields to sign, comma-separated (empty: From, To, Subject, Date, "
        "Message-ID, Reply-To, List-Id, List-Unsubscribe(-Post), MIME-Version, Content-Type).",
    )

    @field_validator("selector")
    @classmethod
    def _selector(cls, v: str) -> str:
        if v and (_DNS_NAME.fullmatch(v) is None or len(v) > 200):
            raise ValueError(f"{v!r} is not a DNS name (letters, digits, hyphens, dots)")
        return v

    @field_validator("domain")
    @classmethod
    def _domain(cls, v: str) -> str:
        if not v:
            return v
        try:
            ascii_name = v.encode("idna").decode("ascii") if not v.isascii() else v
        except UnicodeError:
            ascii_name = ""
        if _DNS_NAME.fullmatch(ascii_name) is None or len(ascii_name) > 253:
            raise ValueError(f"{v!r} is not a domain name")
        return ascii_name.lower()

    @field_validator("headers")
    @classmethod
    def _headers(cls, v: str) -> str:
        names = [n for n in re.split(r"[\s,:]+", v) if n]
        bad = [n for n in names if _HEADER_NAME.fullmatch(n) is None]
        if bad:
            raise ValueError(f"{bad[0]!r} is not a header field name")
        if names and "from" not in {n.lower() for n in names}:
            raise ValueError("must include From (RFC 6376 requires it to be signed)")
        return ", ".join(names)

    @model_validator(mode="after")
    def _complete(self) -> DkimConfig:
        if self.key_file and not self.selector:
            raise ValueError("selector is required when key_file is set")
        return self


_LIST_SPLIT = re.compile(r"[\s,]+")


def _split_list(value: str) -> list[str]:
    return [item for item in _LIST_SPLIT.split(value) if item]


class ServeConfig(_Section):
    """[serve]: the public web service (`bulletin serve`: unsubscribe pages and archive)."""

    trusted_proxies: str = Field(
        "127.0.0.1, ::1",
        description="Reverse proxies whose X-Forwarded-For names the client: addresses or "
        "CIDR networks, comma-separated.",
    )
    rate_per_minute: int = Field(
        60,
        ge=1,
        le=100_000,
        description="Requests a minute one client address may make (then 429 Too Many Requests).",
    )

    @field_validator("trusted_proxies")
    @classmethod
    def _proxies(cls, v: str) -> str:
        items = _split_list(v)
        for item in items:
            try:
                ipaddress.ip_network(item, strict=False)
            except ValueError:
                raise ValueError(f"{item!r} is not an IP address or CIDR network") from None
        return ", ".join(items)

    @property
    def proxies(self) -> list[str]:
        """``trusted_proxies`` as a list."""
        return _split_list(self.trusted_proxies)


class ArchiveConfig(_Section):
    """[archive]: which issues `bulletin serve` and `bulletin archive build` publish."""

    exclude: str = Field(
        "",
        description="Issue slugs left out of the public archive, comma-separated (every "
        "other issue under issues/ is published from its date or its send, whichever comes "
        "first; `bulletin init` lists the sample issue here).",
    )

    @property
    def excluded(self) -> frozenset[str]:
        """``exclude`` as a set of slugs."""
        return frozenset(_split_list(self.exclude))


class BouncesConfig(_Section):
    """[bounces]: when `bulletin bounces import` stops mailing an address."""

    soft_limit: int = Field(
        3,
        ge=1,
        description="Soft bounces (mailbox full, 4.x.x) within soft_window_days that suppress "
        "an address; a hard bounce or a complaint suppresses at once.",
    )
    soft_window_days: int = Field(
        30, ge=1, description="Days over which soft bounces are counted (by the bounce's date)."
    )


class ImapConfig(_Section):
    """[imap]: mailboxes that `bulletin bounces fetch` and `unsubscribes fetch` read."""

    bounces_url: OneLine | None = Field(
        None,
        description="`imaps://user@host/Folder` or `imap://user@host:port/Folder` (STARTTLS) "
        "of the mailbox bounces and complaints arrive in; no password in it.",
    )
    unsubscribes_url: OneLine | None = Field(
        None,
        description="The same for mail sent to sender.unsubscribe_mailto.",
    )
    password_file: OneLine | None = Field(
        None,
        description="File (mode 0600, outside git) holding the IMAP password; or "
        "BULLETIN_IMAP_PASSWORD.",
    )
    processed_action: Literal["move", "flag"] = Field(
        "move",
        description="What happens to a processed message: `move` it to processed_folder, or "
        "`flag` it (seen, keyword `$BulletinProcessed`) where it is. Other mail is not touched.",
    )
    processed_folder: OneLine = Field(
        "Processed",
        description="Folder processed messages are moved to (created if missing).",
    )
    timeout: float = Field(30.0, gt=0, description="Seconds before an IMAP reply times out.")
    poll_seconds: int = Field(
        60,
        ge=5,
        description="`--watch` without IMAP IDLE: seconds between two looks at the mailbox.",
    )

    @field_validator("bounces_url", "unsubscribes_url")
    @classmethod
    def _url(cls, v: str | None) -> str | None:
        if v is not None:
            imap_url_parts(v)
        return v

    @field_validator("processed_folder")
    @classmethod
    def _folder(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("must name a folder")
        return v


IMAP_DEFAULT_PORTS = {"imap": 143, "imaps": 993}


@dataclass(frozen=True)
class ImapUrl:
    """The parts of an IMAP mailbox URL (RFC 5092 shape, without a password)."""

    scheme: Literal["imap", "imaps"]
    user: str
    host: str
    port: int
    folder: str

    @property
    def address(self) -> str:
        """``host:port``, with brackets around an IPv6 address."""
        return host_port(self.host, self.port)

    def __str__(self) -> str:
        return f"{self.scheme}://{self.user}@{self.address}/{self.folder}"


def host_port(host: str, port: int) -> str:
    """``host:port`` as URLs and messages write it: an IPv6 address in brackets."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def imap_url_parts(url: str) -> ImapUrl:
    """Split ``imaps://user@host[:port]/Folder``; ValueError saying what is wrong otherwise.

    A password in the URL is refused (bulletin.toml is shared with the workspace, and a
    command line is visible to other users): it comes from BULLETIN_IMAP_PASSWORD or
    imap.password_file. Never echoes the URL.
    """
    from urllib.parse import unquote

    parts = urlsplit(url)
    if parts.scheme not in IMAP_DEFAULT_PORTS:
        raise ValueError("must start with imaps:// or imap://")
    if parts.password is not None:
        raise ValueError(
            "holds a password: remove it and put it in BULLETIN_IMAP_PASSWORD or in a file "
            "named by imap.password_file (mode 0600, outside git)"
        )
    if not parts.username:
        raise ValueError("names no user: write imaps://user@host/Folder")
    if parts.query or parts.fragment:
        raise ValueError("must be just scheme://user@host:port/Folder, without a query")
    if not parts.hostname:
        raise ValueError("names no host")
    try:
        port = parts.port
    except ValueError:
        raise ValueError("the port must be a number from 1 to 65535") from None
    folder = unquote(parts.path.lstrip("/")) or "INBOX"
    if normalise.control_character(folder) is not None:
        raise ValueError("the folder name holds a control character")
    scheme: Literal["imap", "imaps"] = "imaps" if parts.scheme == "imaps" else "imap"
    return ImapUrl(
        scheme, unquote(parts.username), parts.hostname, port or IMAP_DEFAULT_PORTS[scheme], folder
    )


class PrivacyConfig(_Section):
    """[privacy]: what bulletin keeps about the people who sign up."""

    store_ip: bool = Field(
        False,
        description="Keep the client address of a sign-up and its confirmation in the consent "
        "record (off: no address is stored).",
    )


class SignupConfig(_Section):
    """[signup]: the signup forms of public lists (`bulletin serve`)."""

    welcome: bool = Field(
        False,
        description="Mail templates/mail/welcome.* to a person once they confirm a sign-up.",
    )


WEBHOOK_SECRET_ENV = {
    "postmark": "BULLETIN_POSTMARK_WEBHOOK_SECRET",
    "mailgun": "BULLETIN_MAILGUN_SIGNING_KEY",
    "sendgrid": "BULLETIN_SENDGRID_PUBLIC_KEY",
}
"""The environment variable of each provider's webhook secret (or key)."""

_SNS_TOPIC = re.compile(r"arn:aws(?:-[a-z]+)*:sns:[a-z0-9-]+:\d{12}:[A-Za-z0-9_.-]{1,256}")


class WebhooksConfig(_Section):
    """[webhooks]: bounce and complaint events from relay providers (`bulletin serve`).

    A provider's hook answers only once its secret is set (else 404): from the environment
    or a 0600 file named here, never in bulletin.toml itself.
    """

    ses_topics: str = Field(
        "",
        description="SNS topic ARNs whose SES notifications /hooks/ses accepts, "
        "comma-separated (empty: the hook is off).",
    )
    postmark_secret_file: OneLine | None = Field(
        None,
        description="File (mode 0600) holding the password of /hooks/postmark's basic auth; "
        "or BULLETIN_POSTMARK_WEBHOOK_SECRET.",
    )
    mailgun_signing_key_file: OneLine | None = Field(
        None,
        description="File (mode 0600) holding Mailgun's webhook signing key; "
        "or BULLETIN_MAILGUN_SIGNING_KEY.",
    )
    sendgrid_public_key_file: OneLine | None = Field(
        None,
        description="File (mode 0600) holding SendGrid's verification key (base64); "
        "or BULLETIN_SENDGRID_PUBLIC_KEY.",
    )

    @field_validator("ses_topics")
    @classmethod
    def _topics(cls, v: str) -> str:
        items = _split_list(v)
        for item in items:
            if _SNS_TOPIC.fullmatch(item) is None:
                raise ValueError(
                    f"{_shown(item)} is not an SNS topic ARN (arn:aws:sns:REGION:ACCOUNT:NAME)"
                )
        return ", ".join(items)

    @property
    def topics(self) -> frozenset[str]:
        """``ses_topics`` as a set."""
        return frozenset(_split_list(self.ses_topics))


_SECRET_KEYS = {
    ("webhooks", name): (
        "holds a secret, and bulletin.toml is shared with the workspace: remove it and put it "
        f"in {WEBHOOK_SECRET_ENV[provider]} or in a file (mode 0600, outside git) named by "
        f"webhooks.{name}_file"
    )
    for provider, name in (
        ("postmark", "postmark_secret"),
        ("mailgun", "mailgun_signing_key"),
        ("sendgrid", "sendgrid_public_key"),
    )
}
"""Keys a user may write for a webhook secret, refused with a better word than "unknown"."""


class Config(_Section):
    """The whole bulletin.toml."""

    newsletter: NewsletterConfig
    sender: SenderConfig
    smtp: SmtpConfig = SmtpConfig()
    send: SendConfig = SendConfig()
    database: DatabaseConfig = DatabaseConfig()
    dkim: DkimConfig = DkimConfig()
    serve: ServeConfig = ServeConfig()
    archive: ArchiveConfig = ArchiveConfig()
    bounces: BouncesConfig = BouncesConfig()
    imap: ImapConfig = ImapConfig()
    privacy: PrivacyConfig = PrivacyConfig()
    signup: SignupConfig = SignupConfig()
    webhooks: WebhooksConfig = WebhooksConfig()


@dataclass(frozen=True)
class Workspace:
    """A loaded workspace: its root folder and validated configuration."""

    root: Path
    config: Config

    @property
    def issues_dir(self) -> Path:
        return self.root / "issues"

    @property
    def templates_dir(self) -> Path:
        return self.root / "templates"

    @property
    def subscribers_dir(self) -> Path:
        return self.root / "subscribers"

    @property
    def secrets_dir(self) -> Path:
        """Folder for generated secrets (ignored by git, files mode 0600)."""
        return self.root / ".bulletin"

    def relpath(self, path: Path) -> str:
        """``path`` relative to the workspace root when inside it (for messages)."""
        try:
            return str(path.resolve().relative_to(self.root.resolve()))
        except ValueError:
            return str(path)

    def issue_dir(self, name: str) -> Path:
        """Resolve an ISSUE argument: a slug under issues/, or a path to an issue folder."""
        candidates = [Path(name), self.issues_dir / name]
        for c in candidates:
            if (c / "issue.yaml").is_file():
                return c
            if c.name == "issue.yaml" and c.is_file():
                return c.parent
        known = sorted(p.parent.name for p in self.issues_dir.glob("*/issue.yaml"))
        hint = f"Known issues: {', '.join(known)}." if known else "There are no issues yet."
        raise BulletinError(
            f"No issue '{name}': expected {self.relpath(self.issues_dir / name)}/issue.yaml.",
            hint=hint,
        )

    def database_url(self) -> str:
        """The database URL to connect with: BULLETIN_DATABASE_URL or database.url.

        A relative SQLite path is made absolute under the workspace. A PostgreSQL password
        comes from BULLETIN_DATABASE_PASSWORD or database.password_file when the URL has
        none (libpq's ~/.pgpass and PGPASSWORD work as well). The result may hold a
        password: show it only through SQLAlchemy's ``hide_password``.
        """
        url = self.config.database.url
        override = os.environ.get("BULLETIN_DATABASE_URL")
        if override:
            try:
                database_url_problem(override, in_config=False)
            except ValueError as exc:
                raise BulletinError(f"BULLETIN_DATABASE_URL: {exc}.") from None
            url = override
        prefix = "sqlite:///"
        if url.startswith(prefix) and not url.startswith("sqlite:////"):
            rel = url[len(prefix) :]
            if rel and rel != ":memory:":
                return prefix + str((self.root / rel).resolve())
            return url
        password = self.database_password()
        if password is not None and url.startswith("postgresql"):
            from sqlalchemy.engine import make_url

            parsed = make_url(url)
            if parsed.password is None:
                return parsed.set(password=password).render_as_string(hide_password=False)
        return url

    def secret(self, env: str, file: str | None) -> str | None:
        """A secret from the environment variable ``env``, else from ``file`` (relative to the
        workspace, refused unless only its owner can read it); never from bulletin.toml
        itself. None when neither is set. The one rule for every password and key."""
        value = os.environ.get(env)
        if value:
            return value
        if file:
            return read_secret_file(self.root / file)
        return None

    def database_password(self) -> str | None:
        """BULLETIN_DATABASE_PASSWORD or database.password_file."""
        return self.secret("BULLETIN_DATABASE_PASSWORD", self.config.database.password_file)

    def smtp_password(self) -> str | None:
        """The SMTP password from BULLETIN_SMTP_PASSWORD or smtp.password_file."""
        return self.secret("BULLETIN_SMTP_PASSWORD", self.config.smtp.password_file)

    def webhook_secret(self, provider: Literal["postmark", "mailgun", "sendgrid"]) -> str | None:
        """A provider's webhook secret from its environment variable or 0600 file, or None.

        None means the provider's hook is off. Never bulletin.toml itself (see
        :class:`WebhooksConfig`).
        """
        config = self.config.webhooks
        name = {
            "postmark": config.postmark_secret_file,
            "mailgun": config.mailgun_signing_key_file,
            "sendgrid": config.sendgrid_public_key_file,
        }[provider]
        value = self.secret(WEBHOOK_SECRET_ENV[provider], name)
        return value.strip() or None if value is not None else None

    def imap_password(self) -> str | None:
        """The IMAP password from BULLETIN_IMAP_PASSWORD or imap.password_file."""
        return self.secret("BULLETIN_IMAP_PASSWORD", self.config.imap.password_file)


def read_secret_file(path: Path) -> str:
    """Read a secret, refusing files that other users can read."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise BulletinError(f"Secret file {path} does not exist.") from None
    if mode & 0o077:
        raise BulletinError(
            f"Secret file {path} is readable by other users (mode {mode & 0o777:o}).",
            hint=f"Run: chmod 600 {path}",
        )
    try:
        return path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise BulletinError(
            f"Cannot read the secret file {path}: {exc.strerror or exc}.",
            hint="It must be readable by the user running bulletin (and by nobody else).",
        ) from None
    except UnicodeDecodeError:
        raise BulletinError(f"Secret file {path} is not UTF-8 text.") from None


def find_root(start: Path | None = None) -> Path:
    """The nearest folder at or above ``start`` holding bulletin.toml."""
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / CONFIG_NAME).is_file():
            return folder
    raise WorkspaceNotFound(
        f"No {CONFIG_NAME} in {here} or any folder above it.",
        hint="Run the command inside a workspace, pass --workspace DIR, "
        "or create one with `bulletin init DIR`.",
    )


_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


def _toml_key(line: str, i: int) -> tuple[tuple[str, ...], int] | None:
    """The dotted key starting at ``line[i]`` (bare or quoted parts) and where it ends."""
    parts: list[str] = []
    n = len(line)
    while True:
        while i < n and line[i] in " \t":
            i += 1
        if i >= n:
            return None
        if line[i] == '"':
            end = i + 1
            while end < n and line[end] != '"':
                end += 2 if line[end] == "\\" else 1
            if end >= n:
                return None
            try:  # tomllib decodes the escapes exactly as it did when loading
                parts.append(tomllib.loads(f"k = {line[i : end + 1]}")["k"])
            except tomllib.TOMLDecodeError:
                return None
            i = end + 1
        elif line[i] == "'":
            end = line.find("'", i + 1)
            if end < 0:
                return None
            parts.append(line[i + 1 : end])
            i = end + 1
        else:
            m = _BARE_KEY.match(line, i)
            if m is None:
                return None
            parts.append(m.group())
            i = m.end()
        while i < n and line[i] in " \t":
            i += 1
        if i < n and line[i] == ".":
            i += 1
            continue
        return tuple(parts), i


def _value_end(text: str, i: int) -> int:
    """Index of the line break that ends the value starting at ``text[i]`` (or the end).

    A value goes on over several lines inside a multi-line string, an array or an inline
    table; strings and comments are skipped so that their brackets and quotes do not count.
    """
    depth, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch == "\n":
            if depth <= 0:
                return i
        elif ch == "#":
            end = text.find("\n", i)
            i = n if end < 0 else end
            continue
        elif text.startswith(('"""', "'''"), i):
            end = _string_end(text, i + 3, text[i : i + 3])
            i = n if end < 0 else end
            continue
        elif ch in "\"'":
            end = _string_end(text, i + 1, ch)
            i = n if end < 0 else end
            continue
        elif ch in "[{":
            depth += 1
        elif ch in "]}":
            depth -= 1
        i += 1
    return n


def _string_end(text: str, i: int, delim: str) -> int:
    """Index just past the ``delim`` that closes a string whose body starts at ``i``."""
    n = len(text)
    while i < n:
        if text.startswith(delim, i):
            end = i + len(delim)
            while delim[0] == text[end : end + 1] and len(delim) == 3:  # """a"""" ends later
                end += 1
            return end
        if text[i] == "\\" and delim[0] == '"':
            i += 2
            continue
        i += 1
    return -1


def key_lines(text: str) -> dict[tuple[str, ...], int]:
    """The line (1-based) of every table header and key in a TOML text.

    tomllib gives values but not positions. This small scanner follows ``[table]`` and
    ``[[array]]`` headers, ``key = value`` lines with dotted and quoted keys, and skips
    what is inside strings (multi-line ones too), arrays and inline tables, whose keys are
    placed at the line of the key that holds them.
    """
    found: dict[tuple[str, ...], int] = {}
    table: tuple[str, ...] = ()
    pos, line_no, n = 0, 1, len(text)
    while pos < n:
        end = text.find("\n", pos)
        end = n if end < 0 else end
        line = text[pos:end]
        stripped = line.lstrip(" \t")
        indent = len(line) - len(stripped)
        next_pos = end + 1
        if stripped.startswith("["):
            double = stripped.startswith("[[")
            parsed = _toml_key(line, indent + (2 if double else 1))
            if parsed is not None:
                table = parsed[0]
                found.setdefault(table, line_no)
        elif stripped and not stripped.startswith("#"):
            parsed = _toml_key(line, indent)
            if parsed is not None and line[parsed[1] : parsed[1] + 1] == "=":
                found.setdefault(table + parsed[0], line_no)
                next_pos = _value_end(text, pos + parsed[1] + 1) + 1
        line_no += text.count("\n", pos, min(next_pos, n))
        pos = next_pos
    return found


def _describe_input(value: Any) -> str:
    if isinstance(value, str):
        return repr(value)
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "an array"
    return repr(value)


def format_validation_errors(exc: ValidationError) -> list[tuple[tuple[str | int, ...], str]]:
    """Turn pydantic errors into (location tuple, message) pairs in plain words."""
    out: list[tuple[tuple[str | int, ...], str]] = []
    for err in exc.errors(include_url=False):
        loc = tuple(err["loc"])
        kind = err["type"]
        if kind == "missing":
            msg = "is required"
            loc_out = loc
        elif kind == "extra_forbidden" and loc in _SECRET_KEYS:
            msg = _SECRET_KEYS[loc]
            loc_out = loc
        elif kind == "extra_forbidden":
            msg = "unknown key (check the spelling)"
            loc_out = loc
        elif kind in ("int_parsing", "int_type"):
            msg = f"expected an integer, got {_describe_input(err.get('input'))}"
            loc_out = loc
        elif kind in ("float_parsing", "float_type"):
            msg = f"expected a number, got {_describe_input(err.get('input'))}"
            loc_out = loc
        elif kind == "string_type":
            msg = f"expected text, got {_describe_input(err.get('input'))}"
            loc_out = loc
        elif kind == "literal_error":
            msg = f"{err['msg'].lower()}, got {_describe_input(err.get('input'))}"
            loc_out = loc
        elif kind == "model_type" or kind == "model_attributes_type":
            msg = f"expected a table, got {_describe_input(err.get('input'))}"
            loc_out = loc
        else:
            text = err["msg"]
            if text.startswith("Value error, "):
                text = text[len("Value error, ") :]
            msg = text[0].lower() + text[1:] if text else kind
            loc_out = loc
        out.append((loc_out, msg))
    return out


def load_config(path: Path) -> Config:
    """Read and validate bulletin.toml, reporting every problem at once."""
    name = path.name
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError([Problem(f"{name} not found", Location(str(path)))]) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        bad_line = raw[: exc.start].count(b"\n") + 1
        raise ConfigError(
            [Problem("not valid UTF-8 text; save the file as UTF-8", Location(name, bad_line))]
        ) from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        # Python < 3.14 gives the position only inside the text: "... (at line 3, column 9)".
        found = re.search(r"^(.*) \(at line (\d+), column (\d+)\)$", str(exc))
        msg = found.group(1) if found else str(exc)
        line = int(found.group(2)) if found else None
        column = int(found.group(3)) if found else None
        raise ConfigError(
            [Problem(f"invalid TOML: {msg}", Location(name, line, column))],
            hint="Fix the syntax there; see README 'Configuration'.",
        ) from None
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        lines = key_lines(text)
        problems = [
            Problem(
                f"{'.'.join(str(p) for p in loc)}: {msg}",
                Location(name, _line_of(lines, loc)),
                code="config",
            )
            for loc, msg in format_validation_errors(exc)
        ]
        raise ConfigError(problems, hint="Fix bulletin.toml; see README 'Configuration'.") from None


def _line_of(lines: dict[tuple[str, ...], int], loc: tuple[str | int, ...]) -> int | None:
    """The line of a key, else of the nearest table holding it (a missing key's section)."""
    path = tuple(str(p) for p in loc)
    for size in range(len(path), 0, -1):
        line = lines.get(path[:size])
        if line is not None:
            return line
    return None


def load(root: Path | None = None) -> Workspace:
    """Find (or take) the workspace root and load its configuration."""
    if root is not None:
        root = root.resolve()
        if not (root / CONFIG_NAME).is_file():
            raise WorkspaceNotFound(
                f"{root} has no {CONFIG_NAME}.",
                hint="Pass the folder that holds bulletin.toml, or create one with "
                "`bulletin init DIR`.",
            )
    else:
        root = find_root()
    return Workspace(root=root, config=load_config(root / CONFIG_NAME))


def config_reference() -> str:
    """A Markdown table of every configuration key, generated from the schema."""
    rows = ["| key | default | meaning |", "| --- | --- | --- |"]
    for section_name, field in Config.model_fields.items():
        model = field.annotation
        assert isinstance(model, type) and issubclass(model, BaseModel)
        for key, f in model.model_fields.items():
            default = "required" if f.is_required() else f"`{f.default!r}`"
            rows.append(f"| `{section_name}.{key}` | {default} | {f.description or ''} |")
    return "\n".join(rows)


if __name__ == "__main__":  # pragma: no cover - documentation helper
    print(config_reference())
