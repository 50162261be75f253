"""Reconciling bills as merchants really have them: every WeChat Pay bill type, gzip and zip, refunds on
later days' bills, a month of daily bills in one run, Alipay 业务明细 zips (layouts: tests/bill_files.py)."""

from __future__ import annotations

import csv
import datetime as dt
import gzip
import io
import json
import zipfile
from pathlib import Path

import pytest

from tests.bill_files import AlipayBill, WxBill
from tests.integration.books_fixtures import BACKENDS, BAMA, BooksEnv, open_books

# The consumer pays order total less 50.00; the order must keep 150.00 for the discount to stand.
TIERS = [{"code": "T50", "face_value_fen": 5000, "min_spend_fen": 15000, "quantity": 200}]


@pytest.fixture(params=BACKENDS)
def env(request: pytest.FixtureRequest) -> BooksEnv:
    return open_books(request, tiers=TIERS)


def reconcile(
    env: BooksEnv, out: Path, *statements: Path, fmt: str = "wechatpay", extra: tuple[str, ...] = ()
) -> int:
    args = ["reconcile", "--program", env.program["id"], "--merchant", env.merchant.id, "--format", fmt]
    for path in statements:
        args += ["--statement", str(path)]
    return env.cli(*args, "--out", str(out), *extra)


def summary(out: Path) -> dict:
    return json.loads((out / "summary.json").read_text(encoding="utf-8"))


def found(out: Path) -> set[tuple[str, ...]]:
    with (out / "discrepancies.csv").open(encoding="utf-8", newline="") as fh:
        return {
            (d["category"], d["order_id"], d["ledger_discount_fen"], d["statement"], d["line_no"])
            for d in csv.DictReader(fh)
        }


def day(n: int) -> dt.datetime:
    return dt.datetime(2026, 12, n, 4, 0, tzinfo=dt.UTC)  # 12:00 in Asia/Shanghai


def test_refunds_on_later_days_bills_of_every_type_are_found(env, tmp_path):
    b = env.books
    full = b.redeem("A-FULL", at=day(5), lines=[(BAMA, 1, 20_000)])
    below = b.redeem("B-BELOW", at=day(5), lines=[(BAMA, 1, 20_000)])
    b.redeem("C-KEEPS", at=day(5), lines=[(BAMA, 1, 30_000)])
    b.redeem("D-QUOTES", at=day(5), lines=[(BAMA, 1, 15_000)])
    revoked = b.redeem("E-REVOKED", at=day(5), lines=[(BAMA, 1, 15_000)])
    gone = b.redeem("F-GONE", at=day(5), lines=[(BAMA, 1, 15_000)])
    b.reverse(gone.id)
    b.redeem("G-PAID", at=day(6), lines=[(BAMA, 1, 123_456)])
    b.redeem("H-UNPAID", at=day(6), lines=[(BAMA, 1, 15_000)])
    success = (
        WxBill("SUCCESS", "2026-12-05")
        .pay("A-FULL", 15_000)
        .pay("B-BELOW", 15_000)
        .pay("C-KEEPS", 25_000)
        .pay("D-QUOTES", 10_000, product='巴马香米,5kg "长寿村"')
        .pay("E-REVOKED", 10_000)
        .pay("F-GONE", 10_000)
    )
    day6 = (
        WxBill("ALL", "2026-12-06").pay("G-PAID", 118_456).refund("C-KEEPS", 3_000).refund("F-GONE", 10_000)
    )
    day6.refund("E-REVOKED", 10_000, state="REVOKED")
    refunds = WxBill("REFUND", "2026-12-08").refund("A-FULL", 15_000).refund("B-BELOW", 5_001)
    paths = {
        "SUCCESS_20261205.csv.gz": success.bytes(gz=True),  # tar_type=GZIP, whatever the name says
        "ALL_20261206.csv": day6.bytes("gb18030"),
        "REFUND_20261208.csv": refunds.bytes(bom=True),
    }
    for name, data in paths.items():
        (tmp_path / name).write_bytes(data)
    out = tmp_path / "out"
    assert reconcile(env, out, *(tmp_path / n for n in paths)) == 1
    s = summary(out)
    assert s["categories"]["refunded_in_statement"] == 3
    assert s["categories"]["missing_in_statement"] == 1 and s["discrepancies"] == 4
    assert (s["matched"], s["payable_fen"], s["held_fen"]) == (3, 15_000, 15_000)  # C, D, G paid
    assert s["set_aside"]["reversed_agreed"] == 1
    assert found(out) == {
        ("refunded_in_statement", "A-FULL", "5000", "REFUND_20261208.csv", "2"),
        ("refunded_in_statement", "B-BELOW", "5000", "REFUND_20261208.csv", "3"),
        ("refunded_in_statement", "E-REVOKED", "5000", "ALL_20261206.csv", "5"),
        ("missing_in_statement", "H-UNPAID", "5000", "", ""),
    }
    assert [f["name"] for f in s["statements"]] == list(paths)
    assert {full.voucher_id, below.voucher_id, revoked.voucher_id} <= _discrepant_vouchers(out)


def _discrepant_vouchers(out: Path) -> set[str]:
    with (out / "discrepancies.csv").open(encoding="utf-8", newline="") as fh:
        return {d["voucher_id"] for d in csv.DictReader(fh)}


