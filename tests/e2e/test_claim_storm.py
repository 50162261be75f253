"""A claim rush through a real gunicorn (2 workers x 8 threads): exactly the tier's quantity is issued."""

from __future__ import annotations

import json
import secrets
import threading
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import requests
from sqlalchemy import func, select

from benchmarks._server import gunicorn_server
from tests.conftest import REDIS_URL, make_settings, prepare
from tests.helpers import merchant_headers, program_body
from voucher_service.adapters.db.models import LedgerEntry, Voucher
from voucher_service.api.admin_schemas import ProgramIn
from voucher_service.config import Settings
from voucher_service.services import merchants, programs

QUANTITY = 150
FACE_FEN = 5000
THREADS = 32
ATTEMPTS = 640

pytestmark = pytest.mark.slow


def _seed(settings: Settings) -> tuple[str, dict[str, Any]]:
    """Migrate, then create an active programme with one tier of QUANTITY and an enrolled platform."""
    ctx = prepare(settings)
    try:
        tiers = [{"code": "T50", "face_value_fen": FACE_FEN, "min_spend_fen": 15000, "quantity": QUANTITY}]
        spec = ProgramIn.model_validate_json(
            json.dumps(program_body(tiers=tiers, per_person_limit=1))
        ).to_spec()
        program = programs.create_program(ctx, spec, "test")
        platform = merchants.create_merchant(ctx, "扶贫电商平台", ["online"], True, "test")
        merchants.enrol_merchant(ctx, program["id"], platform["id"], "test")
        programs.activate_program(ctx, program["id"], "test")
    finally:
        ctx.engine.dispose()
    return program["id"], platform


def _server_env(settings: Settings, redis_url: str | None) -> dict[str, str]:
    return {
        "VOUCHER_DATABASE_URL": settings.database_url,
        "VOUCHER_REDIS_URL": redis_url or "",
        "VOUCHER_REDIS_PREFIX": settings.redis_prefix,
        "VOUCHER_ENV": "development",  # with the audit sealer running, as in production
        "VOUCHER_SECRET_KEY": settings.secret_key,
        "VOUCHER_SIGNING_KEY_PASSPHRASE": settings.signing_key_passphrase,
        "VOUCHER_VAR_DIR": str(settings.var_dir),
        "VOUCHER_SMS_OUTBOX": settings.sms_outbox or "",
        "VOUCHER_CLAIM_RATE_PER_MINUTE": "1000000",
    }


def _storm(base_url: str, program_id: str, platform: dict[str, Any]) -> list[tuple[int, str, str | None]]:
    """ATTEMPTS claims for distinct holders from THREADS threads; return (status, code, voucher_id)."""
    path = f"/api/v1/programs/{program_id}/claims"
    local = threading.local()
    start = threading.Barrier(THREADS)
    run_id = secrets.token_hex(4)

    def claim(i: int) -> tuple[int, str, str | None]:
        if not hasattr(local, "http"):
            local.http = requests.Session()
            start.wait()  # every thread starts at once
        body = json.dumps({"tier": "T50", "holder_ref": f"storm-{run_id}-{i}"}).encode()
        headers = merchant_headers(platform["id"], platform["api_secret"], "POST", path, body)
        resp = local.http.post(base_url + path, data=body, headers=headers, timeout=60)
        payload = resp.json()
        return resp.status_code, payload.get("code", ""), payload.get("voucher_id")

    with ThreadPoolExecutor(THREADS) as pool:
        # the first THREADS tasks land one per thread, so the barrier fills up
        return list(pool.map(claim, range(ATTEMPTS)))


def _check(results: list[tuple[int, str, str | None]], settings: Settings, program_id: str) -> None:
    statuses = Counter(status for status, _, _ in results)
    assert not [s for s in statuses if s >= 500], statuses
    issued_ids = [vid for status, _, vid in results if status == 201]
    assert len(issued_ids) == QUANTITY, statuses
    refused = Counter(code for status, code, _ in results if status != 201)
    assert refused == {"tier_sold_out": ATTEMPTS - QUANTITY}, refused
    assert len(set(issued_ids)) == QUANTITY
    ctx = prepare(settings)
    try:
        with ctx.sessions() as s:
            rows = s.execute(select(Voucher.id, Voucher.status).where(Voucher.program_id == program_id)).all()
            claimed_fen = s.scalar(
                select(func.sum(LedgerEntry.amount_fen)).where(
                    LedgerEntry.program_id == program_id, LedgerEntry.kind == "claim"
                )
            )
    finally:
        ctx.engine.dispose()
    by_status = Counter(status for _, status in rows)
    assert by_status == {"issued": QUANTITY}
    assert {vid for vid, _ in rows} == set(issued_ids)
    assert claimed_fen == QUANTITY * FACE_FEN


@pytest.mark.postgres
def test_a_claim_storm_on_postgres_and_redis_issues_exactly_the_tier(
    tmp_path: Path, pg_database_factory: Callable[[], str]
) -> None:
    settings = make_settings(tmp_path, pg_database_factory(), REDIS_URL)
    program_id, platform = _seed(settings)
    with gunicorn_server(
        _server_env(settings, REDIS_URL), workers=2, threads=8, log_path=tmp_path / "gunicorn.log"
    ) as base_url:
        results = _storm(base_url, program_id, platform)
    _check(results, settings, program_id)


def test_a_claim_storm_on_a_shared_sqlite_file_issues_exactly_the_tier(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, f"sqlite:///{tmp_path / 'storm.sqlite3'}")
    program_id, platform = _seed(settings)
    with gunicorn_server(
        _server_env(settings, None), workers=2, threads=8, log_path=tmp_path / "gunicorn.log"
    ) as base_url:
        results = _storm(base_url, program_id, platform)
    _check(results, settings, program_id)
