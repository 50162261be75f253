"""Core statements built from the models' tables, so no column list of a model is written by hand.

A row of a model is one bind parameter per column, named `<prefix><column>` and typed as the column;
`insert_row` inserts such a row with INSERT ... SELECT, either on its own (SQLite's step-by-step write)
or once per row of a CTE (PostgreSQL's one-statement write), from the same parameters.

Set-based SQL kept as text (reconciliation, settlement) names its columns through `names`,
`qualified` and `insert_select_sql`, from the models' `Column` objects, never as typed-out lists.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any, NamedTuple, TypeVar

from sqlalchemy import Column, ColumnElement, FromClause, Table, bindparam, insert, select
from sqlalchemy.sql.schema import ScalarElementColumnDefault


def table_of(model: Any) -> Table:
    """A mapped model's table."""
    table = model.__table__
    assert isinstance(table, Table)
    return table


def columns(table: Table) -> list[Column[Any]]:
    """The columns a write supplies: every one but a database-assigned (autoincrement) key."""
    auto = table.autoincrement_column
    return [c for c in table.columns if c is not auto]


def row_params(table: Table, prefix: str, values: Mapping[str, Any]) -> dict[str, Any]:
    """Bind parameters for one row: `values` by column name, a column's scalar default where absent."""
    known = {c.name for c in columns(table)}
    unknown = set(values) - known
    if unknown:
        raise KeyError(f"{table.name} has no column(s) {sorted(unknown)}")
    out: dict[str, Any] = {}
    for c in columns(table):
        value = values.get(c.name)
        default = c.default
        if value is None and isinstance(default, ScalarElementColumnDefault):
            value = default.arg
        out[prefix + c.name] = value
    return out


def param(table: Table, prefix: str, name: str) -> ColumnElement[Any]:
    """The bind parameter that stands for one column of a row."""
    return bindparam(prefix + name, type_=table.c[name].type)


def insert_row(
    table: Table,
    prefix: str,
    *,
    computed: Mapping[str, ColumnElement[Any]] | None = None,
    source: FromClause | None = None,
    insert_of: Callable[[Table], Any] = insert,
) -> Any:
    """INSERT one row of bind parameters (some columns `computed` in SQL instead), once per row of
    `source` when given (nothing when it is empty)."""
    computed = computed or {}
    cols = columns(table)
    chosen = select(*[computed.get(c.name, param(table, prefix, c.name)) for c in cols])
    if source is not None:
        chosen = chosen.select_from(source)
    return insert_of(table).from_select([c.name for c in cols], chosen)


def names(cols: Iterable[Column[Any]]) -> str:
    """Columns as a SQL list, `a, b, c` (for SQL text)."""
    return ", ".join(c.name for c in cols)


def qualified(alias: str, cols: Iterable[Column[Any]]) -> str:
    """Columns of the table aliased `alias` as a SQL list, `r.a, r.b, r.c` (for SQL text)."""
    return ", ".join(f"{alias}.{c.name}" for c in cols)


def insert_select_sql(
    table: Table, values: Mapping[Column[Any], str], *, with_: str = "", distinct: bool = False
) -> str:
    """`INSERT INTO <table> (<columns>) [<with_>] SELECT [DISTINCT] <values>` for SQL text, each column named once,
    next to the SQL expression that fills it, so the two lists cannot drift apart.

    `values` must give every column `columns(table)` lists (a column added to the model makes this
    raise at import, naming it, until each such statement says what it writes there); the caller
    appends FROM, WHERE and the rest."""
    foreign = [c for c in values if c.table is not table]
    if foreign:
        raise ValueError(f"{table.name}: {', '.join(str(c) for c in foreign)} are not its columns")
    given = {c.name for c in values}
    missing = [c.name for c in columns(table) if c.name not in given]
    if missing:
        raise ValueError(f"INSERT INTO {table.name} ... SELECT gives no value for {', '.join(missing)}")
    select_list = ",\n       ".join(values.values())
    select = "SELECT DISTINCT" if distinct else "SELECT"
    return f"INSERT INTO {table.name} ({names(values)})\n{with_}{select} {select_list}\n"


S = TypeVar("S")


