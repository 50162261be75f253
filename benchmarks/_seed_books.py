"""The seed-scale benchmark's administrators' side: expiry, merchants' statements, reconciliation,
settlement, audit, the money invariants, and the table sizes capacity planning needs."""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import os
import subprocess
import sys
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from sqlalchemy import select, text

from benchmarks._server import ROOT, settings_env, throwaway_settings
from tests.bill_files import AlipayBill, WxBill
from voucher_service.adapters.db.models import CertifiedProduct, ProductGtin
from voucher_service.config import Settings
from voucher_service.domain.clock import local_date
from voucher_service.services.audit import program_books
from voucher_service.services.context import ServiceContext
from voucher_service.services.expiry import expire_vouchers
from voucher_service.services.reconciliation import ReconcileRequest, reconcile
from voucher_service.services.settlement import settle_run

if TYPE_CHECKING:
    from benchmarks.seed_scale import Meters, Run, Sale

ZONE = ZoneInfo("Asia/Shanghai")
LATER = dt.timedelta(days=32)  # past every voucher's 30 days and the programme's 24 offline hours
NATIVE_HEADER = "order_id,voucher_id,redeemed_at,discount_fen,status,order_total_fen,channel,terminal_id\n"
RETURNED_LINE_FEN = 1200  # the uncertified line a partial return takes back


@contextlib.contextmanager
def database(pg_admin_url: str, redis_url: str, tmp: Path) -> Iterator[Settings]:
    """A PostgreSQL database of this run (created, then dropped) and production-like Settings."""
    with throwaway_settings(pg_admin_url, redis_url, "seed") as settings:
        yield dataclasses.replace(settings, var_dir=tmp)


def eligible_gtins(ctx: ServiceContext, limit: int = 400) -> list[str]:
    """GTINs of products certified and active today (13-digit form, as a till scans them)."""
    today = local_date(ctx.now())
    with ctx.sessions() as s:
        rows = s.scalars(
            select(ProductGtin.gtin)
            .join(CertifiedProduct, CertifiedProduct.certification_no == ProductGtin.certification_no)
            .where(
                CertifiedProduct.status == "active",
                CertifiedProduct.valid_from <= today,
                CertifiedProduct.valid_to >= today,
            )
            .order_by(ProductGtin.gtin)
            .limit(limit)
        )
        return [g[1:] if g.startswith("0") else g for g in rows]


# ----------------------------------------------------------------------------------------- statements


def _claims(sale: Sale) -> bool:
    """Whether the merchant's own books have this sale (a till believes every offline sale it made)."""
    return sale.offline_status in ("", "accepted", "conflict", "duplicate")


def _local(at: str) -> dt.datetime:
    return dt.datetime.fromisoformat(at.replace("Z", "+00:00")).astimezone(ZONE)


def native_statement(sales: list[Sale], path: Path, error: str = "") -> None:
    """The shop's native CSV; `error` plants one mistake: extra | dropped | amount."""
    rows = [s for s in sales if _claims(s)]
    lines = []
    for s in rows:
        status = "reversed" if s.returned == "full" else "redeemed"
        lines.append(
            f"{s.order_id},{s.voucher_id},{s.redeemed_at},{s.discount_fen},{status},{s.order_total_fen},"
            f"{s.channel},{s.terminal_id or ''}\n"
        )
    plain = [i for i, s in enumerate(rows) if s.offline_status in ("", "accepted") and not s.returned]
    if error == "extra":
        lines.append(
            f"X-{uuid.uuid4().hex[:10]},{uuid.uuid4()},{rows[0].redeemed_at},2000,redeemed,9170,offline,\n"
        )
    elif error == "dropped" and plain:
        del lines[plain[0]]
    elif error == "amount" and plain:
        s = rows[plain[0]]
        lines[plain[0]] = lines[plain[0]].replace(
            f",{s.discount_fen},redeemed,", f",{s.discount_fen + 100},redeemed,"
        )
    path.write_text(NATIVE_HEADER + "".join(lines), encoding="utf-8")


