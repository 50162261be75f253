"""GET /api/v1/keys carries every member the contract lists for each key."""

from __future__ import annotations

from voucher_service.domain.clock import parse_rfc3339


def test_every_published_key_has_the_contract_members(client, admin):
    program = admin.create_program()
    keys = client.get("/api/v1/keys").get_json()["keys"]
    assert {k["status"] for k in keys} == {"active", "next"}
    ends_at = int(parse_rfc3339(program["ends_at"]).timestamp())
    for key in keys:
        assert set(key) >= {"kty", "crv", "x", "y", "kid", "alg", "use", "nbf", "exp", "status"}
        assert (key["kty"], key["crv"], key["alg"], key["use"]) == ("EC", "P-256", "ES256", "sig")
        assert key["exp"] >= ends_at  # no voucher it signs can outlive its programme
        assert key["nbf"] < key["exp"]
