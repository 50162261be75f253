"""Claiming vouchers: consumer and platform flows, every refusal, the sold-out gate, ledger and audit."""

from __future__ import annotations

import dataclasses
import datetime as dt
import threading
from collections import Counter
from dataclasses import dataclass
from typing import Any

import pytest
from sqlalchemy import event, func, select

from tests.helpers import Admin, MerchantCaller, consumer_headers, problem_code
from voucher_service.adapters.db.models import AuditEntry, HolderClaimCount, LedgerEntry, Voucher
from voucher_service.domain.clock import parse_rfc3339, rfc3339
from voucher_service.services import audit_log
from voucher_service.services.context import ServiceContext
from voucher_service.services.credentials import create_admin_token
from voucher_service.services.tokens import verify_voucher_token

CLAIM_FIELDS = {
    "voucher_id",
    "program_id",
    "tier",
    "face_value_fen",
    "min_spend_fen",
    "valid_from",
    "expires_at",
    "token",
    "qr_png_url",
    "qr_svg_url",
}
PHONE = "13800138000"


@dataclass
class Env:
    app: Any
    ctx: ServiceContext
    admin: Admin

    @property
    def client(self) -> Any:
        return self.app.test_client()

    def consumer(self, phone: str = PHONE) -> dict[str, str]:
        assert self.ctx.settings.sms_outbox
        return consumer_headers(self.client, self.ctx.settings.sms_outbox, phone)

    def platform(self, program_id: str | None, platform: bool = True) -> MerchantCaller:
        return self.admin.create_merchant("扶贫电商平台", ("online",), platform=platform, enrol_in=program_id)

    def claim(self, program_id: str, headers: dict[str, str], tier: str = "T50", **extra: Any) -> Any:
        return self.client.post(
            f"/api/v1/programs/{program_id}/claims", json={"tier": tier, **extra}, headers=headers
        )


def _env(app: Any) -> Env:
    ctx = app.extensions["voucher"]
    return Env(app, ctx, Admin(app.test_client(), create_admin_token(ctx, "tester")))


@pytest.fixture(params=["app", pytest.param("pg_app", marks=pytest.mark.postgres)])
def env(request: pytest.FixtureRequest) -> Env:
    """The service on SQLite, then on PostgreSQL + Redis."""
    return _env(request.getfixturevalue(request.param))


@pytest.fixture
def pg_env(pg_app: Any) -> Env:
    return _env(pg_app)


def _iso(moment: dt.datetime) -> str:
    return rfc3339(moment) or ""


def test_a_consumer_claim_answers_exactly_the_contract_body(env: Env) -> None:
    program = env.admin.create_program()
    before = env.ctx.now()
    resp = env.claim(program["id"], env.consumer())
    assert resp.status_code == 201, resp.get_json()
    body = resp.get_json()
    assert set(body) == CLAIM_FIELDS
    vid = body["voucher_id"]
    assert (body["program_id"], body["tier"], body["face_value_fen"], body["min_spend_fen"]) == (
        program["id"],
        "T50",
        5000,
        15000,
    )
    assert body["qr_png_url"] == f"/api/v1/vouchers/{vid}/qr.png"
    assert body["qr_svg_url"] == f"/api/v1/vouchers/{vid}/qr.svg"
    valid_from, expires_at = parse_rfc3339(body["valid_from"]), parse_rfc3339(body["expires_at"])
    assert before <= valid_from <= env.ctx.now()
    assert expires_at - valid_from == dt.timedelta(days=30)
    claims = verify_voucher_token(env.ctx, body["token"])
    assert (
        claims.voucher_id,
        claims.program_id,
        claims.tier,
        claims.face_value_fen,
        claims.min_spend_fen,
    ) == (vid, program["id"], "T50", 5000, 15000)
    assert (claims.nbf, claims.exp) == (int(valid_from.timestamp()), int(expires_at.timestamp()))
    with env.ctx.sessions() as s:
        v = s.get(Voucher, vid)
        assert v is not None and v.status == "issued" and v.token == body["token"]
        assert v.holder_hash == env.ctx.box.keyed_hash("phone", PHONE)
        assert v.claimed_by_merchant_id is None
    stats = env.admin.get(f"/api/v1/programs/{program['id']}").get_json()["stats"]
    assert stats["claimed"] == 1 and stats["remaining_by_tier"]["T50"] == 99


