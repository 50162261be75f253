"""No column list of a model is typed out by hand in the service (issue 13): SQL text and Python name
it through the model's `Column` objects (adapters.db.rows: `names`, `qualified`, `insert_select_sql`,
or SQLAlchemy Core), so a column added to or renamed in a model cannot leave a stale copy behind.

The scan reads every module of `voucher_service/` but the models themselves, the migrations (the
schema's history, by hand by nature) and `domain/` (which by the layering contract never sees the
models: its field names are those of the registry file and the statement CSV). It flags
- SQL text (any string but documentation) naming three or more columns of one table in a row, as
  `a, b, c` or `r.a, r.b, r.c`;
- a tuple, list or set (or the arguments of a call) made only of three or more column names of one
  table; a sequence with other names in it is a file's or a payload's format, not a column list.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator, Sequence
from pathlib import Path

from voucher_service.adapters.db.models import Base

PACKAGE = Path(__file__).resolve().parents[2] / "voucher_service"
SKIPPED = ("adapters/db/models.py", "migrations/", "domain/")
TABLES = {t.name: frozenset(c.name for c in t.columns) for t in Base.metadata.tables.values()}
_NAME = r"(?:[A-Za-z_]\w*\.)?[A-Za-z_]\w*"
# names separated by commas; the last not a function call (`COALESCE(`) nor a prefix of a longer name
_RUN = re.compile(rf"(?<![\w.]){_NAME}(?:\s*,\s*{_NAME})+(?![\w(.])")
IN_A_ROW = 3


def _tables_named(names: Sequence[str], whole: bool) -> list[str]:
    """The tables of which `names` holds the most columns in a row, if IN_A_ROW or more (`whole`: all
    of `names` must be columns of the table)."""
    longest: dict[str, int] = {}
    for table, cols in TABLES.items():
        if whole:
            longest[table] = len(names) if all(n in cols for n in names) else 0
            continue
        streak = best = 0
        for name in names:
            streak = streak + 1 if name in cols else 0
            best = max(best, streak)
        longest[table] = best
    most = max(longest.values(), default=0)
    return sorted(t for t, n in longest.items() if n == most) if most >= IN_A_ROW else []


def column_lists_in_text(sql: str) -> list[tuple[str, str]]:
    """(table, the run of names) for each run of a table's column names in a string."""
    hits = []
    for match in _RUN.finditer(sql):
        names = [part.strip().rsplit(".", 1)[-1] for part in match.group(0).split(",")]
        hits.extend((table, match.group(0)) for table in _tables_named(names, whole=False))
    return hits


def column_lists_in_source(source: str) -> Iterator[tuple[int, str, str]]:
    """(line, table, what) for each hand-written column list in a module's source."""
    tree = ast.parse(source)
    docs = {
        id(node.value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)
    }
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docs:
            for table, run in column_lists_in_text(node.value):
                yield node.lineno, table, " ".join(run.split())
            continue
        if isinstance(node, ast.Tuple | ast.List | ast.Set):
            elements = node.elts
        elif isinstance(node, ast.Call):
            elements = node.args
        else:
            continue
        if all(isinstance(e, ast.Constant) and isinstance(e.value, str) for e in elements):
            names = [e.value for e in elements]  # type: ignore[attr-defined]
            for table in _tables_named(names, whole=True):
                yield node.lineno, table, repr(tuple(names))


def hand_written_column_lists(package: Path) -> list[str]:
    """Every hand-written column list of a model in the modules under `package`."""
    found = []
    for path in sorted(package.rglob("*.py")):
        relative = path.relative_to(package).as_posix()
        if relative.startswith(SKIPPED):
            continue
        for line, table, what in column_lists_in_source(path.read_text(encoding="utf-8")):
            found.append(f"voucher_service/{relative}:{line}: columns of {table}: {what}")
    return found


def test_no_hand_written_column_list_of_a_model_in_the_service() -> None:
    found = hand_written_column_lists(PACKAGE)
    assert not found, "name these columns through the model (adapters.db.rows):\n" + "\n".join(found)


def test_the_scan_finds_sql_column_lists_as_they_were_written() -> None:
    # the old staging list, the old INSERT ... SELECT of reconciliation items, the old ledger CTE
    staging = "run_id, line_no, order_id, voucher_id, redeemed_at, discount_fen, status, paid_fen"
    assert ("statement_staging", staging) in column_lists_in_text(staging)
    insert = """
    INSERT INTO reconciliation_items (run_id, category, line_no, voucher_id, order_id, redemption_id,
                                      ledger_discount_fen, statement_discount_fen, detail)
    SELECT CAST(:run AS VARCHAR(36)), 'missing_in_statement', NULL, r.voucher_id"""
    assert "reconciliation_items" in {table for table, _ in column_lists_in_text(insert)}
    ledger = "SELECT r.id, r.voucher_id, r.order_id, r.discount_fen, r.order_total_fen, r.status FROM x"
    assert "redemptions" in {table for table, _ in column_lists_in_text(ledger)}


def test_the_scan_finds_column_lists_in_python_and_f_strings() -> None:
    source = '''
def f(cols):
    return {k: cols[k] for k in ("certification_no", "version", "registry_seq", "updated_at")}

PAY = f"""INSERT INTO settled_redemptions (redemption_id, settlement_id, discount_fen)
SELECT m.redemption_id, :sid, m.discount_fen FROM m WHERE s = '{STATUS}'"""
'''
    tables = {table for _, table, _ in column_lists_in_source(source)}
    assert {"certified_products", "settled_redemptions"} <= tables


def test_the_scan_ignores_documentation_formats_and_short_or_mixed_lists() -> None:
    source = '''
"""Rows with certification_no, certification_type, county_code, valid_from, valid_to, status."""
HEADER = ("category", "voucher_id", "order_id", "ledger_discount_fen", "statement")  # a CSV's header
ORDER = "ORDER BY created_at, id"
CALL = "SELECT COALESCE(k.voucher_id, k.l_voucher), k.order_id, k.rid"
COUNTS = "SELECT category, COUNT(*), SUM(ledger_discount_fen) FROM reconciliation_items"
SHOP = {k: m[k] for k in ("id", "name", "channels", "platform", "api_secret")}  # an API payload
'''
    assert list(column_lists_in_source(source)) == []


def test_the_discrepancies_csv_header_names_the_columns_its_query_selects() -> None:
    from voucher_service.services.reconciliation_files import DISCREPANCY_COLUMNS
    from voucher_service.services.reconciliation_sql import DISCREPANCY_FIELDS

    assert [c.name for c in DISCREPANCY_FIELDS] == list(DISCREPANCY_COLUMNS[:-1])  # then the file
