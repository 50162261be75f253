"""Request signing (CONTRACT §2) compared with the server's own sign_merchant_request."""

from __future__ import annotations

import datetime as dt
import hashlib
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from merchant_sdk import sign_request
from tests.sdk.conftest import MERCHANT_ID, SECRET
from tests.sdk.support import Seen
from voucher_service.api.auth import NONCE_RE
from voucher_service.services.credentials import sign_merchant_request


@given(
    method=st.sampled_from(["GET", "POST", "post"]),
    path=st.text(min_size=1, max_size=80),
    timestamp=st.integers(min_value=0, max_value=2**40).map(str),
    nonce=st.from_regex(r"[A-Za-z0-9_-]{16,64}", fullmatch=True),
    body=st.binary(max_size=300),
    secret=st.text(min_size=1, max_size=40),
)
def test_the_signature_is_the_servers_for_any_request(method, path, timestamp, nonce, body, secret) -> None:
    assert sign_request(secret, method, path, timestamp, nonce, body) == sign_merchant_request(
        secret, method, path, timestamp, nonce, body
    )


def test_the_canonical_form_is_the_contracts() -> None:
    import hmac

    body = b'{"a":1}'
    canonical = "\n".join(
        ["POST", "/api/v1/redemptions?x=1", "1700000000", "n" * 16, hashlib.sha256(body).hexdigest()]
    )
    expected = "v1=" + hmac.new(b"k", canonical.encode(), hashlib.sha256).hexdigest()
    assert sign_request("k", "POST", "/api/v1/redemptions?x=1", "1700000000", "n" * 16, body) == expected


def assert_signed(seen: Seen) -> None:
    """The request carries the four headers, and its signature is the server's over what was sent."""
    h = seen.headers
    assert h["X-Voucher-Merchant"] == MERCHANT_ID
    assert NONCE_RE.match(h["X-Voucher-Nonce"])
    assert abs(int(h["X-Voucher-Timestamp"]) - time.time()) < 5
    assert h["X-Voucher-Signature"] == sign_merchant_request(
        SECRET, seen.method, seen.target, h["X-Voucher-Timestamp"], h["X-Voucher-Nonce"], seen.body
    )


def test_a_post_is_signed_over_its_raw_body(fake, client) -> None:
    fake.reply(
        "POST",
        "/api/v1/redemptions/preview",
        (
            200,
            {},
            {
                "voucher_id": "v",
                "program_id": "p",
                "order_id": "o",
                "order_total_fen": 1,
                "eligible_total_fen": 1,
                "discount_fen": 0,
                "lines": [],
            },
        ),
    )
    client.preview("VC1:X", [("6901234567892", 1, 5990)], order_id="订单-1")
    seen = fake.seen[-1]
    assert_signed(seen)
    assert seen.json()["order_id"] == "订单-1"  # UTF-8 body, signed as sent


def test_path_segments_and_queries_are_signed_as_sent(fake, client) -> None:
    rid = "r 1/ü?"
    fake.reply(
        "POST",
        "/api/v1/redemptions/r%201%2F%C3%BC%3F/reversals",
        (
            201,
            {},
            {
                "reversal_id": "x",
                "redemption_id": rid,
                "clawback_fen": 0,
                "discount_fen": 0,
                "voucher_status": "redeemed",
            },
        ),
    )
    client.reverse(rid)
    assert fake.seen[-1].target == "/api/v1/redemptions/r%201%2F%C3%BC%3F/reversals"
    assert_signed(fake.seen[-1])
    fake.reply("GET", "/api/v1/redemptions", (200, {}, {"redemptions": [], "next_cursor": None}))
    list(client.redemptions(since=dt.datetime(2026, 11, 29, 8, tzinfo=dt.UTC)))
    seen = fake.seen[-1]
    assert seen.target == "/api/v1/redemptions?from=2026-11-29T08%3A00%3A00Z"
    assert_signed(seen)


def test_every_request_gets_a_fresh_nonce(fake, client) -> None:
    fake.reply("GET", "/api/v1/merchant/programs", (200, {}, {"programs": []}))
    for _ in range(5):
        client.programs()
    nonces = {s.headers["X-Voucher-Nonce"] for s in fake.seen}
    assert len(nonces) == 5


def test_the_secret_never_shows_in_the_clients_repr(client) -> None:
    assert SECRET not in repr(client)


@pytest.mark.parametrize("bad", [1.5, True, "3"])
def test_amounts_must_be_ints(client, bad) -> None:
    with pytest.raises(TypeError):
        client.preview(
            "VC1:X", [{"gtin": "6901234567892", "quantity": 1, "unit_price_fen": bad}], order_id="o"
        )
