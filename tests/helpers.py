"""Helpers shared by the tests: signed merchant requests, admin set-up of programmes and merchants."""

from __future__ import annotations

import copy
import json
import secrets
import time
from typing import Any

from flask.testing import FlaskClient

from voucher_service.services.credentials import sign_merchant_request

PROGRAM: dict[str, Any] = {
    "name": "龙岗区扶贫产品消费券",
    "budget_fen": 1_000_000_000,
    "starts_at": "2026-01-01T00:00:00Z",
    "ends_at": "2099-01-31T23:59:59Z",
    "voucher_validity_days": 30,
    "per_person_limit": 2,
    "channels": ["online", "offline"],
    "tiers": [
        {"code": "T50", "face_value_fen": 5000, "min_spend_fen": 15000, "quantity": 100},
        {"code": "T20", "face_value_fen": 2000, "min_spend_fen": 6000, "quantity": 250},
    ],
    "eligibility": {"certification_types": ["national", "guangxi", "shenzhen"], "county_codes": None},
    "targets": [{"county_code": "451227", "target_fen": 100_000_000}],
    "offline": {"max_offline_fen_per_terminal": 500_000, "max_offline_hours": 24},
}


def program_body(**overrides: Any) -> dict[str, Any]:
    """A valid programme body (open now, far-off end) with overrides applied."""
    body = copy.deepcopy(PROGRAM)
    body.update(overrides)
    return body


def merchant_headers(
    merchant_id: str,
    secret: str,
    method: str,
    path: str,
    body: bytes,
    *,
    nonce: str | None = None,
    timestamp: int | None = None,
) -> dict[str, str]:
    """The four signature headers for a request."""
    ts = str(int(time.time()) if timestamp is None else timestamp)
    nonce = nonce or secrets.token_hex(12)
    return {
        "X-Voucher-Merchant": merchant_id,
        "X-Voucher-Timestamp": ts,
        "X-Voucher-Nonce": nonce,
        "X-Voucher-Signature": sign_merchant_request(secret, method, path, ts, nonce, body),
        "Content-Type": "application/json",
    }


class MerchantCaller:
    """Sends signed requests as one merchant through a Flask test client."""

    def __init__(self, client: FlaskClient, merchant_id: str, secret: str) -> None:
        self.client = client
        self.id = merchant_id
        self.secret = secret

    def request(
        self, method: str, path: str, payload: Any = None, headers: dict[str, str] | None = None
    ) -> Any:
        body = b"" if payload is None else json.dumps(payload, ensure_ascii=False).encode()
        h = merchant_headers(self.id, self.secret, method, path, body)
        h.update(headers or {})
        return self.client.open(path, method=method, data=body, headers=h)

    def post(self, path: str, payload: Any = None, **kw: Any) -> Any:
        return self.request("POST", path, payload, **kw)

    def get(self, path: str, **kw: Any) -> Any:
        return self.request("GET", path, None, **kw)


class Admin:
    """Admin calls through a Flask test client."""

    def __init__(self, client: FlaskClient, token: str) -> None:
        self.client = client
        self.headers = {"Authorization": f"Bearer {token}"}

    def post(self, path: str, payload: Any = None) -> Any:
        return self.client.post(path, json=payload, headers=self.headers)

    def get(self, path: str) -> Any:
        return self.client.get(path, headers=self.headers)

    def create_program(self, activate: bool = True, **overrides: Any) -> dict[str, Any]:
        resp = self.post("/api/v1/programs", program_body(**overrides))
        assert resp.status_code == 201, resp.get_json()
        program = resp.get_json()
        if activate:
            r = self.post(f"/api/v1/programs/{program['id']}/activate")
            assert r.status_code == 200, r.get_json()
            program = r.get_json()
        return program

    def create_merchant(
        self,
        name: str = "巴马特产店",
        channels: tuple[str, ...] = ("online", "offline"),
        platform: bool = False,
        enrol_in: str | None = None,
    ) -> MerchantCaller:
        resp = self.post(
            "/api/v1/merchants", {"name": name, "channels": list(channels), "platform": platform}
        )
        assert resp.status_code == 201, resp.get_json()
        m = resp.get_json()
        if enrol_in:
            r = self.post(f"/api/v1/programs/{enrol_in}/merchants", {"merchant_id": m["id"]})
            assert r.status_code in (200, 201), r.get_json()
        return MerchantCaller(self.client, m["id"], m["api_secret"])


def problem_code(resp: Any) -> str:
    """The `code` of a problem+json response, checking its shape."""
    assert resp.mimetype == "application/problem+json", (resp.status_code, resp.data[:300])
    body = resp.get_json()
    for key in ("type", "title", "status", "detail", "code", "request_id"):
        assert key in body, body
    assert body["status"] == resp.status_code
    return str(body["code"])


def sms_code(outbox: str, phone: str) -> str:
    """The last one-time code the development SMS outbox holds for a phone (11 digits)."""
    with open(outbox, encoding="utf-8") as fh:
        codes = [json.loads(line) for line in fh if line.strip()]
    return str([c for c in codes if c["phone"] == phone][-1]["code"])


def consumer_headers(client: FlaskClient, outbox: str, phone: str) -> dict[str, str]:
    """Log a consumer in by SMS code; return its Authorization header."""
    sent = client.post("/api/v1/consumer/otp", json={"phone": phone})
    assert sent.status_code == 202, sent.get_json()
    resp = client.post("/api/v1/consumer/sessions", json={"phone": phone, "code": sms_code(outbox, phone)})
    assert resp.status_code == 201, resp.get_json()
    return {"Authorization": f"Bearer {resp.get_json()['token']}"}


def issue_test_voucher(
    ctx: Any, program_id: str, tier: str, holder: str = "h1", valid_from: Any = None, expires_at: Any = None
) -> tuple[str, str]:
    """Issue a voucher from the programme's pool without the claims route: (voucher_id, token)."""
    import datetime as dt

    from sqlalchemy import select

    from voucher_service.adapters.db.models import Program, Voucher
    from voucher_service.services import ledger
    from voucher_service.services.tokens import sign_voucher

    now = ctx.now()
    ctx.keys.active()  # load the keys first: on SQLite the key ring cannot read inside our write transaction
    with ctx.sessions.begin() as s:
        program = s.get(Program, program_id)
        voucher = s.scalars(
            select(Voucher)
            .where(Voucher.program_id == program_id, Voucher.tier_code == tier, Voucher.status == "available")
            .limit(1)
        ).first()
        assert program is not None and voucher is not None, "no available voucher of that tier"
        start = valid_from or now
        end = expires_at or min(start + dt.timedelta(days=program.voucher_validity_days), program.ends_at)
        token, kid = sign_voucher(
            ctx,
            voucher_id=voucher.id,
            program_id=program_id,
            tier=tier,
            face_value_fen=voucher.face_value_fen,
            min_spend_fen=voucher.min_spend_fen,
            issued_at=now,
            valid_from=start,
            expires_at=end,
        )
        voucher.status = "issued"
        voucher.holder_hash = ctx.box.keyed_hash("phone", holder)
        voucher.claimed_at, voucher.valid_from, voucher.expires_at = now, start, end
        voucher.kid, voucher.token, voucher.status_changed_at = kid, token, now
        ledger.move(
            s,
            program_id=program_id,
            kind="claim",
            from_bucket="unclaimed",
            to_bucket="outstanding",
            amount_fen=voucher.face_value_fen,
            at=now,
            voucher_id=voucher.id,
            ref=tier,
        )
        return voucher.id, token
