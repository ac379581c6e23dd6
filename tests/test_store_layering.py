"""The store is changed through its functions: no module outside ``store/`` uses its tables.

A query written outside the store is a rule written twice (what "unsubscribed" means, which
events count); the store's functions are the one home for both, and the only place that
has to follow a schema change.
"""

from __future__ import annotations

import ast
from pathlib import Path

import sqlalchemy as sa

import bulletin
from bulletin.store import schema

PACKAGE = Path(bulletin.__file__).parent
TABLES = {name for name, value in vars(schema).items() if isinstance(value, sa.Table)}


def imports_of_schema(source: Path) -> list[str]:
    """What ``source`` takes from bulletin.store.schema: names, or ``schema`` for the module."""
    found: list[str] = []
    for node in ast.walk(ast.parse(source.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module == "bulletin.store.schema":
            found += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module == "bulletin.store":
            found += ["schema" for alias in node.names if alias.name == "schema"]
        elif isinstance(node, ast.Import):
            found += ["schema" for a in node.names if a.name == "bulletin.store.schema"]
    return found


def test_no_module_outside_the_store_uses_its_tables() -> None:
    assert {"subscribers", "subscriptions", "lists", "events", "sends", "deliveries"} <= TABLES
    outside = [p for p in PACKAGE.rglob("*.py") if "store" not in p.relative_to(PACKAGE).parts]
    assert len(outside) > 40  # the walk sees the whole package
    offenders = {
        str(source.relative_to(PACKAGE)): sorted(used)
        for source in outside
        if (used := {n for n in imports_of_schema(source) if n in TABLES or n in ("schema", "*")})
    }
    assert offenders == {}, "use or add a function in bulletin.store instead"
