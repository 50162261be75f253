"""Set-up for the redemption tests: products written straight into the registry tables, SKU mappings,
a programme with an enrolled merchant, and checkout bodies."""

from __future__ import annotations

import datetime as dt
import secrets
from dataclasses import dataclass
from typing import Any

from tests.helpers import Admin, MerchantCaller, issue_test_voucher
from voucher_service.adapters.db.models import CertifiedProduct, ProductGtin, SkuMapping
from voucher_service.domain.gtin import normalise_gtin, with_check_digit


def random_gtin() -> str:
    """A fresh valid GTIN-13 (the registry tables are shared by the tests of a PostgreSQL session)."""
    return with_check_digit("69" + "".join(secrets.choice("0123456789") for _ in range(10)))


def bad_check_digit(gtin: str) -> str:
    """The same GTIN with a wrong check digit."""
    return gtin[:-1] + str((int(gtin[-1]) + 1) % 10)


@dataclass(frozen=True)
class Catalog:
    """GTINs of the loaded products, one per kind of verdict, and the certification numbers."""

    rice: str  # Guangxi, county 451227, active
    tea: str  # national, county 450100, active
    expired: str
    suspended: str
    revoked: str
    shenzhen: str  # 圳品, county 440300
    unknown: str  # valid, in no certification
    rice_cert: str
    tea_cert: str

    @property
    def bad(self) -> str:
        return bad_check_digit(self.rice)


def add_product(
    ctx: Any,
    certification_no: str,
    gtins: list[str],
    *,
    certification_type: str = "guangxi",
    county_code: str = "451227",
    valid_from: dt.date = dt.date(2020, 1, 1),
    valid_to: dt.date = dt.date(2099, 12, 31),
    status: str = "active",
) -> None:
    """Write one certified product and its GTINs as an import would have."""
    now = ctx.now()
    with ctx.sessions.begin() as s:
        s.add(
            CertifiedProduct(
                certification_no=certification_no,
                certification_type=certification_type,
                product_name=certification_no,
                category="粮油",
                supplier_id="SUP-1",
                county_code=county_code,
                county_name="巴马瑶族自治县",
                gtins=gtins,
                valid_from=valid_from,
                valid_to=valid_to,
                status=status,
                version=1,
                row_sha256="0" * 64,
                registry_seq=1,
                updated_at=now,
            )
        )
        s.flush()
        for g in gtins:
            s.add(ProductGtin(gtin=normalise_gtin(g), certification_no=certification_no))


def map_sku(ctx: Any, merchant_id: str, sku: str, certification_no: str, status: str = "approved") -> None:
    """Record a merchant SKU mapping in the given state."""
    with ctx.sessions.begin() as s:
        s.add(
            SkuMapping(
                merchant_id=merchant_id,
                sku=sku,
                certification_no=certification_no,
                status=status,
                requested_at=ctx.now(),
            )
        )


def load_registry(ctx: Any) -> Catalog:
    """Products for every verdict, under fresh GTINs and certification numbers."""
    tag = secrets.token_hex(4)
    c = Catalog(
        rice=random_gtin(),
        tea=random_gtin(),
        expired=random_gtin(),
        suspended=random_gtin(),
        revoked=random_gtin(),
        shenzhen=random_gtin(),
        unknown=random_gtin(),
        rice_cert=f"GX-RICE-{tag}",
        tea_cert=f"NAT-TEA-{tag}",
    )
    add_product(ctx, c.rice_cert, [c.rice])
    add_product(ctx, c.tea_cert, [c.tea], certification_type="national", county_code="450100")
    add_product(ctx, f"GX-OLD-{tag}", [c.expired], valid_to=dt.date(2021, 12, 31))
    add_product(ctx, f"GX-SUS-{tag}", [c.suspended], status="suspended")
    add_product(ctx, f"GX-REV-{tag}", [c.revoked], status="revoked")
    add_product(ctx, f"SZ-{tag}", [c.shenzhen], certification_type="shenzhen", county_code="440300")
    return c


