"""Pages for anyone: `/` (the open programmes and the ways in) and `/check` (is this product certified?)."""

from __future__ import annotations

import datetime as dt
import threading
import time
from typing import Any

from flask import render_template, request
from flask_babel import gettext as _

from voucher_service.api.auth import service_context
from voucher_service.domain.clock import local_date
from voucher_service.domain.gtin import VALID_LENGTHS, check_digit
from voucher_service.domain.programs import window_verdict
from voucher_service.domain.states import ProductStatus, ProgramStatus
from voucher_service.services import programs, registry_queries
from voucher_service.services.context import ServiceContext
from voucher_service.services.programs import sold_out_key
from voucher_service.web import page_blueprint

bp = page_blueprint("site", __name__)
OPEN_CACHE_TTL_S = 10.0
MAX_SHOWN_PROGRAMMES = 20
FULLWIDTH_DIGITS = str.maketrans("０１２３４５６７８９", "0123456789")
GTIN_SEPARATORS = str.maketrans("", "", " -\u00a0\u3000")
MAX_GTIN_INPUT = 40


class OpenProgrammes:
    """The open programmes with what is left per tier, kept a few seconds per process: `/` and the
    wallet are read by many, and counting a programme's vouchers is not a per-request query."""

    def __init__(self, ttl_s: float = OPEN_CACHE_TTL_S) -> None:
        self._ttl = ttl_s
        self._lock = threading.Lock()
        self._entry: tuple[float, list[dict[str, Any]]] | None = None

    def get(self, ctx: ServiceContext) -> list[dict[str, Any]]:
        entry = self._entry
        now = time.monotonic()
        if entry is not None and entry[0] > now:
            return entry[1]
        value = _open_programmes(ctx)
        with self._lock:
            self._entry = (now + self._ttl, value)
        return value


def _open_programmes(ctx: ServiceContext) -> list[dict[str, Any]]:
    now = ctx.now()
    out = []
    for summary in programs.list_programs(ctx):
        if summary["status"] != ProgramStatus.ACTIVE:
            continue
        starts = dt.datetime.fromisoformat(summary["starts_at"].replace("Z", "+00:00"))
        ends = dt.datetime.fromisoformat(summary["ends_at"].replace("Z", "+00:00"))
        if window_verdict(summary["status"], starts, ends, now) is not None:
            continue
        program = programs.get_program(ctx, summary["id"])
        remaining = program["stats"]["remaining_by_tier"]
        for tier in program["tiers"]:
            left = int(remaining.get(tier["code"], 0))
            gated = ctx.store.get(sold_out_key(program["id"], tier["code"])) is not None
            tier["remaining"] = 0 if gated else left
        out.append(program)
        if len(out) >= MAX_SHOWN_PROGRAMMES:
            break
    return out


def open_programmes() -> list[dict[str, Any]]:
    """The programmes open for claims now, each tier with `remaining` (0: sold out)."""
    from flask import current_app

    cache = current_app.extensions.setdefault("voucher_open_programmes", OpenProgrammes())
    return cache.get(service_context())  # type: ignore[no-any-return]


@bp.get("/")
def home() -> str:
    return render_template("public/home.html", programmes=open_programmes())


# ---------------------------------------------------------------- product check

MARKS = {
    "national": "国家扶贫产品认定",
    "guangxi": "广西扶贫产品标识",
    "shenzhen": "圳品",
}


def mark_label(kind: str) -> str:
    """The mark's own (Chinese) name, with an English gloss on English pages."""
    glosses = {
        "national": _("National certification of poverty-alleviation products"),
        "guangxi": _("Guangxi poverty-alleviation product mark"),
        "shenzhen": _("Shenzhen quality mark"),
    }
    name = MARKS.get(kind, kind)
    gloss = glosses.get(kind)
    from voucher_service.web.i18n import page_language

    return name if page_language() == "zh" or not gloss else f"{name} ({gloss})"


def parse_gtin(raw: str) -> tuple[str | None, str | None]:
    """(the GTIN, None) or (None, why it is not one), in words for a person."""
    text = raw.translate(FULLWIDTH_DIGITS).translate(GTIN_SEPARATORS)
    if not text:
        return None, _("Type or scan the barcode number.")
    if len(text) > MAX_GTIN_INPUT or not (text.isascii() and text.isdigit()):
        return None, _("A barcode number has only the digits 0-9.")
    if len(text) not in VALID_LENGTHS:
        return None, _("A barcode has 8, 12, 13 or 14 digits; this one has %(n)d.", n=len(text))
    expected = check_digit(text[:-1])
    if expected != int(text[-1]):
        return None, _(
            "The last digit (the check digit) should be %(expected)d, not %(got)s: a digit was mistyped or misread.",
            expected=expected,
            got=text[-1],
        )
    return text, None


def verdict_of(product: dict[str, Any], today: dt.date) -> dict[str, Any]:
    """Whether a registry entry certifies the product today, and why not."""
    valid_from = dt.date.fromisoformat(product["valid_from"])
    valid_to = dt.date.fromisoformat(product["valid_to"])
    reason = None
    if product["status"] == ProductStatus.SUSPENDED:
        reason = _("The certification is suspended.")
    elif product["status"] == ProductStatus.REVOKED:
        reason = _("The certification was revoked.")
    elif today < valid_from:
        reason = _("The certification is not valid yet.")
    elif today > valid_to:
        reason = _("The certification has expired.")
    return {
        "product": product,
        "certified": reason is None,
        "reason": reason,
        "mark": mark_label(product["certification_type"]),
    }


@bp.get("/check")
def check() -> str:
    raw = request.args.get("gtin", "")[:200]
    gtin, problem = (None, None)
    results: list[dict[str, Any]] = []
    if raw:
        gtin, problem = parse_gtin(raw)
        if gtin is not None:
            ctx = service_context()
            products, _cursor = registry_queries.list_products(ctx, gtin=gtin, limit=20)
            today = local_date(ctx.now())
            results = [verdict_of(p, today) for p in products]
            results.sort(key=lambda r: not r["certified"])
    return render_template(
        "public/check.html",
        raw=raw,
        gtin=gtin,
        problem=problem,
        results=results,
        certified=any(r["certified"] for r in results),
    )