def wechat_bills(sales: list[Sale], folder: Path) -> None:
    """Platform A's WeChat Pay 交易账单 (ALL), one file per day: what the consumers paid, and refunds."""
    folder.mkdir(parents=True, exist_ok=True)
    days: dict[str, WxBill] = {}
    for s in sales:
        at = _local(s.redeemed_at)
        bill = days.setdefault(at.date().isoformat(), WxBill("ALL", at.date().isoformat()))
        paid = s.order_total_fen - s.discount_fen
        bill.pay(s.order_id, paid, at=f"{at:%H:%M:%S}")
        if s.returned:
            bill.refund(s.order_id, paid if s.returned == "full" else RETURNED_LINE_FEN, at=f"{at:%H:%M:%S}")
    for day, bill in days.items():
        (folder / f"wechatpay-{day}.csv").write_bytes(bill.bytes())


def alipay_bills(sales: list[Sale], folder: Path) -> None:
    """Platform B's Alipay 业务明细 bills, one zip per day as Alipay serves them."""
    folder.mkdir(parents=True, exist_ok=True)
    days: dict[str, AlipayBill] = {}
    for s in sales:
        at = _local(s.redeemed_at)
        bill = days.setdefault(at.date().isoformat(), AlipayBill(at.date().isoformat()))
        paid = s.order_total_fen - s.discount_fen
        trade_no = f"{bill.day.replace('-', '')}2200140466{len(bill.rows):010d}"  # what pay() numbers it
        bill.pay(s.order_id, paid, at=f"{at:%H:%M:%S}")
        if s.returned:
            back = paid if s.returned == "full" else RETURNED_LINE_FEN
            bill.refund(s.order_id, trade_no, paid, back, at=f"{at:%H:%M:%S}")
    for day, bill in days.items():
        (folder / f"alipay-{day}.zip").write_bytes(bill.zip_bytes())


PLANTED = {0: "extra", 1: "dropped", 2: "amount"}  # shop index -> the mistake in its statement


def write_statements(run: Run, out: Path) -> list[tuple[int, Path, str]]:
    """Every merchant's statement; return (merchant index, path, format)."""
    by_merchant: dict[int, list[Sale]] = defaultdict(list)
    for s in run.sales:
        by_merchant[s.merchant].append(s)
    jobs = []
    for k in range(len(run.shops)):
        path = out / f"shop-{k:03d}.csv"
        native_statement(by_merchant.get(k, []), path, PLANTED.get(k, ""))
        jobs.append((k, path, "native"))
    a, b = len(run.shops), len(run.shops) + 1
    wechat_bills(by_merchant.get(a, []), out / "platform-a")
    alipay_bills(by_merchant.get(b, []), out / "platform-b")
    return [*jobs, (a, out / "platform-a", "wechatpay"), (b, out / "platform-b", "alipay")]


# ----------------------------------------------------------------------------------------- admin phases


