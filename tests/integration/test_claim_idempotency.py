"""A platform's claim retried with the same Idempotency-Key returns the same voucher, not a second one."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from tests.helpers import problem_code
from voucher_service.adapters.db.models import Voucher


@pytest.fixture(params=["app", "pg_app"])
def setup(request):
    app = request.getfixturevalue(request.param)
    admin = request.getfixturevalue("admin" if request.param == "app" else "pg_admin")
    program = admin.create_program(per_person_limit=5)
    platform = admin.create_merchant("电商平台", channels=("online",), platform=True, enrol_in=program["id"])
    return app, program, platform


def _issued(app, program_id):
    with app.extensions["voucher"].sessions() as s:
        return s.scalar(
            select(func.count())
            .select_from(Voucher)
            .where(Voucher.program_id == program_id, Voucher.status == "issued")
        )


def test_a_retried_platform_claim_returns_the_same_voucher_byte_for_byte(setup):
    app, program, platform = setup
    path = f"/api/v1/programs/{program['id']}/claims"
    body = {"tier": "T20", "holder_ref": "user-42"}
    first = platform.post(path, body, headers={"Idempotency-Key": "claim-user-42-1"})
    again = platform.post(path, body, headers={"Idempotency-Key": "claim-user-42-1"})
    assert first.status_code == again.status_code == 201
    assert first.data == again.data
    assert _issued(app, program["id"]) == 1
    other = platform.post(path, body, headers={"Idempotency-Key": "claim-user-42-2"})
    assert other.status_code == 201
    assert other.get_json()["voucher_id"] != first.get_json()["voucher_id"]
    assert _issued(app, program["id"]) == 2


def test_the_same_key_with_another_body_is_refused(setup):
    app, program, platform = setup
    path = f"/api/v1/programs/{program['id']}/claims"
    platform.post(path, {"tier": "T20", "holder_ref": "u1"}, headers={"Idempotency-Key": "k-reuse"})
    resp = platform.post(path, {"tier": "T50", "holder_ref": "u1"}, headers={"Idempotency-Key": "k-reuse"})
    assert resp.status_code == 422
    assert problem_code(resp) == "idempotency_key_reused"
    assert _issued(app, program["id"]) == 1


def test_a_refusal_is_replayed_too(setup):
    app, program, platform = setup
    path = f"/api/v1/programs/{program['id']}/claims"
    resp = platform.post(path, {"tier": "T99", "holder_ref": "u1"}, headers={"Idempotency-Key": "k-bad-tier"})
    assert problem_code(resp) == "validation_error"
    admin_suspends = app.extensions["voucher"]
    from voucher_service.services import programs

    programs.suspend_program(admin_suspends, program["id"], "test")
    first = platform.post(path, {"tier": "T20", "holder_ref": "u2"}, headers={"Idempotency-Key": "k-closed"})
    assert problem_code(first) == "program_not_active"
    programs.activate_program(admin_suspends, program["id"], "test")
    again = platform.post(path, {"tier": "T20", "holder_ref": "u2"}, headers={"Idempotency-Key": "k-closed"})
    assert again.data == first.data
