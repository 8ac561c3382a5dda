"""The missed call's statements, compiled once and run on the driver's own cursor.

A missed call runs about fifteen short statements in three transactions (its row, the
hand-over of its text, the text's outcome). Each costs SQLite a few microseconds;
through SQLAlchemy's execution context the same statement costs about 12 µs more of
Python, and together that was a third of the agent's CPU per call (bench/burst).

A `Prepared` is an ordinary Core statement, compiled by SQLAlchemy once per dialect
(SQLite, PostgreSQL). Each run converts the parameters with the columns' own type
processors (aware UTC datetimes, JSON, booleans), as SQLAlchemy would, hands them to a
cursor of the connection's transaction, and converts what comes back the same way.
What it gives up, on purpose: Python-side column defaults (a statement that would need
one is refused when compiled, naming the column, rather than writing NULL), list
parameters, and the engine's execute events. A driver error comes back as SQLAlchemy's
own exception (OperationalError for a locked database, and so on), so callers handle
it exactly as before; a dropped PostgreSQL connection is invalidated, so the pool
never hands it out again.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Column, Connection, Table
from sqlalchemy.engine.interfaces import Dialect
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session
from sqlalchemy.sql.base import Executable
from sqlalchemy.types import TypeEngine

Processor = Callable[[Any], Any]


@dataclass(frozen=True, slots=True)
class _Compiled:
    sql: str
    # the bound names, in the order the driver takes them, each with its column type's
    # converter where it has one
    order: tuple[tuple[str, Processor | None], ...]
    positional: bool
    fixed: dict[str, Any]  # values the statement itself binds (status == 'sending')
    results: tuple[Processor | None, ...]  # per result column


def _bind_processor(type_: TypeEngine[Any], dialect: Dialect) -> Processor | None:
    return type_.dialect_impl(dialect).bind_processor(dialect)


def _result_processor(type_: TypeEngine[Any], dialect: Dialect) -> Processor | None:
    return type_.dialect_impl(dialect).result_processor(dialect, None)


class Prepared:
    """A Core statement run without SQLAlchemy's per-execution bookkeeping.

    `statement`: the statement, or a function of the dialect's name that builds it
    (for dialect-specific constructs). `keys`: for an INSERT, the columns every run
    gives (the compiled column list).
    """

    __slots__ = ("_by_dialect", "keys", "statement")

    def __init__(self, statement: Executable | Callable[[str], Executable],
                 keys: Sequence[str] | None = None) -> None:
        self.statement = statement
        self.keys = list(keys) if keys is not None else None
        self._by_dialect: dict[str, _Compiled] = {}

    def _compile(self, dialect: Dialect) -> _Compiled:
        statement = (self.statement if isinstance(self.statement, Executable)
                     else self.statement(dialect.name))
        compiled = statement.compile(dialect=dialect, column_keys=self.keys)
        defaults = [*compiled.insert_prefetch, *compiled.update_prefetch]  # type: ignore[attr-defined]
        if defaults:
            raise ValueError(
                f"{type(statement).__name__} on "
                f"{', '.join(str(column) for column in defaults)}: those columns have "
                "Python-side defaults, which a prepared statement does not apply; "
                "give them in `keys` and in every run")
        if compiled.escaped_bind_names:  # names the driver could not take as they are
            raise ValueError(f"rename the bound parameters {sorted(compiled.escaped_bind_names)}")
        by_name = {name: bind for bind, name in compiled.bind_names.items()}
        positional = bool(compiled.positional)
        names = tuple(compiled.positiontup or ()) if positional else tuple(by_name)  # type: ignore[attr-defined]
        # what the statement binds itself (`status == 'sending'`), as opposed to what
        # each run gives (bindparam("message_id"))
        fixed = {name: bind.value for name, bind in by_name.items()
                 if not bind.required and bind.callable is None}
        order = tuple((name, _bind_processor(by_name[name].type, dialect)) for name in names)
        columns = getattr(statement, "selected_columns", None)
        if columns is None or not len(columns):
            columns = getattr(statement, "exported_columns", ())
        results = tuple(_result_processor(column.type, dialect) for column in columns)
        return _Compiled(str(compiled), order, positional, fixed, results)

    def _form(self, connection: Connection) -> _Compiled:
        dialect = connection.dialect
        form = self._by_dialect.get(dialect.name)
        if form is None:
            form = self._by_dialect[dialect.name] = self._compile(dialect)
        return form

    @staticmethod
    def _parameters(form: _Compiled, params: Mapping[str, Any]) -> Any:
        values = {**form.fixed, **params} if form.fixed else params
        if form.positional:
            return tuple(values[name] if convert is None else convert(values[name])
                         for name, convert in form.order)
        return {name: values[name] if convert is None else convert(values[name])
                for name, convert in form.order}

    def _run(self, connection: Connection, form: _Compiled, parameters: Any,
             many: bool = False) -> Any:
        dbapi_connection = connection.connection.dbapi_connection
        assert dbapi_connection is not None
        cursor = dbapi_connection.cursor()
        try:
            if many:
                cursor.executemany(form.sql, parameters)
            else:
                cursor.execute(form.sql, parameters)
        except connection.dialect.loaded_dbapi.Error as exc:
            cursor.close()
            lost = connection.dialect.is_disconnect(exc, dbapi_connection, cursor)
            if lost:
                connection.invalidate(exc)
            raise DBAPIError.instance(form.sql, parameters, exc,
                                      connection.dialect.loaded_dbapi.Error,
                                      connection_invalidated=lost,
                                      dialect=connection.dialect) from exc
        return cursor

    def _rows(self, form: _Compiled, cursor: Any) -> list[tuple[Any, ...]]:
        try:
            raw = cursor.fetchall() if cursor.description is not None else []
        finally:
            cursor.close()
        if not any(form.results):
            return [tuple(row) for row in raw]
        processors = form.results
        return [tuple(value if processor is None else processor(value)
                      for processor, value in zip(processors, row, strict=False))
                for row in raw]

    def rows(self, db: Connection | Session, params: Mapping[str, Any]) -> list[tuple[Any, ...]]:
        """Every row the statement returns, converted."""
        connection = _connection(db)
        form = self._form(connection)
        return self._rows(form, self._run(connection, form, self._parameters(form, params)))

    def first(self, db: Connection | Session, params: Mapping[str, Any]) -> tuple[Any, ...] | None:
        rows = self.rows(db, params)
        return rows[0] if rows else None

    def scalar(self, db: Connection | Session, params: Mapping[str, Any]) -> Any:
        row = self.first(db, params)
        return row[0] if row else None

    def count(self, db: Connection | Session, params: Mapping[str, Any]) -> int:
        """Run a statement without rows (UPDATE, DELETE); the rows it matched."""
        connection = _connection(db)
        form = self._form(connection)
        cursor = self._run(connection, form, self._parameters(form, params))
        try:
            return int(cursor.rowcount)
        finally:
            cursor.close()

    def many(self, db: Connection | Session, params: Sequence[Mapping[str, Any]]) -> None:
        """Run once per parameter set (several rows of one INSERT)."""
        connection = _connection(db)
        form = self._form(connection)
        self._run(connection, form, [self._parameters(form, p) for p in params],
                  many=True).close()


def inserting_new(table: Table, unique: Column[Any], keys: Sequence[str]) -> Prepared:
    """`INSERT … ON CONFLICT (unique) DO NOTHING RETURNING id`: the id of the new row,
    or no row when one with that unique value exists. SQLite and PostgreSQL both have
    it; no savepoint, and a duplicate does not abort the transaction."""

    def build(dialect: str) -> Executable:
        if dialect == "postgresql":
            from sqlalchemy.dialects.postgresql import insert
        else:
            from sqlalchemy.dialects.sqlite import insert
        return insert(table).on_conflict_do_nothing(index_elements=[unique]).returning(table.c.id)

    return Prepared(build, keys)


def _connection(db: Connection | Session) -> Connection:
    return db.connection() if isinstance(db, Session) else db
