"""``bulletin init``: create a fresh workspace from the bundled templates and sample issue.

The generated ``bulletin.toml`` is built from the configuration schema in
:mod:`bulletin.workspace`, so every option appears with its description: the ones a new user
must edit as live keys, the others commented out with their default or an example.
"""

from __future__ import annotations

import json
import os
import shlex
from collections.abc import Mapping
from dataclasses import dataclass
from importlib.resources.abc import Traversable
from pathlib import Path

from pydantic import BaseModel

from bulletin import resources
from bulletin.errors import BulletinError
from bulletin.workspace import CONFIG_NAME, Config

# Live keys of the new bulletin.toml. Values marked in _EDIT are placeholders the user must
# change before sending to real people; the rest are working local defaults.
_LIVE: Mapping[str, Mapping[str, str]] = {
    "newsletter": {
        "name": "My Newsletter",
        "base_url": "http://127.0.0.1:8080",
        "language": "en",
        "organisation": "Example Organisation",
        "postal_address": "1 Example Street, 00000 Example City, Country",
        "reason": "You receive this newsletter because you subscribed to it.",
    },
    "sender": {
        "from_name": "My Newsletter",
        "from_email": "newsletter@example.org",
    },
    "smtp": {"url": "smtp://127.0.0.1:2525"},
    "database": {"url": "sqlite:///subscribers/bulletin.db"},
    # The sample issue is someone else's newsletter: not in this one's public archive until
    # the officer decides (removing it from the list publishes it).
    "archive": {"exclude": resources.SAMPLE_ISSUE},
}

_EDIT = {
    ("newsletter", "name"),
    ("newsletter", "base_url"),
    ("newsletter", "organisation"),
    ("newsletter", "postal_address"),
    ("newsletter", "reason"),
    ("sender", "from_name"),
    ("sender", "from_email"),
}

# Examples for optional keys whose default is "unset"; uncommenting any of them must still
# give a valid configuration (tests/test_init.py checks it).
_EXAMPLES: Mapping[tuple[str, str], str] = {
    ("newsletter", "logo_url"): "https://example.org/logo.png",
    ("newsletter", "logo_alt"): "My Newsletter",
    ("newsletter", "list_id"): "news.example.org",
    ("sender", "reply_to"): "contact@example.org",
    ("sender", "return_path"): "bounces+{token}@example.org",
    ("sender", "unsubscribe_mailto"): "unsubscribe@example.org",
    ("smtp", "username"): "newsletter@example.org",
    ("smtp", "password_file"): ".bulletin/smtp-password",
    ("smtp", "helo_name"): "mail.example.org",
    ("imap", "bounces_url"): "imaps://bounces@mail.example.org/INBOX",
    ("imap", "unsubscribes_url"): "imaps://unsubscribe@mail.example.org/INBOX",
    ("imap", "password_file"): ".bulletin/imap-password",
}

_SECTION_NOTES: Mapping[str, str] = {
    "smtp": "`bulletin sink` runs a local capture server at 127.0.0.1:2525: nothing leaves\n"
    "# your machine until you point smtp.url at a real relay.",
    "archive": "The sample issue is left out of the public archive: delete its folder, or\n"
    "# take its slug out of exclude to publish it.",
}


def placeholders() -> dict[tuple[str, str], str]:
    """The values a new bulletin.toml carries that are not the officer's own, by key.

    The keys marked EDIT (but base_url, which works on this machine as it is and has its own
    rule in :mod:`bulletin.preflight`), and the commented examples that, uncommented, still
    say example.org or repeat one of those placeholders (not ``.bulletin/smtp-password``,
    a real place). Derived from the template above, so a placeholder added there is caught
    by ``bulletin check`` without a second list.
    """
    found = {
        (section, key): value
        for section, values in _LIVE.items()
        for key, value in values.items()
        if (section, key) in _EDIT and key != "base_url"
    }
    live = set(found.values())
    for key, value in _EXAMPLES.items():
        if "example" in value.lower() or value in live:
            found[key] = value
    return found


GITIGNORE_LINES = (
    "# bulletin: personal data and secrets, never committed",
    # The store, and any list kept beside it (imports, exports, their rejects).
    "subscribers/*",
    "!subscribers/.gitkeep",
    # Subscriber lists wherever they are saved: a CSV in a newsletter workspace holds
    # names and addresses (an import's reject file, NAME.rejects.csv beside the file
    # imported, phones and IP addresses too).
    "*.csv",
    ".bulletin/",
    "/out/",
    "/mail/",
)


def _toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    # A JSON string is a valid TOML basic string (same escapes); keep non-ASCII as is.
    return json.dumps(str(value), ensure_ascii=False)


