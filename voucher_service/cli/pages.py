"""`voucher-admin pages`: where the pages are and how to log in to them with the demo (for `make run`)."""

from __future__ import annotations

import json
from typing import Any

import click

from voucher_service.cli import CliState, main, pass_state
from voucher_service.domain.states import ProductStatus


def _sample_gtin(state: CliState) -> str | None:
    """A barcode of a certified product of the registry, to try /check with."""
    import datetime as dt

    from voucher_service.domain.clock import local_date
    from voucher_service.services import registry_queries

    today = local_date(dt.datetime.now(dt.UTC)).isoformat()
    cursor = None
    for _page in range(5):
        try:
            products, cursor = registry_queries.list_products(state.ctx, limit=200, cursor=cursor)
        except Exception:  # an empty or missing database: no sample
            return None
        for p in products:
            if (
                p["status"] == ProductStatus.ACTIVE
                and p["valid_from"] <= today <= p["valid_to"]
                and p["gtins"]
            ):
                return str(p["gtins"][0]).lstrip("0").rjust(13, "0")
        if cursor is None:
            break
    return None


@main.command("pages")
@click.option(
    "--base-url", default="http://localhost:8000", show_default=True, help="Where the server answers."
)
@pass_state
def pages(state: CliState, base_url: str) -> None:
    """Print the URLs of the pages and the demo logins (from var/demo.json)."""
    base = base_url.rstrip("/")
    settings = state.ctx.settings
    demo: dict[str, Any] = {}
    path = settings.var_dir / "demo.json"
    if path.exists():
        demo = json.loads(path.read_text(encoding="utf-8"))
    gtin = _sample_gtin(state)
    outbox = settings.sms_outbox or "(no VOUCHER_SMS_OUTBOX: codes go to the server log)"
    lines = [
        "Pages (Chinese by default; add ?lang=en for English):",
        f"  {base}/            open programmes and the ways in",
        f"  {base}/check       product check" + (f" (try {gtin})" if gtin else ""),
        f"  {base}/wallet/     residents: log in by SMS code, claim, show the QR",
        f"  {base}/checkout    cashiers: scan a voucher, redeem, receipt",
        f"  {base}/console     administrators: dashboard, programmes, merchants, registry, reconciliation",
        "Demo logins:",
    ]
    phones = [c["phone"] for c in demo.get("consumers", [])]
    if phones:
        lines.append(f"  resident phones: {', '.join(phones)} (one-time codes land in {outbox})")
    for c in demo.get("cashiers", []):
        lines.append(
            f"  cashier of {c.get('merchant_name', c.get('merchant_id', '?'))}: "
            f"{c['username']} / {c['password']}"
        )
    if demo.get("admin_token"):
        lines.append(f"  console admin token: {demo['admin_token']}")
    if not demo:
        lines.append(f"  (no demo: {path} is missing; `voucher-admin demo` seeds one)")
    click.echo("\n".join(lines))
