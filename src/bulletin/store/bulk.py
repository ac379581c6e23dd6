"""Fast ``executemany`` for inserting many rows at once (imports; later the send ledger).

``conn.execute(table.insert(), list_of_dicts)`` converts every value of every row through
SQLAlchemy's parameter machinery: about 16 µs a row for the subscribers table, four times
what SQLite itself needs, and the largest cost of a million-row import. :class:`BulkInsert`
compiles the statement once for the connection's dialect, converts only the columns whose
type needs it (JSON, timestamps; text and integers pass through), and hands plain tuples to
the driver's ``executemany``. The SQL and the conversions still come from SQLAlchemy, so it
works on any dialect.

:class:`BulkUpdate` is the same for updates by primary key, each row with its own values.

On PostgreSQL the rows go through ``COPY ... FROM STDIN`` instead (psycopg's
``cursor.copy()``): even pipelined, an INSERT per row costs the client a parameter set and
the server a statement, and a 100,000-row import took 3.5 times SQLite's time that way. COPY
streams the rows in one statement. SQLite keeps ``executemany``, which is already its fastest
way in. Updates on PostgreSQL are one ``UPDATE ... FROM unnest(arrays)`` per call instead of
a statement per row (a re-import that changed 100,000 names took 2.3 times SQLite's time).
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.engine import Connection, Dialect

_UNSET = object()


# PostgreSQL types whose binary COPY form psycopg writes from the values the bind processors
# give (an int, a str, a bool, an aware datetime, JSON already encoded as a str). Binary
# saves the server parsing text and the client formatting it: a quarter of a COPY's time.
_BINARY_TYPES = {
    "INTEGER": "int4",
    "BIGINT": "int8",
    "SMALLINT": "int2",
    "TEXT": "text",
    "VARCHAR": "text",
    "BOOLEAN": "bool",
    "JSON": "json",
    "TIMESTAMP WITH TIME ZONE": "timestamptz",
    "FLOAT": "float8",
    "DOUBLE PRECISION": "float8",
}


def _binary_type(col_type: sa.types.TypeEngine[Any], dialect: Dialect) -> str | None:
    """The name psycopg's binary COPY knows the column's type by, or None (then COPY is text)."""
    name = col_type.dialect_impl(dialect).compile(dialect=dialect)
    return _BINARY_TYPES.get(name.split("(", 1)[0].strip())


class BulkInsert:
    """An INSERT into ``table``, run for many rows given as tuples in ``columns`` order.

    ``constants`` are columns with the same value in every row (a timestamp, a list id): they
    are converted once and appended to each row instead of being passed by the caller.
    """

    def __init__(
        self,
        conn: Connection,
        table: sa.Table,
        columns: Sequence[str],
        constants: Mapping[str, Any] | None = None,
    ) -> None:
        self.conn = conn
        self.columns = tuple(columns)
        constants = dict(constants or {})
        dialect = conn.dialect
        every = (*self.columns, *constants)
        compiled = (
            table.insert().values({c: sa.bindparam(c) for c in every}).compile(dialect=dialect)
        )
        self.sql = str(compiled)
        self.positional = bool(compiled.positional)
        # The SQL lists the columns in table order; rows arrive as columns + constants.
        if self.positional:
            sql_order = [compiled.binds[name].key for name in compiled.positiontup or ()]
        else:
            sql_order = list(every)
        self._names = sql_order
        self._pick = operator.itemgetter(*(every.index(k) for k in sql_order))
        self._copy_sql: str | None = None
        self._copy_types: list[str] | None = None
        if dialect.name == "postgresql":
            quote = dialect.identifier_preparer.quote
            types = [_binary_type(table.c[c].type, dialect) for c in every]
            binary = all(types)
            self._copy_sql = (
                f"COPY {dialect.identifier_preparer.format_table(table)} "
                f"({', '.join(quote(c) for c in every)}) FROM STDIN"
                + (" (FORMAT BINARY)" if binary else "")
            )
            if binary:
                self._copy_types = [t for t in types if t]

        def processor(column: str) -> Callable[[Any], Any] | None:
            col_type = table.c[column].type
            return col_type.dialect_impl(dialect).bind_processor(dialect)

        self._tail = tuple(
            proc(value) if (proc := processor(c)) is not None else value
            for c, value in constants.items()
        )
        self._converters = [
            (i, proc) for i, c in enumerate(self.columns) if (proc := processor(c)) is not None
        ]

    def run(self, rows: Sequence[tuple[Any, ...]]) -> None:
        """Insert ``rows`` (tuples of values in ``columns`` order)."""
        if not rows:
            return
        if self._copy_sql is not None:
            self._copy(rows)
            return
        pick = self._pick
        params: list[tuple[Any, ...]] = [pick(row) for row in self._converted(rows)]
        if len(self._names) == 1:
            params = [(p,) for p in params]  # itemgetter with one index returns a bare value
        if self.positional:
            self.conn.exec_driver_sql(self.sql, params)
        else:
            names = self._names
            self.conn.exec_driver_sql(self.sql, [dict(zip(names, p, strict=True)) for p in params])

    def _copy(self, rows: Sequence[tuple[Any, ...]]) -> None:
        # The driver's own connection, inside the transaction the caller's connection began.
        driver = self.conn.connection.driver_connection
        assert driver is not None and self._copy_sql is not None
        with driver.cursor() as cursor, cursor.copy(self._copy_sql) as copy:
            if self._copy_types is not None:
                copy.set_types(self._copy_types)
            write = copy.write_row
            for row in self._converted(rows):
                write(row)

    def _converted(self, rows: Sequence[tuple[Any, ...]]) -> Iterator[tuple[Any, ...]]:
        """Each row's values as the driver takes them, the constant columns appended."""
        tail, converters = self._tail, self._converters
        if not converters:
            for row in rows:
                yield row + tail
            return
        # Converting the same object as the previous row (True, a shared dict) reuses the
        # previous result.
        last_in: list[Any] = [_UNSET] * len(converters)
        last_out: list[Any] = [None] * len(converters)
        for row in rows:
            out = list(row)
            for n, (index, proc) in enumerate(converters):
                value = out[index]
                if value is last_in[n]:
                    out[index] = last_out[n]
                else:
                    out[index] = last_out[n] = proc(value)
                    last_in[n] = value
            yield (*out, *tail)


