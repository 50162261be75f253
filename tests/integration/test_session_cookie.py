"""Flask's signed-cookie session carries the pages' flash messages. A request without that cookie (every
API call, /healthz) must not pay for it: Flask's own interface builds an itsdangerous serializer (HMAC
key derivation included) for every request before looking for the cookie, ~4 % of a gunicorn worker's
CPU in the claims benchmark (py-spy, 2026-12-04). A request that carries the cookie still gets its
messages, and a forged cookie is still an empty session."""

from __future__ import annotations

from typing import Any

import pytest
from flask import flash, get_flashed_messages
from flask.sessions import SecureCookieSessionInterface


@pytest.fixture
def serializers_built(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    built: list[int] = []
    original = SecureCookieSessionInterface.get_signing_serializer

    def counting(self: SecureCookieSessionInterface, app: Any) -> Any:
        built.append(1)
        return original(self, app)

    monkeypatch.setattr(SecureCookieSessionInterface, "get_signing_serializer", counting)
    return built


def test_a_request_without_the_session_cookie_builds_no_signing_serializer(
    client: Any, serializers_built: list[int]
) -> None:
    assert client.get("/healthz").status_code == 200
    assert client.get("/api/v1/keys").status_code == 200
    assert serializers_built == []


def test_flash_messages_still_travel_in_the_signed_cookie(app: Any) -> None:
    @app.get("/_test/flash")
    def _flash() -> str:
        flash("saved", "ok")
        return "set"

    @app.get("/_test/read")
    def _read() -> str:
        return ",".join(get_flashed_messages())

    client = app.test_client()
    assert client.get("/_test/flash").data == b"set"
    assert client.get_cookie("session") is not None
    assert client.get("/_test/read").data == b"saved"
    assert client.get("/_test/read").data == b""
    client.set_cookie("session", "forged.value.sig")
    assert client.get("/_test/read").data == b""
