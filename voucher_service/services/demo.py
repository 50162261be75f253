"""A realistic demo programme modelled on Longgang district's poverty-alleviation vouchers.

Shenzhen's Longgang district is paired with counties of Baise and Hechi in Guangxi; its programme
gives 50-off-150 and 20-off-60 vouchers for certified products from those counties. The demo opens
today for about 90 days, so it works whenever it is seeded. Each merchant gets a demo cashier (a
staff account for /checkout) with a generated password, written to demo.json with the other secrets.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

from sqlalchemy import select

from voucher_service.adapters.db.models import Program
from voucher_service.domain.clock import day_bounds, local_date
from voucher_service.domain.programs import ProgramSpec, TierSpec
from voucher_service.services import issuance, merchants, programs, staff
from voucher_service.services.consumers import phone_holder
from voucher_service.services.context import ServiceContext
from voucher_service.services.credentials import create_admin_token
from voucher_service.services.keys import ensure_signing_keys

ACTOR = "cli:demo"
TIMEZONE = "Asia/Shanghai"
# Paired counties (Baise and Hechi, Guangxi) and their sales targets, in fen.
TARGETS = (
    ("451227", 100_000_000),  # 巴马瑶族自治县
    ("451022", 80_000_000),  # 田东县
    ("451226", 60_000_000),  # 环江毛南族自治县
    ("451229", 60_000_000),  # 大化瑶族自治县
    ("451002", 50_000_000),  # 右江区
    ("451031", 40_000_000),  # 隆林各族自治县
)
MERCHANTS = (
    ("华润万家龙岗中心城店", ("online", "offline"), False),
    ("百色芒果直营店（龙岗布吉店）", ("offline",), False),
    ("天虹超市（深圳连锁）", ("online", "offline"), False),
    ("深圳消费帮扶电商平台", ("online",), True),
)
# One demo cashier per merchant (same order), for the /checkout page.
CASHIERS = ("huarun-cashier", "mango-cashier", "tianhong-cashier", "platform-cashier")
# Fictitious demo consumers (13800138xxx is the well-known test range).
DEMO_PHONES = ("13800138000", "13800138001", "13800138002")
PLATFORM_USERS = ("demo-user-1", "demo-user-2")


def demo_spec(now: dt.datetime, scale: float = 1.0) -> ProgramSpec:
    """The demo programme: 10,000,000 yuan, T50 x 100,000 and T20 x 250,000, open from today."""
    starts_at, _ = day_bounds(local_date(now, TIMEZONE), TIMEZONE)
    return ProgramSpec(
        name="龙岗区扶贫产品消费券（演示）",
        budget_fen=1_000_000_000,
        starts_at=starts_at,
        ends_at=starts_at + dt.timedelta(days=90) - dt.timedelta(seconds=1),
        voucher_validity_days=30,
        per_person_limit=2,
        channels=("online", "offline"),
        tiers=(
            TierSpec("T50", 5000, 15000, max(1, round(100_000 * scale))),
            TierSpec("T20", 2000, 6000, max(1, round(250_000 * scale))),
        ),
        certification_types=("national", "guangxi", "shenzhen"),
        county_codes=None,
        targets=TARGETS,
        max_offline_fen_per_terminal=500_000,
        max_offline_hours=24,
        timezone=TIMEZONE,
    )


def has_programme(ctx: ServiceContext) -> bool:
    """Whether any programme exists already."""
    with ctx.sessions() as s:
        return s.scalar(select(Program.id).limit(1)) is not None


def import_demo_registry(ctx: ServiceContext) -> tuple[dict[str, Any] | None, str]:
    """Import the generated seed registry when the registry area is installed; say what happened."""
    try:
        from voucher_service.domain.registry_generator import generate_registry, registry_csv
        from voucher_service.services.registry import import_products
    except ImportError as exc:
        return None, f"registry not imported ({exc.name} is not available)"
    result = import_products(ctx, registry_csv(generate_registry(1)), ACTOR)
    note = f"registry: {result.created} created, {result.updated} updated, {result.unchanged} unchanged"
    return asdict(result), note


def seed_demo(ctx: ServiceContext, *, scale: float = 1.0, out_path: Path | None = None) -> dict[str, Any]:
    """Create, enrol and activate the demo programme with its merchants and a few claims; write demo.json."""
    ensure_signing_keys(ctx)
    registry, registry_note = import_demo_registry(ctx)
    program = programs.create_program(ctx, demo_spec(ctx.now(), scale), ACTOR)
    pid = program["id"]
    shops, cashiers = [], []
    for (name, channels, platform), username in zip(MERCHANTS, CASHIERS, strict=True):
        m = merchants.create_merchant(ctx, name, list(channels), platform, ACTOR)
        merchants.enrol_merchant(ctx, pid, m["id"], ACTOR)
        shops.append({k: m[k] for k in ("id", "name", "channels", "platform", "api_secret")})
        password = staff.generate_password()
        staff.create_staff(ctx, m["id"], username, password, ACTOR)
        cashiers.append(
            {"merchant_id": m["id"], "merchant_name": name, "username": username, "password": password}
        )
    programs.activate_program(ctx, pid, ACTOR)
    catalog = issuance.ProgramCatalog()
    consumers = []
    for phone in DEMO_PHONES:
        claimant = issuance.Claimant(phone_holder(ctx, phone), ACTOR)
        ids = [
            issuance.claim_voucher(ctx, pid, tier, claimant, catalog=catalog)["voucher_id"]
            for tier in ("T50", "T20")
        ]
        consumers.append({"phone": phone, "voucher_ids": ids})
    platform_id = next(s["id"] for s in shops if s["platform"])
    platform_claims = []
    for ref in PLATFORM_USERS:
        holder = ctx.box.keyed_hash("platform", f"{platform_id}:{ref}")
        claimant = issuance.Claimant(holder, f"merchant:{platform_id}", platform_id)
        out = issuance.claim_voucher(ctx, pid, "T20", claimant, catalog=catalog)
        platform_claims.append({"holder_ref": ref, "voucher_id": out["voucher_id"]})
    demo = {
        "program_id": pid,
        "admin_token": create_admin_token(ctx, "demo"),
        "merchants": shops,
        "consumers": consumers,
        "cashiers": cashiers,
        "platform_claims": platform_claims,
        "registry": registry,
        "registry_note": registry_note,
    }
    path = out_path or ctx.settings.var_dir / "demo.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(demo, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    path.chmod(0o600)  # it holds an admin token and merchant secrets
    demo["path"] = str(path)
    return demo
