"""Reconciliation of a merchant's statement against the ledger, in the database (CONTRACT §6).

The statement is streamed into `statement_staging` (PostgreSQL: COPY on the raw psycopg connection;
SQLite: executemany in chunks), classified by set-based SQL (services.reconciliation_sql), written to
the output directory, and its staging rows deleted, all in one transaction that sees one snapshot of
the ledger. Every run, usable or not, is recorded in `reconciliation_runs`.
"""

from __future__ import annotations

import codecs
import datetime as dt
import hashlib
import io
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Protocol, TypeVar

from sqlalchemy import select, text
from sqlalchemy.orm import Session

from voucher_service.adapters.db.models import Merchant, Program, ReconciliationRun, StatementRow
from voucher_service.adapters.db.rows import columns, names, table_of
from voucher_service.domain.clock import day_bounds, rfc3339
from voucher_service.domain.statements import FORMATS, Seen, StatementError, StatementLine, parse_statement
from voucher_service.services import audit_log
from voucher_service.services import reconciliation_sql as q
from voucher_service.services import statement_sources as sources
from voucher_service.services.context import ServiceContext
from voucher_service.services.reconciliation_files import write_outputs

EXIT_MATCHED, EXIT_DISCREPANCIES, EXIT_UNUSABLE = 0, 1, 2
EARLIEST = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
LATEST = dt.datetime(9999, 12, 31, tzinfo=dt.UTC)


def _staging_columns() -> str:
    """The staging table's columns, in the model's order, which must be that of the rows written:
    the run's id, then a StatementLine's fields."""
    table = table_of(StatementRow)
    cols = columns(table)
    if [c.name for c in cols] != ["run_id", *StatementLine._fields]:
        raise RuntimeError(
            f"{table.name}'s columns {[c.name for c in cols]} are not run_id and StatementLine's fields "
            f"{list(StatementLine._fields)}, in that order"
        )
    return names(cols)


STAGING_COLUMNS = _staging_columns()
COPY_SQL = f"COPY statement_staging ({STAGING_COLUMNS}) FROM STDIN"
INSERT_SQL = (
    f"INSERT INTO statement_staging ({STAGING_COLUMNS}) "
    f"VALUES ({', '.join('?' * (len(StatementLine._fields) + 1))})"
)
SQLITE_CHUNK = 5_000
SNIFF_BYTES = 1 << 16
T = TypeVar("T")


class Progress(Protocol):
    """How a long run reports progress (the CLI shows a bar on a terminal)."""

    def rows(self, rows: Iterable[T]) -> Iterable[T]:
        """Wrap the statement's rows as they are loaded."""

    def stage(self, name: str) -> None:
        """Say which step the run is at."""


class QuietProgress:
    """No progress output."""

    def rows(self, rows: Iterable[T]) -> Iterable[T]:
        return rows

    def stage(self, name: str) -> None:
        return None


class StatementUnusable(Exception):
    """The input cannot be reconciled; the message says where (exit code 2)."""


@dataclass(frozen=True)
class ReconcileRequest:
    """The arguments of `voucher-admin reconcile`."""

    program_id: str
    merchant_id: str
    statement: Path
    out_dir: Path
    fmt: str = "native"
    date_from: dt.date | None = None
    date_to: dt.date | None = None
    actor: str = "cli"
    more_statements: tuple[Path, ...] = ()  # further --statement files, directories or zips

    @property
    def paths(self) -> tuple[Path, ...]:
        """Every --statement, in the order given."""
        return (self.statement, *self.more_statements)

    def parameters(self) -> dict[str, Any]:
        """The run's parameters as recorded (no paths: they do not change what is reconciled)."""
        params: dict[str, Any] = {
            "program": self.program_id,
            "merchant": self.merchant_id,
            "format": self.fmt,
            "from": self.date_from.isoformat() if self.date_from else None,
            "to": self.date_to.isoformat() if self.date_to else None,
            "statement": self.statement.name,
        }
        if self.more_statements:
            params["statements"] = [p.name for p in self.paths]
        return params


@dataclass(frozen=True)
class ReconcileResult:
    """A finished run: its id, exit code, summary (as in summary.json) or the error."""

    run_id: str
    exit_code: int
    summary: dict[str, Any] = field(default_factory=dict)
    error: str | None = None


class _HashingReader(io.RawIOBase):
    """A raw reader that hashes every byte it hands out, so the file is read once."""

    def __init__(self, raw: IO[bytes]) -> None:
        self._raw = raw
        self.sha = hashlib.sha256()

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        data = self._raw.read(len(view))
        view[: len(data)] = data
        self.sha.update(data)
        return len(data)

    def drain(self) -> str:
        """Hash whatever the parser left unread and return the file's SHA-256."""
        while chunk := self._raw.read(1 << 20):
            self.sha.update(chunk)
        return self.sha.hexdigest()

    def close(self) -> None:
        self._raw.close()
        super().close()