def test_a_month_of_daily_bills_in_a_directory_reconciles_in_one_run(env, tmp_path):
    bills = tmp_path / "december"
    bills.mkdir()
    for n in range(1, 31):
        env.books.redeem(f"M-{n:02d}", at=day(n), lines=[(BAMA, 1, 15_000 + n)])
    for n in range(1, 31):
        bill = WxBill("ALL", f"2026-12-{n:02d}").pay(f"M-{n:02d}", 10_000 + n, txn=f"42000000{n:020d}")
        if n == 9:
            bill.refund("M-05", 10_005)  # refunded in full four days later
        if n == 13:
            bill.refund("M-12", 12)  # a return that keeps the minimum spend
        encoding, gz, bom = ("gb18030", False, False) if n % 3 == 0 else ("utf-8", n % 3 == 1, n % 2 == 0)
        name = f"{n:02d}.csv" + (".gz" if gz else "")
        (bills / name).write_bytes(bill.bytes(encoding, bom=bom, gz=gz))
    (bills / "20-again.csv").write_bytes((bills / "20.csv").read_bytes())  # downloaded twice
    out = tmp_path / "out"
    assert reconcile(env, out, bills, extra=("--from", "2026-12-01", "--to", "2026-12-31")) == 1
    s = summary(out)
    assert s["statement_rows"] == 32 and s["statement_rows_repeated"] == 1
    assert (s["matched"], s["payable_fen"]) == (29, 29 * 5000)
    assert s["categories"]["refunded_in_statement"] == 1 and s["categories"]["duplicate_in_statement"] == 0
    assert s["discrepancies"] == 1 and s["held_fen"] == 5000
    assert found(out) == {("refunded_in_statement", "M-05", "5000", "december/09.csv", "3")}
    assert len(s["statements"]) == 31
    again = tmp_path / "again"
    assert reconcile(env, again, bills, extra=("--from", "2026-12-01", "--to", "2026-12-31")) == 1
    assert (again / "discrepancies.csv").read_bytes() == (out / "discrepancies.csv").read_bytes()
    assert summary(again)["input_sha256"] == s["input_sha256"]


def test_alipay_zips_and_csvs_reconcile_with_their_refunds(env, tmp_path):
    b = env.books
    b.redeem("AP-1", at=day(5), lines=[(BAMA, 1, 5_010 + 15_000)])  # pays 150.10
    gone = b.redeem("AP-2", at=day(5), lines=[(BAMA, 1, 128_456)])  # pays 1234.56
    b.redeem("AP-3", at=day(5), lines=[(BAMA, 2, 10_000)])  # pays 150.00, then returns 20.00
    first = (
        AlipayBill("2026-12-05")
        .pay("AP-1", 15_010)
        .pay("AP-2", 123_456, product='巴马,"香米"')
        .pay("AP-3", 15_000)
    )
    later = AlipayBill("2026-12-07")
    later.refund("AP-2", first.trade_no("AP-2"), 123_456, 123_456).refund(
        "AP-3", first.trade_no("AP-3"), 15_000, 2_000
    )
    downloaded = tmp_path / "20881234567890120156_20261205.zip"
    downloaded.write_bytes(first.zip_bytes())
    inner = tmp_path / "20881234567890120156_20261207_业务明细.csv"
    inner.write_bytes(b"\xef\xbb\xbf" + later.csv_bytes("utf-8"))  # the CSV alone, saved as UTF-8 with BOM
    out = tmp_path / "out"
    assert reconcile(env, out, downloaded, inner, downloaded, fmt="alipay") == 1
    s = summary(out)
    assert (s["matched"], s["payable_fen"], s["statement_rows_repeated"]) == (2, 10_000, 3)
    assert s["categories"]["refunded_in_statement"] == 1 and s["discrepancies"] == 1
    name = f"{downloaded.name}!20881234567890120156_20261205_业务明细.csv"
    assert [f["name"] for f in s["statements"]][0] == name
    assert found(out) == {("refunded_in_statement", "AP-2", "5000", inner.name, "6")}
    assert gone.voucher_id in _discrepant_vouchers(out)


def _zip(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


@pytest.mark.parametrize(
    ("fmt", "name", "content", "line", "words"),
    [
        (
            "wechatpay",
            "bill.gz",
            gzip.compress("交易日期,金额\n2026-12-05,1.00\n".encode(), mtime=0),
            "(gzip):1:",
            "not a WeChat Pay trade bill",
        ),
        (
            "wechatpay",
            "bill.csv",
            gzip.compress(WxBill().pay("X-1", 100).bytes(), mtime=0)[:-30],
            "(gzip):",
            "corrupt or truncated",
        ),
        (
            "alipay",
            "bill.zip",
            _zip({"20881234567890120156_20261205_业务明细(汇总).csv": b"#x\n"}),
            "",
            "no Alipay 业务明细 CSV",
        ),
        (
            "wechatpay",
            "bill.csv",
            ("x" * 70_000 + "\n").encode() + "交易".encode("gbk"),
            ":2:",
            "is the rest GBK?",
        ),
        (
            "alipay",
            "bill.csv",
            AlipayBill().pay("X-1", 100).text().replace("商家实收（元）", "实收").encode("gbk"),
            ":5:",
            "商家实收（元）",
        ),
        (
            "wechatpay",
            "bill.csv",
            WxBill("SUCCESS").pay("X-1", 100).text().replace("`SUCCESS", "`NOTPAY").encode(),
            ":2:",
            "'NOTPAY'",
        ),
    ],
)
def test_unusable_files_exit_2_naming_the_file_the_line_and_the_reason(
    env, tmp_path, capsys, fmt, name, content, line, words
):
    path = tmp_path / name
    path.write_bytes(content)
    assert reconcile(env, tmp_path / "out", path, fmt=fmt) == 2
    err = capsys.readouterr().err
    assert str(path) in err and line in err and words in err, err
    assert not (tmp_path / "out").exists()