def test_a_platform_claims_for_its_user_and_the_holder_is_keyed_by_platform_and_ref(env: Env) -> None:
    program = env.admin.create_program()
    platform = env.platform(program["id"])
    resp = platform.post(f"/api/v1/programs/{program['id']}/claims", {"tier": "T20", "holder_ref": "user-42"})
    assert resp.status_code == 201, resp.get_json()
    body = resp.get_json()
    assert set(body) == CLAIM_FIELDS and body["tier"] == "T20" and body["face_value_fen"] == 2000
    with env.ctx.sessions() as s:
        v = s.get(Voucher, body["voucher_id"])
        assert v is not None
        assert v.holder_hash == env.ctx.box.keyed_hash("platform", f"{platform.id}:user-42")
        assert v.claimed_by_merchant_id == platform.id


def test_validity_is_capped_at_the_programmes_end(env: Env) -> None:
    ends_at = env.ctx.now() + dt.timedelta(days=5, hours=3)
    program = env.admin.create_program(ends_at=_iso(ends_at))
    body = env.claim(program["id"], env.consumer()).get_json()
    assert body["expires_at"] == _iso(ends_at)
    assert verify_voucher_token(env.ctx, body["token"]).exp == int(ends_at.timestamp())


def test_a_claim_moves_face_value_to_outstanding_and_is_audited_without_the_full_holder_hash(
    env: Env,
) -> None:
    program = env.admin.create_program()
    vid = env.claim(program["id"], env.consumer()).get_json()["voucher_id"]
    holder = env.ctx.box.keyed_hash("phone", PHONE)
    with env.ctx.sessions() as s:
        moves = s.scalars(select(LedgerEntry).where(LedgerEntry.voucher_id == vid)).all()
        assert [(m.kind, m.from_bucket, m.to_bucket, m.amount_fen) for m in moves] == [
            ("claim", "unclaimed", "outstanding", 5000)
        ]
        entries = s.scalars(select(AuditEntry).where(AuditEntry.entity_id == vid)).all()
        assert [e.action for e in entries] == ["voucher.claimed"]
        assert entries[0].data["holder"] == holder[:12]
        assert holder not in str(entries[0].data) and holder not in entries[0].actor
    with env.ctx.sessions.begin() as s:
        audit_log.seal(s)
    with env.ctx.sessions() as s:
        assert audit_log.verify_chain(s).ok


def test_the_per_person_limit_counts_across_consumer_and_platform_with_the_same_phone(env: Env) -> None:
    program = env.admin.create_program()  # per_person_limit 2
    platform = env.platform(program["id"])
    path = f"/api/v1/programs/{program['id']}/claims"
    assert env.claim(program["id"], env.consumer()).status_code == 201
    with_phone = {"tier": "T20", "holder_ref": "u1", "holder_phone": "+86 138-0013-8000"}
    assert platform.post(path, with_phone).status_code == 201
    third = env.claim(program["id"], env.consumer(), tier="T20")
    assert third.status_code == 409 and problem_code(third) == "claim_limit_reached"
    assert problem_code(platform.post(path, with_phone)) == "claim_limit_reached"
    # Without a phone the platform's user is a person of its own.
    assert platform.post(path, {"tier": "T20", "holder_ref": "u1"}).status_code == 201
    holder = env.ctx.box.keyed_hash("phone", PHONE)
    with env.ctx.sessions() as s:
        assert s.get(HolderClaimCount, (program["id"], holder)).claimed == 2  # type: ignore[union-attr]
        mine = (Voucher.holder_hash == holder, Voucher.program_id == program["id"])
        assert s.scalar(select(func.count()).select_from(Voucher).where(*mine)) == 2
        # the refused claims left nothing behind
        claims = (LedgerEntry.kind == "claim", LedgerEntry.program_id == program["id"])
        assert s.scalar(select(func.count()).select_from(LedgerEntry).where(*claims)) == 3


