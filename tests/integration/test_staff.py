"""Staff accounts: created by an admin or the merchant itself, argon2id hashes, login limits, audit."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pytest
from click.testing import CliRunner
from sqlalchemy import select

from tests.helpers import Admin, problem_code
from voucher_service.adapters.db.models import AuditEntry, StaffAccount
from voucher_service.cli import main as cli
from voucher_service.config import Settings
from voucher_service.domain.errors import RateLimited, Unauthorized, ValidationFailed
from voucher_service.services import staff
from voucher_service.services.context import ServiceContext
from voucher_service.services.credentials import create_admin_token

PASSWORD = "correct horse battery"


def create(admin: Admin, merchant_id: str, username: str, password: str = PASSWORD) -> Any:
    return admin.post(f"/api/v1/merchants/{merchant_id}/staff", {"username": username, "password": password})


# The tests hash with cheap argon2 parameters (tests/conftest.py); these are production's.
PRODUCTION_COST = {
    f.name: f.default for f in dataclasses.fields(Settings) if f.name.startswith("staff_password_")
}


@pytest.fixture
def strong_app(sqlite_settings: Settings) -> Any:
    """The app hashing staff passwords at production's cost."""
    from voucher_service import create_app

    app = create_app(dataclasses.replace(sqlite_settings, **PRODUCTION_COST))
    yield app
    app.extensions["voucher"].engine.dispose()


def test_an_admin_creates_a_staff_account_answered_without_its_password(strong_app: Any) -> None:
    ctx: ServiceContext = strong_app.extensions["voucher"]
    admin = Admin(strong_app.test_client(), create_admin_token(ctx, "tester"))
    m = admin.create_merchant()
    resp = create(admin, m.id, "Cashier.One")
    assert resp.status_code == 201, resp.get_json()
    body = resp.get_json()
    assert body["merchant_id"] == m.id and body["username"] == "cashier.one" and body["disabled"] is False
    assert "password" not in json.dumps(body) and PASSWORD not in resp.get_data(as_text=True)
    with ctx.sessions() as s:
        row = s.scalars(select(StaffAccount).where(StaffAccount.id == body["id"])).one()
        assert row.password_hash.startswith("$argon2id$v=19$m=65536,t=3,p=4$")
        assert PASSWORD not in row.password_hash
        actions = set(s.scalars(select(AuditEntry.action)))
    assert "staff.created" in actions


def test_the_merchant_itself_may_create_its_staff_but_not_another_merchants(admin: Admin) -> None:
    a, b = admin.create_merchant("A"), admin.create_merchant("B")
    own = a.post(f"/api/v1/merchants/{a.id}/staff", {"username": "till-1", "password": PASSWORD})
    assert own.status_code == 201, own.get_json()
    other = a.post(f"/api/v1/merchants/{b.id}/staff", {"username": "till-2", "password": PASSWORD})
    assert other.status_code == 403 and problem_code(other) == "forbidden"
    listed = a.get(f"/api/v1/merchants/{a.id}/staff")
    assert [s["username"] for s in listed.get_json()["staff"]] == ["till-1"]
    assert a.get(f"/api/v1/merchants/{b.id}/staff").status_code == 403
    anonymous = admin.client.post(
        f"/api/v1/merchants/{a.id}/staff", json={"username": "x-y-z", "password": PASSWORD}
    )
    assert anonymous.status_code == 401


def test_usernames_are_unique_across_merchants_after_nfkc_and_casefolding(admin: Admin) -> None:
    a, b = admin.create_merchant("A"), admin.create_merchant("B")
    assert create(admin, a.id, "mango").status_code == 201
    # Fullwidth capitals normalise to the same name, at the same or another merchant.
    for merchant_id in (a.id, b.id):
        again = create(admin, merchant_id, "ＭＡＮＧＯ")
        assert again.status_code == 409 and problem_code(again) == "conflict"


@pytest.mark.parametrize(
    ("username", "password", "field"),
    [
        ("ab", PASSWORD, "username"),  # too short
        ("x" * 65, PASSWORD, "username"),
        ("收银员", PASSWORD, "username"),  # not [a-z0-9._-]
        ("١٢٣٤", PASSWORD, "username"),  # Arabic-Indic digits are digits to Python, not to us
        ("has space", PASSWORD, "username"),
        ("cashier", "short", "password"),
        ("cashier", "x" * 257, "password"),
        ("cashier", "pass\tword-long", "password"),
    ],
)
def test_bad_usernames_and_passwords_are_refused_and_change_nothing(
    admin: Admin, ctx: ServiceContext, username: str, password: str, field: str
) -> None:
    m = admin.create_merchant()
    resp = create(admin, m.id, username, password)
    assert resp.status_code == 400 and problem_code(resp) == "validation_error"
    assert [e["field"] for e in resp.get_json()["errors"]] == [field]
    with ctx.sessions() as s:
        assert s.scalars(select(StaffAccount)).first() is None


