"""Through the real SDK and the real app over HTTP: the server, not the till, has the last word on offline
records (programme suspended meanwhile, offline cap), and a till's refresh() is recorded by the server."""

from __future__ import annotations

import json
import sqlite3
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from merchant_sdk import OfflineTerminal, VoucherClient
from tests.sdk.conftest import LiveApp
from tests.sdk.test_real_app import BASKET, REGISTRY_CSV
from voucher_service.adapters.db.models import Terminal
from voucher_service.services import registry


def _shop(
    live_app: LiveApp, tmp_path: Path, **offline: int
) -> tuple[dict[str, Any], VoucherClient, OfflineTerminal]:
    registry.import_products(live_app.ctx, REGISTRY_CSV.encode(), "sdk-tests")
    limits = {"max_offline_fen_per_terminal": 500_000, "max_offline_hours": 24, **offline}
    program = live_app.admin.create_program(offline=limits)
    merchant = live_app.admin.create_merchant(platform=True, enrol_in=program["id"])
    client = live_app.client(merchant.id, merchant.secret)
    terminal = OfflineTerminal(client, "till-S", str(tmp_path / "till-S.sqlite3"))
    return program, client, terminal


@pytest.fixture
def cleanup() -> Iterator[list[Any]]:
    things: list[Any] = []
    yield things
    for thing in things:
        thing.close()


def _token(client: VoucherClient, program: dict[str, Any]) -> str:
    return client.claim(program["id"], "T50", holder_ref=f"user-{uuid.uuid4().hex[:10]}").token


def test_refresh_is_recorded_by_the_server(live_app: LiveApp, tmp_path: Path, cleanup: list[Any]) -> None:
    program, client, terminal = _shop(live_app, tmp_path)
    cleanup += [terminal, client]
    terminal.refresh()
    with live_app.ctx.sessions() as s:
        row = s.get(Terminal, (client.merchant_id, "till-S"))
        assert row is not None and row.last_refresh_at is not None
        first = row.last_refresh_at
    terminal.refresh()
    with live_app.ctx.sessions() as s:
        assert s.get(Terminal, (client.merchant_id, "till-S")).last_refresh_at >= first


def test_a_redemption_made_offline_after_a_suspension_is_rejected_at_sync(
    live_app: LiveApp, tmp_path: Path, cleanup: list[Any]
) -> None:
    program, client, terminal = _shop(live_app, tmp_path)
    cleanup += [terminal, client]
    token = _token(client, program)
    terminal.refresh()
    assert live_app.admin.post(f"/api/v1/programs/{program['id']}/suspend").status_code == 200
    # The till is offline: it cannot know, and redeems.
    offline = terminal.redeem(token, BASKET, order_id="AFTER-SUSPENSION")
    assert offline.discount_fen == 5000
    report = terminal.sync()
    assert [(r.seq, r.status, r.code) for r in report.results] == [(1, "rejected", "program_not_active")]


def test_the_server_enforces_the_offline_cap_on_a_till_whose_own_check_was_bypassed(
    live_app: LiveApp, tmp_path: Path, cleanup: list[Any]
) -> None:
    program, client, terminal = _shop(live_app, tmp_path, max_offline_fen_per_terminal=5000)
    cleanup += [client]
    tokens = [_token(client, program) for _ in range(3)]
    terminal.refresh()
    terminal.close()
    # A modified till: its cached programme limits raised far above the programme's.
    path = str(tmp_path / "till-S.sqlite3")
    db = sqlite3.connect(path)
    (data,) = db.execute("SELECT data FROM programs WHERE id = ?", (program["id"],)).fetchone()
    policy = json.loads(data)
    policy["offline"]["max_offline_fen_per_terminal"] = 10**9
    db.execute("UPDATE programs SET data = ? WHERE id = ?", (json.dumps(policy), program["id"]))
    db.commit()
    db.close()
    terminal = OfflineTerminal(client, "till-S", path)
    cleanup.append(terminal)
    for i, token in enumerate(tokens):
        terminal.redeem(token, BASKET, order_id=f"CAP-{i}")
    report = terminal.sync()
    assert [(r.seq, r.status, r.code) for r in report.results] == [
        (1, "accepted", None),
        (2, "rejected", "offline_limit_exceeded"),
        (3, "rejected", "offline_limit_exceeded"),
    ]
