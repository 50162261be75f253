"""Reconciliation, settlement, reports, expiry and audit commands."""

from __future__ import annotations

import datetime as dt
import getpass
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import NoReturn, TypeVar

import click
from tqdm import tqdm

from voucher_service.cli import CliState, main, pass_state
from voucher_service.domain.errors import VoucherServiceError
from voucher_service.domain.money import format_yuan
from voucher_service.domain.states import DisputeStatus

T = TypeVar("T")
DATE = click.DateTime(formats=["%Y-%m-%d"])


def _actor() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except (OSError, KeyError):
        return "cli:unknown"


def _fail(message: str, code: int = 2) -> NoReturn:
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


class TerminalProgress:
    """A tqdm bar on stderr when it is a terminal; quiet otherwise (logs, pipes, tests)."""

    def __init__(self) -> None:
        self.enabled = sys.stderr.isatty()

    def rows(self, rows: Iterable[T]) -> Iterable[T]:
        return tqdm(
            rows,
            desc="statement rows",
            unit=" rows",
            unit_scale=True,
            file=sys.stderr,
            disable=not self.enabled,
            mininterval=0.5,
            leave=False,
        )

    def stage(self, name: str) -> None:
        if self.enabled:
            click.echo(f"… {name}", err=True)


@main.command("reconcile")
@click.option("--program", "program_id", required=True, help="Programme id.")
@click.option("--merchant", "merchant_id", required=True, help="Merchant id.")
@click.option(
    "--statement",
    "statements",
    required=True,
    multiple=True,
    help="The merchant's statement: a file (plain, gzip or zip) or a directory; may be given several times.",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["native", "wechatpay", "alipay"]),
    default="native",
    show_default=True,
    help="native CSV, a WeChat Pay trade bill (交易账单: ALL, SUCCESS or REFUND), or an Alipay 业务明细 bill.",
)
@click.option("--from", "date_from", type=DATE, help="First calendar day (programme time zone).")
@click.option("--to", "date_to", type=DATE, help="Last calendar day, included.")
@click.option(
    "--out",
    "out_dir",
    required=True,
    help="Directory for summary.json, discrepancies.csv, settlement.csv and report.html.",
)
@pass_state
def reconcile(
    state: CliState,
    program_id: str,
    merchant_id: str,
    statements: tuple[str, ...],
    fmt: str,
    date_from: dt.datetime | None,
    date_to: dt.datetime | None,
    out_dir: str,
) -> None:
    """Reconcile a statement against the ledger. Exit 0: all matched; 1: discrepancies; 2: unusable input."""
    from voucher_service.services.reconciliation import ReconcileRequest
    from voucher_service.services.reconciliation import reconcile as run

    req = ReconcileRequest(
        program_id=program_id,
        merchant_id=merchant_id,
        statement=Path(statements[0]),
        more_statements=tuple(Path(p) for p in statements[1:]),
        out_dir=Path(out_dir),
        fmt=fmt,
        date_from=date_from.date() if date_from else None,
        date_to=date_to.date() if date_to else None,
        actor=_actor(),
    )
    result = run(state.ctx, req, TerminalProgress())
    if result.error:
        click.echo(f"run {result.run_id}", err=True)
        _fail(result.error, result.exit_code)
    s = result.summary
    click.echo(f"run {result.run_id}")
    click.echo(
        f"matched {s['matched']} redemptions, {format_yuan(s['matched_fen'])} yuan; payable "
        f"{s['payable_fen']} fen ({s['already_settled']} already settled)"
    )
    click.echo(f"held {s['held_fen']} fen; unclaimed {s['unclaimed_fen']} fen")
    if len(s.get("statements", [])) > 1 or s.get("statement_rows_repeated"):
        click.echo(
            f"{len(s['statements'])} statement files, {s['statement_rows']} rows "
            f"({s['statement_rows_repeated']} seen twice, counted once)"
        )
    click.echo("discrepancies: " + ", ".join(f"{k} {v}" for k, v in s["categories"].items()))
    click.echo(f"reports in {out_dir}")
    sys.exit(result.exit_code)