def test_a_nul_in_the_password_is_refused(admin: Admin) -> None:
    m = admin.create_merchant()
    resp = create(admin, m.id, "cashier", "abc\x00defghijk")
    assert resp.status_code == 400 and problem_code(resp) == "validation_error"


def test_authenticate_accepts_the_password_and_refuses_others_the_same_way(
    admin: Admin, ctx: ServiceContext
) -> None:
    m = admin.create_merchant()
    made = create(admin, m.id, "cashier").get_json()
    who = staff.authenticate(ctx, " CASHIER ", PASSWORD, client="127.0.0.1")
    assert (who.staff_id, who.merchant_id, who.username) == (made["id"], m.id, "cashier")
    for user, pw in (("cashier", "wrong password!"), ("nobody-here", PASSWORD)):
        with pytest.raises(Unauthorized) as caught:
            staff.authenticate(ctx, user, pw, client="127.0.0.1")
        assert str(caught.value) == "Wrong username or password."
    with ctx.sessions() as s:
        actions = list(s.scalars(select(AuditEntry.action).where(AuditEntry.entity == "staff")))
    assert actions.count("staff.login_succeeded") == 1 and actions.count("staff.login_failed") == 2


def test_a_login_rehashes_a_password_hashed_at_another_cost(
    admin: Admin, ctx: ServiceContext, strong_app: Any, sqlite_settings: Settings
) -> None:
    m = admin.create_merchant()
    made = create(admin, m.id, "cashier").get_json()
    with ctx.sessions() as s:
        cheap = s.scalars(select(StaffAccount.password_hash).where(StaffAccount.id == made["id"])).one()
    assert cheap.startswith("$argon2id$v=19$m=8,t=1,p=1$")
    strong: ServiceContext = strong_app.extensions["voucher"]  # the same database, production's cost
    assert strong.settings.database_url == sqlite_settings.database_url
    assert staff.authenticate(strong, "cashier", PASSWORD, client="127.0.0.1").staff_id == made["id"]
    with ctx.sessions() as s:
        rehashed = s.scalars(select(StaffAccount.password_hash).where(StaffAccount.id == made["id"])).one()
    assert rehashed.startswith("$argon2id$v=19$m=65536,t=3,p=4$")
    assert staff.authenticate(strong, "cashier", PASSWORD, client="127.0.0.1").staff_id == made["id"]


def test_bad_login_input_is_refused_before_any_hashing(ctx: ServiceContext) -> None:
    with pytest.raises(ValidationFailed):
        staff.authenticate(ctx, "cashier", "x" * 10_000, client="127.0.0.1")
    with pytest.raises(ValidationFailed):
        staff.authenticate(ctx, "cash\x00ier", PASSWORD, client="127.0.0.1")


def test_logins_are_rate_limited_per_username_even_with_the_right_password(
    admin: Admin, ctx: ServiceContext
) -> None:
    m = admin.create_merchant()
    create(admin, m.id, "cashier")
    for _ in range(ctx.settings.staff_login_attempts):
        with pytest.raises(Unauthorized):
            staff.authenticate(ctx, "cashier", "wrong password!", client="10.0.0.1")
    with pytest.raises(RateLimited) as caught:
        staff.authenticate(ctx, "Cashier", PASSWORD, client="10.0.0.2")
    assert caught.value.retry_after >= 1


def test_logins_are_rate_limited_per_client(admin: Admin, ctx: ServiceContext) -> None:
    ctx.settings = dataclasses.replace(ctx.settings, staff_login_attempts_per_client=4)
    for i in range(ctx.settings.staff_login_attempts_per_client):
        with pytest.raises(Unauthorized):
            staff.authenticate(ctx, f"user-{i:03d}", "wrong password!", client="10.9.9.9")
    with pytest.raises(RateLimited):
        staff.authenticate(ctx, "user-new", "wrong password!", client="10.9.9.9")


def test_a_disabled_account_cannot_log_in_and_its_session_ends(admin: Admin, ctx: ServiceContext) -> None:
    m = admin.create_merchant()
    made = create(admin, m.id, "cashier").get_json()
    assert staff.active_staff(ctx, made["id"]) is not None
    resp = admin.post(f"/api/v1/merchants/{m.id}/staff/{made['id']}/disable")
    assert resp.status_code == 200 and resp.get_json()["disabled"] is True
    assert staff.active_staff(ctx, made["id"]) is None
    with pytest.raises(Unauthorized):
        staff.authenticate(ctx, "cashier", PASSWORD, client="127.0.0.1")
    other = admin.create_merchant("other")
    assert admin.post(f"/api/v1/merchants/{other.id}/staff/{made['id']}/disable").status_code == 404