def _encoding(path: Path, fmt: str) -> str:
    # The contract's text is UTF-8; providers' bills are often GBK (Alipay always) or saved so by spreadsheets.
    if fmt == "native":
        return "utf-8-sig"
    with path.open("rb") as fh:
        head = fh.read(SNIFF_BYTES)
    try:
        codecs.getincrementaldecoder("utf-8")().decode(head, final=False)
        return "utf-8-sig"
    except UnicodeDecodeError:
        return "gb18030"


def open_statement(path: Path, fmt: str) -> tuple[IO[str], _HashingReader]:
    """Open a statement for streaming: the text to parse, and the reader that hashes it."""
    try:
        hashing = _HashingReader(path.open("rb"))
    except OSError as exc:
        raise StatementUnusable(f"{path}: cannot read the statement: {exc.strerror or exc}") from None
    stream = io.TextIOWrapper(io.BufferedReader(hashing, 1 << 20), encoding=_encoding(path, fmt), newline="")
    return stream, hashing


class _Feed:
    """The run's statement rows from every source, with line numbers made unique across files.

    One plain native file (the common case, and the benchmark's) is streamed and hashed in one read, its
    rows untouched. Providers' bills, and several sources (files, a directory, a zip, a gzip) are read one after the other; the
    rows of source k are numbered after the last line of source k-1 (`files` keeps each source's
    offset, so reports give the file and its own line), and for the providers' bills a payment or
    refund already read in an earlier file is skipped (`seen`).
    """

    def __init__(self, req: ReconcileRequest) -> None:
        self.fmt = req.fmt
        self.seen: Seen | None = None if req.fmt == "native" else Seen()
        self.files: list[dict[str, Any]] = []
        self.label = str(req.statement)
        self._hashing: _HashingReader | None = None
        self._stream: IO[str] | None = None
        self._sha = ""
        paths = req.paths
        try:
            plain = (
                req.fmt == "native" and len(paths) == 1 and paths[0].is_file() and not _compressed(paths[0])
            )
        except OSError as exc:
            raise StatementUnusable(f"{paths[0]}: cannot read the statement: {exc.strerror or exc}") from None
        if plain:
            self._stream, self._hashing = open_statement(paths[0], req.fmt)
            self._sources: list[sources.Source] = []
            return
        try:
            self._sources = sources.collect(paths, req.fmt)
            self._sha = sources.file_sha256(paths)
        except sources.SourceUnusable as exc:
            raise StatementUnusable(str(exc)) from None
        except OSError as exc:
            raise StatementUnusable(
                f"{exc.filename}: cannot read the statement: {exc.strerror or exc}"
            ) from None

    def rows(self, tz: str) -> Iterator[StatementLine]:
        if self._stream is not None:
            self.files.append({"name": Path(self.label).name, "line_offset": 0})
            yield from parse_statement(self.fmt, self._stream, tz, self.seen)
            return
        offset = 0
        for source in self._sources:
            self.label = source.label
            self.files.append({"name": source.name, "line_offset": offset})
            last = 0
            encoding = sources.encoding_of(source, self.fmt)
            for line in parse_statement(self.fmt, sources.text_lines(source, encoding), tz, self.seen):
                last = line.line_no
                yield line._replace(line_no=line.line_no + offset) if offset else line
            offset += last

    def sha256(self) -> str:
        """The input's SHA-256 (after the rows were read: a plain file is hashed as it streams)."""
        if self._hashing is not None:
            return self._hashing.drain()
        return self._sha

    def close(self) -> None:
        if self._stream is not None:
            self._stream.close()


def _compressed(path: Path) -> bool:
    with path.open("rb") as fh:
        head = fh.read(4)
    return head.startswith((sources.ZIP_MAGIC, sources.EMPTY_ZIP_MAGIC, sources.GZIP_MAGIC))


def stage_statement(s: Session, run_id: str, lines: Iterable[StatementLine]) -> int:
    """Bulk-load parsed rows into statement_staging in the session's transaction; return the count."""
    rows = ((run_id, *line) for line in lines)  # StatementLine's fields are the staging columns in order
    count = 0
    driver = s.connection().connection.driver_connection
    if s.get_bind().dialect.name == "postgresql":
        with driver.cursor() as cur, cur.copy(COPY_SQL) as copy:  # type: ignore[union-attr]
            for row in rows:
                copy.write_row(row)
                count += 1
        return count
    cursor = driver.cursor()  # type: ignore[union-attr]
    chunk: list[tuple[Any, ...]] = []
    for row in rows:
        chunk.append(row)
        if len(chunk) >= SQLITE_CHUNK:
            cursor.executemany(INSERT_SQL, chunk)
            count += len(chunk)
            chunk = []
    if chunk:
        cursor.executemany(INSERT_SQL, chunk)
        count += len(chunk)
    cursor.close()
    return count