def built_once(statement: S) -> S:
    """A statement built once at import, its cache key computed once too.

    SQLAlchemy finds a statement's compiled form by its cache key, which it otherwise recomputes on
    every execution by walking the whole statement: ~0.3-2.6 ms of CPU for the CTE statements here,
    more than the database's own work. The key of a statement that never changes never changes either.
    Never derive another statement from the result (a generative copy would inherit this key)."""
    key = statement._generate_cache_key()  # type: ignore[attr-defined]
    statement._generate_cache_key = lambda: key  # type: ignore[attr-defined]
    return statement


class OnDriver:
    """A Core statement run on the driver's own cursor (psycopg), compiled once per dialect.

    SQLAlchemy's execution of an already compiled statement (cache lookup, parameter construction,
    execution context, result wrapping) costs about as much CPU as psycopg's own work for the hot
    path's short statements: ~30 % of a claim's CPU in process. This keeps the statement SQLAlchemy
    built from the models and skips the rest: compiled once per dialect, its parameters and results
    passed through the columns' own bind and result processors, run in the Connection's transaction
    on its driver connection (psycopg prepares it server-side after five executions, its default).
    The engine's before/after_cursor_execute listeners run as for any statement. A driver error goes
    through SQLAlchemy's own handling (wrapped as IntegrityError,
    OperationalError..., a lost connection invalidated), as if SQLAlchemy had run the statement.
    Rows come back as tuples in the statement's column order. Only for statements with plain named
    parameters (no expanding IN)."""

    def __init__(self, statement: Any) -> None:
        self.statement = statement
        self._compiled: dict[int, _Compiled] = {}

    def _for(self, dialect: Any) -> _Compiled:
        found = self._compiled.get(id(dialect))
        if found is None:
            compiled = self.statement.compile(dialect=dialect)
            if compiled.escaped_bind_names or compiled.positional:
                raise ValueError("OnDriver takes statements with plain named parameters only")
            processors = dict(compiled._bind_processors)
            # The statement's own literals (claimed=1, 'available', LIMIT 1) are bind parameters too.
            fixed = {
                name: processors[name](bp.effective_value) if name in processors else bp.effective_value
                for bp, name in compiled.bind_names.items()
                if not bp.required
            }
            selected: Iterable[Any] = (
                getattr(self.statement, "selected_columns", None)
                or getattr(self.statement, "_returning", None)
                or ()
            )
            results = [c.type._cached_result_processor(dialect, None) for c in selected]
            found = _Compiled(compiled.string, processors, fixed, results if any(results) else None)
            self._compiled[id(dialect)] = found
        return found

    def rows(self, conn: Any, params: Mapping[str, Any]) -> list[tuple[Any, ...]]:
        """Execute in the SQLAlchemy Connection's transaction; every row the statement returns."""
        c = self._for(conn.dialect)
        values = dict(c.fixed)
        for k, v in params.items():
            values[k] = c.processors[k](v) if k in c.processors else v
        driver = conn.connection.driver_connection
        cur = driver.cursor()
        events = conn._has_events or conn.engine._has_events  # listeners see it as any statement
        try:
            if events:
                conn.dispatch.before_cursor_execute(conn, cur, c.sql, values, None, False)
            cur.execute(c.sql, values)
            found = cur.fetchall() if cur.description else []
            if events:
                conn.dispatch.after_cursor_execute(conn, cur, c.sql, values, None, False)
        except Exception as exc:  # noqa: BLE001 - SQLAlchemy decides what it is and raises it
            conn._handle_dbapi_exception(exc, c.sql, values, cur, None)
            raise  # not reached: the handler raises
        finally:
            cur.close()
        if c.results is None:
            return found
        procs = c.results
        return [tuple(p(v) if p else v for p, v in zip(procs, row, strict=True)) for row in found]

    def one(self, conn: Any, params: Mapping[str, Any]) -> tuple[Any, ...]:
        """Execute; the one row the statement returns."""
        found = self.rows(conn, params)
        if len(found) != 1:
            raise RuntimeError(f"expected one row, got {len(found)}")
        return found[0]

    def first(self, conn: Any, params: Mapping[str, Any]) -> tuple[Any, ...] | None:
        """Execute; the first row, or None."""
        found = self.rows(conn, params)
        return found[0] if found else None


class _Compiled(NamedTuple):
    sql: str
    processors: dict[str, Any]
    fixed: dict[str, Any]
    results: list[Any] | None