class BulkUpdate:
    """An UPDATE of ``table`` rows found by the column ``key``, each with its own values.

    Rows are tuples ``(key, *values)`` in ``columns`` order; ``constants`` are set on every
    row alike (an ``updated_at``).
    """

    def __init__(
        self,
        conn: Connection,
        table: sa.Table,
        key: str,
        columns: Sequence[str],
        constants: Mapping[str, Any] | None = None,
    ) -> None:
        self.conn = conn
        self.columns = tuple(columns)
        names = (key, *self.columns)
        self._arrays = conn.dialect.name == "postgresql"
        if self._arrays:
            # One array parameter per column, unnested side by side into rows; each array
            # has the column's own type, so JSON and timestamps convert as they always do.
            unnested = (
                sa.func.unnest(
                    *(sa.bindparam(f"b_{n}", type_=ARRAY(table.c[n].type)) for n in names)
                )
                .table_valued(*names)
                .render_derived(name="bulk_values")
            )
            where = table.c[key] == unnested.c[key]
            values: dict[str, Any] = {c: unnested.c[c] for c in self.columns}
        else:
            where = table.c[key] == sa.bindparam(f"b_{key}")
            values = {c: sa.bindparam(f"b_{c}", type_=table.c[c].type) for c in self.columns}
        self._statement = table.update().where(where).values({**values, **(constants or {})})
        self._names = names

    def run(self, rows: Sequence[tuple[Any, ...]]) -> None:
        """Update one row per tuple ``(key, *values)``."""
        if not rows:
            return
        if self._arrays:
            columns = zip(*rows, strict=True)
            params = {f"b_{n}": list(c) for n, c in zip(self._names, columns, strict=True)}
            self.conn.execute(self._statement, params)
        else:
            names = [f"b_{n}" for n in self._names]
            self.conn.execute(self._statement, [dict(zip(names, r, strict=True)) for r in rows])
