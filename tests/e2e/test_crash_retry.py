"""A worker dies between the redemption's commit and its reply; the retry with the same Idempotency-Key
gets that redemption back, never a second one (gunicorn, 2 workers, PostgreSQL)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import requests
from sqlalchemy import select

from benchmarks._server import gunicorn_server, settings_env
from tests.helpers import Admin, merchant_headers
from tests.redemption_support import checkout, item, make_world
from voucher_service.adapters.db.models import IdempotencyRecord, Redemption, Voucher
from voucher_service.config import Settings


def post_signed(base: str, merchant: Any, path: str, raw: bytes, key: str) -> requests.Response:
    headers = merchant_headers(merchant.id, merchant.secret, "POST", path, raw)
    headers["Idempotency-Key"] = key
    return requests.post(base + path, data=raw, headers=headers, timeout=30)


@pytest.mark.slow
@pytest.mark.postgres
def test_a_retry_after_a_crash_after_commit_returns_the_same_redemption(
    pg_app: Any, pg_admin: Admin, pg_settings: Settings, tmp_path: Path
) -> None:
    ctx = pg_app.extensions["voucher"]
    world = make_world(pg_admin, ctx)
    voucher_id, token = world.voucher()
    path = "/api/v1/redemptions"
    raw = json.dumps(checkout(token, [item(world.catalog.rice, 3, 5000)], order_id="CRASH-1")).encode()
    crash_log, retry_log = tmp_path / "crashing.log", tmp_path / "retry.log"

    with gunicorn_server(
        settings_env(pg_settings, VOUCHER_TEST_CRASH_AFTER_COMMIT="1"), log_path=crash_log
    ) as base:
        with pytest.raises(requests.ConnectionError):
            post_signed(base, world.merchant, path, raw, "crash-key")
    with ctx.sessions() as s:
        committed = list(s.scalars(select(Redemption).where(Redemption.voucher_id == voucher_id)))
        assert len(committed) == 1, "the redemption committed before the worker died"
        stored = s.get(IdempotencyRecord, (world.merchant.id, "crash-key"))
        assert stored is not None and stored.state == "done"

    with gunicorn_server(settings_env(pg_settings), log_path=retry_log) as base:
        retry = post_signed(base, world.merchant, path, raw, "crash-key")
        assert retry.status_code == 201, retry.text
        assert retry.json()["redemption_id"] == committed[0].id
        again = post_signed(base, world.merchant, path, raw, "crash-key")
        assert again.content == retry.content
        other_key = post_signed(base, world.merchant, path, raw, "another-key")
        assert other_key.status_code == 409 and other_key.json()["code"] == "voucher_already_redeemed"
    with ctx.sessions() as s:
        assert [r.id for r in s.scalars(select(Redemption).where(Redemption.voucher_id == voucher_id))] == [
            committed[0].id
        ]
        assert s.get(Voucher, voucher_id).status == "redeemed"
    assert "exited with code 1" in crash_log.read_text()  # the worker really died, as in a crash


def test_the_crash_switch_is_honoured_only_in_the_test_environment(tmp_path: Path) -> None:
    base = {
        "VOUCHER_VAR_DIR": str(tmp_path),
        "VOUCHER_TEST_CRASH_AFTER_COMMIT": "1",
        "VOUCHER_SECRET_KEY": "s" * 40,
        "VOUCHER_SIGNING_KEY_PASSPHRASE": "p" * 20,
    }
    assert Settings.from_env({**base, "VOUCHER_ENV": "test"}).crash_after_commit is True
    assert Settings.from_env({**base, "VOUCHER_ENV": "development"}).crash_after_commit is False
    assert (
        Settings.from_env(
            {**base, "VOUCHER_ENV": "test", "VOUCHER_TEST_CRASH_AFTER_COMMIT": "0"}
        ).crash_after_commit
        is False
    )
