"""Route declaration: one decorator authenticates, validates the body with a pydantic schema, and
records the route for the OpenAPI document, so validation and documentation come from one schema."""

from __future__ import annotations

import functools
import io
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from flask import Blueprint, Response, current_app, g, request
from pydantic import BaseModel, ValidationError
from werkzeug.exceptions import RequestEntityTooLarge, UnsupportedMediaType
from werkzeug.wsgi import get_content_length

from voucher_service.domain.errors import ValidationFailed

AUTH_KINDS = ("public", "admin", "merchant", "consumer", "admin_or_merchant", "consumer_or_merchant")


@dataclass(frozen=True)
class RouteSpec:
    """What the OpenAPI document says of one route."""

    path: str
    method: str
    summary: str
    auth: str
    body: type[BaseModel] | None
    query: type[BaseModel] | None
    responses: dict[int, type[BaseModel] | None]
    errors: tuple[str, ...]
    idempotent: bool
    tag: str
    content_type: str = "application/json"
    extra_params: tuple[str, ...] = field(default_factory=tuple)


ROUTES: list[RouteSpec] = []


def pydantic_errors(exc: ValidationError) -> list[dict[str, str]]:
    """Per-field messages from a pydantic failure."""
    out = []
    for err in exc.errors(include_url=False):
        loc = ".".join(str(p) for p in err.get("loc", ()) if p != "__root__") or "body"
        out.append({"field": loc, "message": err.get("msg", "invalid")})
    return out


def _nul_fields(value: Any, path: str) -> list[str]:
    """Where a NUL character hides in decoded JSON: no column type stores it, and no field needs it."""
    if isinstance(value, str):
        return [path] if "\x00" in value else []
    if isinstance(value, dict):
        return [
            p
            for k, v in value.items()
            for p in _nul_fields(k, path) + _nul_fields(v, f"{path}.{k}" if path else str(k))
        ]
    if isinstance(value, list):
        return [p for i, v in enumerate(value) for p in _nul_fields(v, f"{path}.{i}" if path else str(i))]
    return []


def refuse_nul(values: dict[str, Any], where: str) -> None:
    """Raise ValidationFailed when any text in `values` contains a NUL character."""
    bad = _nul_fields(values, "")
    if bad:
        raise ValidationFailed(
            f"The {where} contains a NUL character.",
            [{"field": f or where, "message": "NUL characters are not allowed"} for f in bad],
        )


# application/json, or a structured-syntax type that is JSON (RFC 6839 `+json`), UTF-8 only (RFC 8259).
JSON_MEDIA_RE = re.compile(r"application/(?:[a-z0-9!#$&^_.-]+\+)?json", re.ASCII)


def buffer_chunked_body() -> None:
    """Read a body of undeclared length (chunked) up to the limit, before anything else reads it.

    Werkzeug would silently cut such a body at MAX_CONTENT_LENGTH, so an oversized request became a
    misleading 400 'invalid JSON'; here it is 413 payload_too_large, as a declared length is.
    """
    env = request.environ
    if get_content_length(env) is not None or not env.get("wsgi.input_terminated"):
        return  # a declared length (Werkzeug refuses it above the limit), or no body at all
    limit = int(current_app.config["MAX_CONTENT_LENGTH"])
    data = env["wsgi.input"].read(limit + 1)
    if len(data) > limit:
        raise RequestEntityTooLarge(f"The body is over the limit of {limit} bytes.")
    # From here on the body is an ordinary one of known length.
    env["wsgi.input"] = io.BytesIO(data)
    env["CONTENT_LENGTH"] = str(len(data))
    env.pop("HTTP_TRANSFER_ENCODING", None)
    env.pop("wsgi.input_terminated", None)


def require_json_body() -> None:
    """Raise 415 when a request carries a body that is not JSON (CONTRACT §9); an empty body needs no type."""
    if not request.get_data(cache=True):
        return
    mimetype, params = request.mimetype, request.mimetype_params
    charset = params.get("charset", "utf-8").lower()
    if not JSON_MEDIA_RE.fullmatch(mimetype) or charset != "utf-8":
        raise UnsupportedMediaType("The body must be application/json (UTF-8).")


