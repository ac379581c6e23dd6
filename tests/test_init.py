"""`bulletin init`: a fresh workspace from the bundled templates and sample issue."""

from __future__ import annotations

import os
import re
import stat
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from click.testing import CliRunner
from pydantic import BaseModel

from bulletin import resources, workspace
from bulletin.cli import cli
from bulletin.errors import BulletinError
from bulletin.scaffold import GITIGNORE_LINES, config_text, init_workspace

REPO = Path(__file__).resolve().parent.parent
SAMPLE_SLUG = "2014-10-clusterpolisee-03"


def tree(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` (relative posix path -> bytes), skipping bytecode caches."""
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and "__pycache__" not in p.parts
    }


def run_bulletin(
    *args: str, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bulletin", *args],
        cwd=cwd,
        env={**os.environ, "COLUMNS": "300", **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_sample_slug_matches_repository() -> None:
    assert resources.SAMPLE_ISSUE == SAMPLE_SLUG
    assert (REPO / "issues" / SAMPLE_SLUG / "issue.yaml").is_file()


def test_init_creates_a_loadable_workspace(tmp_path: Path) -> None:
    target = tmp_path / "new" / "letters"  # parents do not exist yet
    result = init_workspace(target)

    ws = workspace.load(target)
    assert ws.root == target.resolve()
    assert ws.config.smtp.url == "smtp://127.0.0.1:2525"
    assert ws.config.newsletter.name == "My Newsletter"
    assert ws.config.sender.from_email == "newsletter@example.org"
    assert ws.database_url() == f"sqlite:///{target.resolve()}/subscribers/bulletin.db"
    assert ws.issue_dir(SAMPLE_SLUG) == target / "issues" / SAMPLE_SLUG

    assert (target / "subscribers" / ".gitkeep").is_file()
    assert (target / "out").is_dir()
    secrets = target / ".bulletin"
    assert secrets.is_dir() and stat.S_IMODE(secrets.stat().st_mode) == 0o700
    # Its signing key from birth (serve can sign sign-up confirmations before any send),
    # owner-only, the one the send and serve then share.
    key = secrets / "secret_key"
    assert key.is_file() and stat.S_IMODE(key.stat().st_mode) == 0o600
    from bulletin.tokens import load_keys

    assert len(load_keys(ws, create=False)) == 1
    ignored = (target / ".gitignore").read_text(encoding="utf-8").splitlines()
    assert "subscribers/*" in ignored and ".bulletin/" in ignored
    assert result.sample_issue == SAMPLE_SLUG
    assert all(p.is_file() for p in result.files)
    assert target / "bulletin.toml" in result.files


def test_bundled_files_are_byte_identical_to_the_repository(tmp_path: Path) -> None:
    init_workspace(tmp_path / "ws")
    for folder in ("templates", f"issues/{SAMPLE_SLUG}"):
        shipped = tree(REPO / folder)
        assert shipped, f"repository {folder}/ is empty"
        assert tree(tmp_path / "ws" / folder) == shipped, folder
    # A new workspace starts with no subscribers: only the marker that keeps the folder in git.
    assert [p.name for p in (tmp_path / "ws" / "subscribers").iterdir()] == [".gitkeep"]


def test_init_in_an_existing_empty_folder(tmp_path: Path) -> None:
    init_workspace(tmp_path)
    assert workspace.load(tmp_path).config.newsletter.language == "en"


def test_reinit_is_refused_with_exit_code_1_and_no_traceback(tmp_path: Path) -> None:
    first = run_bulletin("init", "ws", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    config = tmp_path / "ws" / "bulletin.toml"
    config.write_text(config.read_text(encoding="utf-8") + "# mine\n", encoding="utf-8")
    before = tree(tmp_path / "ws")

    again = run_bulletin("init", "ws", cwd=tmp_path)
    assert again.returncode == 1
    assert "Traceback" not in again.stderr + again.stdout
    assert "ws already holds bulletin.toml; choose another folder or delete it" in again.stderr
    assert tree(tmp_path / "ws") == before  # nothing touched


def test_init_prints_the_next_commands(tmp_path: Path) -> None:
    res = CliRunner().invoke(cli, ["init", str(tmp_path / "my news")])
    assert res.exit_code == 0, res.output
    flat = " ".join(res.output.split())
    quoted = f"'{tmp_path / 'my news'}'"
    assert f"cd {quoted} && bulletin check {SAMPLE_SLUG} && bulletin preview {SAMPLE_SLUG}" in flat


def test_init_dot_prints_no_cd(tmp_path: Path) -> None:
    done = run_bulletin("init", ".", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert f"  bulletin check {SAMPLE_SLUG} && bulletin preview {SAMPLE_SLUG}" in done.stdout
    assert "cd " not in done.stdout


def test_refuses_to_overwrite_any_file_and_writes_nothing(tmp_path: Path) -> None:
    issue = tmp_path / "issues" / SAMPLE_SLUG / "issue.yaml"
    issue.parent.mkdir(parents=True)
    issue.write_text("mine: true\n", encoding="utf-8")
    with pytest.raises(BulletinError) as caught:
        init_workspace(tmp_path)
    assert caught.value.message == (
        f"{tmp_path} already has files that init would overwrite: issues/{SAMPLE_SLUG}/issue.yaml."
    )
    assert issue.read_text(encoding="utf-8") == "mine: true\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["issues"]


def test_refuses_a_file_as_target(tmp_path: Path) -> None:
    target = tmp_path / "notes.txt"
    target.write_text("x", encoding="utf-8")
    with pytest.raises(BulletinError, match="is a file, not a folder"):
        init_workspace(target)


def test_existing_gitignore_is_extended_not_replaced(tmp_path: Path) -> None:
    (tmp_path / ".gitignore").write_text("node_modules/\n.bulletin/", encoding="utf-8")
    init_workspace(tmp_path)
    lines = (tmp_path / ".gitignore").read_text(encoding="utf-8").splitlines()
    assert lines[0] == "node_modules/"
    assert lines.count(".bulletin/") == 1
    assert set(GITIGNORE_LINES) <= set(lines)


def test_config_documents_every_option_and_its_examples_are_valid(tmp_path: Path) -> None:
    text = config_text()
    for section, field in workspace.Config.model_fields.items():
        assert f"[{section}]" in text
        model = field.annotation
        assert isinstance(model, type) and issubclass(model, BaseModel)
        for key in model.model_fields:
            assert re.search(rf"^(# )?{key} = ", text, re.M), f"{section}.{key} missing"
    # Uncommenting every optional key must still give a valid configuration.
    uncommented = re.sub(r"^# ([a-z_]+ = )", r"\1", text, flags=re.M)
    assert uncommented.count(" = ") == text.count(" = ")
    path = tmp_path / "bulletin.toml"
    path.write_text(uncommented, encoding="utf-8")
    config = workspace.load_config(path)
    assert config.sender.return_path == "bounces+{token}@example.org"
    assert config.smtp.starttls == "auto"


def test_new_workspace_renders_its_example_issue(tmp_path: Path) -> None:
    from bulletin.content.loader import load_issue
    from bulletin.render.pipeline import render_issue
    from bulletin.render.values import sample_values

    init_workspace(tmp_path / "ws")
    ws = workspace.load(tmp_path / "ws")
    loaded = load_issue(ws, ws.issue_dir(SAMPLE_SLUG))
    rendered = render_issue(ws, loaded)
    assert rendered.ok, [str(p) for p in rendered.problems]
    assert rendered.subject == loaded.issue.subject
    assert "știri" in rendered.subject  # comma-below letters survive the copy
    values = sample_values(ws, loaded.slug)
    html = rendered.html.fill(values)
    text = rendered.text.fill(values)
    assert "<html" in html.lower() and "My Newsletter" in html + text
    assert values["unsubscribe_url"] in text


def test_wheel_bundles_templates_and_sample_issue(tmp_path: Path) -> None:
    """Build a real wheel, then init a workspace from the wheel's copy of bulletin."""
    cmd = [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path / "dist")]
    try:
        import hatchling  # noqa: F401
    except ImportError:
        pass  # pip builds in an isolated environment (hatchling from its cache)
    else:
        cmd.append("--no-build-isolation")
    built = subprocess.run(
        [*cmd, str(REPO)],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"},
    )
    assert built.returncode == 0, built.stderr
    (wheel,) = (tmp_path / "dist").glob("bulletin-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        for folder in ("templates", f"issues/{SAMPLE_SLUG}"):
            for rel, data in tree(REPO / folder).items():
                member = f"bulletin/_bundled/{folder}/{rel}"
                assert member in names, member
                assert zf.read(member) == data, member
        zf.extractall(tmp_path / "site")

    # The unpacked wheel comes first on sys.path, so this bulletin has no source tree to
    # fall back on: init must work from the bundle alone.
    env = {"PYTHONPATH": str(tmp_path / "site")}
    probe = subprocess.run(
        [
            sys.executable,
            "-c",
            "from bulletin import resources; print(resources.bundled('templates'))",
        ],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert probe.stdout.strip() == str(tmp_path / "site" / "bulletin" / "_bundled" / "templates")
    done = run_bulletin("init", "from-wheel", cwd=tmp_path, env=env)
    assert done.returncode == 0, done.stderr
    assert tree(tmp_path / "from-wheel" / "templates") == tree(REPO / "templates")


def test_git_keeps_personal_data_and_secrets_out_of_a_new_workspace(tmp_path: Path) -> None:
    import shutil

    git = shutil.which("git")
    if git is None:
        pytest.skip("git is not installed")
    root = tmp_path / "ws"
    init_workspace(root)
    personal = [
        "subscribers/members.csv",
        "subscribers/members.rejects.csv",
        "subscribers/bulletin.db",
        "subscribers/bulletin.db-wal",
        "imports/mailchimp-2014.csv",
        "export.csv",
        ".bulletin/secret-key",
        "out/2014-10-clusterpolisee-03-dry-run/01-ana@example.org.eml",
        "mail/new/1.eml",
    ]
    for rel in personal:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text("Ana Popescu,ana@example.org,+40 721 000 000\n", "utf-8")

    def run_git(*args: str) -> str:
        done = subprocess.run(
            [git, "-C", str(root), *args], capture_output=True, text=True, check=True
        )
        return done.stdout

    run_git("init", "-q")
    run_git("add", "-A")
    tracked = set(run_git("ls-files").splitlines())

    assert not tracked & set(personal), tracked & set(personal)
    assert {"bulletin.toml", ".gitignore", "subscribers/.gitkeep"} <= tracked
    assert f"issues/{SAMPLE_SLUG}/issue.yaml" in tracked
    assert any(p.startswith("templates/") for p in tracked)


def test_the_sample_issue_stays_out_of_the_new_archive_until_the_officer_decides(
    tmp_path: Path,
) -> None:
    from bulletin.web.archive import Archive

    root = tmp_path / "ws"
    init_workspace(root)
    ws = workspace.load(root)
    assert ws.config.archive.excluded == {SAMPLE_SLUG}
    archive = Archive(ws)
    assert archive.entries() == [] and archive.issue_page(SAMPLE_SLUG) is None
    # Deciding to publish it: its slug taken out of archive.exclude.
    config = root / "bulletin.toml"
    text = config.read_text(encoding="utf-8")
    assert f'exclude = "{SAMPLE_SLUG}"' in text
    config.write_text(text.replace(f'exclude = "{SAMPLE_SLUG}"', 'exclude = ""'), "utf-8")
    assert [e.slug for e in Archive(workspace.load(root)).entries()] == [SAMPLE_SLUG]
