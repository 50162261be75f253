"""Retries: connection errors, 5xx and 429 retried with backoff under one Idempotency-Key; other 4xx never."""

from __future__ import annotations

import time
import uuid

import pytest

from merchant_sdk import (
    APIConnectionError,
    IdempotencyInProgress,
    RateLimited,
    Redemption,
    ThresholdNotMet,
    VoucherAlreadyRedeemed,
    VoucherClient,
    VoucherError,
)
from tests.sdk.support import DROP, FakeService, dead_port, problem
from tests.sdk.test_signing import assert_signed

ITEMS = [{"gtin": "6901234567892", "quantity": 3, "unit_price_fen": 5990}]
REDEMPTION = {
    "redemption_id": "0b8e0c9a-0000-4000-8000-000000000001",
    "voucher_id": "v-1",
    "program_id": "p-1",
    "merchant_id": "m-test-1",
    "order_id": "o-1",
    "channel": "online",
    "order_total_fen": 17970,
    "eligible_total_fen": 17970,
    "discount_fen": 5000,
    "redeemed_at": "2026-11-29T08:00:00Z",
    "lines": [
        {
            "index": 0,
            "gtin": "6901234567892",
            "eligible": True,
            "reason": None,
            "certification_no": "C1",
            "county_code": "451227",
            "line_total_fen": 17970,
            "discount_share_fen": 5000,
        }
    ],
    "receipt": "VR1:ABC",
}


def test_a_503_then_201_is_retried_with_the_same_key_and_a_fresh_nonce(
    fake: FakeService, client, sleeps
) -> None:
    fake.reply("POST", "/api/v1/redemptions", (503, {}, problem("unavailable", 503)), (201, {}, REDEMPTION))
    got = client.redeem("VC1:X", ITEMS, order_id="o-1")
    assert (
        isinstance(got, Redemption) and got.discount_fen == 5000 and got.lines[0].discount_share_fen == 5000
    )
    first, second = fake.requests_to("/api/v1/redemptions")
    key = first.headers["Idempotency-Key"]
    assert str(uuid.UUID(key)) == key  # a uuid4 made by the SDK
    assert second.headers["Idempotency-Key"] == key
    assert first.headers["X-Voucher-Nonce"] != second.headers["X-Voucher-Nonce"]
    assert first.body == second.body
    for seen in (first, second):
        assert_signed(seen)  # each attempt signed anew
    assert len(sleeps) == 1 and 0 <= sleeps[0] <= client.backoff_base


def test_a_given_idempotency_key_is_used_on_every_attempt(fake, client) -> None:
    fake.reply("POST", "/api/v1/redemptions", (502, {}, b"<html>bad gateway</html>"), (201, {}, REDEMPTION))
    client.redeem("VC1:X", ITEMS, order_id="o-1", idempotency_key="till-7-order-1")
    assert [s.headers["Idempotency-Key"] for s in fake.seen] == ["till-7-order-1"] * 2


def test_a_dropped_connection_is_retried_with_the_same_key(fake, client) -> None:
    fake.reply("POST", "/api/v1/redemptions", DROP, (201, {}, REDEMPTION))
    assert client.redeem("VC1:X", ITEMS, order_id="o-1").redemption_id == REDEMPTION["redemption_id"]
    keys = {s.headers["Idempotency-Key"] for s in fake.requests_to("/api/v1/redemptions")}
    assert len(keys) == 1 and len(fake.seen) == 2


def test_429_waits_as_long_as_retry_after_says(fake, client, sleeps) -> None:
    fake.reply(
        "POST",
        "/api/v1/redemptions",
        (429, {"Retry-After": "3"}, problem("rate_limited", 429)),
        (201, {}, REDEMPTION),
    )
    client.redeem("VC1:X", ITEMS, order_id="o-1")
    assert sleeps == [3.0]


def test_429_retry_after_is_really_slept(fake) -> None:
    fake.reply(
        "GET",
        "/api/v1/merchant/programs",
        (429, {"Retry-After": "1"}, problem("rate_limited", 429)),
        (200, {}, {"programs": []}),
    )
    with VoucherClient(fake.base_url, "m", "s") as c:
        started = time.monotonic()
        assert c.programs() == []
        assert time.monotonic() - started >= 1.0


def test_a_retry_after_longer_than_the_client_will_wait_is_raised_at_once(fake, client, sleeps) -> None:
    fake.reply("POST", "/api/v1/redemptions", (429, {"Retry-After": "600"}, problem("rate_limited", 429)))
    with pytest.raises(RateLimited) as info:
        client.redeem("VC1:X", ITEMS, order_id="o-1")
    assert info.value.retry_after == 600.0
    assert sleeps == [] and len(fake.seen) == 1


