"""Reconciliation against WeChat Pay trade bills (交易账单), as merchants download them."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from tests.integration.books_fixtures import BACKENDS, BAMA, BooksEnv, open_books

HEADER = (
    "交易时间,公众账号ID,商户号,特约商户号,设备号,微信订单号,商户订单号,用户标识,交易类型,交易状态,付款银行,货币种类,"
    "应结订单金额,代金券金额,微信退款单号,商户退款单号,退款金额,充值券退款金额,退款类型,退款状态,商品名称,商户数据包,"
    "手续费,费率,订单金额,申请退款金额,费率备注"
)
SUMMARY = "总交易单数,应结订单总金额,退款总金额,充值券退款总金额,手续费总金额,订单总金额,申请退款总金额"
# A tier whose minimum spend equals its face value, so a consumer may pay as little as 0.10 yuan.
TIERS = [{"code": "T50", "face_value_fen": 5000, "min_spend_fen": 5000, "quantity": 100}]


def yuan(fen: int) -> str:
    return f"{fen // 100}.{fen % 100:02d}"


class Bill:
    """Builds a trade bill the way WeChat Pay writes it: backtick before every field, summary at the end."""

    def __init__(self) -> None:
        self.rows: list[list[str]] = []
        self.settle = self.refunded = self.ordered = self.requested = 0

    def pay(self, order_id: str, fen: int, at: str = "2026-12-05 12:30:00") -> Bill:
        n = len(self.rows)
        self.rows.append(
            [
                at,
                "wx2421b1c4370ec43b",
                "1900000109",
                "0",
                "POS-01",
                f"42000{n:023d}",
                order_id,
                f"oUpF8uMuAJO_M2pxb1Q9zNjWeS{n:02d}",
                "MICROPAY",
                "SUCCESS",
                "CMB_DEBIT",
                "CNY",
                yuan(fen),
                "0.00",
                "0",
                "0",
                "0.00",
                "0.00",
                "",
                "",
                "巴马香米 5kg",
                "",
                "0.00600",
                "0.60%",
                yuan(fen),
                "0.00",
                "",
            ]
        )
        self.settle += fen
        self.ordered += fen
        return self

    def refund(self, order_id: str, fen: int, at: str = "2026-12-05 18:00:00") -> Bill:
        n = len(self.rows)
        self.rows.append(
            [
                at,
                "wx2421b1c4370ec43b",
                "1900000109",
                "0",
                "POS-01",
                f"42000{n:023d}",
                order_id,
                f"oUpF8uMuAJO_M2pxb1Q9zNjWeS{n:02d}",
                "MICROPAY",
                "REFUND",
                "CMB_DEBIT",
                "CNY",
                "0.00",
                "0.00",
                f"50300{n:024d}",
                f"R{order_id}",
                yuan(fen),
                "0.00",
                "ORIGINAL",
                "SUCCESS",
                "巴马香米 5kg",
                "",
                "-0.00600",
                "0.60%",
                "0.00",
                yuan(fen),
                "",
            ]
        )
        self.refunded += fen
        self.requested += fen
        return self

    def text(self, *, count: int | None = None) -> str:
        lines = [HEADER] + [",".join("`" + cell for cell in row) for row in self.rows]
        values = [
            str(len(self.rows) if count is None else count),
            yuan(self.settle),
            yuan(self.refunded),
            "0.00",
            "0.00000",
            yuan(self.ordered),
            yuan(self.requested),
        ]
        lines += [SUMMARY, ",".join("`" + v for v in values)]
        return "\r\n".join(lines) + "\r\n"


@pytest.fixture(params=BACKENDS)
def env(request: pytest.FixtureRequest) -> BooksEnv:
    return open_books(request, tiers=TIERS)


def reconcile(env: BooksEnv, bill: Path, out: Path) -> int:
    return env.cli(
        "reconcile",
        "--program",
        env.program["id"],
        "--merchant",
        env.merchant.id,
        "--statement",
        str(bill),
        "--format",
        "wechatpay",
        "--out",
        str(out),
    )


def test_a_bill_proves_the_consumer_paid_the_rest_of_each_order(env, tmp_path):
    b = env.books
    big = b.redeem("WX-BIG", lines=[(BAMA, 1, 128_456)])  # pays 1234.56
    tiny = b.redeem("WX-TINY", lines=[(BAMA, 1, 5_010)])  # pays 0.10
    wrong = b.redeem("WX-WRONG", lines=[(BAMA, 1, 20_000)])  # should pay 150.00
    refunded = b.redeem("WX-REFUNDED", lines=[(BAMA, 1, 15_000)])
    gone = b.redeem("WX-GONE", lines=[(BAMA, 1, 15_000)])
    b.reverse(gone.id)
    kept = b.redeem("WX-KEPT", lines=[(BAMA, 1, 15_000)])
    b.reverse(kept.id)
    unpaid = b.redeem("WX-UNPAID", lines=[(BAMA, 1, 15_000)])
    twice = b.redeem("WX-TWICE", lines=[(BAMA, 1, 9_000)])
    bill = (
        Bill()
        .pay("WX-BIG", 123_456)
        .pay("WX-TINY", 10)
        .pay("WX-WRONG", 16_000)
        .pay("WX-REFUNDED", 10_000)
        .pay("WX-GONE", 10_000)
        .pay("WX-KEPT", 10_000)
        .pay("SHOP-0001", 4_999)
        .pay("WX-TWICE", 4_000)
        .pay("SHOP-0002", 250)
        .pay("WX-TWICE", 4_000)
        .refund("WX-BIG", 10_000)
        .refund("WX-REFUNDED", 10_000)
        .refund("WX-GONE", 6_000)
        .refund("WX-GONE", 4_000)
    )
    path = tmp_path / "ALL.csv"
    path.write_text("\ufeff" + bill.text(), encoding="utf-8")
    out = tmp_path / "out"
    assert reconcile(env, path, out) == 1
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    assert summary["categories"] == {
        "amount_mismatch": 1,
        "missing_in_ledger": 0,
        "missing_in_statement": 1,
        "duplicate_in_statement": 1,
        "reversed_in_ledger": 1,
        "double_spend": 0,
        "refunded_in_statement": 1,
    }
    assert (summary["matched"], summary["payable_fen"]) == (3, 15_000)  # big (part refund), tiny, twice
    assert summary["set_aside"] == {"out_of_period": 0, "reversed_agreed": 1, "unrelated": 2}
    assert summary["statement_rows"] == 14
    with (out / "discrepancies.csv").open(encoding="utf-8", newline="") as fh:
        found = {
            (
                d["category"],
                d["order_id"],
                d["voucher_id"],
                d["ledger_discount_fen"],
                d["statement_discount_fen"],
                d["line_no"],
            )
            for d in csv.DictReader(fh)
        }
    assert found == {
        ("amount_mismatch", "WX-WRONG", wrong.voucher_id, "5000", "4000", "4"),
        ("refunded_in_statement", "WX-REFUNDED", refunded.voucher_id, "5000", "", "13"),
        ("reversed_in_ledger", "WX-KEPT", kept.voucher_id, "5000", "5000", "7"),
        ("missing_in_statement", "WX-UNPAID", unpaid.voucher_id, "5000", "", ""),
        ("duplicate_in_statement", "WX-TWICE", twice.voucher_id, "5000", "5000", "11"),
    }
    assert {big.id, tiny.id} <= set(_matched(env))


def _matched(env: BooksEnv) -> list[str]:
    from sqlalchemy import select

    from voucher_service.adapters.db.models import ReconciliationMatch, ReconciliationRun

    with env.ctx.sessions() as db:
        return list(
            db.scalars(
                select(ReconciliationMatch.redemption_id)
                .join(ReconciliationRun, ReconciliationRun.id == ReconciliationMatch.run_id)
                .where(ReconciliationRun.program_id == env.program["id"])
            )
        )


def test_a_clean_bill_in_gb18030_exits_0(env, tmp_path):
    r = env.books.redeem("WX-1", lines=[(BAMA, 2, 7_500)])
    path = tmp_path / "bill.csv"
    path.write_bytes(Bill().pay("WX-1", 10_000).pay("SHOP-9", 123).text().encode("gb18030"))
    assert reconcile(env, path, tmp_path / "out") == 0
    summary = json.loads((tmp_path / "out" / "summary.json").read_text(encoding="utf-8"))
    assert (summary["matched"], summary["matched_fen"], summary["format"]) == (1, r.discount_fen, "wechatpay")


@pytest.mark.parametrize(
    ("mutate", "line_no", "words"),
    [
        (lambda t: t.replace("`12.34,`0.00,`0,`0", "`12.345,`0.00,`0,`0", 1), 2, "bad amount"),
        (lambda t: t.replace("`SUCCESS", "`CLOSED", 1), 2, "unknown status"),
        (lambda t: t.rsplit(SUMMARY, 1)[0], 4, "summary"),
        (lambda t: t.replace("`2,`", "`3,`"), 5, "总交易单数 says 3"),
        (lambda t: t.replace("交易状态", "状态", 1), 1, "交易状态"),
    ],
)
def test_an_unusable_bill_exits_2_naming_the_line(env, tmp_path, capsys, mutate, line_no, words):
    path = tmp_path / "bill.csv"
    path.write_text(mutate(Bill().pay("WX-1", 1_234).pay("WX-2", 5_000).text()), encoding="utf-8")
    assert reconcile(env, path, tmp_path / "out") == 2
    err = capsys.readouterr().err
    assert f"{path}:{line_no}:" in err and words in err, err
