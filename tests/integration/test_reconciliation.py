"""Reconciliation of merchants' statements against the ledger, on SQLite and PostgreSQL."""

from __future__ import annotations

import csv
import datetime as dt
import json
import os
import subprocess
import sys
import threading
import uuid
from pathlib import Path

import pytest
from sqlalchemy import func, select

from tests.integration.books_fixtures import BACKENDS, DAY1, BooksEnv, Redeemed, open_books
from voucher_service.adapters.db.models import (
    ReconciliationMatch,
    ReconciliationRun,
    SettledRedemption,
    StatementRow,
)
from voucher_service.services.settlement import settle_run

NATIVE_HEADER = "order_id,voucher_id,redeemed_at,discount_fen,status"
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(params=BACKENDS)
def env(request: pytest.FixtureRequest) -> BooksEnv:
    return open_books(request)


def native_row(r: Redeemed, discount: int | None = None, status: str = "redeemed") -> str:
    at = r.redeemed_at.strftime("%Y-%m-%dT%H:%M:%SZ")
    return f"{r.order_id},{r.voucher_id},{at},{r.discount_fen if discount is None else discount},{status}"


def write(path: Path, lines: list[str], bom: bool = False) -> Path:
    path.write_text(("\ufeff" if bom else "") + "\n".join(lines) + "\n", encoding="utf-8")
    return path


def reconcile(env: BooksEnv, statement: Path, out: Path, *extra: str) -> int:
    return env.cli(
        "reconcile",
        "--program",
        env.program["id"],
        "--merchant",
        env.merchant.id,
        "--statement",
        str(statement),
        "--out",
        str(out),
        *extra,
    )


def runs(env: BooksEnv) -> list[ReconciliationRun]:
    """This programme's runs (the PostgreSQL database is shared by the session's tests)."""
    with env.ctx.sessions() as db:
        return list(
            db.scalars(
                select(ReconciliationRun)
                .where(ReconciliationRun.program_id == env.program["id"])
                .order_by(ReconciliationRun.created_at, ReconciliationRun.id)
            )
        )


def matched_ids(env: BooksEnv, run_id: str) -> set[str]:
    with env.ctx.sessions() as db:
        return set(
            db.scalars(select(ReconciliationMatch.redemption_id).where(ReconciliationMatch.run_id == run_id))
        )


def staged_rows(env: BooksEnv) -> int:
    with env.ctx.sessions() as db:
        return db.scalar(
            select(func.count())
            .select_from(StatementRow)
            .where(StatementRow.run_id.in_([r.id for r in runs(env)]))
        )


def summary(out: Path) -> dict:
    return json.loads((out / "summary.json").read_text(encoding="utf-8"))


def discrepancies(out: Path) -> list[dict[str, str]]:
    with (out / "discrepancies.csv").open(encoding="utf-8", newline="") as fh:
        return list(csv.DictReader(fh))


