"""No 5xx ever answers bad input: every declared route, fed malformed and hostile bodies and queries,
answers a 4xx problem+json (or succeeds), and never a stack trace."""

from __future__ import annotations

import copy
import json
import re
from typing import Any

import pytest

from tests.helpers import issue_test_voucher, merchant_headers
from voucher_service.api.routing import ROUTES

NASTY: list[Any] = [None, -1, 0, 10**30, -(10**30), 1.5, "", "x" * 5000, [], {}, True, "😀\u0000", "1e309"]

# Bodies that pass the schema, so that one bad field at a time reaches the service's own checks.
SEEDS: dict[str, dict[str, Any]] = {
    "/api/v1/programs": {
        "name": "n",
        "budget_fen": 100000,
        "starts_at": "2026-01-01T00:00:00Z",
        "ends_at": "2099-01-01T00:00:00Z",
        "voucher_validity_days": 30,
        "per_person_limit": 2,
        "channels": ["online"],
        "tiers": [{"code": "T1", "face_value_fen": 100, "min_spend_fen": 300, "quantity": 5}],
        "eligibility": {"certification_types": ["national"], "county_codes": None},
        "targets": [{"county_code": "451227", "target_fen": 1}],
        "offline": {"max_offline_fen_per_terminal": 1, "max_offline_hours": 1},
    },
    "/api/v1/merchants": {"name": "m", "channels": ["online"], "platform": False},
    "/api/v1/redemptions": {
        "token": "VC1:XXXX",
        "order_id": "o-1",
        "channel": "online",
        "terminal_id": None,
        "items": [{"gtin": "6901234567892", "name": "x", "quantity": 1, "unit_price_fen": 100}],
    },
    "/api/v1/redemptions/preview": {
        "token": "VC1:XXXX",
        "order_id": "o-1",
        "channel": "online",
        "items": [{"gtin": "6901234567892", "quantity": 1, "unit_price_fen": 100}],
    },
    "/api/v1/programs/{program_id}/claims": {
        "tier": "T50",
        "holder_ref": "u1",
        "holder_phone": "13800138000",
    },
    "/api/v1/consumer/otp": {"phone": "13800138000"},
    "/api/v1/consumer/sessions": {"phone": "13800138000", "code": "123456"},
    "/api/v1/redemptions/{redemption_id}/reversals": {"lines": [{"index": 0, "quantity": 1}]},
    "/api/v1/offline-redemptions": {"terminal_id": "t1", "records": [{"seq": 1}]},
}


def _mutations(seed: dict[str, Any]) -> list[Any]:
    """The seed with each leaf replaced by each nasty value, plus whole-body garbage."""
    out: list[Any] = [b"", b"{", b"[]", b"null", b'"text"', b"\xff\xfe", b"{" * 500 + b"}" * 500]

    def leaves(node: Any, path: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        if isinstance(node, dict):
            return [p for k, v in node.items() for p in leaves(v, (*path, k))] or [path]
        if isinstance(node, list) and node:
            return [p for i, v in enumerate(node) for p in leaves(v, (*path, i))]
        return [path]

    for path in leaves(seed, ()):
        for value in NASTY:
            body = copy.deepcopy(seed)
            target = body
            for key in path[:-1]:
                target = target[key]
            target[path[-1]] = value
            out.append(body)
    return out


def _concrete(path: str, ids: dict[str, str]) -> str:
    return re.sub(r"\{([a-z_]+)\}", lambda m: ids.get(m.group(1), "nope"), path)


@pytest.fixture(params=["app", "pg_app"])
def world(request):
    app = request.getfixturevalue(request.param)
    admin = request.getfixturevalue("admin" if request.param == "app" else "pg_admin")
    program = admin.create_program()
    merchant = admin.create_merchant(platform=True, enrol_in=program["id"])
    _voucher_id, token = issue_test_voucher(app.extensions["voucher"], program["id"], "T50")
    return {"program": program, "merchant": merchant, "admin": admin, "app": app, "token": token}


def test_no_route_answers_bad_input_with_a_5xx(world):
    app = world["app"]
    client = app.test_client()
    ids = {
        "program_id": world["program"]["id"],
        "merchant_id": world["merchant"].id,
        "voucher_id": "nope",
        "redemption_id": "nope",
        "certification_no": "nope",
        "sku": "nope",
        "run_id": "nope",
    }
    failures = []
    for route in ROUTES:
        path = _concrete(route.path, ids)
        seed = copy.deepcopy(SEEDS.get(route.path, {"unexpected": 1}))
        if "token" in seed:
            seed["token"] = world["token"]  # a real voucher, so bad lines reach the registry lookups
        bodies = _mutations(seed) if route.method in ("post", "put", "patch") else [b""]
        queries = [
            "",
            "?since=-1",
            "?since=abc",
            "?since=100000000000000000000",
            "?gtin=%00",
            "?county_code=%00",
            "?cursor=%%%",
            "?limit=100000000000000000000",
            "?from=x&to=y",
            "?gtin=123",
            "?status=weird",
        ]
        for body in bodies:
            for query in queries if route.method == "get" else [""]:
                raw = body if isinstance(body, bytes) else json.dumps(body, ensure_ascii=False).encode()
                headers = _auth_headers(route.auth, world, route.method.upper(), path + query, raw)
                if route.idempotent:
                    headers["Idempotency-Key"] = "fuzz-" + str(abs(hash(raw)))
                resp = client.open(path + query, method=route.method.upper(), data=raw, headers=headers)
                if resp.status_code >= 500:
                    failures.append(
                        (route.method, path + query, raw[:120], resp.status_code, resp.data[:200])
                    )
                elif resp.status_code >= 400:
                    assert resp.mimetype == "application/problem+json", (path, resp.data[:200])
                    assert "Traceback" not in resp.get_data(as_text=True)
    assert not failures, failures[:10]


def _auth_headers(kind: str, world: dict[str, Any], method: str, path: str, raw: bytes) -> dict[str, str]:
    if "merchant" in kind:
        m = world["merchant"]
        return merchant_headers(m.id, m.secret, method, path, raw)
    if "admin" in kind:
        return {**world["admin"].headers, "Content-Type": "application/json"}
    return {"Content-Type": "application/json"}
