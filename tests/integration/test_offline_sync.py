"""POST /api/v1/offline-redemptions and GET /api/v1/merchant/programs, with records built by hand
from docs/merchant-sdk.md ("Offline record format"), independently of the SDK."""

from __future__ import annotations

import datetime as dt
import hashlib
import threading
from typing import Any

import pytest
from sqlalchemy import func, select

from tests.helpers import Admin, MerchantCaller, problem_code
from tests.sdk.support import needs_offline_redemption_service
from voucher_service.adapters import signing
from voucher_service.adapters.db.models import OfflineRecord, Redemption
from voucher_service.domain.gtin import with_check_digit
from voucher_service.services import offline_sync, registry

GTIN = with_check_digit("690123456789")
CSV = (
    "certification_no,certification_type,product_name,category,supplier_id,supplier_name,county_code,county_name,"
    f"gtins,valid_from,valid_to,status\nGX-1,guangxi,巴马香米,grain,S1,巴马供应商,451227,巴马瑶族自治县,{GTIN},"
    "2020-01-01,2099-12-31,active\n"
)


class Till:
    """A terminal writing records exactly as the document says."""

    def __init__(self, terminal_id: str = "till-1") -> None:
        self.terminal_id = terminal_id
        self.key = signing.generate_private_key()
        self.seq, self.head = 0, offline_sync.GENESIS_HASH

    def record(
        self,
        payload: dict[str, Any],
        *,
        key: Any = None,
        seq: int | None = None,
        prev_hash: str | None = None,
    ) -> dict[str, Any]:
        seq = self.seq + 1 if seq is None else seq
        prev = self.head if prev_hash is None else prev_hash
        message = prev.encode("ascii") + offline_sync.canonical_record(seq, payload)
        record_hash = hashlib.sha256(message).hexdigest()
        signature = signing.b64url(signing.sign_es256_raw(key or self.key, message))
        self.seq, self.head = seq, record_hash
        return {
            "seq": seq,
            "prev_hash": prev,
            "record_hash": record_hash,
            "signature": signature,
            "payload": payload,
        }

    def payload(
        self,
        token: str = "VC1:NOT-A-TOKEN",
        voucher_id: str = "00000000-0000-4000-8000-000000000000",
        program_id: str = "p",
        order_id: str = "T-1",
    ) -> dict[str, Any]:
        return {
            "token": token,
            "voucher_id": voucher_id,
            "program_id": program_id,
            "order_id": order_id,
            "items": [{"gtin": GTIN, "quantity": 3, "unit_price_fen": 5990}],
            "eligible_total_fen": 17970,
            "discount_fen": 5000,
            "lines": [],
            "redeemed_at": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "terminal_id": self.terminal_id,
        }


def register(admin: Admin, merchant: MerchantCaller, till: Till) -> None:
    jwk = signing.public_jwk(till.key.public_key())
    resp = admin.post(
        f"/api/v1/merchants/{merchant.id}/terminals", {"terminal_id": till.terminal_id, "public_key": jwk}
    )
    assert resp.status_code in (200, 201), resp.get_json()


def upload(
    merchant: MerchantCaller, terminal_id: str, records: list[dict[str, Any]]
) -> list[tuple[int, str, Any]]:
    resp = merchant.post("/api/v1/offline-redemptions", {"terminal_id": terminal_id, "records": records})
    assert resp.status_code == 200, resp.get_json()
    return [(r["seq"], r["status"], r["code"]) for r in resp.get_json()["results"]]


def stored(ctx: Any, merchant_id: str) -> list[tuple[int, str]]:
    with ctx.sessions() as s:
        rows = s.execute(
            select(OfflineRecord.seq, OfflineRecord.status)
            .where(OfflineRecord.merchant_id == merchant_id)
            .order_by(OfflineRecord.seq)
        )
        return [(int(a), str(b)) for a, b in rows]


@pytest.fixture
def shop(admin: Admin) -> tuple[MerchantCaller, Till]:
    program = admin.create_program()
    merchant = admin.create_merchant(enrol_in=program["id"])
    till = Till()
    register(admin, merchant, till)
    return merchant, till