def _tune(s: Session) -> None:
    # One snapshot for every step of the run; enough memory for the sorts of a million-row statement.
    if s.get_bind().dialect.name == "postgresql":
        s.connection(execution_options={"isolation_level": "REPEATABLE READ"})
        s.execute(text("SET LOCAL work_mem = '256MB'"))
        # Compiling every big join to machine code costs more (up to a second each) than it saves here.
        s.execute(text("SET LOCAL jit = off"))


def _resolve(
    ctx: ServiceContext, req: ReconcileRequest
) -> tuple[dict[str, str], tuple[dt.datetime, dt.datetime]]:
    if req.fmt not in FORMATS:
        raise StatementUnusable(f"unknown statement format {req.fmt!r} (expected {' or '.join(FORMATS)})")
    with ctx.sessions() as s:
        program = s.get(Program, req.program_id)
        merchant = s.get(Merchant, req.merchant_id)
        if program is None:
            raise StatementUnusable(f"unknown programme {req.program_id!r}")
        if merchant is None:
            raise StatementUnusable(f"unknown merchant {req.merchant_id!r}")
        names = {"program_name": program.name, "merchant_name": merchant.name, "timezone": program.timezone}
    if req.date_from and req.date_to and req.date_from > req.date_to:
        raise StatementUnusable(f"--from {req.date_from} is after --to {req.date_to}")
    start = day_bounds(req.date_from, names["timezone"])[0] if req.date_from else EARLIEST
    end = day_bounds(req.date_to, names["timezone"])[1] if req.date_to else LATEST
    return names, (start, end)


def reconcile(
    ctx: ServiceContext, req: ReconcileRequest, progress: Progress | None = None
) -> ReconcileResult:
    """Reconcile a statement, record the run, and write the four report files."""
    progress = progress or QuietProgress()
    run_id = str(uuid.uuid4())
    try:
        names, window = _resolve(ctx, req)
        feed = _Feed(req)
    except StatementUnusable as exc:
        return _record_unusable(ctx, run_id, req, "", str(exc))
    try:
        summary = _run(ctx, run_id, req, names, window, feed, progress)
    except StatementError as exc:
        message = f"{feed.label}:{exc.line_no}: {exc.message}"
    except sources.SourceUnusable as exc:
        message = str(exc)
    except OSError as exc:
        message = f"{exc.filename or req.out_dir}: {exc.strerror or exc}"
    else:
        feed.close()
        return ReconcileResult(run_id, summary["exit_code"], summary)
    try:
        sha = feed.sha256()
    except OSError:
        sha = ""
    feed.close()
    return _record_unusable(ctx, run_id, req, sha, message)


def _run(
    ctx: ServiceContext,
    run_id: str,
    req: ReconcileRequest,
    names: dict[str, str],
    window: tuple[dt.datetime, dt.datetime],
    feed: _Feed,
    progress: Progress,
) -> dict[str, Any]:
    now = ctx.now()
    with ctx.sessions.begin() as s:
        _tune(s)
        s.add(_run_row(run_id, req, "", {}, EXIT_UNUSABLE, now))
        s.flush()
        progress.stage("loading the statement")
        lines = progress.rows(feed.rows(names["timezone"]))
        staged = stage_statement(s, run_id, lines)
        sha = feed.sha256()
        q.analyze(s, "statement_staging")
        params = {"run": run_id, "p": req.program_id, "m": req.merchant_id, "fmt": req.fmt}
        q.run_steps(
            s, {**params, **q.window_params(*window)}, lambda step: progress.stage(f"matching: {step}")
        )
        progress.stage("summing up")
        summary = _summary(s, run_id, req, names, sha, staged)
        summary["statements"] = feed.files
        summary["statement_rows_repeated"] = feed.seen.repeated if feed.seen else 0
        progress.stage("writing the reports")
        write_outputs(s, req.out_dir, run_id, summary, window, names["timezone"])
        progress.stage("clearing the staging rows")
        s.execute(text(q.CLEAR_STAGING), {"run": run_id})
        run = s.get(ReconciliationRun, run_id)
        assert run is not None
        run.input_sha256, run.summary, run.exit_code = sha, summary, summary["exit_code"]
        outcome = {k: summary[k] for k in ("exit_code", "matched", "payable_fen", "categories")}
        audit_log.record(
            s,
            req.actor,
            "reconciliation.run",
            "reconciliation_run",
            run_id,
            {**req.parameters(), "input_sha256": sha, **outcome},
            now,
        )
    return summary