@pytest.mark.parametrize(
    "payload, field",
    [
        ({}, "tier"),
        ({"tier": 50}, "tier"),
        ({"tier": "T99"}, "tier"),
        ({"tier": "T50", "extra": 1}, "extra"),
        ({"tier": "T50", "holder_ref": "someone"}, "holder_ref"),
    ],
)
def test_bad_consumer_claims_are_validation_errors(env: Env, payload: dict[str, Any], field: str) -> None:
    program = env.admin.create_program()
    resp = env.client.post(f"/api/v1/programs/{program['id']}/claims", json=payload, headers=env.consumer())
    assert resp.status_code == 400 and problem_code(resp) == "validation_error"
    assert field in [e["field"] for e in resp.get_json()["errors"]]


@pytest.mark.parametrize(
    "payload, field",
    [
        ({"tier": "T50"}, "holder_ref"),
        ({"tier": "T50", "holder_ref": ""}, "holder_ref"),
        ({"tier": "T50", "holder_ref": "u", "holder_phone": "12800138000"}, "holder_phone"),
        ({"tier": "T50", "holder_ref": "u", "holder_phone": "+1 415 555 0100"}, "holder_phone"),
    ],
)
def test_bad_platform_claims_are_validation_errors(env: Env, payload: dict[str, Any], field: str) -> None:
    program = env.admin.create_program()
    resp = env.platform(program["id"]).post(f"/api/v1/programs/{program['id']}/claims", payload)
    assert resp.status_code == 400 and problem_code(resp) == "validation_error"
    assert field in [e["field"] for e in resp.get_json()["errors"]]


def test_claims_need_credentials_and_the_right_kind_of_caller(env: Env) -> None:
    program = env.admin.create_program()
    pid = program["id"]
    assert problem_code(env.claim(pid, {})) == "unauthorized"
    assert problem_code(env.claim(pid, {"Authorization": "Bearer vcs1.forged.token"})) == "unauthorized"
    assert problem_code(env.claim(pid, env.admin.headers)) == "forbidden"
    shop = env.platform(pid, platform=False)
    resp = shop.post(f"/api/v1/programs/{pid}/claims", {"tier": "T50", "holder_ref": "u1"})
    assert resp.status_code == 403 and problem_code(resp) == "forbidden"
    outsider = env.platform(None)
    resp = outsider.post(f"/api/v1/programs/{pid}/claims", {"tier": "T50", "holder_ref": "u1"})
    assert resp.status_code == 403 and problem_code(resp) == "merchant_not_enrolled"


def test_an_unknown_programme_is_not_found(env: Env) -> None:
    resp = env.claim("00000000-0000-0000-0000-000000000000", env.consumer())
    assert resp.status_code == 404 and problem_code(resp) == "not_found"


def test_claims_outside_the_window_or_while_suspended_are_refused(env: Env) -> None:
    now = env.ctx.now()
    future = env.admin.create_program(starts_at=_iso(now + dt.timedelta(days=3)))
    ended = env.admin.create_program(
        starts_at="2020-01-01T00:00:00Z", ends_at=_iso(now - dt.timedelta(seconds=5))
    )
    draft = env.admin.create_program(activate=False)
    suspended = env.admin.create_program()
    headers = env.consumer()
    assert env.claim(suspended["id"], headers).status_code == 201  # warms any cache of its terms
    env.admin.post(f"/api/v1/programs/{suspended['id']}/suspend")
    for program in (future, ended, draft, suspended):
        resp = env.claim(program["id"], headers)
        assert resp.status_code == 409 and problem_code(resp) == "program_not_active", program["name"]
    env.admin.post(f"/api/v1/programs/{suspended['id']}/activate")
    assert env.claim(suspended["id"], headers).status_code == 201
    assert problem_code(env.claim(suspended["id"], headers)) == "claim_limit_reached"


