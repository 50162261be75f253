"""Merchant request signatures (CONTRACT §2): HMAC over the canonical request, timestamp window, nonces."""

from __future__ import annotations

import json
import secrets
import time
from typing import Any

import pytest

from tests.helpers import Admin, MerchantCaller, merchant_headers, problem_code
from voucher_service.services.credentials import create_admin_token


@pytest.fixture(params=["app", pytest.param("pg_app", marks=pytest.mark.postgres)])
def setup(request: pytest.FixtureRequest) -> tuple[Any, MerchantCaller, str]:
    """A platform merchant enrolled in an active programme, on SQLite and on PostgreSQL + Redis."""
    app = request.getfixturevalue(request.param)
    admin = Admin(app.test_client(), create_admin_token(app.extensions["voucher"], "tester"))
    program = admin.create_program(per_person_limit=100)
    platform = admin.create_merchant("平台", ("online",), platform=True, enrol_in=program["id"])
    return app, platform, f"/api/v1/programs/{program['id']}/claims"


def _body(ref: str = "u1") -> bytes:
    return json.dumps({"tier": "T20", "holder_ref": ref}).encode()


def _post(app: Any, path: str, body: bytes, headers: dict[str, str]) -> Any:
    return app.test_client().post(path, data=body, headers=headers)


def test_a_correctly_signed_request_is_accepted(setup: tuple[Any, MerchantCaller, str]) -> None:
    app, m, path = setup
    resp = _post(app, path, _body(), merchant_headers(m.id, m.secret, "POST", path, _body()))
    assert resp.status_code == 201, resp.get_json()


@pytest.mark.parametrize("change", ["secret", "body", "path", "method", "merchant", "signature_format"])
def test_a_signature_over_anything_else_is_unauthorized(
    setup: tuple[Any, MerchantCaller, str], change: str
) -> None:
    app, m, path = setup
    secret, signed_body, signed_path, method = m.secret, _body(), path, "POST"
    if change == "secret":
        secret = "vsk_" + secrets.token_urlsafe(32)
    elif change == "body":
        signed_body = _body("someone-else")
    elif change == "path":
        signed_path = path.replace("/claims", "/claims/")
    elif change == "method":
        method = "PUT"
    headers = merchant_headers(m.id, secret, method, signed_path, signed_body)
    if change == "merchant":
        headers["X-Voucher-Merchant"] = "mch_0000000000000000"
    if change == "signature_format":
        headers["X-Voucher-Signature"] = headers["X-Voucher-Signature"].removeprefix("v1=")
    resp = _post(app, path, _body(), headers)
    assert resp.status_code == 401 and problem_code(resp) == "unauthorized"


@pytest.mark.parametrize(
    "missing", ["X-Voucher-Merchant", "X-Voucher-Timestamp", "X-Voucher-Nonce", "X-Voucher-Signature"]
)
def test_a_missing_header_is_unauthorized(setup: tuple[Any, MerchantCaller, str], missing: str) -> None:
    app, m, path = setup
    headers = merchant_headers(m.id, m.secret, "POST", path, _body())
    del headers[missing]
    resp = _post(app, path, _body(), headers)
    assert resp.status_code == 401 and problem_code(resp) == "unauthorized"


@pytest.mark.parametrize("skew, status", [(-301, 401), (301, 401), (-3600, 401), (-290, 201), (290, 201)])
def test_the_timestamp_must_be_within_300_seconds(
    setup: tuple[Any, MerchantCaller, str], skew: int, status: int
) -> None:
    app, m, path = setup
    body = _body(f"skew{skew}")
    resp = _post(
        app,
        path,
        body,
        merchant_headers(m.id, m.secret, "POST", path, body, timestamp=int(time.time()) + skew),
    )
    assert resp.status_code == status
    if status == 401:
        assert problem_code(resp) == "unauthorized"


@pytest.mark.parametrize("nonce", ["short", "x" * 65, "has spaces in it!!", "ünïcödé-nonce-1234", "a/b" * 8])
def test_a_malformed_nonce_is_unauthorized(setup: tuple[Any, MerchantCaller, str], nonce: str) -> None:
    app, m, path = setup
    headers = merchant_headers(m.id, m.secret, "POST", path, _body(), nonce=nonce)
    resp = app.test_client().post(
        path, data=_body(), headers={k: v.encode("utf-8").decode("latin-1") for k, v in headers.items()}
    )
    assert resp.status_code == 401 and problem_code(resp) == "unauthorized"


def test_a_nonce_is_accepted_once(setup: tuple[Any, MerchantCaller, str]) -> None:
    app, m, path = setup
    nonce = secrets.token_urlsafe(18)
    first = _post(
        app, path, _body("a"), merchant_headers(m.id, m.secret, "POST", path, _body("a"), nonce=nonce)
    )
    assert first.status_code == 201
    # Even correctly signed over another body, the same nonce is a replay.
    again = _post(
        app, path, _body("b"), merchant_headers(m.id, m.secret, "POST", path, _body("b"), nonce=nonce)
    )
    assert again.status_code == 401 and problem_code(again) == "replayed_request"
    replay = _post(
        app, path, _body("a"), merchant_headers(m.id, m.secret, "POST", path, _body("a"), nonce=nonce)
    )
    assert problem_code(replay) == "replayed_request"
    # Nonces are per merchant: nothing of this one leaks into the next request.
    fresh = _post(app, path, _body("c"), merchant_headers(m.id, m.secret, "POST", path, _body("c")))
    assert fresh.status_code == 201


def test_the_query_string_is_signed_as_sent(setup: tuple[Any, MerchantCaller, str]) -> None:
    app, m, path = setup
    voucher = m.post(path, {"tier": "T20", "holder_ref": "q1"}).get_json()
    target = voucher["qr_png_url"] + "?size=m&label=%E5%B7%B4%E9%A9%AC"
    ok = app.test_client().get(target, headers=merchant_headers(m.id, m.secret, "GET", target, b""))
    assert ok.status_code == 200 and ok.mimetype == "image/png"
    without_query = merchant_headers(m.id, m.secret, "GET", voucher["qr_png_url"], b"")
    assert problem_code(app.test_client().get(target, headers=without_query)) == "unauthorized"
    reordered = voucher["qr_png_url"] + "?label=%E5%B7%B4%E9%A9%AC&size=m"
    swapped = merchant_headers(m.id, m.secret, "GET", reordered, b"")
    assert problem_code(app.test_client().get(target, headers=swapped)) == "unauthorized"