@main.command("reconcile-runs")
@click.option("--program", "program_id", help="Only this programme's runs.")
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 10_000))
@pass_state
def reconcile_runs(state: CliState, program_id: str | None, limit: int) -> None:
    """List past reconciliation runs, newest first."""
    from voucher_service.services.reconciliation import list_runs

    click.echo(
        "run_id\tcreated_at\tprogram_id\tmerchant_id\tformat\tfrom\tto\texit\tmatched\tpayable_fen\t"
        "discrepancies"
    )
    for r in list_runs(state.ctx, program_id, limit):
        cells = [
            r["id"],
            r["created_at"],
            r["program_id"],
            r["merchant_id"],
            r["format"],
            r["from"],
            r["to"],
            r["exit_code"],
            r["matched"],
            r["payable_fen"],
            r["discrepancies"] if r["error"] is None else "-",
        ]
        click.echo("\t".join("" if c is None else str(c) for c in cells))


@main.command("settle")
@click.option("--run", "run_id", required=True, help="A reconciliation run id.")
@pass_state
def settle(state: CliState, run_id: str) -> None:
    """Record a settlement batch of a run's payable matches; no redemption is ever paid twice."""
    from voucher_service.services.settlement import settle_run

    try:
        out = settle_run(state.ctx, run_id, _actor())
    except VoucherServiceError as exc:
        _fail(exc.detail)
    if out["settlement_id"]:
        click.echo(f"settlement {out['settlement_id']}: {out['redemptions']} redemptions")
    else:
        click.echo("nothing new to pay in this run")
    if out["skipped_already_settled"]:
        shown = ", ".join(out["skipped_ids"])
        click.echo(
            f"skipped {out['skipped_already_settled']} already settled: {shown}"
            + (" …" if out["skipped_already_settled"] > len(out["skipped_ids"]) else "")
        )
    if out["skipped_no_longer_payable"]:
        click.echo(f"skipped {out['skipped_no_longer_payable']} no longer active since the run")
    if out["disputes_paid"]:
        click.echo(
            f"paid {out['disputes_paid']} accepted disputes, {out['disputes_paid_fen']} fen: "
            + ", ".join(out["dispute_ids"])
        )
    click.echo(f"payable_fen={out['payable_fen']}")


@main.group("disputes")
def disputes() -> None:
    """Merchants' disputes of reconciliation discrepancies: list, accept, reject."""


@disputes.command("list")
@click.option(
    "--status",
    type=click.Choice([*(s.value for s in DisputeStatus), "all"]),
    default=DisputeStatus.OPEN.value,
    show_default=True,
)
@click.option("--program", "program_id", help="Only this programme's disputes.")
@click.option("--merchant", "merchant_id", help="Only this merchant's disputes.")
@click.option("--limit", default=100, show_default=True, type=click.IntRange(1, 10_000))
@pass_state
def disputes_list(
    state: CliState, status: str, program_id: str | None, merchant_id: str | None, limit: int
) -> None:
    """List disputes, oldest first (tab-separated)."""
    from voucher_service.services.disputes import list_disputes

    rows = list_disputes(
        state.ctx,
        status=None if status == "all" else status,
        program_id=program_id,
        merchant_id=merchant_id,
        limit=limit,
    )
    click.echo(
        "dispute_id\tcreated_at\tstatus\tpaid_in\tmerchant_id\trun_id\tdiscrepancy_id\tcategory\torder_id\t"
        "amount_fen\tnote"
    )
    for d in rows:
        cells = [
            d["dispute_id"],
            d["created_at"],
            d["status"],
            d["settlement_id"],
            d["merchant_id"],
            d["run_id"],
            d["discrepancy_id"],
            d["category"],
            d["order_id"],
            d["amount_fen"],
            " ".join(d["note"].split()),
        ]
        click.echo("\t".join("" if c is None else str(c) for c in cells))


