"""Operations routes and the error envelope."""

from __future__ import annotations

from tests.helpers import problem_code


def test_healthz_answers_ok(client):
    assert client.get("/healthz").get_json() == {"status": "ok"}


def test_readyz_reports_database_and_store(client):
    body = client.get("/readyz").get_json()
    assert body["checks"] == {"database": True, "redis": True}


def test_unknown_route_is_problem_json(client):
    resp = client.get("/api/v1/nowhere")
    assert resp.status_code == 404
    assert problem_code(resp) == "not_found"


def test_openapi_is_3_1(client):
    doc = client.get("/api/v1/openapi.json").get_json()
    assert doc["openapi"] == "3.1.0"
    assert "Problem" in doc["components"]["schemas"]


def test_metrics_are_prometheus_text(client):
    client.get("/healthz")
    resp = client.get("/metrics")
    assert resp.mimetype == "text/plain"
    assert 'voucher_http_requests_total{route="/healthz",method="GET",status="200"}' in resp.get_data(
        as_text=True
    )


def test_readyz_on_postgres_and_redis(pg_app):
    body = pg_app.test_client().get("/readyz").get_json()
    assert body == {"status": "ok", "checks": {"database": True, "redis": True}}


def test_openapi_document_is_valid_and_describes_every_route(client):
    from openapi_spec_validator import validate

    from voucher_service.api.routing import ROUTES

    doc = client.get("/api/v1/openapi.json").get_json()
    validate(doc)
    for route in ROUTES:
        assert route.method in doc["paths"][route.path], (route.method, route.path)
    for path in (
        "/api/v1/programs/{program_id}/claims",
        "/api/v1/redemptions",
        "/api/v1/keys",
        "/api/v1/offline-redemptions",
        "/api/v1/products/snapshot",
        "/healthz",
        "/readyz",
        "/metrics",
        "/api/v1/openapi.json",
    ):
        assert path in doc["paths"], path