def test_merchant_programs_lists_only_the_callers_enrolments(admin: Admin) -> None:
    mine = admin.create_program()
    admin.create_program(name="另一个项目")
    merchant = admin.create_merchant(enrol_in=mine["id"])
    body = merchant.get("/api/v1/merchant/programs").get_json()
    assert [p["id"] for p in body["programs"]] == [mine["id"]]
    (p,) = body["programs"]
    assert set(p) == {
        "id",
        "name",
        "status",
        "starts_at",
        "ends_at",
        "timezone",
        "channels",
        "tiers",
        "eligibility",
        "offline",
    }
    assert p["tiers"][0] == {"code": "T50", "face_value_fen": 5000, "min_spend_fen": 15000}
    assert p["offline"] == {"max_offline_fen_per_terminal": 500_000, "max_offline_hours": 24}
    assert p["starts_at"].endswith("Z") and p["timezone"] == "Asia/Shanghai"


def test_merchant_programs_needs_a_signed_request(client: Any) -> None:
    assert problem_code(client.get("/api/v1/merchant/programs")) == "unauthorized"


def test_an_unregistered_terminal_is_not_found(admin: Admin, shop) -> None:
    merchant, _ = shop
    stranger = Till("till-unknown")
    resp = merchant.post(
        "/api/v1/offline-redemptions",
        {"terminal_id": "till-unknown", "records": [stranger.record(stranger.payload())]},
    )
    assert resp.status_code == 404 and problem_code(resp) == "not_found"


def test_another_merchant_cannot_upload_for_the_terminal(admin: Admin, shop) -> None:
    _, till = shop
    intruder = admin.create_merchant(name="别家")
    resp = intruder.post(
        "/api/v1/offline-redemptions",
        {"terminal_id": till.terminal_id, "records": [till.record(till.payload())]},
    )
    assert resp.status_code == 404


@pytest.mark.parametrize(
    "mutate",
    [
        lambda r: r.update(prev_hash="xyz"),
        lambda r: r.update(seq=0),
        lambda r: r.update(signature="!!"),
        lambda r: r.update(extra=1),
        lambda r: r.update(payload="not an object"),
    ],
)
def test_a_badly_shaped_upload_is_a_validation_error(shop, mutate) -> None:
    merchant, till = shop
    record = till.record(till.payload())
    mutate(record)
    resp = merchant.post(
        "/api/v1/offline-redemptions", {"terminal_id": till.terminal_id, "records": [record]}
    )
    assert problem_code(resp) == "validation_error"


def test_a_record_signed_by_another_key_is_rejected_with_all_after_it(ctx, shop) -> None:
    merchant, till = shop
    records = [
        till.record(till.payload(order_id="a"), key=signing.generate_private_key()),
        till.record(till.payload(order_id="b")),
    ]
    assert upload(merchant, till.terminal_id, records) == [
        (1, "rejected", offline_sync.BAD_SIGNATURE),
        (2, "rejected", offline_sync.AFTER_REJECTED),
    ]
    assert stored(ctx, merchant.id) == []


def test_a_record_that_does_not_continue_the_chain_is_rejected(ctx, shop) -> None:
    merchant, till = shop
    assert upload(merchant, till.terminal_id, [till.record(till.payload(), seq=2)]) == [
        (2, "rejected", offline_sync.CHAIN_BROKEN)
    ]
    wrong_link = Till()
    wrong_link.key = till.key
    record = wrong_link.record(wrong_link.payload(), prev_hash="a" * 64)
    assert upload(merchant, till.terminal_id, [record]) == [(1, "rejected", offline_sync.CHAIN_BROKEN)]
    assert stored(ctx, merchant.id) == []


def test_a_hash_that_does_not_match_the_record_is_rejected(ctx, shop) -> None:
    merchant, till = shop
    record = till.record(till.payload())
    record["payload"]["discount_fen"] = 50_000
    assert upload(merchant, till.terminal_id, [record]) == [(1, "rejected", offline_sync.BAD_HASH)]


def test_a_float_in_a_record_is_malformed(ctx, shop) -> None:
    merchant, till = shop
    payload = till.payload()
    payload["discount_fen"] = 50.0
    record = till.record({**payload, "discount_fen": 50})
    record["payload"] = payload
    assert upload(merchant, till.terminal_id, [record]) == [(1, "rejected", offline_sync.MALFORMED)]