def admin_phases(run: Run, ctx: ServiceContext, settings: Settings, meters: Meters, tmp: Path) -> None:
    """Expiry with recycling, statements, reconciliation and settlement, audit: 32 days later."""
    later_now = ctx.now() + LATER
    later = dataclasses.replace(ctx, clock=lambda: later_now)
    with ctx.engine.connect() as conn:
        issued = conn.scalar(
            text("SELECT count(*) FROM vouchers WHERE program_id = :p AND status = 'issued'"),
            {"p": run.program_id},
        )
    with meters.phase("expire", "vouchers") as row:
        (res,) = expire_vouchers(later, "cli:seed", run.program_id, recycle=True)
        row["count"] = res["expired"]
        row["notes"] = [
            f"expired {res['expired']} ({res['expired_fen']} fen), recycled {res['recycled']} "
            f"({res['recycled_fen']} fen); {issued} were issued"
        ]
    run.expiry = {**res, "issued_before": issued}
    out = tmp / "statements"
    out.mkdir()
    with meters.phase("statements", "lines") as row:
        jobs = write_statements(run, out)
        row["count"] = sum(1 for s in run.sales if _claims(s))
        row["notes"] = [f"{len(jobs)} merchants: {len(jobs) - 2} native CSV, 1 WeChat Pay, 1 Alipay"]
    with meters.phase("reconcile", "merchants") as row:
        runs = []
        for m, path, fmt in jobs:
            merchant = run.merchants[m]
            req = ReconcileRequest(
                program_id=run.program_id,
                merchant_id=merchant["id"],
                statement=path,
                out_dir=tmp / "reconcile" / f"m{m:03d}",
                fmt=fmt,
                actor="cli:seed",
            )
            result = reconcile(later, req)
            runs.append((m, result))
        row["count"] = len(runs)
        exits = Counter(r.exit_code for _, r in runs)
        cats: Counter[str] = Counter()
        for _, r in runs:
            cats.update({k: v for k, v in (r.summary or {}).get("categories", {}).items() if v})
        lines = sum((r.summary or {}).get("statement_rows", 0) for _, r in runs)
        row["notes"] = [f"exit codes {dict(exits)}; {lines} statement rows; discrepancies {dict(cats)}"]
        for m, r in runs:
            if r.error:
                row["notes"].append(f"merchant {m}: {r.error}")
    with meters.phase("settle", "runs") as row:
        settled = [settle_run(later, r.run_id, "cli:seed") for _, r in runs if not r.error]
        row["count"] = len(settled)
        row["notes"] = [
            f"{sum(s['redemptions'] for s in settled)} redemptions paid, "
            f"{sum(s['payable_fen'] for s in settled)} fen"
        ]
    run.reconciled = runs
    run.settled = settled
    with meters.phase("audit", "commands") as row:
        env = {**os.environ, **settings_env(settings)}
        proc = subprocess.run(
            [sys.executable, str(ROOT / "scripts" / "audit.py"), "--program", run.program_id],
            env=env,
            cwd=str(ROOT),
            capture_output=True,
            text=True,
            timeout=600,
        )
        row["count"] = 1
        row["notes"] = [f"voucher-admin audit exit {proc.returncode}"] + proc.stdout.strip().splitlines()
        row["notes"] += proc.stderr.strip().splitlines()[-5:]
    run.audit_exit = proc.returncode


# ----------------------------------------------------------------------------------------- invariants


def _one(ctx: ServiceContext, sql: str, **params: Any) -> Any:
    with ctx.engine.connect() as conn:
        return conn.execute(text(sql), params).one()