def _decide(state: CliState, dispute_id: str, accept: bool, note: str | None) -> None:
    from voucher_service.services.disputes import decide_dispute

    try:
        d = decide_dispute(state.ctx, dispute_id, accept=accept, actor=_actor(), note=note)
    except VoucherServiceError as exc:
        _fail(exc.detail)
    click.echo(
        f"dispute {d['dispute_id']} {d['status']}: {d['category']} {d['order_id']} {d['amount_fen']} fen"
    )
    if accept:
        click.echo(
            "payable in the next settlement of this programme and merchant (voucher-admin settle --run ...)"
        )


@disputes.command("accept")
@click.argument("dispute_id")
@click.option("--note", help="A note for the merchant.")
@pass_state
def disputes_accept(state: CliState, dispute_id: str, note: str | None) -> None:
    """Accept an open dispute: its discount is paid in the next settlement, once."""
    _decide(state, dispute_id, True, note)


@disputes.command("reject")
@click.argument("dispute_id")
@click.option("--note", required=True, help="Why, for the merchant.")
@pass_state
def disputes_reject(state: CliState, dispute_id: str, note: str) -> None:
    """Reject an open dispute with a note."""
    _decide(state, dispute_id, False, note)


@main.group("report")
def report() -> None:
    """Reports for administrators."""


@report.command("counties")
@click.option("--program", "program_id", required=True, help="Programme id.")
@click.option("--out", "out_file", help="Write CSV here instead of stdout.")
@pass_state
def report_counties(state: CliState, program_id: str, out_file: str | None) -> None:
    """Sales of certified products by producing county, against the programme's targets (CSV)."""
    from voucher_service.services.reporting import counties_report, write_counties_csv

    try:
        data = counties_report(state.ctx, program_id)
    except VoucherServiceError as exc:
        _fail(exc.detail)
    if out_file is None:
        write_counties_csv(data, sys.stdout)
        return
    try:
        with open(out_file, "w", encoding="utf-8", newline="") as fh:
            write_counties_csv(data, fh)
    except OSError as exc:
        _fail(f"{out_file}: {exc.strerror or exc}")
    click.echo(f"{len(data['counties'])} counties written to {out_file}", err=True)


@main.command("audit")
@click.option("--program", "program_id", help="Check only this programme's budget identity.")
@pass_state
def audit(state: CliState, program_id: str | None) -> None:
    """Seal the audit log, then check the budget identity and the audit chain. Exit 0 when both hold."""
    from voucher_service.services.audit import run_audit

    try:
        result = run_audit(state.ctx, program_id)
    except VoucherServiceError as exc:
        _fail(exc.detail)
    for b in result.programs:
        mark = "ok" if not b.problems else "BROKEN"
        parts = " + ".join(
            f"{k} {b.ledger.get(k, 0)}"
            for k in ("unallocated", "unclaimed", "outstanding", "redeemed", "expired", "void")
        )
        click.echo(f"programme {b.program_id} {mark}: budget {b.budget_fen} = {parts}")
    click.echo(
        f"audit chain: {result.chain_entries} entries ({result.sealed} sealed now)"
        f" {'ok' if not result.chain_problems else 'BROKEN'}"
    )
    for problem in result.problems:
        click.echo(problem, err=True)
    sys.exit(0 if result.ok else 1)


@main.command("expire")
@click.option("--program", "program_id", help="Only this programme.")
@click.option("--recycle", is_flag=True, help="Return expired vouchers' value to their tiers' pools.")
@pass_state
def expire(state: CliState, program_id: str | None, recycle: bool) -> None:
    """Expire claimed vouchers past their time (and recycle them into the pool with --recycle)."""
    from voucher_service.services.expiry import expire_vouchers

    try:
        results = expire_vouchers(state.ctx, _actor(), program_id, recycle)
    except VoucherServiceError as exc:
        _fail(exc.detail)
    for r in results:
        click.echo(
            f"programme {r['program_id']}: expired {r['expired']} ({r['expired_fen']} fen), "
            f"recycled {r['recycled']} ({r['recycled_fen']} fen)"
        )
