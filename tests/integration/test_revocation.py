"""Credentials end: admin tokens are revoked, merchant secrets rotated, residents' sessions ended,
by API and by voucher-admin, each in the audit log."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from click.testing import CliRunner
from sqlalchemy import select

from tests.helpers import Admin, consumer_headers, problem_code
from voucher_service.adapters.db.models import AuditEntry
from voucher_service.api.openapi import build_openapi
from voucher_service.cli import main as cli
from voucher_service.services.credentials import create_admin_token

PHONE = "13800138000"


@pytest.fixture
def cli_env(app: Any, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    settings = app.extensions["voucher"].settings
    for name in ("VOUCHER_REDIS_URL", "VOUCHER_SMS_OUTBOX"):
        monkeypatch.delenv(name, raising=False)
    return {
        "VOUCHER_DATABASE_URL": settings.database_url,
        "VOUCHER_SECRET_KEY": settings.secret_key,
        "VOUCHER_SIGNING_KEY_PASSPHRASE": settings.signing_key_passphrase,
        "VOUCHER_VAR_DIR": str(settings.var_dir),
        "VOUCHER_ENV": "test",
        "VOUCHER_TEST_CHEAP_HASHING": "1",
    }


def _actions(ctx: Any) -> list[str]:
    with ctx.sessions() as s:
        return list(s.scalars(select(AuditEntry.action)))


def _programs(client: Any, token: str) -> int:
    return int(client.get("/api/v1/programs", headers={"Authorization": f"Bearer {token}"}).status_code)


def test_revoke_admin_token_by_name_ends_every_token_of_that_name(
    app: Any, client: Any, cli_env: Any
) -> None:
    ctx = app.extensions["voucher"]
    first, second, other = (create_admin_token(ctx, n) for n in ("alice", "alice", "bob"))
    assert _programs(client, first) == 200
    result = CliRunner().invoke(cli, ["revoke-admin-token", "--name", "alice"], env=cli_env)
    assert result.exit_code == 0, result.output
    assert "2 admin token(s) revoked" in result.output
    assert _programs(client, first) == 401 and _programs(client, second) == 401
    assert _programs(client, other) == 200
    assert _actions(ctx).count("admin_token.revoked") == 2


def test_revoke_admin_token_by_value_and_unknown_ones(app: Any, client: Any, cli_env: Any) -> None:
    ctx = app.extensions["voucher"]
    leaked, kept = create_admin_token(ctx, "carol"), create_admin_token(ctx, "carol")
    result = CliRunner().invoke(cli, ["revoke-admin-token", "--token", leaked], env=cli_env)
    assert result.exit_code == 0 and "1 admin token(s) revoked" in result.output
    assert _programs(client, leaked) == 401 and _programs(client, kept) == 200
    again = CliRunner().invoke(cli, ["revoke-admin-token", "--token", leaked], env=cli_env)
    assert again.exit_code == 1 and "0 admin token(s) revoked" in again.output
    assert CliRunner().invoke(cli, ["revoke-admin-token"], env=cli_env).exit_code == 2


def test_rotating_a_merchant_secret_by_api_returns_it_once_and_the_old_one_stops(
    app: Any, admin: Admin
) -> None:
    ctx = app.extensions["voucher"]
    merchant = admin.create_merchant()
    assert merchant.get("/api/v1/redemptions").status_code == 200
    resp = admin.post(f"/api/v1/merchants/{merchant.id}/secret")
    assert resp.status_code == 200
    body = resp.get_json()
    assert body["merchant_id"] == merchant.id and body["api_secret"].startswith("vsk_")
    assert body["api_secret"] != merchant.secret
    assert problem_code(merchant.get("/api/v1/redemptions")) == "unauthorized"
    merchant.secret = body["api_secret"]
    assert merchant.get("/api/v1/redemptions").status_code == 200
    assert (
        "api_secret" not in admin.get(f"/api/v1/merchants/{merchant.id}").get_json()
        or admin.get(f"/api/v1/merchants/{merchant.id}").get_json()["api_secret"] is None
    )
    assert "merchant.secret_rotated" in _actions(ctx)


def test_only_an_admin_may_rotate_a_secret_and_an_unknown_merchant_is_not_found(
    app: Any, admin: Admin
) -> None:
    merchant = admin.create_merchant()
    assert merchant.post(f"/api/v1/merchants/{merchant.id}/secret").status_code in (401, 403)
    assert merchant.get("/api/v1/redemptions").status_code == 200  # unchanged
    assert problem_code(admin.post("/api/v1/merchants/mch_0000000000000000/secret")) == "not_found"
    assert problem_code(admin.post("/api/v1/merchants/nonsense/secret")) == "not_found"


def test_rotate_merchant_secret_cli_prints_the_new_secret_last(app: Any, admin: Admin, cli_env: Any) -> None:
    merchant = admin.create_merchant()
    result = CliRunner().invoke(cli, ["rotate-merchant-secret", "--merchant", merchant.id], env=cli_env)
    assert result.exit_code == 0, result.output
    new_secret = result.output.strip().splitlines()[-1]
    assert new_secret.startswith("vsk_") and new_secret != merchant.secret
    app.extensions["voucher_merchants"].forget(merchant.id)  # another process; its cache lives 30 s
    assert problem_code(merchant.get("/api/v1/redemptions")) == "unauthorized"
    merchant.secret = new_secret
    assert merchant.get("/api/v1/redemptions").status_code == 200
    missing = CliRunner().invoke(
        cli, ["rotate-merchant-secret", "--merchant", "mch_0000000000000000"], env=cli_env
    )
    assert missing.exit_code == 1


def test_logout_ends_only_the_calling_session(app: Any, client: Any) -> None:
    ctx = app.extensions["voucher"]
    phone_a = consumer_headers(client, ctx.settings.sms_outbox, PHONE)
    phone_b = consumer_headers(client, ctx.settings.sms_outbox, PHONE)
    assert client.get("/api/v1/consumer/vouchers", headers=phone_a).status_code == 200
    resp = client.delete("/api/v1/consumer/sessions", headers=phone_a)
    assert resp.status_code == 204
    assert problem_code(client.get("/api/v1/consumer/vouchers", headers=phone_a)) == "unauthorized"
    assert client.get("/api/v1/consumer/vouchers", headers=phone_b).status_code == 200
    assert problem_code(client.delete("/api/v1/consumer/sessions", headers=phone_a)) == "unauthorized"
    assert problem_code(client.delete("/api/v1/consumer/sessions")) == "unauthorized"
    assert "consumer_session.ended" in _actions(ctx)


@pytest.mark.postgres
def test_end_sessions_ends_every_session_of_the_resident_and_a_new_login_works(
    pg_app: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # On PostgreSQL and Redis, the CLI sharing the server's Redis as in production (the server keeps
    # each resident's session state there for a minute; the CLI drops it).
    ctx = pg_app.extensions["voucher"]
    client = pg_app.test_client()
    monkeypatch.delenv("VOUCHER_SMS_OUTBOX", raising=False)
    cli_env = {
        "VOUCHER_DATABASE_URL": ctx.settings.database_url,
        "VOUCHER_REDIS_URL": ctx.settings.redis_url,
        "VOUCHER_REDIS_PREFIX": ctx.settings.redis_prefix,
        "VOUCHER_SECRET_KEY": ctx.settings.secret_key,
        "VOUCHER_SIGNING_KEY_PASSPHRASE": ctx.settings.signing_key_passphrase,
        "VOUCHER_VAR_DIR": str(ctx.settings.var_dir),
        "VOUCHER_ENV": "test",
        "VOUCHER_TEST_CHEAP_HASHING": "1",
    }
    phone = "138" + str(uuid.uuid4().int)[:8]  # the PostgreSQL database is shared by the session's tests
    mine = [consumer_headers(client, ctx.settings.sms_outbox, phone) for _ in range(2)]
    someone_else = consumer_headers(client, ctx.settings.sms_outbox, "139" + str(uuid.uuid4().int)[:8])
    for headers in mine:
        assert client.get("/api/v1/consumer/vouchers", headers=headers).status_code == 200
    spaced = f"+86 {phone[:3]}-{phone[3:7]}-{phone[7:]}"
    result = CliRunner().invoke(cli, ["end-sessions", "--phone", spaced], env=cli_env)
    assert result.exit_code == 0, result.output
    for headers in mine:
        assert problem_code(client.get("/api/v1/consumer/vouchers", headers=headers)) == "unauthorized"
    assert client.get("/api/v1/consumer/vouchers", headers=someone_else).status_code == 200
    fresh = consumer_headers(client, ctx.settings.sms_outbox, phone)
    assert client.get("/api/v1/consumer/vouchers", headers=fresh).status_code == 200
    assert "consumer_sessions.ended_all" in _actions(ctx)
    bad = CliRunner().invoke(cli, ["end-sessions", "--phone", "12345"], env=cli_env)
    assert bad.exit_code == 2


def test_the_new_routes_are_in_the_openapi_document() -> None:
    paths = build_openapi()["paths"]
    assert "delete" in paths["/api/v1/consumer/sessions"]
    assert "post" in paths["/api/v1/merchants/{merchant_id}/secret"]