def check_invariants(run: Run, ctx: ServiceContext) -> None:
    """The money invariants after the programme, each with the figures it compared."""
    pid, plan = run.program_id, run.plan
    check = run.invariants

    def expect(name: str, ok: bool, detail: str) -> None:
        check.append((name, bool(ok), detail))

    b = program_books(ctx, pid)
    led = b.ledger
    run.books = {"budget_fen": b.budget_fen, "ledger": dict(led), "state": dict(b.state)}
    issued = led["outstanding"] + led["redeemed"] + led["expired"] + led["void"]
    unissued = led["unallocated"] + led["unclaimed"]
    expect("audit command", run.audit_exit == 0, f"voucher-admin audit exit {run.audit_exit}")
    expect(
        "budget identity",
        sum(led.values()) == b.budget_fen == plan.budget_fen and not b.problems,
        f"budget {b.budget_fen} = "
        + " + ".join(f"{k} {v}" for k, v in led.items())
        + (f"; problems {b.problems}" if b.problems else ""),
    )
    expect(
        "issued + unissued = budget",
        issued + unissued == plan.budget_fen,
        f"issued {issued} + unissued {unissued} = {issued + unissued} (budget {plan.budget_fen})",
    )
    expect("ledger = state", b.ledger == b.state, f"state {b.state}")

    claims, claimed_fen = _one(
        ctx,
        "SELECT count(*), coalesce(sum(amount_fen), 0) FROM ledger_entries WHERE program_id = :p "
        "AND kind = 'claim'",
        p=pid,
    )
    client_fen = sum(v.face_fen for v in run.vouchers)
    expect(
        "claims = 201s = tiers",
        claims == len(run.vouchers) == plan.t50 + plan.t20 and claimed_fen == client_fen == plan.budget_fen,
        f"{claims} claim movements ({claimed_fen} fen), {len(run.vouchers)} answered 201 "
        f"({client_fen} fen), tiers {plan.t50} + {plan.t20}",
    )
    sold_out = run.claim_statuses.get("409:tier_sold_out", 0)
    limited = run.claim_statuses.get("409:claim_limit_reached", 0)
    expect(
        "every claim attempt answered",
        sum(run.claim_statuses.values())
        == 2 * plan.residents + sum(1 for v in run.vouchers if v.tier == "T50") + run.probe
        and claims + sold_out + limited == sum(run.claim_statuses.values()),
        f"{dict(run.claim_statuses)}",
    )

    active, active_fen = _one(
        ctx,
        "SELECT count(*), coalesce(sum(discount_fen), 0) FROM redemptions WHERE program_id = :p "
        "AND status = 'active'",
        p=pid,
    )
    online = [s for s in run.sales if not s.offline_status]
    full = sum(1 for s in online if s.returned == "full")
    accepted = sum(1 for s in run.sales if s.offline_status == "accepted")
    expect(
        "active redemptions = 201s - full returns + accepted till records",
        active == len(online) - full + accepted,
        f"{active} active; {len(online)} online 201s - {full} full returns + {accepted} accepted offline",
    )
    expect(
        "redeemed bucket = active discounts",
        led["redeemed"] == active_fen == b.redemptions_fen,
        f"redeemed {led['redeemed']} fen, active redemptions {active_fen} fen",
    )
    (twice,) = _one(
        ctx,
        "SELECT count(*) FROM (SELECT voucher_id FROM redemptions WHERE program_id = :p "
        "AND status = 'active' GROUP BY voucher_id HAVING count(*) > 1) x",
        p=pid,
    )
    expect("no voucher redeemed twice", twice == 0, f"{twice} vouchers with two active redemptions")
    conflicts = run.offline_statuses.get("conflict", 0)
    # A till-and-online double spend whose online sale was returned in full before the till synced is
    # no double spend any more: the return gave the voucher back, and the till's record takes it.
    returned = {s.voucher_id for s in online if s.returned == "full" and s.voucher_id in run.till_and_online}
    expected = run.planned_double_spends - len(returned)
    expect(
        "double spends caught by the sync",
        conflicts == expected,
        f"{conflicts} conflicts for {run.planned_double_spends} planned, {len(returned)} of them returned "
        f"online before the sync; verdicts {dict(run.offline_statuses)}",
    )

    e = run.expiry
    expect(
        "every unspent voucher expired and recycled",
        e["expired"] == e["issued_before"] == e["recycled"] and e["expired_fen"] == e["recycled_fen"],
        f"issued {e['issued_before']}, expired {e['expired']}, recycled {e['recycled']}",
    )

    settled, settled_fen = _one(
        ctx,
        "SELECT count(*), coalesce(sum(x.discount_fen), 0) FROM "
        "settled_redemptions x JOIN redemptions r ON r.id = x.redemption_id "
        "WHERE r.program_id = :p AND r.status = 'active'",
        p=pid,
    )
    payable = sum(s["payable_fen"] for s in run.settled)
    unsettled, unsettled_fen = _one(
        ctx,
        "SELECT count(*), coalesce(sum(discount_fen), 0) FROM redemptions r "
        "WHERE program_id = :p AND status = 'active' AND NOT EXISTS (SELECT 1 "
        "FROM settled_redemptions x WHERE x.redemption_id = r.id)",
        p=pid,
    )
    expect(
        "settled = payable of the runs",
        settled_fen == payable,
        f"settled {settled} ({settled_fen} fen), runs' payable {payable} fen",
    )
    expect(
        "redeemed = settled + held/unclaimed",
        led["redeemed"] == settled_fen + unsettled_fen and unsettled == 2,
        f"{led['redeemed']} = {settled_fen} settled + {unsettled_fen} not paid "
        f"({unsettled} redemptions: the dropped line and the wrong amount)",
    )
    errors = {k: n for phase in run.statuses.values() for k, n in phase.items() if k[0] == "5"}
    errors.update({k: n for k, n in run.claim_statuses.items() if k[0] == "5"})
    expect("no 5xx", not errors, f"{errors or 'none'}")


# ----------------------------------------------------------------------------------------- sizes


