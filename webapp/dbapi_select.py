"""A SELECT compiled by SQLAlchemy and run straight on the DB-API connection.

Nothing is prepared on the database server: the name says where the query runs.

Checking that an access token's session is still active is one indexed lookup. Through
SQLAlchemy Core (`Connection.execute`, then `Result`) it costs about 115 µs, against
about 20 µs straight on a pooled DB-API connection: the difference is the Python around
the query (a Connection object, an execution context, result metadata). On a page that
costs under a millisecond, that alone broke the budget of 10% for everything the auth
hook does (bench/results.md). The rotation's read of its session row goes the same way,
and so do the account page's reads (its session's times, the latest security events).

`DBAPISelect` keeps SQLAlchemy for what it is good at: the statement is written and
compiled by SQLAlchemy, once per dialect; values pass through each column type's own
bind and result processors (so `UTCDateTime` behaves exactly as in the ORM); the
connection comes from the engine's pool, with its connect-time settings, checkout ping
and return-time rollback (or is the one a Connection already holds, in its transaction).
What it leaves out is the per-call object machinery, and with it the engine's cursor
events and `echo` logging: these two queries do not show in SQL logs. Driver errors are
turned into SQLAlchemy's own exceptions, so the app's 503 handling sees the same
`OperationalError` either way, and a connection found dead is invalidated as
`Connection` would do.
"""

from __future__ import annotations

from collections import namedtuple
from functools import lru_cache
from typing import Any

from sqlalchemy import Connection, Engine, Select
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import DBAPIError


class DBAPISelect:
    """`statement`, compiled by SQLAlchemy on first use for each dialect and run on the
    DB-API connection itself, returning one row or a short list."""

    def __init__(self, statement: Select):
        self.statement = statement
        self.Row = namedtuple("Row", [column.key for column in statement.selected_columns])

    def one_or_none(self, source: Engine | Connection, params: dict[str, Any]):
        """The one row `statement` selects with `params` (a named tuple), or None.

        With an Engine, the query runs on a connection checked out of its pool for this
        call alone; with a Connection, on the DB-API connection it holds, inside its
        transaction. Raises SQLAlchemy's `DBAPIError` subclasses, as `Connection.execute`
        does; more than one row is a bug in the statement and raises `LookupError`.
        """
        rows = self._fetch(source, params, at_most=2)
        if len(rows) > 1:
            raise LookupError("DBAPISelect.one_or_none found more than one row")
        return rows[0] if rows else None

    def all(self, source: Engine | Connection, params: dict[str, Any]) -> list:
        """Every row `statement` selects with `params`, as named tuples: for a statement
        with a LIMIT, as a page's short list is. Runs and raises as `one_or_none`."""
        return self._fetch(source, params, at_most=None)

    def _fetch(self, source: Engine | Connection, params: dict[str, Any], *, at_most: int | None) -> list:
        dialect = source.dialect
        sql, bind_names, bind_processors, result_processors, fixed_values = self._compiled(dialect)
        values = {name: _apply(bind_processors[name], value) for name, value in params.items()}
        if fixed_values:
            values = {**fixed_values, **values}
        arguments = tuple(values[name] for name in bind_names) if bind_names is not None else values
        checked_out = isinstance(source, Engine)
        connection = cursor = None
        try:
            connection = source.raw_connection() if checked_out else source.connection
            cursor = connection.cursor()
            cursor.execute(sql, arguments)
            rows = cursor.fetchall() if at_most is None else cursor.fetchmany(at_most)
            cursor.close()
        except dialect.loaded_dbapi.Error as error:
            lost = connection is not None and dialect.is_disconnect(error, connection.dbapi_connection, cursor)
            _close_quietly(cursor)
            if lost:
                (connection if checked_out else source).invalidate(error)
            raise DBAPIError.instance(
                sql,
                arguments,
                error,
                dialect.loaded_dbapi.Error,
                hide_parameters=source.engine.hide_parameters,
                dialect=dialect,
                connection_invalidated=lost,
            ) from error
        except BaseException as error:
            _close_quietly(cursor)
            # Interrupted mid-query (a worker timeout, Ctrl-C): the connection's state
            # is unknown, so it is not reused, as Core does.
            if connection is not None and not isinstance(error, Exception):
                (connection if checked_out else source).invalidate(error)
            raise
        finally:
            if checked_out and connection is not None:
                connection.close()  # back to the pool, which rolls back
        make = self.Row._make
        if not result_processors:
            return [make(row) for row in rows]
        converted = []
        for row in rows:
            values = list(row)
            for index, process in result_processors:
                values[index] = process(values[index])
            converted.append(make(values))
        return converted

    # Bounded: a process has one engine, a test run a few dialects and many engines.
    @lru_cache(maxsize=8)  # noqa: B019 (instances are module-level constants)
    def _compiled(self, dialect: Dialect):
        compiled = self.statement.compile(dialect=dialect)
        bind_processors = {
            name: bind.type.dialect_impl(dialect).bind_processor(dialect) for name, bind in compiled.binds.items()
        }
        # Only the columns that need converting (timestamps, booleans), by position: a
        # page's list reads ten columns a row, most of them text and integers as they are.
        result_processors = [
            (index, processor)
            for index, column in enumerate(self.statement.selected_columns)
            if (processor := column.type.dialect_impl(dialect).result_processor(dialect, None)) is not None
        ]
        # Positional paramstyles (SQLite's qmark) take a tuple in `positiontup` order;
        # named ones (psycopg's pyformat) take the dict as it is.
        bind_names = tuple(compiled.positiontup) if compiled.positional else None
        # Values the statement carries itself, such as the OFFSET 0 that SQLite's
        # compiler adds beside a LIMIT.
        fixed_values = {
            name: _apply(bind_processors[name], bind.value)
            for name, bind in compiled.binds.items()
            if bind.value is not None and not bind.required
        }
        return compiled.string, bind_names, bind_processors, result_processors, fixed_values


def _apply(processor, value):
    return value if processor is None else processor(value)


def _close_quietly(cursor) -> None:
    # After a lost connection closing the cursor can fail too; the first error is the one to report.
    if cursor is not None:
        try:
            cursor.close()
        except Exception:
            pass
