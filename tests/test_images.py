"""Local images: real files made with Pillow, through the real CLI, server and a real send."""

from __future__ import annotations

import io
import os
import random
import re
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner, Result
from PIL import Image

from bulletin.cli import cli
from bulletin.render.images import CACHE_DIR
from conftest import SAMPLE_SLUG, set_config
from smtpfaults import FaultServer
from test_engine import KEY, parse
from test_public import ServeProcess
from test_send_cli import setup

BASE = "http://127.0.0.1:8080/archive/images/"
"""Where the repository's bulletin.toml (base_url) publishes prepared images."""

GPS_IFD = 0x8825
ORIENTATION = 0x0112


def bulletin(root: Path, *args: str) -> Result:
    return CliRunner().invoke(cli, ["-w", str(root), *args], catch_exceptions=False)


def issue_dir(root: Path) -> Path:
    return root / "issues" / SAMPLE_SLUG


def add_image_section(root: Path, src: str, alt: str = "Participanții la atelier") -> int:
    """Put an image section first in the sample issue; returns its line in issue.yaml."""
    path = issue_dir(root) / "issue.yaml"
    text = path.read_text(encoding="utf-8")
    head, sep, tail = text.partition("sections:\n")
    assert sep, "the sample issue has sections"
    section = f"  - type: image\n    image: {{src: {src}, alt: {alt}}}\n"
    path.write_text(head + sep + section + tail, encoding="utf-8")
    return head.count("\n") + 2


def phone_photo(path: Path, size: tuple[int, int] = (2400, 1600)) -> None:
    """A JPEG as a phone writes it: EXIF with a GPS position and "rotate 90° clockwise"."""
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.new("RGB", size, (180, 60, 40))
    for x in range(0, size[0], 200):  # some detail, so the encoder has work to do
        image.paste((20, 90, 160), (x, 0, x + 60, size[1]))
    exif = Image.Exif()
    exif[ORIENTATION] = 6
    exif[0x010F] = "PhoneMaker"
    exif[GPS_IFD] = {1: "N", 2: (44.0, 26.0, 5.0), 3: "E", 4: (26.0, 6.0, 0.0)}
    image.save(path, "JPEG", exif=exif, quality=95)