def _run_row(
    run_id: str, req: ReconcileRequest, sha: str, summary: dict[str, Any], exit_code: int, now: dt.datetime
) -> ReconciliationRun:
    # Ids beyond the columns' sizes can only be unknown ones, recorded truncated with the error.
    return ReconciliationRun(
        id=run_id,
        program_id=req.program_id[:36],
        merchant_id=req.merchant_id[:40],
        statement_format=req.fmt[:12],
        input_sha256=sha,
        period_from=req.date_from,
        period_to=req.date_to,
        parameters=req.parameters(),
        summary=summary,
        exit_code=exit_code,
        created_at=now,
    )


def _summary(
    s: Session, run_id: str, req: ReconcileRequest, names: dict[str, str], sha: str, staged: int
) -> dict[str, Any]:
    counts = {
        row[0]: (int(row[1]), int(row[2]), int(row[3]))
        for row in s.execute(text(q.ITEM_COUNTS), {"run": run_id})
    }
    payable, payable_fen = (int(v) for v in s.execute(text(q.MATCH_TOTALS), {"run": run_id}).one())

    def n(category: str, column: int = 0) -> int:
        return counts.get(category, (0, 0, 0))[column]

    categories = {c: n(c) for c in q.CATEGORIES}
    found = sum(categories.values())
    return {
        "input_sha256": sha,
        "format": req.fmt,
        "program": req.program_id,
        "program_name": names["program_name"],
        "merchant": req.merchant_id,
        "merchant_name": names["merchant_name"],
        "period": {
            "from": req.date_from.isoformat() if req.date_from else None,
            "to": req.date_to.isoformat() if req.date_to else None,
            "timezone": names["timezone"],
        },
        "statement_rows": staged,
        "matched": payable + n("already_settled"),
        "matched_fen": payable_fen + n("already_settled", 1),
        "payable": payable,
        "payable_fen": payable_fen,
        "already_settled": n("already_settled"),
        "already_settled_fen": n("already_settled", 1),
        # held: active redemptions whose amount is disputed or whose order the bill refunded, and
        # what offline double spends claim
        "held_fen": n("amount_mismatch", 1) + n("refunded_in_statement", 1) + n("double_spend", 2),
        "unclaimed_fen": n("missing_in_statement", 1),
        "categories": categories,
        "discrepancies": found,
        "set_aside": {c: n(c) for c in q.SET_ASIDE if c != "already_settled"},
        "exit_code": EXIT_DISCREPANCIES if found else EXIT_MATCHED,
    }


def _record_unusable(
    ctx: ServiceContext, run_id: str, req: ReconcileRequest, sha: str, message: str
) -> ReconcileResult:
    now = ctx.now()
    with ctx.sessions.begin() as s:
        s.add(_run_row(run_id, req, sha, {"error": message}, EXIT_UNUSABLE, now))
        audit_log.record(
            s,
            req.actor,
            "reconciliation.run",
            "reconciliation_run",
            run_id,
            {**req.parameters(), "input_sha256": sha, "exit_code": EXIT_UNUSABLE, "error": message},
            now,
        )
    return ReconcileResult(run_id, EXIT_UNUSABLE, {"error": message}, message)


def list_runs(ctx: ServiceContext, program_id: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
    """Past runs, newest first, with their outcome."""
    query = select(ReconciliationRun).order_by(ReconciliationRun.created_at.desc(), ReconciliationRun.id)
    if program_id is not None:
        query = query.where(ReconciliationRun.program_id == program_id)
    with ctx.read_session() as s:
        runs = list(s.scalars(query.limit(limit)))
    return [_run_json(r) for r in runs]


def _run_json(r: ReconciliationRun) -> dict[str, Any]:
    summary = r.summary or {}
    return {
        "id": r.id,
        "created_at": rfc3339(r.created_at),
        "program_id": r.program_id,
        "merchant_id": r.merchant_id,
        "format": r.statement_format,
        "from": r.period_from.isoformat() if r.period_from else None,
        "to": r.period_to.isoformat() if r.period_to else None,
        "exit_code": r.exit_code,
        "matched": summary.get("matched"),
        "payable_fen": summary.get("payable_fen"),
        "discrepancies": summary.get("discrepancies"),
        "error": summary.get("error"),
        "input_sha256": r.input_sha256,
    }
