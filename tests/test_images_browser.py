"""Local images in the live preview, in a real headless Chromium at phone and desktop width."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import CHROMIUM, CHROMIUM_ARGS
from test_images import add_image_section, logo_png, phone_photo

pytestmark = pytest.mark.browser

pytest.importorskip("playwright.sync_api")
from playwright.sync_api import Browser, sync_playwright  # noqa: E402

from test_browser_preview import SLUG, PreviewProcess, copy_workspace, png_size  # noqa: E402

if not CHROMIUM.exists():  # pragma: no cover - the Makefile installs it
    pytest.skip("Debian chromium is not installed (make system-deps)", allow_module_level=True)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture(scope="module")
def preview(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PreviewProcess]:
    root = copy_workspace(tmp_path_factory.mktemp("images") / "ws")
    folder = root / "issues" / SLUG
    phone_photo(folder / "photos" / "atelier.jpg")
    add_image_section(root, "photos/atelier.jpg")
    logo_png(folder / "sigla.png")
    add_image_section(root, "sigla.png", alt="Sigla")
    server = PreviewProcess(root)
    yield server
    server.stop()


@pytest.mark.parametrize("width", [375, 800])
def test_preview_shows_local_images_from_disk_without_overflow(
    browser: Browser, preview: PreviewProcess, tmp_path: Path, width: int
) -> None:
    context = browser.new_context(viewport={"width": width, "height": 800})
    context.set_default_timeout(5000)
    page = context.new_page()
    page.goto(preview.url + "/email.html", wait_until="load")
    images = page.locator("img[alt='Participanții la atelier'], img[alt='Sigla']")
    assert images.count() == 2
    for i in range(2):
        image = images.nth(i)
        src = image.get_attribute("src") or ""
        assert src.startswith("/images/"), src  # from the preview, not from base_url
        # Loaded (a broken image has naturalWidth 0) and no wider than the screen.
        assert image.evaluate("img => img.complete && img.naturalWidth") > 0
        box = image.bounding_box()
        assert box is not None and 0 < box["width"] <= min(width, 552)
        natural = image.evaluate("img => img.naturalHeight / img.naturalWidth")
        assert abs(box["height"] / box["width"] - natural) < 0.02, "proportions kept"
    scroll_width = page.evaluate("document.documentElement.scrollWidth")
    assert scroll_width <= width, f"the email overflows {width} px ({scroll_width} px)"
    data = page.screenshot(path=tmp_path / f"images-{width}.png", full_page=True)
    assert png_size(data)[0] == width
    context.close()