def item(gtin: str | None, quantity: int = 1, unit_price_fen: int = 5000, **extra: Any) -> dict[str, Any]:
    """A basket line."""
    line: dict[str, Any] = {"quantity": quantity, "unit_price_fen": unit_price_fen, **extra}
    if gtin is not None:
        line["gtin"] = gtin
    return line


def checkout(
    token: str,
    items: list[dict[str, Any]],
    order_id: str | None = None,
    channel: str = "online",
    terminal_id: str | None = None,
) -> dict[str, Any]:
    """A POST /redemptions body."""
    return {
        "token": token,
        "order_id": order_id or f"M-{secrets.token_hex(6)}",
        "channel": channel,
        "terminal_id": terminal_id,
        "items": items,
    }


def idem() -> dict[str, str]:
    """A fresh Idempotency-Key header."""
    return {"Idempotency-Key": secrets.token_hex(16)}


@dataclass
class World:
    """A running programme, an enrolled merchant, and the registry loaded."""

    admin: Admin
    ctx: Any
    program: dict[str, Any]
    merchant: MerchantCaller
    catalog: Catalog

    @property
    def program_id(self) -> str:
        return str(self.program["id"])

    def voucher(self, tier: str = "T50", **kw: Any) -> tuple[str, str]:
        """Issue a voucher of this programme: (voucher_id, token)."""
        return issue_test_voucher(self.ctx, self.program_id, tier, **kw)

    def redeem(
        self,
        token: str,
        items: list[dict[str, Any]],
        merchant: MerchantCaller | None = None,
        key: str | None = None,
        **kw: Any,
    ) -> Any:
        """POST /redemptions with a fresh (or the given) Idempotency-Key."""
        headers = {"Idempotency-Key": key} if key else idem()
        return (merchant or self.merchant).post(
            "/api/v1/redemptions", checkout(token, items, **kw), headers=headers
        )

    def reverse(
        self,
        redemption_id: str,
        body: dict[str, Any] | None = None,
        merchant: MerchantCaller | None = None,
        key: str | None = None,
    ) -> Any:
        """POST /redemptions/{id}/reversals."""
        headers = {"Idempotency-Key": key} if key else idem()
        return (merchant or self.merchant).post(
            f"/api/v1/redemptions/{redemption_id}/reversals", body or {}, headers=headers
        )


def make_world(admin: Admin, ctx: Any, **program_overrides: Any) -> World:
    """A programme (activated), an enrolled merchant with both channels, and a freshly loaded registry."""
    program = admin.create_program(**program_overrides)
    merchant = admin.create_merchant(enrol_in=program["id"])
    return World(admin, ctx, program, merchant, load_registry(ctx))


def assert_books_balance(ctx: Any, program_id: str) -> dict[str, int]:
    """Each ledger bucket holds exactly the face value of the vouchers in the matching state."""
    from sqlalchemy import func, select

    from voucher_service.adapters.db.models import LedgerEntry, Voucher

    with ctx.sessions() as s:
        balances: dict[str, int] = {}
        rows = s.execute(
            select(LedgerEntry.from_bucket, LedgerEntry.to_bucket, LedgerEntry.amount_fen).where(
                LedgerEntry.program_id == program_id
            )
        )
        for src, dst, amount in rows:
            balances[src] = balances.get(src, 0) - amount
            balances[dst] = balances.get(dst, 0) + amount
        by_status: dict[str, Any] = dict(
            s.execute(
                select(Voucher.status, func.sum(Voucher.face_value_fen))
                .where(Voucher.program_id == program_id)
                .group_by(Voucher.status)
            ).all()
        )
    for bucket, status in (
        ("unclaimed", "available"),
        ("outstanding", "issued"),
        ("redeemed", "redeemed"),
        ("expired", "expired"),
    ):
        assert balances.get(bucket, 0) == int(by_status.get(status) or 0), (bucket, balances, by_status)
    return balances
