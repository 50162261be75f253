"""Consumer login by SMS code: hashed codes, expiry, attempt and send limits, sessions, own vouchers."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
import time
from typing import Any

import pytest
from sqlalchemy import LargeBinary, select, update

from tests.helpers import Admin, consumer_headers, problem_code, sms_code
from voucher_service.adapters.db.models import Base, Voucher
from voucher_service.services.context import ServiceContext
from voucher_service.services.credentials import create_admin_token

PHONE = "13912345678"


@pytest.fixture(params=["app", pytest.param("pg_app", marks=pytest.mark.postgres)])
def service(request: pytest.FixtureRequest) -> Any:
    """The service on SQLite with the in-process store, then on PostgreSQL + Redis."""
    return request.getfixturevalue(request.param)


def _ctx(app: Any) -> ServiceContext:
    return app.extensions["voucher"]  # type: ignore[no-any-return]


def _tune(app: Any, **settings: Any) -> ServiceContext:
    ctx = _ctx(app)
    ctx.settings = dataclasses.replace(ctx.settings, **settings)
    return ctx


def _store_values(ctx: ServiceContext) -> dict[str, bytes]:
    """Every key and value the FastStore holds for this app (in-process dict or this app's Redis prefix)."""
    store: Any = ctx.store
    if hasattr(store, "_data"):
        return {k: v for k, (v, _exp) in store._data.items()}
    redis = store._r
    prefix = ctx.settings.redis_prefix
    return {k.decode(): redis.get(k) or b"" for k in redis.scan_iter(match=prefix + "*")}


def _send(client: Any, phone: str = PHONE) -> Any:
    return client.post("/api/v1/consumer/otp", json={"phone": phone})


def _login(client: Any, code: str, phone: str = PHONE) -> Any:
    return client.post("/api/v1/consumer/sessions", json={"phone": phone, "code": code})


def _wrong(code: str) -> str:
    return f"{(int(code) + 1) % 1_000_000:06d}"


def test_a_code_is_sent_stored_only_hashed_and_opens_a_session(service: Any) -> None:
    ctx, client = _ctx(service), service.test_client()
    resp = _send(client, "+86 139-1234-5678")
    assert resp.status_code == 202
    assert resp.get_json() == {"sent": True, "expires_in": ctx.settings.otp_ttl_s}
    assert ctx.settings.sms_outbox
    code = sms_code(ctx.settings.sms_outbox, PHONE)
    assert len(code) == 6 and code.isdigit()
    stored = _store_values(ctx)
    assert stored, "the code must be kept in the store"
    for key, value in stored.items():
        for secret in (code, PHONE):
            assert secret not in key and secret.encode() not in value, key
    ttl = dt.timedelta(seconds=ctx.settings.session_ttl_s)
    before = ctx.now().replace(microsecond=0)
    session = _login(client, code)
    after = ctx.now()
    assert session.status_code == 201
    body = session.get_json()
    assert set(body) == {"token", "expires_at"}
    expires = dt.datetime.fromisoformat(body["expires_at"].replace("Z", "+00:00"))
    # The session lasts exactly its TTL from the login, whichever clock second the login fell in.
    assert before + ttl <= expires <= after + ttl
    mine = client.get("/api/v1/consumer/vouchers", headers={"Authorization": f"Bearer {body['token']}"})
    assert mine.status_code == 200 and mine.get_json() == {"vouchers": []}
    # A code opens one session only.
    assert problem_code(_login(client, code)) == "unauthorized"


@pytest.mark.parametrize(
    "phone",
    [
        "12345678901",
        "1391234567",
        "139123456789",
        "+1 4155550100",
        "一三九",
        "",
        "1391234567٨",
        "139١٢٣٤٥٦٧٨",
        "1391234567²",
    ],  # digits to Python, not to a phone network
)
def test_numbers_that_are_not_mainland_mobiles_are_validation_errors(client: Any, phone: str) -> None:
    resp = _send(client, phone)
    assert resp.status_code == 400 and problem_code(resp) == "validation_error"
    assert [e["field"] for e in resp.get_json()["errors"]] == ["phone"]


def test_fullwidth_digits_are_the_same_phone(service: Any) -> None:
    """A Chinese input method may type fullwidth digits: the same number, the same holder, one limit."""
    from voucher_service.services.consumers import normalise_phone

    assert normalise_phone("１３９１２３４５６７８") == "13912345678"
    assert normalise_phone("＋８６ １３９１２３４５６７８") == "13912345678"


def test_a_malformed_code_is_a_validation_error_and_a_wrong_one_is_unauthorized(
    client: Any, ctx: Any
) -> None:
    _send(client)
    code = sms_code(ctx.settings.sms_outbox, PHONE)
    assert problem_code(_login(client, "12345")) == "validation_error"
    wrong = _login(client, _wrong(code))
    assert wrong.status_code == 401 and problem_code(wrong) == "unauthorized"
    assert _login(client, code).status_code == 201


def test_a_code_without_a_send_is_unauthorized(client: Any) -> None:
    assert problem_code(_login(client, "123456")) == "unauthorized"


def test_codes_expire(service: Any) -> None:
    ctx = _tune(service, otp_ttl_s=1)
    client = service.test_client()
    _send(client)
    code = sms_code(ctx.settings.sms_outbox or "", PHONE)
    time.sleep(2.1)
    resp = _login(client, code)
    assert resp.status_code == 401 and problem_code(resp) == "unauthorized"


def test_after_the_allowed_attempts_the_code_is_burned(service: Any) -> None:
    ctx = _tune(service, otp_max_attempts=3)
    client = service.test_client()
    _send(client)
    code = sms_code(ctx.settings.sms_outbox or "", PHONE)
    assert [_login(client, _wrong(code)).status_code for _ in range(3)] == [401, 401, 401]
    assert _login(client, code).status_code == 401
    # A new code brings a new budget of attempts.
    _send(client)
    fresh = sms_code(ctx.settings.sms_outbox or "", PHONE)
    assert [_login(client, _wrong(fresh)).status_code for _ in range(2)] == [401, 401]
    assert _login(client, fresh).status_code == 201


def test_sending_codes_is_rate_limited_per_phone(service: Any) -> None:
    _tune(service, otp_sends_per_hour=2)
    client = service.test_client()
    assert [_send(client).status_code for _ in range(2)] == [202, 202]
    limited = _send(client, "+8613912345678")  # the same phone, written differently
    assert limited.status_code == 429 and problem_code(limited) == "rate_limited"
    assert 1 <= int(limited.headers["Retry-After"]) <= 3600
    assert _send(client, "13912345679").status_code == 202


def test_the_consumer_sees_its_own_vouchers_newest_first_with_expiry_shown(service: Any) -> None:
    ctx = _ctx(service)
    admin = Admin(service.test_client(), create_admin_token(ctx, "tester"))
    program = admin.create_program(per_person_limit=3)
    client = service.test_client()
    me = consumer_headers(client, ctx.settings.sms_outbox or "", PHONE)
    other = consumer_headers(client, ctx.settings.sms_outbox or "", "13700000001")
    path = f"/api/v1/programs/{program['id']}/claims"
    first = client.post(path, json={"tier": "T50"}, headers=me).get_json()
    second = client.post(path, json={"tier": "T20"}, headers=me).get_json()
    client.post(path, json={"tier": "T20"}, headers=other)
    past = ctx.now() - dt.timedelta(hours=1)
    with ctx.sessions.begin() as s:
        # an older claim, and one that has run out
        s.execute(
            update(Voucher)
            .where(Voucher.id == first["voucher_id"])
            .values(claimed_at=past - dt.timedelta(days=1), expires_at=past)
        )
    listed = client.get("/api/v1/consumer/vouchers", headers=me).get_json()["vouchers"]
    assert [v["voucher_id"] for v in listed] == [second["voucher_id"], first["voucher_id"]]
    assert [v["status"] for v in listed] == ["issued", "expired"]
    fields = {
        "voucher_id",
        "program_id",
        "tier",
        "face_value_fen",
        "min_spend_fen",
        "status",
        "valid_from",
        "expires_at",
        "token",
        "qr_png_url",
        "qr_svg_url",
    }
    assert set(listed[0]) == fields
    assert {k: listed[0][k] for k in fields - {"status"}} == second
    assert problem_code(client.get("/api/v1/consumer/vouchers")) == "unauthorized"
    assert problem_code(client.get("/api/v1/consumer/vouchers", headers=admin.headers)) == "forbidden"


def test_no_phone_number_is_kept_or_logged_in_clear(service: Any, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    ctx = _ctx(service)
    admin = Admin(service.test_client(), create_admin_token(ctx, "tester"))
    program = admin.create_program()
    client = service.test_client()
    me = consumer_headers(client, ctx.settings.sms_outbox or "", PHONE)
    assert (
        client.post(f"/api/v1/programs/{program['id']}/claims", json={"tier": "T50"}, headers=me).status_code
        == 201
    )
    platform = admin.create_merchant("平台", ("online",), platform=True, enrol_in=program["id"])
    other = "13600001111"
    resp = platform.post(
        f"/api/v1/programs/{program['id']}/claims", {"tier": "T20", "holder_ref": "u9", "holder_phone": other}
    )
    assert resp.status_code == 201
    found = []
    with ctx.sessions() as s:
        for table in Base.metadata.sorted_tables:
            for row in s.execute(select(table)):
                for column, value in zip(table.columns, row, strict=True):
                    text = (
                        value.hex()
                        if isinstance(column.type, LargeBinary) and value
                        else json.dumps(value, default=str, ensure_ascii=False)
                    )
                    if isinstance(value, bytes):
                        text += value.decode("latin-1")
                    if column.name in ("gtin", "gtins"):  # product codes: 690123456789x holds '12345678'
                        continue
                    if PHONE in text or other in text or PHONE[-8:] in text or other[-8:] in text:
                        found.append(f"{table.name}.{column.name}")
    assert found == []
    assert not [r for r in caplog.records if PHONE in r.getMessage() or other in r.getMessage()]
    assert not [k for k, v in _store_values(ctx).items() if PHONE in k or other in k or PHONE.encode() in v]
