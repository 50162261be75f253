"""Programmes and merchants through the admin API."""

from __future__ import annotations

from tests.helpers import problem_code, program_body


def test_created_programme_is_a_draft_with_its_tiers(admin):
    resp = admin.post("/api/v1/programs", program_body())
    assert resp.status_code == 201
    body = resp.get_json()
    assert body["status"] == "draft"
    assert [t["code"] for t in body["tiers"]] == ["T50", "T20"]
    assert body["eligibility"]["county_codes"] is None


def test_activation_mints_the_pool_and_stats_count_it(admin):
    program = admin.create_program()
    stats = admin.get(f"/api/v1/programs/{program['id']}").get_json()["stats"]
    assert stats == {
        "claimed": 0,
        "redeemed": 0,
        "claimed_fen": 0,
        "redeemed_fen": 0,
        "remaining_by_tier": {"T50": 100, "T20": 250},
    }


def test_tiers_over_budget_are_refused(admin):
    body = program_body(budget_fen=5000 * 100 + 2000 * 250 - 1)
    resp = admin.post("/api/v1/programs", body)
    assert resp.status_code == 422
    assert problem_code(resp) == "budget_exceeded"


def test_float_money_is_a_validation_error(admin):
    body = program_body(budget_fen=1000000.0)
    resp = admin.post("/api/v1/programs", body)
    assert resp.status_code == 400
    assert problem_code(resp) == "validation_error"
    assert any(e["field"] == "budget_fen" for e in resp.get_json()["errors"])


def test_naive_times_are_refused(admin):
    resp = admin.post("/api/v1/programs", program_body(starts_at="2026-12-01T00:00:00"))
    assert problem_code(resp) == "validation_error"


def test_suspend_then_activate_again(admin):
    program = admin.create_program()
    pid = program["id"]
    assert admin.post(f"/api/v1/programs/{pid}/suspend").get_json()["status"] == "suspended"
    assert admin.post(f"/api/v1/programs/{pid}/activate").get_json()["status"] == "active"
    # re-activation does not mint a second pool
    assert admin.get(f"/api/v1/programs/{pid}").get_json()["stats"]["remaining_by_tier"]["T50"] == 100


def test_admin_routes_need_a_token(client):
    resp = client.post("/api/v1/programs", json=program_body())
    assert resp.status_code == 401
    assert problem_code(resp) == "unauthorized"


def test_unknown_programme_is_not_found(admin):
    assert problem_code(admin.get("/api/v1/programs/nope")) == "not_found"


def test_merchant_secret_is_shown_once_and_not_stored_in_clear(admin, ctx):
    resp = admin.post(
        "/api/v1/merchants", {"name": "百色芒果旗舰店", "channels": ["online"], "platform": True}
    )
    assert resp.status_code == 201
    m = resp.get_json()
    assert m["api_secret"].startswith("vsk_")
    again = admin.get(f"/api/v1/merchants/{m['id']}").get_json()
    assert "api_secret" not in again or again["api_secret"] is None
    from voucher_service.adapters.db.models import Merchant

    with ctx.sessions() as s:
        row = s.get(Merchant, m["id"])
        assert m["api_secret"].encode() not in row.secret_ciphertext


def test_enrolment_is_idempotent(admin):
    program = admin.create_program()
    m = admin.create_merchant()
    first = admin.post(f"/api/v1/programs/{program['id']}/merchants", {"merchant_id": m.id})
    second = admin.post(f"/api/v1/programs/{program['id']}/merchants", {"merchant_id": m.id})
    assert (first.status_code, second.status_code) == (201, 200)
    assert (
        problem_code(admin.post(f"/api/v1/programs/{program['id']}/merchants", {"merchant_id": "x"}))
        == "not_found"
    )


def test_terminal_registration_by_the_merchant_itself_and_not_by_another(admin):
    from voucher_service.adapters.signing import generate_private_key, public_jwk

    a = admin.create_merchant("A")
    b = admin.create_merchant("B")
    jwk = public_jwk(generate_private_key().public_key())
    ok = a.post(f"/api/v1/merchants/{a.id}/terminals", {"terminal_id": "till-1", "public_key": jwk})
    assert ok.status_code == 201, ok.get_json()
    again = a.post(f"/api/v1/merchants/{a.id}/terminals", {"terminal_id": "till-1", "public_key": jwk})
    assert again.status_code == 200
    other_key = public_jwk(generate_private_key().public_key())
    clash = a.post(f"/api/v1/merchants/{a.id}/terminals", {"terminal_id": "till-1", "public_key": other_key})
    assert clash.status_code == 409
    denied = b.post(f"/api/v1/merchants/{a.id}/terminals", {"terminal_id": "till-2", "public_key": jwk})
    assert problem_code(denied) == "forbidden"
    bad = a.post(
        f"/api/v1/merchants/{a.id}/terminals", {"terminal_id": "till-3", "public_key": {"kty": "RSA"}}
    )
    assert problem_code(bad) == "validation_error"


def test_suspending_again_at_the_same_instant_reopens_the_period(app, admin):
    """Found by the lifecycle state machine: suspend, activate, suspend on one clock tick was a 500."""
    ctx = app.extensions["voucher"]
    instant = ctx.now()
    ctx.clock = lambda: instant
    pid = admin.create_program()["id"]
    assert admin.post(f"/api/v1/programs/{pid}/suspend").status_code == 200
    assert admin.post(f"/api/v1/programs/{pid}/activate").status_code == 200
    resp = admin.post(f"/api/v1/programs/{pid}/suspend")
    assert resp.status_code == 200, resp.get_json()
    assert resp.get_json()["status"] == "suspended"
