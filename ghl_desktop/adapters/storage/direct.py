"""The message path's hot statements run straight on SQLite's cursor, compiled by SQLAlchemy once.

Why: on the bridge's storage thread SQLAlchemy's per-call execution machinery (execution context,
parameter processing, result wrapping, event dispatch) cost about three times the SQLite work of the
statements themselves (docs/event-loop.md, "Where the storage thread's time went"); the storage thread
shares the GIL with the event loop, so that overhead slowed the whole bridge.

What stays SQLAlchemy's: the statement (the same Core construct every backend runs), its compiled SQL,
and its types' bind and result processors (``TypeEngine.bind_processor`` / ``result_processor``, public
API), so a value is written and read back exactly as ``Connection.execute`` would. What this module
adds is only the call: the compiled SQL and a plan for its parameters are kept per statement, and each
call binds the values and runs one ``cursor.execute`` in the caller's transaction (the connection's
``begin`` / ``commit`` events and SQLite's BEGIN IMMEDIATE are untouched). ``before_cursor_execute``
listeners still see every statement (the tests' storage-on-loop check, bench/bridge_anatomy.py), and a
database error leaves as SQLAlchemy's own ``DBAPIError`` subclass, so ``tx.Transactions`` maps it as
before.

Only SQLite (the desktop's database): any other dialect, and any statement this plan cannot express
(Python-side column defaults, literal-execute parameters, an empty IN list), goes through
``Connection.execute`` unchanged. Both paths return rows with the same attribute names.
"""

from __future__ import annotations

import threading
from collections import namedtuple
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

from sqlalchemy import Connection
from sqlalchemy.exc import DBAPIError, StatementError
from sqlalchemy.sql.dml import Insert

_PLANS: dict[tuple[int, str, tuple[str, ...]], _Plan | None] = {}
_LOCK = threading.Lock()
#: plans kept at most: the hot statements are a few dozen module constants; a statement built anew on
#: each call (a caller's mistake) would otherwise add a plan, and keep its statement alive, every call
MAX_PLANS = 512


class Rows:
    """The rows a statement returned (or the count it changed): the part of SQLAlchemy's ``Result``
    the repositories use."""

    __slots__ = ("_rows", "rowcount")

    def __init__(self, rows: list[Any], rowcount: int) -> None:
        self._rows = rows
        self.rowcount = rowcount

    def first(self) -> Any:
        return self._rows[0] if self._rows else None

    def all(self) -> list[Any]:
        return list(self._rows)

    def scalar(self) -> Any:
        return self._rows[0][0] if self._rows else None

    def scalar_one(self) -> Any:
        if len(self._rows) != 1:
            raise ValueError(f"expected one row, got {len(self._rows)}")
        return self._rows[0][0]

    def scalars(self) -> list[Any]:
        return [row[0] for row in self._rows]

    def __iter__(self) -> Iterator[Any]:
        return iter(self._rows)


def execute(conn: Connection, statement: Any, params: Mapping[str, Any] | None = None) -> Any:
    """Run ``statement`` (a Core construct built ONCE, e.g. a module constant: plans are kept per
    statement object) with ``params`` in ``conn``'s transaction. SQLite: on the cursor (module doc);
    else ``conn.execute``. Returns :class:`Rows` or SQLAlchemy's ``Result`` (same methods)."""
    params = params or {}
    dialect = conn.dialect
    if dialect.name != "sqlite":
        return conn.execute(statement, params)
    keys = tuple(params)
    key = (id(statement), dialect.name, keys)
    plan = _PLANS.get(key, _MISSING)
    if plan is _MISSING:
        with _LOCK:
            plan = _PLANS.get(key, _MISSING)
            if plan is _MISSING:
                if len(_PLANS) >= MAX_PLANS:
                    return conn.execute(statement, params)
                plan = _Plan.build(statement, conn, keys)
                _PLANS[key] = plan
    if plan is None:
        return conn.execute(statement, params)
    assert isinstance(plan, _Plan)
    return plan.run(conn, params)


_MISSING: Any = object()