def test_a_clean_statement_matches_everything_and_exits_0(env, tmp_path):
    rs = [env.books.redeem(f"M-{i}", tier="T50" if i % 2 else "T20") for i in range(4)]
    statement = write(
        tmp_path / "s.csv",
        [NATIVE_HEADER + ",order_total_fen,channel,terminal_id"]
        + [native_row(r) + f",{r.order_total_fen},online," for r in rs],
        bom=True,
    )
    out = tmp_path / "out"
    assert reconcile(env, statement, out) == 0
    s = summary(out)
    assert s["matched"] == 4 and s["payable"] == 4
    assert s["matched_fen"] == s["payable_fen"] == sum(r.discount_fen for r in rs) == 14000
    assert s["categories"] == {
        c: 0
        for c in (
            "amount_mismatch",
            "missing_in_ledger",
            "missing_in_statement",
            "duplicate_in_statement",
            "reversed_in_ledger",
            "double_spend",
            "refunded_in_statement",
        )
    }
    assert s["held_fen"] == s["unclaimed_fen"] == 0 and s["statement_rows"] == 4 and s["exit_code"] == 0
    assert discrepancies(out) == []
    with (out / "settlement.csv").open(encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert rows == [
        {
            "merchant_id": env.merchant.id,
            "merchant_name": "巴马特产店",
            "matched_count": "4",
            "payable_fen": "14000",
            "held_fen": "0",
            "unclaimed_fen": "0",
        }
    ]
    html = (out / "report.html").read_text(encoding="utf-8")
    assert "Chart.js v4" in html and "<script src" not in html and "Everything matched" in html
    [run] = runs(env)
    assert (run.exit_code, run.input_sha256) == (0, s["input_sha256"])
    assert matched_ids(env, run.id) == {r.id for r in rs}
    assert staged_rows(env) == 0  # staging cleared


def test_every_category_is_found_with_its_ids_and_amounts(env, tmp_path):
    b = env.books
    ok = b.redeem("M-OK")
    short = b.redeem("M-SHORT")
    unrecorded_voucher = str(uuid.uuid4())
    not_claimed = b.redeem("M-UNCLAIMED")
    twice = b.redeem("M-TWICE")
    reversed_here = b.redeem("M-REV")
    b.reverse(reversed_here.id)
    both_reversed = b.redeem("M-BOTH-REV")
    b.reverse(both_reversed.id)
    said_reversed = b.redeem("M-SAID-REV")
    spent = b.redeem("M-SPENT")
    b.offline_conflict(spent.voucher_id, "OFF-9", 5000, seq=7)
    lines = [
        NATIVE_HEADER,
        native_row(ok),  # 2
        native_row(short, discount=4000),  # 3
        f"M-GHOST,{unrecorded_voucher},2026-12-05T05:00:00Z,2000,redeemed",  # 4
        native_row(twice),  # 5
        native_row(reversed_here),  # 6
        native_row(twice),  # 7: the same claim again
        native_row(both_reversed, status="reversed"),  # 8: agreed
        native_row(said_reversed, status="reversed"),  # 9
        native_row(spent),  # 10
        f"OFF-9,{spent.voucher_id},2026-12-05T06:00:00Z,5000,redeemed",  # 11: the offline double spend
    ]
    out = tmp_path / "out"
    assert reconcile(env, write(tmp_path / "s.csv", lines), out) == 1
    found = [
        (
            d["category"],
            d["voucher_id"],
            d["order_id"],
            d["ledger_discount_fen"],
            d["statement_discount_fen"],
            d["line_no"],
        )
        for d in discrepancies(out)
    ]
    assert found == [
        ("amount_mismatch", short.voucher_id, "M-SHORT", "5000", "4000", "3"),
        ("amount_mismatch", said_reversed.voucher_id, "M-SAID-REV", "5000", "5000", "9"),
        ("missing_in_ledger", unrecorded_voucher, "M-GHOST", "", "2000", "4"),
        ("missing_in_statement", not_claimed.voucher_id, "M-UNCLAIMED", "5000", "", ""),
        ("duplicate_in_statement", twice.voucher_id, "M-TWICE", "5000", "5000", "7"),
        ("reversed_in_ledger", reversed_here.voucher_id, "M-REV", "5000", "5000", "6"),
        ("double_spend", spent.voucher_id, "OFF-9", "5000", "5000", "11"),
    ]
    s = summary(out)
    assert s["categories"] == {
        "amount_mismatch": 2,
        "missing_in_ledger": 1,
        "missing_in_statement": 1,
        "duplicate_in_statement": 1,
        "reversed_in_ledger": 1,
        "double_spend": 1,
        "refunded_in_statement": 0,
    }
    assert (s["matched"], s["payable_fen"]) == (3, 15000)  # ok, twice (first line), spent
    assert s["held_fen"] == 5000 + 5000 + 5000  # two mismatches and the disputed offline claim
    assert s["unclaimed_fen"] == 5000
    assert s["set_aside"]["reversed_agreed"] == 1
    assert matched_ids(env, runs(env)[0].id) == {ok.id, twice.id, spent.id}
    detail = {d["order_id"]: d["detail"] for d in discrepancies(out)}
    assert (
        "line 5" in detail["M-TWICE"] and "till-1 record 7" in detail["OFF-9"] and spent.id in detail["OFF-9"]
    )


def test_rerunning_gives_byte_identical_files(env, tmp_path):
    rs = [env.books.redeem(f"M-{i}") for i in range(5)]
    statement = write(
        tmp_path / "s.csv",
        [NATIVE_HEADER] + [native_row(r) for r in rs[1:]] + [native_row(rs[1], discount=1)],
    )
    first, second = tmp_path / "a", tmp_path / "b"
    assert reconcile(env, statement, first) == 1
    assert reconcile(env, statement, second) == 1
    for name in ("summary.json", "discrepancies.csv", "settlement.csv", "report.html"):
        assert (first / name).read_bytes() == (second / name).read_bytes(), name
    assert len(runs(env)) == 2


@pytest.mark.parametrize(
    ("lines", "line_no", "words"),
    [
        (["order_id,voucher,redeemed_at,discount_fen,status"], 1, "unknown column"),
        (["order_id,voucher_id,redeemed_at,status"], 1, "missing column"),
        (
            [
                NATIVE_HEADER,
                "A,{v},2026-12-05T04:00:00Z,5000,redeemed",
                "B,{v},2026-12-05T04:00:00Z,50.00,redeemed",
            ],
            3,
            "bad amount",
        ),
        ([NATIVE_HEADER, "A,{v},2026-12-05T04:00:00Z,5000,refunded"], 2, "unknown status"),
        ([NATIVE_HEADER, "", "A,{v},2026-12-05T04:00:00Z,5000"], 3, "expected 5 fields"),
        ([NATIVE_HEADER, "A,not-a-voucher,2026-12-05T04:00:00Z,5000,redeemed"], 2, "voucher id"),
        ([NATIVE_HEADER, "A,{v},2026-12-05 04:00,5000,redeemed"], 2, "RFC 3339"),
    ],
)
def test_unusable_statements_exit_2_naming_the_line(env, tmp_path, capsys, lines, line_no, words):
    statement = write(tmp_path / "bad.csv", [x.format(v=uuid.uuid4()) for x in lines])
    out = tmp_path / "out"
    assert reconcile(env, statement, out) == 2
    err = capsys.readouterr().err
    assert f"{statement}:{line_no}:" in err and words in err
    assert not (out / "summary.json").exists()
    [run] = runs(env)
    assert run.exit_code == 2 and f":{line_no}:" in run.summary["error"]
    assert staged_rows(env) == 0


def test_unknown_programme_merchant_or_file_exit_2(env, tmp_path, capsys):
    statement = write(tmp_path / "s.csv", [NATIVE_HEADER])
    assert (
        env.cli(
            "reconcile",
            "--program",
            "nope",
            "--merchant",
            env.merchant.id,
            "--statement",
            str(statement),
            "--out",
            str(tmp_path / "o"),
        )
        == 2
    )
    assert "unknown programme" in capsys.readouterr().err
    assert (
        env.cli(
            "reconcile",
            "--program",
            env.program["id"],
            "--merchant",
            "mch_nope",
            "--statement",
            str(statement),
            "--out",
            str(tmp_path / "o"),
        )
        == 2
    )
    assert "unknown merchant" in capsys.readouterr().err
    assert reconcile(env, tmp_path / "absent.csv", tmp_path / "o") == 2
    assert "absent.csv" in capsys.readouterr().err


def test_the_period_limits_the_ledger_side(env, tmp_path):
    early = env.books.redeem("M-EARLY", at=DAY1)
    late = env.books.redeem("M-LATE", at=DAY1 + dt.timedelta(days=3))  # 8 December
    statement = write(tmp_path / "s.csv", [NATIVE_HEADER, native_row(early), native_row(late)])
    out = tmp_path / "out"
    assert reconcile(env, statement, out, "--from", "2026-12-05", "--to", "2026-12-06") == 0
    s = summary(out)
    assert (s["matched"], s["set_aside"]["out_of_period"]) == (1, 1)
    assert s["period"] == {"from": "2026-12-05", "to": "2026-12-06", "timezone": "Asia/Shanghai"}
    # 23:30 on 4 December Beijing time is 15:30 UTC: outside a period starting on the 5th.
    edge = env.books.redeem("M-EDGE", at=dt.datetime(2026, 12, 4, 15, 30, tzinfo=dt.UTC))
    statement = write(tmp_path / "s2.csv", [NATIVE_HEADER, native_row(early)])
    assert reconcile(env, statement, tmp_path / "o2", "--from", "2026-12-05", "--to", "2026-12-05") == 0
    assert reconcile(env, statement, tmp_path / "o3", "--from", "2026-12-04", "--to", "2026-12-05") == 1
    assert [d["order_id"] for d in discrepancies(tmp_path / "o3")] == [edge.order_id]


def test_settling_never_pays_a_redemption_twice(env, tmp_path, capsys):
    rs = [env.books.redeem(f"M-{i}") for i in range(3)]
    statement = write(tmp_path / "s.csv", [NATIVE_HEADER] + [native_row(r) for r in rs])
    assert reconcile(env, statement, tmp_path / "a") == 0
    assert reconcile(env, statement, tmp_path / "b") == 0  # computed before anything was paid
    run_a, run_b = (r.id for r in runs(env))
    capsys.readouterr()
    assert env.cli("settle", "--run", run_a) == 0
    assert "payable_fen=15000" in capsys.readouterr().out
    assert env.cli("settle", "--run", run_b) == 0
    out = capsys.readouterr().out
    assert "payable_fen=0" in out and "skipped 3 already settled" in out
    assert reconcile(env, statement, tmp_path / "c") == 0
    s = summary(tmp_path / "c")
    assert (s["matched"], s["payable_fen"], s["already_settled"], s["already_settled_fen"]) == (
        3,
        0,
        3,
        15000,
    )
    with env.ctx.sessions() as db:
        paid = db.scalar(
            select(func.sum(SettledRedemption.discount_fen)).where(
                SettledRedemption.redemption_id.in_([r.id for r in rs])
            )
        )
    assert paid == 15000
    assert env.cli("settle", "--run", "no-such-run") == 2


@pytest.mark.postgres
def test_racing_settlements_pay_each_redemption_once(tmp_path, request):
    env = open_books(request, "postgresql")
    rs = [env.books.redeem(f"M-{i}") for i in range(20)]
    statement = write(tmp_path / "s.csv", [NATIVE_HEADER] + [native_row(r) for r in rs])
    for name in "abcd":
        assert reconcile(env, statement, tmp_path / name) == 0
    results: list[dict] = []
    threads = [
        threading.Thread(target=lambda r=r.id: results.append(settle_run(env.ctx, r, "test")))
        for r in runs(env)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(r["payable_fen"] for r in results) == 100_000
    assert sum(r["redemptions"] for r in results) == 20


def test_a_redemption_reversed_after_the_run_is_not_paid(env, tmp_path):
    rs = [env.books.redeem(f"M-{i}") for i in range(2)]
    statement = write(tmp_path / "s.csv", [NATIVE_HEADER] + [native_row(r) for r in rs])
    assert reconcile(env, statement, tmp_path / "a") == 0
    env.books.reverse(rs[0].id)
    out = settle_run(env.ctx, runs(env)[0].id, "test")
    assert (out["redemptions"], out["payable_fen"], out["skipped_no_longer_payable"]) == (1, 5000, 1)


def test_reconcile_runs_lists_past_runs(env, tmp_path, capsys):
    r = env.books.redeem("M-1")
    assert reconcile(env, write(tmp_path / "s.csv", [NATIVE_HEADER, native_row(r)]), tmp_path / "o") == 0
    assert reconcile(env, tmp_path / "absent.csv", tmp_path / "o") == 2
    capsys.readouterr()
    assert env.cli("reconcile-runs", "--program", env.program["id"]) == 0
    rows = [line.split("\t") for line in capsys.readouterr().out.strip().splitlines()]
    assert rows[0][0] == "run_id" and len(rows) == 3
    assert sorted(row[7] for row in rows[1:]) == ["0", "2"]


def test_scripts_reconcile_takes_the_same_arguments(app, admin, tmp_path):
    ctx = app.extensions["voucher"]
    program = admin.create_program()
    merchant = admin.create_merchant(enrol_in=program["id"])
    from tests.integration.books_fixtures import Books

    r = Books(ctx, program["id"], merchant.id).redeem("M-1")
    statement = write(tmp_path / "s.csv", [NATIVE_HEADER, native_row(r), native_row(r, discount=10)])
    environ = {
        **os.environ,
        "VOUCHER_DATABASE_URL": ctx.settings.database_url,
        "VOUCHER_ENV": "test",
        "VOUCHER_TEST_CHEAP_HASHING": "1",
        "VOUCHER_VAR_DIR": str(tmp_path / "var"),
        "VOUCHER_REDIS_URL": "",
    }
    args = ["--program", program["id"], "--merchant", merchant.id, "--statement", str(statement)]
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "reconcile.py"), *args, "--out", str(tmp_path / "o")],
        env=environ,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1, done.stderr
    assert summary(tmp_path / "o")["categories"]["duplicate_in_statement"] == 1
    voucher_admin = str(Path(sys.executable).parent / "voucher-admin")
    done = subprocess.run(
        [voucher_admin, "reconcile", *args, "--out", str(tmp_path / "p")],
        env=environ,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1, done.stderr
    assert (tmp_path / "o" / "summary.json").read_bytes() == (tmp_path / "p" / "summary.json").read_bytes()
