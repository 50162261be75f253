"""Idempotency-Key: the same request gets the same answer byte for byte; the effect happens once."""

from __future__ import annotations

import datetime as dt
import json
import threading
from typing import Any

import pytest
from sqlalchemy import func, select

from tests.helpers import problem_code
from tests.redemption_support import World, checkout, item, make_world
from voucher_service.adapters.db.models import IdempotencyRecord, Redemption
from voucher_service.domain.errors import IdempotencyInProgress, IdempotencyKeyReused, RateLimited
from voucher_service.services import idempotency
from voucher_service.services.idempotency import IdempotencyClaim, StoredResponse


@pytest.fixture
def world(admin: Any, ctx: Any) -> World:
    return make_world(admin, ctx)


def redemptions_of(ctx: Any, voucher_id: str) -> int:
    with ctx.sessions() as s:
        return (
            s.scalar(select(func.count()).select_from(Redemption).where(Redemption.voucher_id == voucher_id))
            or 0
        )


def record(ctx: Any, merchant_id: str, key: str) -> IdempotencyRecord | None:
    with ctx.sessions() as s:
        return s.get(IdempotencyRecord, (merchant_id, key))


def test_the_same_key_and_body_replays_the_first_answer_byte_for_byte(world: World, ctx: Any) -> None:
    voucher_id, token = world.voucher()
    body = checkout(token, [item(world.catalog.rice, 3, 5000)])
    first = world.merchant.post("/api/v1/redemptions", body, headers={"Idempotency-Key": "order-1"})
    second = world.merchant.post("/api/v1/redemptions", body, headers={"Idempotency-Key": "order-1"})
    assert (first.status_code, second.status_code) == (201, 201)
    assert first.data == second.data and second.mimetype == "application/json"
    assert redemptions_of(ctx, voucher_id) == 1


def test_a_refusal_is_replayed_too_with_its_original_request_id(world: World, ctx: Any) -> None:
    _, token = world.voucher()
    body = checkout(token, [item(world.catalog.rice, 1, 100)])
    first = world.merchant.post(
        "/api/v1/redemptions", body, headers={"Idempotency-Key": "short", "X-Request-Id": "req-first-0001"}
    )
    second = world.merchant.post(
        "/api/v1/redemptions", body, headers={"Idempotency-Key": "short", "X-Request-Id": "req-second-0002"}
    )
    assert (first.status_code, second.status_code) == (422, 422)
    assert problem_code(second) == "threshold_not_met"
    assert first.data == second.data and second.get_json()["request_id"] == "req-first-0001"
    assert second.mimetype == "application/problem+json"


def test_the_same_key_with_another_body_is_refused(world: World, ctx: Any) -> None:
    voucher_id, token = world.voucher()
    body = checkout(token, [item(world.catalog.rice, 3, 5000)], order_id="A-1")
    assert (
        world.merchant.post("/api/v1/redemptions", body, headers={"Idempotency-Key": "k1"}).status_code == 201
    )
    body["order_id"] = "A-2"
    resp = world.merchant.post("/api/v1/redemptions", body, headers={"Idempotency-Key": "k1"})
    assert resp.status_code == 422 and problem_code(resp) == "idempotency_key_reused"
    # the same key on another route is another request too
    assert (
        problem_code(
            world.merchant.post("/api/v1/redemptions/x/reversals", {}, headers={"Idempotency-Key": "k1"})
        )
        == "idempotency_key_reused"
    )
    assert redemptions_of(ctx, voucher_id) == 1


def insert_in_progress(
    ctx: Any, merchant_id: str, key: str, body: dict[str, Any], locked_until: dt.datetime
) -> None:
    raw = json.dumps(body, ensure_ascii=False).encode()
    with ctx.sessions.begin() as s:
        s.add(
            IdempotencyRecord(
                merchant_id=merchant_id,
                key=key,
                route="POST /api/v1/redemptions",
                request_sha256=idempotency.fingerprint("POST /api/v1/redemptions", raw),
                state="in_progress",
                locked_until=locked_until,
                created_at=ctx.now(),
            )
        )


def test_a_key_still_in_progress_answers_409_until_its_lease_runs_out(world: World, ctx: Any) -> None:
    voucher_id, token = world.voucher()
    body = checkout(token, [item(world.catalog.rice, 3, 5000)])
    now = ctx.now()
    insert_in_progress(ctx, world.merchant.id, "busy", body, now + dt.timedelta(seconds=30))
    resp = world.merchant.post("/api/v1/redemptions", body, headers={"Idempotency-Key": "busy"})
    assert resp.status_code == 409 and problem_code(resp) == "idempotency_in_progress"
    rec = record(ctx, world.merchant.id, "busy")
    assert rec is not None and rec.state == "in_progress"  # not stored as the key's answer
    assert redemptions_of(ctx, voucher_id) == 0
    # the worker holding it died: once the lease has run out a retry takes the key over
    ctx.clock = lambda: now + dt.timedelta(seconds=31)
    retry = world.merchant.post("/api/v1/redemptions", body, headers={"Idempotency-Key": "busy"})
    assert retry.status_code == 201, retry.get_json()
    assert redemptions_of(ctx, voucher_id) == 1


