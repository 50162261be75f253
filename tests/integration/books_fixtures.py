"""Writing the books directly, as the claim, redemption and offline services would, for the
reconciliation, report and audit tests: vouchers change state, and every change gets its ledger
movement, so the budget identity holds unless a test breaks it on purpose."""

from __future__ import annotations

import datetime as dt
import secrets
import uuid
from dataclasses import dataclass
from typing import Any

import pytest
from sqlalchemy import select

from tests.helpers import Admin, MerchantCaller
from voucher_service.adapters.db.models import OfflineRecord, Redemption, RedemptionLine, Reversal, Voucher
from voucher_service.cli import CliState, run
from voucher_service.services import ledger
from voucher_service.services.context import ServiceContext

DAY1 = dt.datetime(2026, 12, 5, 4, 0, tzinfo=dt.UTC)  # 12:00 on 5 December in Asia/Shanghai
BAMA, BAISE = "451227", "451002"


@dataclass
class Redeemed:
    """A redemption written by the fixture."""

    id: str
    voucher_id: str
    order_id: str
    discount_fen: int
    order_total_fen: int
    redeemed_at: dt.datetime


class Books:
    """Claims, redemptions, reversals and offline conflicts of one programme and merchant."""

    def __init__(self, ctx: ServiceContext, program_id: str, merchant_id: str) -> None:
        self.ctx = ctx
        self.program_id = program_id
        self.merchant_id = merchant_id

    def claim(self, tier: str = "T50", at: dt.datetime = DAY1, days: int = 30) -> str:
        """Issue an available voucher of the tier; return its id."""
        with self.ctx.sessions.begin() as s:
            v = s.scalars(
                select(Voucher)
                .where(
                    Voucher.program_id == self.program_id,
                    Voucher.tier_code == tier,
                    Voucher.status == "available",
                )
                .limit(1)
            ).one()
            v.status, v.holder_hash = "issued", secrets.token_hex(32)
            v.claimed_at, v.valid_from, v.expires_at = at, at, at + dt.timedelta(days=days)
            v.status_changed_at = at
            ledger.move(
                s,
                program_id=self.program_id,
                kind="claim",
                from_bucket="unclaimed",
                to_bucket="outstanding",
                amount_fen=v.face_value_fen,
                at=at,
                voucher_id=v.id,
            )
            return v.id

    def redeem(
        self,
        order_id: str,
        *,
        tier: str = "T50",
        at: dt.datetime = DAY1,
        voucher_id: str | None = None,
        lines: list[tuple[str | None, int, int]] | None = None,
        merchant_id: str | None = None,
    ) -> Redeemed:
        """Redeem a new or given voucher; lines are (county or None if ineligible, quantity, unit price)."""
        voucher_id = voucher_id or self.claim(tier, at - dt.timedelta(hours=1))
        lines = lines if lines is not None else [(BAMA, 2, 7500), (None, 1, 3000)]
        rid = str(uuid.uuid4())
        with self.ctx.sessions.begin() as s:
            v = s.get(Voucher, voucher_id)
            assert v is not None and v.status == "issued"
            v.status, v.status_changed_at = "redeemed", at
            eligible = [q * p for c, q, p in lines if c is not None]
            total = sum(q * p for _, q, p in lines)
            shares = _split(v.face_value_fen, eligible)
            s.add(
                Redemption(
                    id=rid,
                    voucher_id=v.id,
                    program_id=self.program_id,
                    merchant_id=merchant_id or self.merchant_id,
                    order_id=order_id,
                    channel="online",
                    terminal_id=None,
                    order_total_fen=total,
                    eligible_total_fen=sum(eligible),
                    discount_fen=v.face_value_fen,
                    clawed_back_fen=0,
                    status="active",
                    redeemed_at=at,
                    receipt="VR1:fixture",
                    source="online",
                )
            )
            s.flush()
            share = iter(shares)
            for index, (county, quantity, unit) in enumerate(lines):
                s.add(
                    RedemptionLine(
                        redemption_id=rid,
                        index=index,
                        gtin=None,
                        sku=f"sku-{index}",
                        name="item",
                        quantity=quantity,
                        unit_price_fen=unit,
                        line_total_fen=quantity * unit,
                        eligible=county is not None,
                        reason=None if county else "not_certified",
                        certification_no=None,
                        county_code=county,
                        discount_share_fen=next(share) if county else 0,
                        returned_quantity=0,
                    )
                )
            ledger.move(
                s,
                program_id=self.program_id,
                kind="redeem",
                from_bucket="outstanding",
                to_bucket="redeemed",
                amount_fen=v.face_value_fen,
                at=at,
                voucher_id=v.id,
                ref=rid,
            )
            return Redeemed(rid, v.id, order_id, v.face_value_fen, total, at)

    def reverse(self, redemption_id: str, at: dt.datetime = DAY1) -> None:
        """Reverse a redemption in full: the whole discount is clawed back, the voucher is issued again."""
        with self.ctx.sessions.begin() as s:
            r = s.get(Redemption, redemption_id)
            assert r is not None
            v = s.get(Voucher, r.voucher_id)
            assert v is not None
            r.status, r.clawed_back_fen = "reversed", r.discount_fen
            v.status, v.status_changed_at = "issued", at
            s.add(
                Reversal(
                    id=str(uuid.uuid4()),
                    redemption_id=r.id,
                    merchant_id=r.merchant_id,
                    lines=None,
                    clawback_fen=r.discount_fen,
                    created_at=at,
                )
            )
            ledger.move(
                s,
                program_id=self.program_id,
                kind="clawback",
                from_bucket="redeemed",
                to_bucket="outstanding",
                amount_fen=r.discount_fen,
                at=at,
                voucher_id=v.id,
                ref=r.id,
            )

    def return_units(self, redemption_id: str, index: int, quantity: int) -> None:
        """Record returned units of a line without a clawback (the minimum spend is still met)."""
        with self.ctx.sessions.begin() as s:
            line = s.get(RedemptionLine, (redemption_id, index))
            assert line is not None
            line.returned_quantity += quantity

    def offline_conflict(
        self, voucher_id: str, order_id: str, discount_fen: int, seq: int = 1, at: dt.datetime = DAY1
    ) -> None:
        """An offline record that redeemed an already redeemed voucher: a double spend."""
        with self.ctx.sessions.begin() as s:
            s.add(
                OfflineRecord(
                    merchant_id=self.merchant_id,
                    terminal_id="till-1",
                    seq=seq,
                    record_hash="0" * 64,
                    prev_hash="0" * 64,
                    voucher_id=voucher_id,
                    program_id=self.program_id,
                    order_id=order_id,
                    discount_fen=discount_fen,
                    redeemed_at=at,
                    payload={},
                    status="conflict",
                    code="voucher_already_redeemed",
                    redemption_id=None,
                    received_at=at + dt.timedelta(hours=2),
                )
            )


def _split(amount: int, weights: list[int]) -> list[int]:
    from voucher_service.domain.money import split_proportionally

    return split_proportionally(amount, weights) if weights else []


@dataclass
class BooksEnv:
    """A programme with one enrolled merchant on one of the two databases."""

    backend: str
    ctx: ServiceContext
    admin: Admin
    program: dict[str, Any]
    merchant: MerchantCaller
    books: Books

    def cli(self, *args: str) -> int:
        """Run a voucher-admin command against this environment's database."""
        state = CliState()
        state._ctx = self.ctx
        return run(list(args), obj=state)


BACKENDS = ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]


def open_books(request: pytest.FixtureRequest, backend: str | None = None, **program: Any) -> BooksEnv:
    """Build a BooksEnv on the given backend, or the one the (parametrised) request asks for."""
    backend = backend or request.param
    app = request.getfixturevalue("app" if backend == "sqlite" else "pg_app")
    admin = request.getfixturevalue("admin" if backend == "sqlite" else "pg_admin")
    ctx = app.extensions["voucher"]
    created = admin.create_program(**program)
    merchant = admin.create_merchant(enrol_in=created["id"])
    return BooksEnv(backend, ctx, admin, created, merchant, Books(ctx, created["id"], merchant.id))
