"""Fast ``executemany`` for inserting many rows at once (imports; later the send ledger).

``conn.execute(table.insert(), list_of_dicts)`` converts every value of every row through
SQLAlchemy's parameter machinery: about 16 µs a row for the subscribers table, four times
what SQLite itself needs, and the largest cost of a million-row import. :class:`BulkInsert`
compiles the statement once for the connection's dialect, converts only the columns whose
type needs it (JSON, timestamps; text and integers pass through), and hands plain tuples to
the driver's ``executemany``. The SQL and the conversions still come from SQLAlchemy, so it
works on any dialect.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

_UNSET = object()


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
        pick, tail, converters = self._pick, self._tail, self._converters
        params: list[tuple[Any, ...]]
        if not converters:
            params = [pick(row + tail) for row in rows]
        else:
            params = []
            append = params.append
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
                append(pick((*out, *tail)))
        if len(self._names) == 1:
            params = [(p,) for p in params]  # itemgetter with one index returns a bare value
        if self.positional:
            self.conn.exec_driver_sql(self.sql, params)
        else:
            names = self._names
            self.conn.exec_driver_sql(self.sql, [dict(zip(names, p, strict=True)) for p in params])