def test_a_lease_taken_over_can_no_longer_complete(ctx: Any) -> None:
    now = ctx.now()
    a = idempotency.begin(ctx, "mch_x", "k", "POST /x", b"{}")
    assert isinstance(a, IdempotencyClaim)
    with pytest.raises(IdempotencyInProgress):
        idempotency.begin(ctx, "mch_x", "k", "POST /x", b"{}")
    with pytest.raises(IdempotencyKeyReused):
        idempotency.begin(ctx, "mch_x", "k", "POST /x", b"{ }")
    ctx.clock = lambda: now + dt.timedelta(seconds=ctx.settings.idempotency_lease_s + 1)
    b = idempotency.begin(ctx, "mch_x", "k", "POST /x", b"{}")
    assert isinstance(b, IdempotencyClaim) and b.locked_until > a.locked_until
    with pytest.raises(IdempotencyInProgress), ctx.sessions.begin() as s:
        idempotency.complete(s, a, 201, b"late")
    idempotency.release(ctx, a)  # not a's to release any more
    with ctx.sessions.begin() as s:
        idempotency.complete(s, b, 201, b'{"ok":1}')
    assert idempotency.begin(ctx, "mch_x", "k", "POST /x", b"{}") == StoredResponse(201, b'{"ok":1}')
    assert isinstance(idempotency.begin(ctx, "mch_y", "k", "POST /x", b"{}"), IdempotencyClaim)


def test_an_unexpected_failure_forgets_the_key_so_a_retry_can_run(
    world: World, ctx: Any, monkeypatch: Any
) -> None:
    from voucher_service.services import redemption

    voucher_id, token = world.voucher()
    body = checkout(token, [item(world.catalog.rice, 3, 5000)])
    real = redemption._record

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("database went away")

    monkeypatch.setattr(redemption, "_record", broken)
    resp = world.merchant.post("/api/v1/redemptions", body, headers={"Idempotency-Key": "flaky"})
    assert resp.status_code == 500 and problem_code(resp) == "internal_error"
    assert record(ctx, world.merchant.id, "flaky") is None
    monkeypatch.setattr(redemption, "_record", real)
    retry = world.merchant.post("/api/v1/redemptions", body, headers={"Idempotency-Key": "flaky"})
    assert retry.status_code == 201
    assert redemptions_of(ctx, voucher_id) == 1


def test_a_transient_refusal_is_not_stored(world: World, ctx: Any, monkeypatch: Any) -> None:
    from voucher_service.services import redemption

    _, token = world.voucher()
    body = checkout(token, [item(world.catalog.rice, 3, 5000)])
    real = redemption.redeem_voucher

    def throttled(*args: Any, **kwargs: Any) -> Any:
        raise RateLimited(7)

    monkeypatch.setattr(redemption, "redeem_voucher", throttled)
    resp = world.merchant.post("/api/v1/redemptions", body, headers={"Idempotency-Key": "busy-hour"})
    assert resp.status_code == 429 and resp.headers["Retry-After"] == "7"
    assert record(ctx, world.merchant.id, "busy-hour") is None
    monkeypatch.setattr(redemption, "redeem_voucher", real)
    assert (
        world.merchant.post("/api/v1/redemptions", body, headers={"Idempotency-Key": "busy-hour"}).status_code
        == 201
    )


def test_keys_belong_to_one_merchant(world: World, admin: Any, ctx: Any) -> None:
    other = admin.create_merchant(name="另一家", enrol_in=world.program_id)
    _, token_a = world.voucher()
    _, token_b = world.voucher()
    a = world.redeem(token_a, [item(world.catalog.rice, 3, 5000)], key="same-key")
    b = world.redeem(token_b, [item(world.catalog.rice, 3, 5000)], key="same-key", merchant=other)
    assert (a.status_code, b.status_code) == (201, 201)
    assert a.get_json()["redemption_id"] != b.get_json()["redemption_id"]


@pytest.mark.postgres
def test_concurrent_retries_with_one_key_redeem_once_on_postgres(pg_admin: Any, pg_app: Any) -> None:
    ctx = pg_app.extensions["voucher"]
    world = make_world(pg_admin, ctx)
    voucher_id, token = world.voucher()
    body = checkout(token, [item(world.catalog.rice, 3, 5000)])
    results: list[Any] = []
    gate = threading.Barrier(8)

    def attempt() -> None:
        from tests.helpers import MerchantCaller

        caller = MerchantCaller(pg_app.test_client(), world.merchant.id, world.merchant.secret)
        gate.wait()
        results.append(caller.post("/api/v1/redemptions", body, headers={"Idempotency-Key": "retry-storm"}))

    threads = [threading.Thread(target=attempt) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    created = [r for r in results if r.status_code == 201]
    busy = [r for r in results if r.status_code == 409]
    assert len(created) >= 1 and len(created) + len(busy) == 8
    assert all(problem_code(r) == "idempotency_in_progress" for r in busy)
    assert len({r.data for r in created}) == 1
    assert redemptions_of(ctx, voucher_id) == 1
    final = world.merchant.post("/api/v1/redemptions", body, headers={"Idempotency-Key": "retry-storm"})
    assert final.status_code == 201 and final.data == created[0].data