def cli_env(settings: Settings) -> dict[str, str]:
    return {
        "VOUCHER_DATABASE_URL": settings.database_url,
        "VOUCHER_SECRET_KEY": settings.secret_key,
        "VOUCHER_SIGNING_KEY_PASSPHRASE": settings.signing_key_passphrase,
        "VOUCHER_VAR_DIR": str(settings.var_dir),
        "VOUCHER_ENV": "test",
        "VOUCHER_TEST_CHEAP_HASHING": "1",
        "VOUCHER_REDIS_URL": "",
    }


def test_create_staff_generates_a_password_printed_as_the_last_line(
    admin: Admin, ctx: ServiceContext, sqlite_settings: Settings
) -> None:
    m = admin.create_merchant()
    out = CliRunner().invoke(
        cli,
        ["create-staff", "--merchant", m.id, "--username", "Till-7", "--generate-password"],
        env=cli_env(sqlite_settings),
    )
    assert out.exit_code == 0, out.output
    password = out.output.strip().splitlines()[-1]
    assert len(password) >= 16
    assert staff.authenticate(ctx, "till-7", password, client="cli-test").merchant_id == m.id


def test_create_staff_reads_the_password_from_stdin_and_reports_bad_input(
    admin: Admin, ctx: ServiceContext, sqlite_settings: Settings
) -> None:
    m = admin.create_merchant()
    env = cli_env(sqlite_settings)
    ok = CliRunner().invoke(
        cli,
        ["create-staff", "--merchant", m.id, "--username", "till-8", "--password-stdin"],
        input=PASSWORD + "\n",
        env=env,
    )
    assert ok.exit_code == 0, ok.output
    assert PASSWORD not in ok.output
    assert staff.authenticate(ctx, "till-8", PASSWORD, client="cli-test").username == "till-8"
    short = CliRunner().invoke(
        cli,
        ["create-staff", "--merchant", m.id, "--username", "till-9", "--password-stdin"],
        input="short\n",
        env=env,
    )
    assert short.exit_code != 0 and "password" in short.output
    missing = CliRunner().invoke(
        cli,
        ["create-staff", "--merchant", "mch_nope", "--username", "till-9", "--generate-password"],
        env=env,
    )
    assert missing.exit_code != 0 and "mch_nope" in missing.output


@pytest.mark.postgres
def test_on_postgres_and_redis_the_username_limit_holds_across_app_instances(
    pg_admin: Admin, pg_app: Any, pg_settings: Settings
) -> None:
    from voucher_service import create_app

    m = pg_admin.create_merchant()
    username = f"pg-{m.id[-8:]}"
    assert create(pg_admin, m.id, username).status_code == 201
    other_worker = create_app(pg_settings)  # another gunicorn worker: it shares only Redis and the database
    try:
        contexts = [pg_app.extensions["voucher"], other_worker.extensions["voucher"]]
        for i in range(pg_settings.staff_login_attempts):
            with pytest.raises(Unauthorized):
                staff.authenticate(contexts[i % 2], username, "wrong password!", client=f"10.1.0.{i}")
        with pytest.raises(RateLimited):
            staff.authenticate(contexts[1], username, PASSWORD, client="10.1.1.1")
    finally:
        other_worker.extensions["voucher"].engine.dispose()


def test_the_demo_creates_a_cashier_for_each_merchant_whose_login_works(
    ctx: ServiceContext, sqlite_settings: Settings
) -> None:
    env = cli_env(sqlite_settings)
    out = CliRunner().invoke(cli, ["demo", "--scale", "0.001"], env=env)
    assert out.exit_code == 0, out.output
    demo = json.loads((sqlite_settings.var_dir / "demo.json").read_text(encoding="utf-8"))
    assert [c["merchant_id"] for c in demo["cashiers"]] == [m["id"] for m in demo["merchants"]]
    for cashier in demo["cashiers"]:
        assert f"username {cashier['username']} password {cashier['password']}" in out.output
        who = staff.authenticate(ctx, cashier["username"], cashier["password"], client="demo-test")
        assert who.merchant_id == cashier["merchant_id"]


def test_create_staff_prompts_twice_for_the_password_by_default(
    admin: Admin, ctx: ServiceContext, sqlite_settings: Settings
) -> None:
    m = admin.create_merchant()
    out = CliRunner().invoke(
        cli,
        ["create-staff", "--merchant", m.id, "--username", "till-10"],
        input=f"{PASSWORD}\n{PASSWORD}\n",
        env=cli_env(sqlite_settings),
    )
    assert out.exit_code == 0, out.output
    assert staff.authenticate(ctx, "till-10", PASSWORD, client="cli-test").username == "till-10"
