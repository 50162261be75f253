"""The OpenAPI 3.1 document, generated from the same pydantic schemas that validate requests."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from voucher_service.api.routing import ROUTES
from voucher_service.domain.errors import VoucherServiceError

SECURITY: dict[str, list[dict[str, list[str]]]] = {
    "admin": [{"adminBearer": []}],
    "consumer": [{"consumerBearer": []}],
    "merchant": [{"merchantSignature": []}],
    "admin_or_merchant": [{"adminBearer": []}, {"merchantSignature": []}],
    "consumer_or_merchant": [{"consumerBearer": []}, {"merchantSignature": []}],
    "public": [],
}


def _error_codes() -> dict[str, int]:
    codes: dict[str, int] = {}
    stack: list[type[VoucherServiceError]] = [VoucherServiceError]
    while stack:
        cls = stack.pop()
        codes[cls.code] = cls.status
        stack.extend(cls.__subclasses__())
    codes.pop("internal_error", None)
    return codes


def build_openapi() -> dict[str, Any]:
    """Describe every declared route."""
    models: set[type[BaseModel]] = set()
    for r in ROUTES:
        for m in (r.body, r.query, *r.responses.values()):
            if m is not None:
                models.add(m)
    ordered = sorted(models, key=lambda m: m.__name__)
    _, top = models_json_schema(
        [(m, "validation") for m in ordered], ref_template="#/components/schemas/{model}"
    )
    schemas: dict[str, Any] = dict(top.get("$defs", {}))
    codes = _error_codes()
    schemas["Problem"] = {
        "type": "object",
        "required": ["type", "title", "status", "detail", "code", "request_id"],
        "properties": {
            "type": {"type": "string"},
            "title": {"type": "string"},
            "status": {"type": "integer"},
            "detail": {"type": "string"},
            "code": {"type": "string", "enum": sorted(codes)},
            "request_id": {"type": "string"},
            "errors": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {"field": {"type": "string"}, "message": {"type": "string"}},
                },
            },
        },
    }
    paths: dict[str, dict[str, Any]] = {}
    for r in ROUTES:
        op: dict[str, Any] = {
            "summary": r.summary,
            "operationId": f"{r.method}_{r.path.strip('/').replace('/', '_').replace('{', '').replace('}', '')}",
            "tags": [r.tag],
            "security": SECURITY[r.auth],
            "responses": {},
        }
        params: list[dict[str, Any]] = []
        for part in r.path.split("/"):
            if part.startswith("{"):
                params.append(
                    {"name": part[1:-1], "in": "path", "required": True, "schema": {"type": "string"}}
                )
        if r.query is not None:
            for name, f in r.query.model_fields.items():
                params.append(
                    {"name": name, "in": "query", "required": f.is_required(), "schema": {"type": "string"}}
                )
        if r.idempotent:
            params.append(
                {
                    "name": "Idempotency-Key",
                    "in": "header",
                    "required": True,
                    "schema": {"type": "string", "minLength": 1, "maxLength": 255},
                }
            )
        if params:
            op["parameters"] = params
        if r.body is not None:
            op["requestBody"] = {
                "required": True,
                "content": {
                    "application/json": {"schema": {"$ref": f"#/components/schemas/{r.body.__name__}"}}
                },
            }
        for status, model in r.responses.items():
            content: dict[str, Any]
            if model is not None:
                content = {r.content_type: {"schema": {"$ref": f"#/components/schemas/{model.__name__}"}}}
            else:
                content = {r.content_type: {}}
            op["responses"][str(status)] = {"description": "Success", "content": content}
        for code in r.errors:
            status = codes.get(code, 400)
            resp = op["responses"].setdefault(
                str(status),
                {
                    "description": "",
                    "content": {
                        "application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}
                    },
                },
            )
            resp["description"] = (resp["description"] + " " + code).strip()
        paths.setdefault(r.path, {})[r.method] = op
    paths.update(_operations_paths())
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Consumption-voucher service",
            "version": "1.0.0",
            "description": "Money is integer fen; times are RFC 3339 UTC. Errors are application/problem+json.",
        },
        "servers": [{"url": "/"}],
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "adminBearer": {"type": "http", "scheme": "bearer"},
                "consumerBearer": {"type": "http", "scheme": "bearer"},
                "merchantSignature": {
                    "type": "apiKey",
                    "in": "header",
                    "name": "X-Voucher-Signature",
                    "description": "HMAC-SHA256 over the canonical request, with X-Voucher-Merchant, "
                    "X-Voucher-Timestamp and X-Voucher-Nonce.",
                },
            },
        },
    }


def _operations_paths() -> dict[str, dict[str, Any]]:
    """The operations routes, which take no body and need no credentials."""

    def op(summary: str, content_type: str, description: str) -> dict[str, Any]:
        return {
            "get": {
                "summary": summary,
                "operationId": "get_" + summary.split()[0].lower(),
                "tags": ["operations"],
                "security": [],
                "responses": {"200": {"description": description, "content": {content_type: {}}}},
            }
        }

    return {
        "/healthz": op("Healthz: the process is up", "application/json", "Up"),
        "/readyz": op(
            "Readyz: the database and Redis are reachable", "application/json", "Ready (503 when not)"
        ),
        "/metrics": op("Metrics in the Prometheus text format (per worker)", "text/plain", "Metrics"),
        "/api/v1/openapi.json": op("Openapi: this document", "application/json", "OpenAPI 3.1"),
    }
