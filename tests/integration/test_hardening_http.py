"""HTTP edges (issue 8, item 9): bodies over the limit are 413 whether their length is declared or
chunked, JSON routes refuse bodies of other media types with 415, and a merchant with a valid signature
on a route that is not for merchants is 403 forbidden (authenticated, not allowed), not 401."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from sqlalchemy import func, select

from benchmarks._server import gunicorn_server, settings_env
from tests.helpers import (
    Admin,
    MerchantCaller,
    consumer_headers,
    merchant_headers,
    problem_code,
    program_body,
)
from voucher_service.adapters.db.models import Program
from voucher_service.config import Settings
from voucher_service.services.credentials import create_admin_token

LIMIT = 8 * 1024 * 1024


def _admin(app: Any) -> Admin:
    return Admin(app.test_client(), create_admin_token(app.extensions["voucher"], "tester"))


def _programs(app: Any) -> int:
    with app.extensions["voucher"].sessions() as s:
        return int(s.scalar(select(func.count()).select_from(Program)) or 0)


def _chunked_post(client: Any, path: str, body: bytes, headers: dict[str, str]) -> Any:
    """A body without Content-Length, its end marked by the server (as gunicorn does for chunked bodies)."""
    return client.post(
        path,
        input_stream=io.BytesIO(body),
        headers={**headers, "Transfer-Encoding": "chunked"},
        environ_overrides={"wsgi.input_terminated": True},
    )


# --- 413 -------------------------------------------------------------------------------------------------


def test_a_chunked_body_over_the_limit_is_413_not_a_truncated_400(app: Any) -> None:
    admin = _admin(app)
    body = json.dumps(program_body(name="x" * (LIMIT + 10))).encode()
    resp = _chunked_post(
        app.test_client(), "/api/v1/programs", body, {**admin.headers, "Content-Type": "application/json"}
    )
    assert resp.status_code == 413 and problem_code(resp) == "payload_too_large", resp.get_data()[:300]
    assert _programs(app) == 0


def test_a_declared_body_over_the_limit_is_413(app: Any) -> None:
    admin = _admin(app)
    resp = app.test_client().post(
        "/api/v1/programs",
        data=b"{" + b" " * LIMIT + b"}",
        headers={**admin.headers, "Content-Type": "application/json"},
    )
    assert resp.status_code == 413 and problem_code(resp) == "payload_too_large"


def test_a_chunked_body_within_the_limit_is_read_whole(app: Any) -> None:
    admin = _admin(app)
    body = json.dumps(program_body()).encode()
    resp = _chunked_post(
        app.test_client(), "/api/v1/programs", body, {**admin.headers, "Content-Type": "application/json"}
    )
    assert resp.status_code == 201, resp.get_json()


def test_a_chunked_merchant_body_is_signed_and_checked_whole(app: Any) -> None:
    admin = _admin(app)
    program = admin.create_program()
    platform = admin.create_merchant("平台", ("online",), platform=True, enrol_in=program["id"])
    path = f"/api/v1/programs/{program['id']}/claims"
    body = json.dumps({"tier": "T20", "holder_ref": "u1"}).encode()
    resp = _chunked_post(
        app.test_client(), path, body, merchant_headers(platform.id, platform.secret, "POST", path, body)
    )
    assert resp.status_code == 201, resp.get_json()


@pytest.fixture
def served(pg_settings: Settings, pg_app: Any, tmp_path: Path) -> Iterator[tuple[str, Admin]]:
    admin = _admin(pg_app)
    with gunicorn_server(
        settings_env(pg_settings), workers=1, threads=2, log_path=tmp_path / "gunicorn.log"
    ) as base:
        yield base, admin


@pytest.mark.postgres
def test_through_gunicorn_a_chunked_body_over_the_limit_is_413(served: tuple[str, Admin]) -> None:
    base, admin = served
    chunk = b" " * (1024 * 1024)

    def chunks(n: int) -> Iterator[bytes]:
        yield b'{"name": "'
        for _ in range(n):
            yield chunk
        yield b'"}'

    headers = {**admin.headers, "Content-Type": "application/json"}
    resp = requests.post(base + "/api/v1/programs", data=chunks(9), headers=headers, timeout=60)
    assert resp.status_code == 413 and resp.json()["code"] == "payload_too_large", resp.text[:300]
    small = json.dumps(program_body()).encode()
    resp = requests.post(
        base + "/api/v1/programs", data=iter([small[:100], small[100:]]), headers=headers, timeout=60
    )
    assert resp.status_code == 201, resp.text


# --- 415 -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "content_type",
    [
        None,
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
        "application/json; charset=latin-1",
        "application/jsonx",
        "text/json",
        "application/json-seq",
    ],
)
def test_a_json_body_of_another_media_type_is_415_and_creates_nothing(
    app: Any, content_type: str | None
) -> None:
    admin = _admin(app)
    headers = dict(admin.headers)
    if content_type:
        headers["Content-Type"] = content_type
    resp = app.test_client().post("/api/v1/programs", data=json.dumps(program_body()), headers=headers)
    assert resp.status_code == 415 and problem_code(resp) == "unsupported_media_type", resp.get_json()
    assert _programs(app) == 0


@pytest.mark.parametrize(
    "content_type",
    [
        "application/json",
        "application/json; charset=utf-8",
        "Application/JSON; Charset=UTF-8",
        "application/problem+json",
    ],
)
def test_json_media_types_are_accepted(app: Any, content_type: str) -> None:
    admin = _admin(app)
    resp = app.test_client().post(
        "/api/v1/programs",
        data=json.dumps(program_body()),
        headers={**admin.headers, "Content-Type": content_type},
    )
    assert resp.status_code == 201, resp.get_json()


def test_a_signed_merchant_body_of_another_media_type_is_415(app: Any) -> None:
    admin = _admin(app)
    program = admin.create_program()
    platform = admin.create_merchant("平台", ("online",), platform=True, enrol_in=program["id"])
    resp = platform.post(
        f"/api/v1/programs/{program['id']}/claims",
        {"tier": "T20", "holder_ref": "u1"},
        headers={"Content-Type": "text/plain"},
    )
    assert resp.status_code == 415 and problem_code(resp) == "unsupported_media_type"


def test_an_empty_body_without_a_content_type_still_works(app: Any) -> None:
    admin = _admin(app)
    program = admin.create_program(activate=False)
    resp = app.test_client().post(f"/api/v1/programs/{program['id']}/activate", headers=admin.headers)
    assert resp.status_code == 200, resp.get_json()
    assert app.test_client().get("/api/v1/programs", headers=admin.headers).status_code == 200


# --- 403 -------------------------------------------------------------------------------------------------


@pytest.fixture
def merchant(app: Any) -> MerchantCaller:
    return _admin(app).create_merchant("店", ("online",))


@pytest.mark.parametrize(
    "method, path",
    [
        ("GET", "/api/v1/programs"),
        ("POST", "/api/v1/programs"),
        ("POST", "/api/v1/merchants"),
        ("GET", "/api/v1/consumer/vouchers"),
    ],
)
def test_a_merchant_with_a_valid_signature_on_a_route_not_for_merchants_is_forbidden(
    app: Any, merchant: MerchantCaller, method: str, path: str
) -> None:
    payload = program_body() if path == "/api/v1/programs" and method == "POST" else None
    resp = merchant.request(method, path, payload)
    assert resp.status_code == 403 and problem_code(resp) == "forbidden", resp.get_json()
    assert _programs(app) == 0


def test_a_merchant_with_a_bad_signature_on_an_admin_route_is_still_unauthorized(
    app: Any, merchant: MerchantCaller
) -> None:
    headers = merchant_headers(merchant.id, "not-the-secret", "GET", "/api/v1/programs", b"")
    resp = app.test_client().get("/api/v1/programs", headers=headers)
    assert resp.status_code == 401 and problem_code(resp) == "unauthorized"


def test_a_consumer_on_an_admin_route_is_forbidden(app: Any) -> None:
    outbox = app.extensions["voucher"].settings.sms_outbox
    headers = consumer_headers(app.test_client(), outbox, "13912345678")
    resp = app.test_client().get("/api/v1/programs", headers=headers)
    assert resp.status_code == 403 and problem_code(resp) == "forbidden"
