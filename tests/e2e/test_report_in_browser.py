"""End to end: vouchers claimed and redeemed through the API, a statement reconciled by the CLI, and
the resulting report.html opened in a real headless Chromium with no network: its charts render."""

from __future__ import annotations

import datetime as dt
import json
import re
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest

from tests.helpers import sms_code
from voucher_service.cli import CliState, run
from voucher_service.domain.clock import local_date
from voucher_service.domain.registry_generator import generate_registry, registry_csv
from voucher_service.services import registry

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def _certified_gtins(rows: list[list[str]], today: dt.date) -> list[str]:
    # Columns of §5: ... county_code(6), county_name(7), gtins(8), valid_from(9), valid_to(10), status(11)
    return [r[8].split("|")[0] for r in rows if r[11] == "active" and r[9] <= today.isoformat() <= r[10]][:4]


@pytest.mark.skipif(CHROMIUM is None, reason="make test installs chromium (scripts/ensure_browser.sh)")
def test_reconciliation_report_renders_its_charts_in_a_browser(app, admin, tmp_path):
    ctx = app.extensions["voucher"]
    rows = generate_registry(seed=7)
    registry.import_products(ctx, registry_csv(rows), "test")
    gtins = _certified_gtins(rows, local_date(dt.datetime.now(dt.UTC)))  # the programme's calendar day
    program = admin.create_program()
    shop = admin.create_merchant("百色芒果直营店", enrol_in=program["id"])
    client = app.test_client()

    redeemed = []
    for i, phone in enumerate(["13800138000", "13800138001", "13800138002"]):
        assert client.post("/api/v1/consumer/otp", json={"phone": phone}).status_code == 202
        session = client.post(
            "/api/v1/consumer/sessions",
            json={"phone": phone, "code": sms_code(ctx.settings.sms_outbox, phone)},
        )
        auth = {"Authorization": "Bearer " + session.get_json()["token"]}
        claim = client.post(f"/api/v1/programs/{program['id']}/claims", json={"tier": "T50"}, headers=auth)
        assert claim.status_code == 201, claim.get_json()
        items = [
            {"gtin": gtins[i], "name": "巴马香米 5kg", "quantity": 2, "unit_price_fen": 9000},
            {"gtin": "6970000000007", "name": "not certified", "quantity": 1, "unit_price_fen": 500},
        ]
        resp = shop.post(
            "/api/v1/redemptions",
            {"token": claim.get_json()["token"], "order_id": f"ORD-{i}", "channel": "online", "items": items},
            headers={"Idempotency-Key": f"order-{i}"},
        )
        assert resp.status_code == 201, resp.get_json()
        redeemed.append(resp.get_json())

    statement = tmp_path / "statement.csv"
    lines = ["order_id,voucher_id,redeemed_at,discount_fen,status"]
    for r in redeemed[:2]:
        lines.append(f"{r['order_id']},{r['voucher_id']},{r['redeemed_at']},{r['discount_fen']},redeemed")
    lines.append(f"ORD-X,{uuid.uuid4()},{redeemed[0]['redeemed_at']},5000,redeemed")  # never redeemed here
    statement.write_text("\n".join(lines) + "\n", encoding="utf-8")
    state = CliState()
    state._ctx = ctx
    out = tmp_path / "out"
    code = run(
        [
            "reconcile",
            "--program",
            program["id"],
            "--merchant",
            shop.id,
            "--statement",
            str(statement),
            "--out",
            str(out),
        ],
        obj=state,
    )
    assert code == 1  # one redemption missing from the statement, one unknown to the ledger
    summary = json.loads((out / "summary.json").read_text())
    assert summary["matched"] == 2
    assert summary["categories"]["missing_in_statement"] == 1
    assert summary["categories"]["missing_in_ledger"] == 1

    report = out / "report.html"
    assert "<script src=" not in report.read_text(encoding="utf-8")  # self-contained: nothing fetched
    dom = subprocess.run(
        [CHROMIUM, *FLAGS, "--virtual-time-budget=5000", "--dump-dom", report.as_uri()],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    for chart in ("daily", "counties"):
        canvas = re.search(rf'<canvas[^>]*id="{chart}"[^>]*>', dom)
        assert canvas is not None, dom[:500]
        # Chart.js sizes the canvas it draws on; a canvas the library never reached has no style.
        assert "display: block" in canvas.group(0), canvas.group(0)
    shot = tmp_path / "report.png"
    subprocess.run(
        [CHROMIUM, *FLAGS, "--window-size=1200,1600", f"--screenshot={shot}", report.as_uri()],
        capture_output=True,
        timeout=120,
        check=True,
    )
    assert shot.stat().st_size > 20_000  # a page with text and two drawn charts, not a blank one
    Path("/tmp/voucher-report-screenshot.png").write_bytes(shot.read_bytes())