def table_sizes(ctx: ServiceContext, vouchers: int) -> list[dict[str, Any]]:
    """Every table's rows, heap, indexes and total (with TOAST) bytes, and each index's bytes."""
    with ctx.engine.connect() as conn:
        tables = conn.execute(
            text(
                "SELECT c.relname, pg_relation_size(c.oid), pg_indexes_size(c.oid), pg_total_relation_size(c.oid) "
                "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE n.nspname = 'public' AND c.relkind = 'r' ORDER BY pg_total_relation_size(c.oid) DESC"
            )
        ).all()
        indexes = conn.execute(
            text(
                "SELECT t.relname, i.relname, pg_relation_size(i.oid) FROM pg_index x "
                "JOIN pg_class i ON i.oid = x.indexrelid JOIN pg_class t ON t.oid = x.indrelid "
                "JOIN pg_namespace n ON n.oid = t.relnamespace WHERE n.nspname = 'public' "
                "ORDER BY pg_relation_size(i.oid) DESC"
            )
        ).all()
        out = []
        for name, heap, idx, total in tables:
            rows = conn.scalar(text(f'SELECT count(*) FROM "{name}"'))
            out.append(
                {
                    "table": name,
                    "rows": rows,
                    "heap": heap,
                    "indexes": idx,
                    "total": total,
                    "per_voucher": round(total / vouchers, 1),
                    "index_list": [(i, size) for t, i, size in indexes if t == name],
                }
            )
    return out


# ----------------------------------------------------------------------------------------- report


def print_report(run: Run, sizes: list[dict[str, Any]], total_s: float) -> None:
    """The phases, the per-operation costs, the table sizes and the invariants."""
    n = run.plan.t50 + run.plan.t20
    print("\n== phases ==")
    print(
        f"{'phase':<12} {'count':>10} {'seconds':>8} {'per s':>8}  CPU ms/op: gunicorn postgres  redis client  pg server"
    )
    for p in run.phases:
        c = p["count"] or 1
        cpu = p["cpu_s"]
        print(
            f"{p['phase']:<12} {p['count']:>10,} {p['seconds']:>8.1f} {p['count'] / p['seconds']:>8,.0f}  "
            f"{' ' * 10}{1000 * cpu['gunicorn'] / c:>8.3f} {1000 * cpu['postgres'] / c:>8.3f} "
            f"{1000 * cpu['redis'] / c:>6.3f} {1000 * cpu['client'] / c:>6.3f} {1000 * cpu['pg server'] / c:>10.3f}"
        )
    print(f"total {total_s:.1f} s ({total_s / 60:.1f} min)")
    print(f"\n== table sizes after the run (bytes per voucher of the programme's {n:,}) ==")
    print(f"{'table':<26} {'rows':>10} {'heap':>12} {'indexes':>12} {'total':>12} {'B/voucher':>10}")
    for t in sizes:
        if t["total"] <= 16384 and t["rows"] < 100:
            continue
        print(
            f"{t['table']:<26} {t['rows']:>10,} {t['heap']:>12,} {t['indexes']:>12,} {t['total']:>12,} "
            f"{t['per_voucher']:>10,.1f}"
        )
        for name, size in t["index_list"]:
            print(f"    index {name:<38} {size:>12,} {size / n:>10,.1f}")
    total = sum(t["total"] for t in sizes)
    print(f"{'all tables':<26} {'':>10} {'':>12} {'':>12} {total:>12,} {total / n:>10,.1f}")
    print("\n== invariants ==")
    for name, ok, detail in run.invariants:
        print(f"{'ok  ' if ok else 'FAIL'} {name}: {detail}")


def figures(run: Run, sizes: list[dict[str, Any]], total_s: float, ok: bool) -> dict[str, Any]:
    """The run's figures as one JSON document."""
    return {
        "scale": run.plan.scale,
        "ok": ok,
        "total_s": round(total_s, 1),
        "phases": [
            {k: p.get(k) for k in ("phase", "unit", "count", "cpu_s", "db", "machine")}
            | {"seconds": round(p["seconds"], 2)}
            for p in run.phases
        ],
        "sizes": [{k: t[k] for k in ("table", "rows", "heap", "indexes", "total")} for t in sizes],
        "invariants": {name: passed for name, passed, _ in run.invariants},
        "books": run.books,
        "audit_exit": run.audit_exit,
        "claims": dict(run.claim_statuses),
        "offline": dict(run.offline_statuses),
    }