def config_text() -> str:
    """The commented bulletin.toml of a new workspace, one entry per schema field."""
    lines = [
        "# bulletin workspace configuration. Every option is listed with what it does;",
        "# lines starting with '#' are comments. Keys marked EDIT are placeholders: change them",
        "# before sending to real people. Secrets never go here: the SMTP password comes from",
        "# BULLETIN_SMTP_PASSWORD or smtp.password_file (mode 0600, inside .bulletin/).",
    ]
    for section, field in Config.model_fields.items():
        model = field.annotation
        assert isinstance(model, type) and issubclass(model, BaseModel)
        summary = (model.__doc__ or "").strip().splitlines()[0]
        # Docstrings read "[section]: what it is"; the header below already names it.
        summary = summary.removeprefix(f"[{section}]: ")
        lines += ["", f"# {summary[:1].upper()}{summary[1:]}"]
        if section in _SECTION_NOTES:
            lines.append(f"# {_SECTION_NOTES[section]}")
        lines.append(f"[{section}]")
        live = _LIVE.get(section, {})
        for key, f in model.model_fields.items():
            lines.append(f"# {f.description or key}")
            if key in live:
                edit = "  # EDIT" if (section, key) in _EDIT else ""
                lines.append(f"{key} = {_toml_value(live[key])}{edit}")
            elif (section, key) in _EXAMPLES:
                lines.append(f"# {key} = {_toml_value(_EXAMPLES[section, key])}")
            elif f.is_required():
                # A new required field without a placeholder here is a bug in this module;
                # the test loading a fresh workspace catches it.
                lines.append(f'{key} = ""  # EDIT')
            else:
                default = f.default
                shown = '""' if default is None else _toml_value(default)
                lines.append(f"# {key} = {shown}")
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class InitResult:
    """What ``bulletin init`` created."""

    root: Path
    sample_issue: str
    files: tuple[Path, ...]
    """Files written (absolute paths), in creation order."""

    def next_commands(self, shown_dir: str) -> str:
        """The commands to run next; ``shown_dir`` is the folder as the user typed it."""
        steps = [f"bulletin check {self.sample_issue}", f"bulletin preview {self.sample_issue}"]
        if Path(shown_dir).resolve() != Path.cwd().resolve():
            steps.insert(0, f"cd {shlex.quote(shown_dir)}")
        return " && ".join(steps)


Source = bytes | Traversable
"""What a planned file is written from: generated bytes or a bundled file."""


def _planned(root: Path) -> dict[Path, Source]:
    """Every file init will write, mapped to its content."""
    plan: dict[Path, Source] = {root / CONFIG_NAME: config_text().encode("utf-8")}
    for rel, src in resources.bundled_files("templates").items():
        plan[root.joinpath("templates", *rel.split("/"))] = src
    issue = f"issues/{resources.SAMPLE_ISSUE}"
    for rel, src in resources.bundled_files(issue).items():
        plan[root.joinpath("issues", resources.SAMPLE_ISSUE, *rel.split("/"))] = src
    # git keeps no empty folders; the marker keeps subscribers/ in a fresh repository.
    plan[root / "subscribers" / ".gitkeep"] = b""
    return plan


def init_workspace(target: Path) -> InitResult:
    """Create a workspace in ``target`` (missing or empty, or at least without our files).

    Refuses, before writing anything, when ``target`` already holds bulletin.toml or any
    other file init would write. An existing ``.gitignore`` gets our lines appended.
    """
    root = target.absolute()
    # Messages name the folder as typed, except "." which says nothing useful on its own.
    shown = str(target) if str(target) not in ("", ".") else str(root)
    if root.exists() and not root.is_dir():
        raise BulletinError(
            f"{shown} is a file, not a folder.", hint="Choose a folder name for the workspace."
        )
    if (root / CONFIG_NAME).exists():
        raise BulletinError(
            f"{shown} already holds {CONFIG_NAME}; choose another folder or delete it."
        )
    plan = _planned(root)
    clashes = [p for p in plan if p.exists() or p.is_symlink()]
    if clashes:
        listed = ", ".join(str(p.relative_to(root)) for p in clashes[:5])
        more = f" and {len(clashes) - 5} more" if len(clashes) > 5 else ""
        raise BulletinError(
            f"{shown} already has files that init would overwrite: {listed}{more}.",
            hint="Choose an empty or new folder.",
        )
    try:
        written = _write(root, plan)
    except OSError as exc:
        raise BulletinError(
            f"Could not create the workspace in {shown}: {exc.strerror or exc}.",
            hint="Check the folder's permissions or choose another folder.",
        ) from None
    return InitResult(root=root, sample_issue=resources.SAMPLE_ISSUE, files=tuple(written))


def _write(root: Path, plan: Mapping[Path, Source]) -> list[Path]:
    written: list[Path] = []
    root.mkdir(parents=True, exist_ok=True)
    for path, src in plan.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(src if isinstance(src, bytes) else src.read_bytes())
        written.append(path)
    written.append(_write_gitignore(root / ".gitignore"))
    (root / "out").mkdir(exist_ok=True)
    # Secrets (unsubscribe signing key, SMTP password file) live here: owner only.
    secrets = root / ".bulletin"
    secrets.mkdir(mode=0o700, exist_ok=True)
    os.chmod(secrets, 0o700)
    # The key that signs every link: made now, so serve (sign-up forms) and send share it
    # from the start. Never committed (.gitignore); copy it to where serve runs.
    from bulletin.tokens import create_key

    create_key(secrets)
    return written


def _write_gitignore(path: Path) -> Path:
    existing = path.read_text(encoding="utf-8") if path.exists() else ""
    have = {line.strip() for line in existing.splitlines()}
    missing = [line for line in GITIGNORE_LINES if line not in have]
    if missing:
        sep = "" if not existing or existing.endswith("\n") else "\n"
        blank = "\n" if existing.strip() else ""
        path.write_text(existing + sep + blank + "\n".join(missing) + "\n", encoding="utf-8")
    return path