@needs_offline_redemption_service()
def test_an_authentic_record_the_service_refuses_is_kept_and_the_chain_goes_on(ctx, shop) -> None:
    merchant, till = shop
    first, second = till.record(till.payload(order_id="x")), till.record(till.payload(order_id="y"))
    results = upload(merchant, till.terminal_id, [first, second])
    assert [(s, st) for s, st, _ in results] == [(1, "rejected"), (2, "rejected")]
    assert results[0][2] not in (offline_sync.BAD_HASH, offline_sync.BAD_SIGNATURE, offline_sync.CHAIN_BROKEN)
    assert stored(ctx, merchant.id) == [(1, "rejected"), (2, "rejected")]
    # Sent again: duplicates, with the code they got the first time.
    again = upload(merchant, till.terminal_id, [first, second])
    assert again == [(1, "duplicate", results[0][2]), (2, "duplicate", results[1][2])]
    # The same seq with other content is a fork of the chain.
    fork = Till()
    fork.key = till.key
    assert upload(merchant, till.terminal_id, [fork.record(fork.payload(order_id="forked"))]) == [
        (1, "rejected", offline_sync.SEQ_CONFLICT)
    ]
    assert upload(merchant, till.terminal_id, [till.record(till.payload(order_id="z"))])[0][0] == 3


# ---------------------------------------------------------------- real PostgreSQL and Redis


def _platform_shop(pg_admin: Admin, pg_app: Any) -> tuple[MerchantCaller, Till, dict[str, Any]]:
    registry.import_products(pg_app.extensions["voucher"], CSV.encode(), "tests")
    program = pg_admin.create_program()
    merchant = pg_admin.create_merchant(platform=True, enrol_in=program["id"])
    till = Till(f"till-{program['id'][:8]}")
    register(pg_admin, merchant, till)
    claim = merchant.post(f"/api/v1/programs/{program['id']}/claims", {"tier": "T50", "holder_ref": "u-1"})
    assert claim.status_code == 201, claim.get_json()
    return merchant, till, claim.get_json()


@pytest.mark.postgres
@needs_offline_redemption_service()
def test_concurrent_uploads_of_one_record_make_one_redemption(pg_admin: Admin, pg_app: Any) -> None:
    merchant, till, voucher = _platform_shop(pg_admin, pg_app)
    record = till.record(
        till.payload(
            token=voucher["token"],
            voucher_id=voucher["voucher_id"],
            program_id=voucher["program_id"],
            order_id="TILL-1",
        )
    )
    results: list[Any] = []

    def send() -> None:
        caller = MerchantCaller(pg_app.test_client(), merchant.id, merchant.secret)
        results.append(upload(caller, till.terminal_id, [record])[0])

    threads = [threading.Thread(target=send) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(st for _, st, _ in results) == ["accepted"] + ["duplicate"] * 5
    ctx = pg_app.extensions["voucher"]
    with ctx.sessions() as s:
        count = s.scalar(
            select(func.count()).select_from(Redemption).where(Redemption.voucher_id == voucher["voucher_id"])
        )
    assert count == 1
    assert stored(ctx, merchant.id) == [(1, "accepted")]


@pytest.mark.postgres
@needs_offline_redemption_service()
def test_an_offline_double_spend_is_a_stored_conflict(pg_admin: Admin, pg_app: Any) -> None:
    merchant, till, voucher = _platform_shop(pg_admin, pg_app)
    body = {
        "token": voucher["token"],
        "order_id": "WEB-1",
        "channel": "online",
        "terminal_id": None,
        "items": [{"gtin": GTIN, "quantity": 3, "unit_price_fen": 5990}],
    }
    online = merchant.post("/api/v1/redemptions", body, headers={"Idempotency-Key": "web-1"})
    assert online.status_code == 201, online.get_json()
    record = till.record(
        till.payload(
            token=voucher["token"],
            voucher_id=voucher["voucher_id"],
            program_id=voucher["program_id"],
            order_id="TILL-2",
        )
    )
    assert upload(merchant, till.terminal_id, [record]) == [(1, "conflict", "voucher_already_redeemed")]
    assert stored(pg_app.extensions["voucher"], merchant.id) == [(1, "conflict")]
