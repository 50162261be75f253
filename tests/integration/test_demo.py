"""`voucher-admin demo`: a working demo programme, its merchants and demo consumers' vouchers."""

from __future__ import annotations

import json
import stat
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from tests.helpers import MerchantCaller, consumer_headers
from voucher_service import create_app
from voucher_service.cli import main as cli
from voucher_service.config import Settings


@pytest.fixture
def env(sqlite_settings: Settings, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    for name in ("VOUCHER_REDIS_URL", "VOUCHER_SMS_OUTBOX"):
        monkeypatch.delenv(name, raising=False)
    return {
        "VOUCHER_DATABASE_URL": sqlite_settings.database_url,
        "VOUCHER_SECRET_KEY": sqlite_settings.secret_key,
        "VOUCHER_SIGNING_KEY_PASSPHRASE": sqlite_settings.signing_key_passphrase,
        "VOUCHER_VAR_DIR": str(sqlite_settings.var_dir),
        "VOUCHER_ENV": "test",
        "VOUCHER_TEST_CHEAP_HASHING": "1",
    }


def test_the_demo_seeds_an_open_programme_once_and_it_works(
    env: dict[str, str], sqlite_settings: Settings
) -> None:
    runner = CliRunner()
    first = runner.invoke(cli, ["demo", "--if-empty", "--scale", "0.001"], env=env)
    assert first.exit_code == 0, first.output
    demo = json.loads((sqlite_settings.var_dir / "demo.json").read_text(encoding="utf-8"))
    assert stat.S_IMODE((sqlite_settings.var_dir / "demo.json").stat().st_mode) == 0o600
    assert f"program_id: {demo['program_id']}" in first.output
    assert first.output.strip().splitlines()[-1] == f"admin_token: {demo['admin_token']}"
    for m in demo["merchants"]:
        assert m["id"] in first.output and m["api_secret"] in first.output
    assert sum(m["platform"] for m in demo["merchants"]) == 1 and len(demo["merchants"]) >= 4
    again = runner.invoke(cli, ["demo", "--if-empty"], env=env)
    assert again.exit_code == 0 and "demo not seeded" in again.output

    app: Any = create_app(sqlite_settings)
    try:
        client = app.test_client()
        admin = {"Authorization": f"Bearer {demo['admin_token']}"}
        program = client.get(f"/api/v1/programs/{demo['program_id']}", headers=admin).get_json()
        assert program["status"] == "active" and program["budget_fen"] == 1_000_000_000
        assert {t["code"]: t["quantity"] for t in program["tiers"]} == {"T50": 100, "T20": 250}
        assert {"451227", "451022", "451226", "451229", "451002"} <= {
            t["county_code"] for t in program["targets"]
        }
        claimed = 2 * len(demo["consumers"]) + len(demo["platform_claims"])
        assert program["stats"]["claimed"] == claimed
        # The programme is open now: a demo consumer logs in and sees its vouchers, a merchant claims.
        consumer = demo["consumers"][0]
        headers = consumer_headers(client, str(sqlite_settings.sms_outbox), consumer["phone"])
        mine = client.get("/api/v1/consumer/vouchers", headers=headers).get_json()["vouchers"]
        assert sorted(v["voucher_id"] for v in mine) == sorted(consumer["voucher_ids"])
        platform = next(m for m in demo["merchants"] if m["platform"])
        caller = MerchantCaller(client, platform["id"], platform["api_secret"])
        resp = caller.post(
            f"/api/v1/programs/{demo['program_id']}/claims", {"tier": "T50", "holder_ref": "new"}
        )
        assert resp.status_code == 201, resp.get_json()
        if demo["registry"] is not None:
            assert demo["registry"]["created"] > 0
    finally:
        app.extensions["voucher"].engine.dispose()


def test_rotate_keys_prints_the_three_kids(env: dict[str, str], tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["rotate-keys"], env=env)
    assert result.exit_code == 0, result.output
    roles = [line.split(": ")[0] for line in result.output.strip().splitlines()]
    assert roles == ["retired", "active", "next"]