def _count_statements(ctx: ServiceContext) -> tuple[list[str], Any]:
    seen: list[str] = []

    def listener(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        seen.append(statement)

    event.listen(ctx.engine, "before_cursor_execute", listener)
    return seen, listener


def test_a_sold_out_tier_is_refused_and_then_answered_from_the_gate_without_the_database(env: Env) -> None:
    tiers = [{"code": "T50", "face_value_fen": 5000, "min_spend_fen": 15000, "quantity": 2}]
    program = env.admin.create_program(tiers=tiers, per_person_limit=5)
    pid = program["id"]
    headers = env.consumer()
    assert [env.claim(pid, headers).status_code for _ in range(2)] == [201, 201]
    first = env.claim(pid, headers)
    assert first.status_code == 409 and problem_code(first) == "tier_sold_out"
    seen, listener = _count_statements(env.ctx)
    try:
        again = env.claim(pid, headers)
    finally:
        event.remove(env.ctx.engine, "before_cursor_execute", listener)
    assert again.status_code == 409 and problem_code(again) == "tier_sold_out"
    assert seen == []
    assert 'voucher_events_total{event="claims_sold_out_fast"} 1' in env.client.get("/metrics").get_data(
        as_text=True
    )
    with env.ctx.sessions() as s:
        # the refused claims did not count against the holder
        assert s.get(HolderClaimCount, (pid, env.ctx.box.keyed_hash("phone", PHONE))).claimed == 2  # type: ignore[union-attr]
    # Activation opens the gate again (there is nothing left, so the database refuses once more).
    env.admin.post(f"/api/v1/programs/{pid}/suspend")
    env.admin.post(f"/api/v1/programs/{pid}/activate")
    seen, listener = _count_statements(env.ctx)
    try:
        assert problem_code(env.claim(pid, headers)) == "tier_sold_out"
    finally:
        event.remove(env.ctx.engine, "before_cursor_execute", listener)
    assert seen


def test_claims_beyond_the_rate_limit_get_429_with_retry_after(env: Env) -> None:
    env.ctx.settings = dataclasses.replace(env.ctx.settings, claim_rate_per_minute=2)
    program = env.admin.create_program(per_person_limit=10)
    headers = env.consumer()
    statuses = [env.claim(program["id"], headers).status_code for _ in range(2)]
    limited = env.claim(program["id"], headers)
    assert statuses == [201, 201]
    assert limited.status_code == 429 and problem_code(limited) == "rate_limited"
    assert 1 <= int(limited.headers["Retry-After"]) <= 60
    # A platform merchant is limited as a whole, whichever users it claims for.
    platform = env.platform(program["id"])
    path = f"/api/v1/programs/{program['id']}/claims"
    codes = [platform.post(path, {"tier": "T20", "holder_ref": f"u{i}"}).status_code for i in range(3)]
    assert codes == [201, 201, 429]


@pytest.mark.postgres
def test_one_holder_claiming_at_once_from_two_channels_never_exceeds_the_limit(pg_env: Env) -> None:
    program = pg_env.admin.create_program(per_person_limit=2)
    pid = program["id"]
    platform = pg_env.platform(pid)
    outcomes: Counter[str] = Counter()
    for round_no in range(4):
        phone = f"139{round_no:08d}"
        consumer = pg_env.consumer(phone)
        barrier = threading.Barrier(16)
        results: list[str] = []

        def attempt(
            i: int,
            phone: str = phone,
            consumer: dict[str, str] = consumer,
            barrier: threading.Barrier = barrier,
            results: list[str] = results,
        ) -> None:
            client = pg_env.app.test_client()
            tier = "T50" if i % 3 else "T20"
            barrier.wait()
            if i % 2:
                resp = client.post(f"/api/v1/programs/{pid}/claims", json={"tier": tier}, headers=consumer)
            else:
                resp = MerchantCaller(client, platform.id, platform.secret).post(
                    f"/api/v1/programs/{pid}/claims",
                    {"tier": tier, "holder_ref": f"r{i}", "holder_phone": phone},
                )
            results.append(str(resp.status_code) if resp.status_code == 201 else problem_code(resp))

        threads = [threading.Thread(target=attempt, args=(i,)) for i in range(16)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        round_outcomes = Counter(results)
        assert round_outcomes == {"201": 2, "claim_limit_reached": 14}, round_outcomes
        outcomes.update(round_outcomes)
        holder = pg_env.ctx.box.keyed_hash("phone", phone)
        with pg_env.ctx.sessions() as s:
            mine = (Voucher.holder_hash == holder, Voucher.program_id == pid)
            assert s.scalar(select(func.count()).select_from(Voucher).where(*mine)) == 2
    assert outcomes["201"] == 8