class _Plan:
    """One statement's compiled SQL and what each positional parameter is: a value of ``params``
    (processed by its type), a constant of the statement (processed once), or a list to expand."""

    __slots__ = ("_expanded", "_keep", "_processors", "_row", "_specs", "_sql", "_tokens")

    def __init__(self, statement: Any, sql: str, specs: list[tuple[str | None, Any, Callable[[Any], Any] | None, bool]],
                 row: type | None, processors: list[Callable[[Any], Any] | None]) -> None:
        self._keep = statement  # the plan is keyed by id(statement): keep it alive
        self._sql = sql
        self._specs = specs
        self._row = row
        self._processors = processors
        self._tokens = [name for name, _c, _p, expanding in specs if expanding and name]
        self._expanded: dict[tuple[int, ...], str] = {}

    @classmethod
    def build(cls, statement: Any, conn: Connection, keys: tuple[str, ...]) -> _Plan | None:
        dialect = conn.dialect
        if dialect.paramstyle != "qmark":
            return None
        # an INSERT's columns are the keys given (as Connection.execute compiles it)
        compiled: Any = statement.compile(dialect=dialect,
                                          column_keys=list(keys) if isinstance(statement, Insert) else None)
        if (getattr(compiled, "insert_prefetch", None) or getattr(compiled, "update_prefetch", None)
                or getattr(compiled, "literal_execute_params", None) or compiled.positiontup is None):
            return None
        given = set(keys)
        specs: list[tuple[str | None, Any, Callable[[Any], Any] | None, bool]] = []
        for name in compiled.positiontup:
            bind = compiled.binds[name]
            processor = bind.type.dialect_impl(dialect).bind_processor(dialect)
            if bind.key in given:
                specs.append((bind.key, None, processor, bool(bind.expanding)))
            elif bind.required or bind.expanding or bind.callable is not None:
                return None  # a value missing: Connection.execute raises SQLAlchemy's own error
            else:  # a constant of the statement (e.g. ``state = 'running'``), processed once
                value = bind.effective_value
                specs.append((None, processor(value) if processor else value, None, False))
        # a SELECT's columns, or an INSERT / UPDATE's RETURNING ones (none: no rows)
        columns = list(getattr(statement, "exported_columns", ()) or ())
        processors = [col.type.dialect_impl(dialect).result_processor(dialect, None) for col in columns]
        row = namedtuple("Row", [getattr(col, "key", None) or f"c{i}" for i, col in enumerate(columns)],
                         rename=True) if columns else None
        return cls(statement, compiled.string, specs, row, processors)

    def run(self, conn: Connection, params: Mapping[str, Any]) -> Rows | Any:
        values: list[Any] = []
        lengths: list[int] = []
        try:
            for name, constant, processor, expanding in self._specs:
                if name is None:
                    values.append(constant)
                    continue
                value = params[name]
                if expanding:
                    items: Sequence[Any] = list(value)
                    if not items:  # SQLAlchemy renders an empty IN its own way
                        return conn.execute(self._keep, params)
                    lengths.append(len(items))
                    values.extend([processor(v) for v in items] if processor else items)
                else:
                    values.append(processor(value) if processor else value)
        except Exception as exc:  # a value its type refuses: as SQLAlchemy reports it
            raise StatementError(str(exc), self._sql, params, exc) from exc
        sql = self._sql if not lengths else self._sql_for(tuple(lengths))
        if not conn.in_transaction():
            conn.begin()  # as Connection.execute autobegins: a read block is one snapshot (tx.reading)
        dbapi_connection: Any = conn.connection.driver_connection
        cursor = dbapi_connection.cursor()
        try:
            listeners = conn.dispatch.before_cursor_execute
            if listeners:
                listeners(conn, cursor, sql, values, None, False)
            try:
                cursor.execute(sql, values)
                raw = cursor.fetchall() if cursor.description is not None else []
            except conn.dialect.loaded_dbapi.Error as exc:
                raise DBAPIError.instance(sql, values, exc, conn.dialect.loaded_dbapi.Error,
                                          dialect=conn.dialect) from exc
            rowcount = cursor.rowcount
        finally:
            cursor.close()
        if not raw or self._row is None:
            return Rows([], rowcount)
        processors, row = self._processors, self._row
        if len(raw[0]) != len(processors):
            raise RuntimeError(f"statement returned {len(raw[0])} columns, planned {len(processors)}: {sql}")
        return Rows([row(*[p(v) if p else v for p, v in zip(processors, r, strict=True)]) for r in raw], rowcount)

    def _sql_for(self, lengths: tuple[int, ...]) -> str:
        sql = self._expanded.get(lengths)
        if sql is None:
            sql = self._sql
            for name, n in zip(self._tokens, lengths, strict=True):
                sql = sql.replace(f"__[POSTCOMPILE_{name}]", ", ".join("?" * n), 1)
            if len(self._expanded) < 256:
                self._expanded[lengths] = sql
        return sql