def logo_png(path: Path) -> None:
    """A PNG with transparent corners (alpha that must survive)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.new("RGBA", (1000, 400), (0, 0, 0, 0))
    image.paste((11, 61, 107, 255), (100, 100, 900, 300))
    image.save(path, "PNG")


def shown_images(html: str) -> list[str]:
    return re.findall(r'<img\b[^>]*\bsrc="' + re.escape(BASE) + r'[^"]+"[^>]*>', html)


def attr(tag: str, name: str) -> str:
    match = re.search(rf'\b{name}="([^"]*)"', tag)
    assert match, tag
    return match.group(1)


def test_a_phone_photo_is_oriented_resized_stripped_and_cached(
    workspace_dir: Path, tmp_path: Path
) -> None:
    photo = issue_dir(workspace_dir) / "photos" / "atelier.jpg"
    phone_photo(photo)
    add_image_section(workspace_dir, "photos/atelier.jpg")

    result = bulletin(workspace_dir, "render", SAMPLE_SLUG, "-o", str(tmp_path / "a.html"))

    assert result.exit_code == 0, result.output
    (tag,) = shown_images((tmp_path / "a.html").read_text(encoding="utf-8"))
    name = attr(tag, "src").removeprefix(BASE)
    assert re.fullmatch(r"atelier-[0-9a-f]{8}\.jpg", name), name
    # Rotated upright (portrait), 1x size in the attributes, the file twice as wide.
    assert (attr(tag, "width"), attr(tag, "height")) == ("552", "828")
    assert "height:auto" in attr(tag, "style"), "a phone narrows it without squashing it"
    prepared = workspace_dir / CACHE_DIR / name
    with Image.open(prepared) as image:
        assert image.format == "JPEG" and image.size == (1104, 1656)
        assert image.info.get("progressive") == 1
        assert not image.getexif(), "EXIF (GPS included) is stripped"
        assert "icc_profile" not in image.info
    assert b"PhoneMaker" not in prepared.read_bytes()

    # A second render reuses the prepared file instead of encoding the photo again.
    before = prepared.stat().st_mtime_ns
    os.utime(prepared, ns=(before - 10**9, before - 10**9))
    again = bulletin(workspace_dir, "render", SAMPLE_SLUG, "-o", str(tmp_path / "b.html"))
    assert again.exit_code == 0, again.output
    assert prepared.stat().st_mtime_ns == before - 10**9
    assert sorted(p.name for p in (workspace_dir / CACHE_DIR).iterdir()) == [name]

    # A changed photo gets a new name: a mail already sent keeps the old picture.
    phone_photo(photo, size=(1600, 1600))
    bulletin(workspace_dir, "render", SAMPLE_SLUG, "-o", str(tmp_path / "c.html"))
    (tag,) = shown_images((tmp_path / "c.html").read_text(encoding="utf-8"))
    assert attr(tag, "src").removeprefix(BASE) != name


def test_a_transparent_png_stays_a_png_with_its_alpha(workspace_dir: Path, tmp_path: Path) -> None:
    logo_png(issue_dir(workspace_dir) / "sigla.png")
    add_image_section(workspace_dir, "sigla.png", alt="Sigla")

    result = bulletin(workspace_dir, "render", SAMPLE_SLUG, "-o", str(tmp_path / "a.html"))

    assert result.exit_code == 0, result.output
    (tag,) = shown_images((tmp_path / "a.html").read_text(encoding="utf-8"))
    assert (attr(tag, "width"), attr(tag, "height")) == ("552", "221")
    with Image.open(workspace_dir / CACHE_DIR / attr(tag, "src").removeprefix(BASE)) as image:
        assert image.format == "PNG" and image.mode == "RGBA" and image.size == (1000, 400)
        assert image.getpixel((0, 0))[3] == 0, "a transparent corner stays transparent"
        assert image.getpixel((500, 200)) == (11, 61, 107, 255)


def test_check_locates_every_unusable_image(workspace_dir: Path, tmp_path: Path) -> None:
    folder = issue_dir(workspace_dir)
    (folder / "photos").mkdir()
    (folder / "photos" / "note.jpg").write_text("not a picture\n", encoding="utf-8")
    outside = tmp_path / "secret.jpg"
    phone_photo(outside)
    (folder / "photos" / "link.jpg").symlink_to(outside)
    lines = {
        "missing": add_image_section(workspace_dir, "photos/missing.jpg"),
        "text": add_image_section(workspace_dir, "photos/note.jpg"),
        "dotdot": add_image_section(workspace_dir, "../../../secret.jpg"),
        "symlink": add_image_section(workspace_dir, "photos/link.jpg"),
    }
    # Each insertion went first, so earlier ones moved down by two lines per later one.
    order = ["missing", "text", "dotdot", "symlink"]
    at = {k: lines[k] + 2 * (len(order) - 1 - i) for i, k in enumerate(order)}

    result = bulletin(workspace_dir, "check", SAMPLE_SLUG)

    assert result.exit_code != 0
    out = result.output
    where = f"issues/{SAMPLE_SLUG}/issue.yaml"
    assert f"{where}:{at['missing']}" in out and "photos/missing.jpg not found" in out, out
    assert f"{where}:{at['text']}" in out and "photos/note.jpg is not an image" in out, out
    assert f"{where}:{at['dotdot']}" in out and "../../../secret.jpg is outside" in out, out
    assert f"{where}:{at['symlink']}" in out and "photos/link.jpg is outside" in out, out
    assert "Traceback" not in out
    assert not (workspace_dir / CACHE_DIR).exists() or not any(
        (workspace_dir / CACHE_DIR).iterdir()
    ), "nothing from outside the workspace was copied into the build folder"


def test_an_image_still_heavy_after_processing_is_a_located_warning(
    workspace_dir: Path,
) -> None:
    rng = random.Random(11)
    noise = Image.frombytes("RGB", (1400, 1400), rng.randbytes(1400 * 1400 * 3))
    noise.save(issue_dir(workspace_dir) / "noise.png")
    line = add_image_section(workspace_dir, "noise.png", alt="Zgomot")

    result = bulletin(workspace_dir, "check", SAMPLE_SLUG)
    strict = bulletin(workspace_dir, "check", "--strict", SAMPLE_SLUG)

    assert f"issues/{SAMPLE_SLUG}/issue.yaml:{line}" in result.output, result.output
    assert "noise.png is" in result.output and "over 200 KB" in result.output
    assert result.exit_code == 0, "a warning"
    assert strict.exit_code != 0


def test_a_decompression_bomb_is_a_located_error(workspace_dir: Path) -> None:
    # 10,000 x 10,000 one-bit pixels: 100 M pixels (over Pillow's 89 M) in a tiny file.
    Image.new("1", (10_000, 10_000)).save(issue_dir(workspace_dir) / "bomb.png")
    line = add_image_section(workspace_dir, "bomb.png", alt="Bomba")

    result = bulletin(workspace_dir, "check", SAMPLE_SLUG)

    assert result.exit_code != 0
    assert f"issues/{SAMPLE_SLUG}/issue.yaml:{line}" in result.output, result.output
    assert "too many pixels" in result.output and "decompression bomb" in result.output
    assert "Traceback" not in result.output


def test_serve_and_archive_build_publish_the_prepared_images(
    workspace_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BULLETIN_SECRET_KEY", KEY)  # the served process inherits it
    phone_photo(issue_dir(workspace_dir) / "photos" / "atelier.jpg")
    add_image_section(workspace_dir, "photos/atelier.jpg")
    logo_png(issue_dir(workspace_dir) / "sigla.png")
    add_image_section(workspace_dir, "sigla.png", alt="Sigla")
    out = tmp_path / "site"

    built = bulletin(workspace_dir, "archive", "build", str(out))

    assert built.exit_code == 0, built.output
    page = (out / SAMPLE_SLUG / "index.html").read_text(encoding="utf-8")
    names = sorted(attr(tag, "src").removeprefix(BASE) for tag in shown_images(page))
    assert len(names) == 2
    assert sorted(p.name for p in (out / "images").iterdir()) == names

    serve = ServeProcess(workspace_dir)
    try:
        with httpx.Client(base_url=serve.url) as client:
            for name in names:
                response = client.get(f"/archive/images/{name}")
                assert response.status_code == 200
                expected = "image/png" if name.endswith(".png") else "image/jpeg"
                assert response.headers["content-type"] == expected
                assert "max-age=31536000" in response.headers["cache-control"]
                assert response.content == (out / "images" / name).read_bytes()
                with Image.open(io.BytesIO(response.content)) as image:
                    assert image.width <= 1104
            # Only images of published issues: a made-up name or a draft's file is not served.
            assert client.get("/archive/images/nothing-00000000.jpg").status_code == 404
    finally:
        serve.stop()


def test_a_sent_message_shows_images_from_base_url_with_their_size(
    workspace_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BULLETIN_SECRET_KEY", KEY)
    phone_photo(issue_dir(workspace_dir) / "photos" / "atelier.jpg")
    add_image_section(workspace_dir, "photos/atelier.jpg")
    with FaultServer() as server:
        setup(workspace_dir, server.url, n=2, rate=0, connections=1)
        result = bulletin(workspace_dir, "send", SAMPLE_SLUG, "--list", "news", "--yes")
        assert result.exit_code == 0, result.output
        assert len(server.messages) == 2
        message = parse(server.messages[0].data)
    html_part = message.get_body(("html",))
    assert html_part is not None
    (tag,) = shown_images(html_part.get_content())
    assert (attr(tag, "width"), attr(tag, "height")) == ("552", "828")
    assert attr(tag, "alt") == "Participanții la atelier"
    assert "atelier.jpg" not in html_part.get_content().replace(attr(tag, "src"), "")


def test_a_logo_file_is_prepared_for_the_header_and_published(
    workspace_dir: Path, tmp_path: Path
) -> None:
    logo_png(workspace_dir / "brand" / "sigla.png")
    set_config(workspace_dir, "newsletter", logo="brand/sigla.png", logo_alt="Sigla ClusterPoliSEE")

    result = bulletin(workspace_dir, "render", SAMPLE_SLUG, "-o", str(tmp_path / "a.html"))
    built = bulletin(workspace_dir, "archive", "build", str(tmp_path / "site"))

    assert result.exit_code == 0, result.output
    (tag,) = shown_images((tmp_path / "a.html").read_text(encoding="utf-8"))
    assert attr(tag, "alt") == "Sigla ClusterPoliSEE"
    assert (attr(tag, "width"), attr(tag, "height")) == ("160", "64")
    name = attr(tag, "src").removeprefix(BASE)
    assert re.fullmatch(r"sigla-[0-9a-f]{8}\.png", name), name
    with Image.open(workspace_dir / CACHE_DIR / name) as image:
        assert image.size == (320, 128) and image.mode == "RGBA"
    assert built.exit_code == 0, built.output
    assert (tmp_path / "site" / "images" / name).is_file()


def test_a_logo_url_still_works_and_a_missing_logo_file_is_located(
    workspace_dir: Path, tmp_path: Path
) -> None:
    set_config(workspace_dir, "newsletter", logo_url="https://example.org/sigla.png")
    result = bulletin(workspace_dir, "render", SAMPLE_SLUG, "-o", str(tmp_path / "a.html"))
    assert result.exit_code == 0, result.output
    assert 'src="https://example.org/sigla.png"' in (tmp_path / "a.html").read_text("utf-8")

    set_config(workspace_dir, "newsletter", logo="brand/none.png")
    line = next(
        i
        for i, text in enumerate(
            (workspace_dir / "bulletin.toml").read_text("utf-8").split("\n"), 1
        )
        if text.startswith("logo =")
    )
    checked = bulletin(workspace_dir, "check", SAMPLE_SLUG)

    assert checked.exit_code != 0
    assert f"bulletin.toml:{line}" in checked.output, checked.output
    assert "brand/none.png not found" in checked.output
    assert "Traceback" not in checked.output


def test_an_http_base_url_is_reported_once_at_its_line_not_at_each_image(
    workspace_dir: Path,
) -> None:
    """The images' addresses come from base_url: the setting is the one thing to fix."""
    phone_photo(issue_dir(workspace_dir) / "photos" / "atelier.jpg")
    add_image_section(workspace_dir, "photos/atelier.jpg")
    set_config(workspace_dir, "newsletter", base_url="http://news.example.ro")

    result = bulletin(workspace_dir, "check", SAMPLE_SLUG)

    assert result.exit_code == 0, result.output
    assert "newsletter.base_url is http://news.example.ro" in result.output
    assert BASE.replace("127.0.0.1:8080", "news.example.ro") not in result.output
    assert "uses http://" not in result.output, result.output
