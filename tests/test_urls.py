"""The public URL scheme has one home, and the web app's routes come from it."""

from __future__ import annotations

from pathlib import Path

import pytest

from bulletin import urls
from bulletin import workspace as ws
from bulletin.web.public import create_public_app


def test_builders_make_absolute_urls_under_base_url_with_a_prefix() -> None:
    base = "https://news.example.org/ro/"
    assert urls.unsubscribe_url(base, "AbC_-9") == "https://news.example.org/ro/u/AbC_-9"
    assert urls.view_online_url(base, "nr-3") == "https://news.example.org/ro/archive/nr-3"
    assert urls.archive_unsubscribe_url(base) == (
        "https://news.example.org/ro/archive/#unsubscribe"
    )
    assert urls.preview_unsubscribe_url(base).endswith("/u/preview")


def test_parameters_are_one_encoded_path_segment() -> None:
    assert urls.ARCHIVE_ISSUE.path(slug="a/../b c") == "/archive/a%2F..%2Fb%20c"
    with pytest.raises(KeyError):
        urls.UNSUBSCRIBE.path()


def test_url_builders_give_what_url_gives() -> None:
    for base in ("https://news.example.org/ro/", "http://127.0.0.1:8080"):
        for page in (urls.UNSUBSCRIBE, urls.PREFERENCES, urls.ARCHIVE_ISSUE, urls.CONFIRM):
            build = page.url_builder(base)
            (name,) = page.params
            for value in ("AbC_-9", "a/../b c", "ș?x=1#y", ""):
                assert build(value) == page.url(base, **{name: value})
    with pytest.raises(ValueError):
        urls.ARCHIVE.url_builder("https://news.example.org")  # no parameter to fill


def test_every_public_page_has_a_route(
    workspace_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BULLETIN_SECRET_KEY", "k" * 32)
    app = create_public_app(ws.load(workspace_dir))
    try:
        declared = {getattr(r, "path", None) for r in app.routes}
        for page in urls.PAGES:
            pattern = page.pattern if page.params != ("name",) else page.path(name="public.css")
            assert pattern in declared, page
    finally:
        app.state.public.engine.dispose()