def test_5xx_gives_up_after_max_retries(fake, client, sleeps) -> None:
    fake.reply("POST", "/api/v1/redemptions", (500, {}, problem("internal_error", 500)))
    with pytest.raises(VoucherError) as info:
        client.redeem("VC1:X", ITEMS, order_id="o-1")
    assert info.value.status == 500 and info.value.code == "internal_error"
    assert len(fake.seen) == 3 and len(sleeps) == 2
    assert len({s.headers["Idempotency-Key"] for s in fake.seen}) == 1


@pytest.mark.parametrize(
    ("status", "code", "exc"),
    [
        (409, "voucher_already_redeemed", VoucherAlreadyRedeemed),
        (422, "threshold_not_met", ThresholdNotMet),
    ],
)
def test_other_4xx_are_never_retried(fake, client, sleeps, status, code, exc) -> None:
    fake.reply("POST", "/api/v1/redemptions", (status, {}, problem(code, status)), (201, {}, REDEMPTION))
    with pytest.raises(exc):
        client.redeem("VC1:X", ITEMS, order_id="o-1")
    assert len(fake.seen) == 1 and sleeps == []


def test_connection_refused_is_retried_then_raised_as_api_connection_error(sleeps) -> None:
    c = VoucherClient(f"http://127.0.0.1:{dead_port()}", "m", "s", max_retries=3, backoff_base=0.25)
    c._sleep = sleeps
    with pytest.raises(APIConnectionError) as info:
        c.redeem("VC1:X", ITEMS, order_id="o-1")
    c.close()
    assert info.value.code == "api_connection_error" and info.value.status is None
    assert len(sleeps) == 3
    # Full jitter: each pause is somewhere in [0, base * 2**attempt].
    assert all(0 <= s <= 0.25 * 2**i for i, s in enumerate(sleeps))


def test_max_retries_zero_makes_one_attempt(fake, sleeps) -> None:
    fake.reply("POST", "/api/v1/redemptions", (503, {}, problem("x", 503)))
    c = VoucherClient(fake.base_url, "m", "s", max_retries=0)
    c._sleep = sleeps
    with pytest.raises(VoucherError) as info:
        c.redeem("VC1:X", ITEMS, order_id="o-1")
    c.close()
    assert info.value.status == 503
    assert len(fake.seen) == 1 and sleeps == []


def test_backoff_grows_exponentially_up_to_the_cap(client) -> None:
    client.backoff_base, client.backoff_cap = 1.0, 4.0
    for attempt, ceiling in enumerate([1.0, 2.0, 4.0, 4.0, 4.0]):
        draws = [client._backoff(attempt) for _ in range(300)]
        assert all(0 <= d <= ceiling for d in draws)
        assert max(draws) > ceiling * 0.8  # full jitter spreads over the whole range


def test_reads_are_retried_without_an_idempotency_key(fake, client) -> None:
    fake.reply("GET", "/api/v1/merchant/programs", (503, {}, problem("x", 503)), (200, {}, {"programs": []}))
    assert client.programs() == []
    assert all("Idempotency-Key" not in s.headers for s in fake.seen)
    assert len(fake.seen) == 2


def test_idempotency_in_progress_is_retried_like_a_503_after_retry_after_with_the_same_key(
    fake, client, sleeps
) -> None:
    fake.reply(
        "POST",
        "/api/v1/redemptions",
        (409, {"Retry-After": "2"}, problem("idempotency_in_progress", 409)),
        (201, {}, REDEMPTION),
    )
    got = client.redeem("VC1:X", ITEMS, order_id="o-1", idempotency_key="till-7-order-9")
    assert got.redemption_id == REDEMPTION["redemption_id"]
    assert sleeps == [2.0]
    first, second = fake.requests_to("/api/v1/redemptions")
    assert first.headers["Idempotency-Key"] == second.headers["Idempotency-Key"] == "till-7-order-9"
    assert first.headers["X-Voucher-Nonce"] != second.headers["X-Voucher-Nonce"]


def test_idempotency_in_progress_without_retry_after_backs_off_and_gives_up_as_that_error(
    fake, client, sleeps
) -> None:
    fake.reply("POST", "/api/v1/redemptions", (409, {}, problem("idempotency_in_progress", 409)))
    with pytest.raises(IdempotencyInProgress):
        client.redeem("VC1:X", ITEMS, order_id="o-1")
    assert len(fake.seen) == 3 and len(sleeps) == 2
    assert len({s.headers["Idempotency-Key"] for s in fake.seen}) == 1


def test_other_409s_are_still_not_retried(fake, client, sleeps) -> None:
    fake.reply(
        "POST",
        "/api/v1/redemptions",
        (409, {"Retry-After": "1"}, problem("conflict", 409)),
        (201, {}, REDEMPTION),
    )
    with pytest.raises(VoucherError):
        client.redeem("VC1:X", ITEMS, order_id="o-1")
    assert len(fake.seen) == 1 and sleeps == []
