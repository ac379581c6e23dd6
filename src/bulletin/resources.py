"""Files that ship with bulletin: the default templates, the sample issue, sample subscribers.

They have one source, the repository's top-level ``templates/``, ``issues/<sample>/`` and
``subscribers/sample.csv``. A wheel carries them as ``bulletin/_bundled/...`` (hatch
``force-include`` in pyproject.toml). An editable install does not: hatchling copies
force-included files into site-packages once, at install time, where the source package never
sees them (and they would go stale). So when the package has no ``_bundled`` folder we look in
the source tree the package is imported from.
"""

from __future__ import annotations

from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path

import bulletin

SAMPLE_ISSUE = "2014-10-clusterpolisee-03"
"""Slug of the example issue a new workspace starts with."""

SAMPLE_SUBSCRIBERS = "subscribers/sample.csv"
"""A small subscriber list to try imports and sends against the local capture server."""

_BUNDLE = "_bundled"

_SKIP = frozenset({"__pycache__", ".DS_Store"})
"""Names never copied out of the bundle (build and editor droppings)."""


def _source_root() -> Path | None:
    """The repository root when bulletin is imported from a source checkout (``src/`` layout)."""
    package_dir = Path(bulletin.__file__).resolve().parent
    if package_dir.parent.name != "src":
        return None
    root = package_dir.parent.parent
    return root if (root / "pyproject.toml").is_file() else None


def bundled(name: str) -> Traversable:
    """A bundled file or folder, e.g. ``templates`` or ``issues/<slug>``.

    Looks in the installed package first, then in the source tree. Raises
    :class:`FileNotFoundError` (a packaging bug, not a user error) when neither has it.
    """
    parts = [p for p in name.split("/") if p]
    packaged: Traversable = resources.files(bulletin).joinpath(_BUNDLE, *parts)
    if packaged.is_dir() or packaged.is_file():
        return packaged
    root = _source_root()
    if root is not None:
        source = root.joinpath(*parts)
        if source.exists():
            return source
    raise FileNotFoundError(
        f"bulletin's bundled {name!r} is missing: not in {packaged} "
        f"nor in a source checkout ({root or 'none found'}); the installation is broken"
    )


def _keep(name: str) -> bool:
    return name not in _SKIP and not name.endswith((".pyc", "~"))


def _walk(t: Traversable, prefix: str) -> list[tuple[str, Traversable]]:
    out: list[tuple[str, Traversable]] = []
    for child in t.iterdir():
        if not _keep(child.name):
            continue
        rel = f"{prefix}{child.name}"
        if child.is_dir():
            out += _walk(child, rel + "/")
        else:
            out.append((rel, child))
    return out


def bundled_files(name: str) -> dict[str, Traversable]:
    """The files under a bundled folder, keyed by relative ``/``-separated path, sorted.

    For a bundled file the only key is its own name.
    """
    root = bundled(name)
    if root.is_file():
        return {root.name: root}
    return dict(sorted(_walk(root, "")))