def parse_body(model: type[BaseModel]) -> Any:
    """Validate the raw JSON body against `model`; raise ValidationFailed with per-field errors."""
    raw = request.get_data(cache=True)
    if not raw.strip():
        raw = b"{}"
    try:
        decoded = json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise ValidationFailed(
            "The body is not valid JSON.", [{"field": "body", "message": "invalid JSON"}]
        ) from None
    refuse_nul({"body": decoded}, "body")
    try:
        return model.model_validate_json(raw)
    except ValidationError as exc:
        raise ValidationFailed("The body does not match the schema.", pydantic_errors(exc)) from None


def parse_query(model: type[BaseModel]) -> Any:
    """Validate the query string against `model`."""
    refuse_nul(dict(request.args.items()), "query")
    try:
        return model.model_validate({k: v for k, v in request.args.items()})
    except ValidationError as exc:
        raise ValidationFailed("The query does not match the schema.", pydantic_errors(exc)) from None


def _openapi_path(rule: str) -> str:
    return re.sub(r"<(?:[a-z_]+:)?([a-z_]+)>", r"{\1}", rule)


def endpoint(
    bp: Blueprint,
    rule: str,
    method: str = "POST",
    *,
    auth: str,
    summary: str,
    body: type[BaseModel] | None = None,
    query: type[BaseModel] | None = None,
    responses: dict[int, type[BaseModel] | None] | None = None,
    errors: tuple[str, ...] = (),
    idempotent: bool = False,
    content_type: str = "application/json",
    defer_store_checks: bool = False,
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Declare a route: the view gets `principal`, and `body` / `query` when schemas are given.

    `defer_store_checks`: what authentication asks of the FastStore (a merchant's request nonce, whether
    a consumer session was ended) is not asked while authenticating; the view hands it on
    (auth.take_pending_nonce, take_pending_session) to a service that asks it in the same round trip as
    its own FastStore work. Whatever the view does not hand on is checked before the answer goes out,
    and its refusal replaces that answer, so the request is answered as if it had been checked first."""
    if auth not in AUTH_KINDS:
        raise ValueError(f"unknown auth kind {auth}")
    from voucher_service.api.auth import authenticate, settle_pending_checks  # late: auth imports services

    prefix = bp.url_prefix or ""
    ROUTES.append(
        RouteSpec(
            path=_openapi_path(prefix + rule),
            method=method.lower(),
            summary=summary,
            auth=auth,
            body=body,
            query=query,
            responses=responses or {200: None},
            errors=errors,
            idempotent=idempotent,
            tag=bp.name,
            content_type=content_type,
        )
    )

    def decorate(view: Callable[..., Any]) -> Callable[..., Any]:
        def run(**kwargs: Any) -> Response | Any:
            refuse_nul(kwargs, "path")
            kwargs["principal"] = authenticate(auth)
            require_json_body()
            if body is not None:
                kwargs["body"] = parse_body(body)
            if query is not None:
                kwargs["query"] = parse_query(query)
            return view(**kwargs)

        @functools.wraps(view)
        def wrapper(**kwargs: Any) -> Response | Any:
            if not defer_store_checks:
                return run(**kwargs)
            g.defer_store_checks = True
            try:
                answer = run(**kwargs)
            except BaseException:
                settle_pending_checks()
                raise
            settle_pending_checks()
            return answer

        bp.add_url_rule(rule, endpoint=view.__name__, view_func=wrapper, methods=[method])
        return wrapper

    return decorate


def json_bytes(payload: Any) -> bytes:
    """A payload as the API sends it: compact UTF-8 JSON."""
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()


def json_response(payload: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    """Serialise a payload as compact UTF-8 JSON."""
    resp = Response(json_bytes(payload), status=status, mimetype="application/json")
    for k, v in (headers or {}).items():
        resp.headers[k] = v
    return resp
