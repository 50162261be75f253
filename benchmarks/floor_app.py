"""The floor of the claim and redemption benchmarks: a minimal Flask app that does the real routes' SQL
(benchmarks/_floor_sql.py) through psycopg directly, and nothing else.

No authentication, no validation, no Redis, no SQLAlchemy, no audit sealer: one psycopg connection per
gunicorn thread, the same statements and commits as the real route, and a JSON answer. What the real
route costs above this is the application's own work.

    FLOOR_DATABASE_URL=postgresql://postgres@127.0.0.1/db gunicorn 'benchmarks.floor_app:create_app()'

POST /floor/claims       {"program_id", "tier", "holder_ref", "merchant_id", "per_person_limit", "token"}
POST /floor/redemptions  {"voucher_id", "program_id", "merchant_id", "order_id", "items"} with an
                         Idempotency-Key header; items as the real route takes them
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import threading
import uuid
from typing import Any

import psycopg
from flask import Flask, Response, request

from benchmarks import _floor_sql as sql

VALIDITY = dt.timedelta(days=30)
LEASE = dt.timedelta(seconds=30)


def _json(payload: Any, status: int = 200) -> Response:
    return Response(json.dumps(payload, ensure_ascii=False), status, mimetype="application/json")


def create_app() -> Flask:
    url = os.environ["FLOOR_DATABASE_URL"].replace("postgresql+psycopg://", "postgresql://")
    app = Flask(__name__)
    local = threading.local()

    def conn() -> psycopg.Connection[Any]:
        c = getattr(local, "conn", None)
        if c is None or c.closed:
            c = local.conn = psycopg.connect(url)
        return c

    @app.get("/healthz")
    @app.get("/readyz")
    def healthz() -> Response:
        return _json({"status": "ok"})

    @app.post("/floor/claims")
    def claim() -> Response:
        body = request.get_json(force=True)
        now = dt.datetime.now(dt.UTC)
        holder_hash = hashlib.sha256(body["holder_ref"].encode()).hexdigest()
        params = {
            "program_id": body["program_id"],
            "tier_code": body["tier"],
            "holder_hash": holder_hash,
            "per_person_limit": body["per_person_limit"],
        }
        c = conn()
        with c.transaction():
            counted, voucher_id = c.execute(sql.RESERVE, params).fetchone() or (False, None)
            if not counted or voucher_id is None:
                return _json({"code": "tier_sold_out" if counted else "claim_limit_reached"}, 409)
            audit = {"program_id": body["program_id"], "tier": body["tier"], "holder": holder_hash[:12]}
            c.execute(
                sql.ISSUE,
                {
                    "voucher_id": voucher_id,
                    "holder_hash": holder_hash,
                    "merchant_id": body["merchant_id"],
                    "now": now,
                    "valid_from": now,
                    "expires_at": now + VALIDITY,
                    "kid": "floor",
                    "token": body["token"],
                    "actor": f"merchant:{body['merchant_id']}",
                    "audit_data": json.dumps(audit | {"merchant_id": body["merchant_id"]}),
                },
            ).fetchone()
        return _json({"voucher_id": voucher_id, "tier": body["tier"], "token": body["token"]}, 201)

    @app.post("/floor/redemptions")
    def redeem() -> Response:
        raw = request.get_data()
        body = json.loads(raw)
        merchant_id, key = body["merchant_id"], request.headers["Idempotency-Key"]
        now = dt.datetime.now(dt.UTC)
        locked_until = now + LEASE
        c = conn()
        with c.transaction():
            c.execute(
                sql.INSERT_LEASE,
                {
                    "merchant_id": merchant_id,
                    "key": key,
                    "route": "POST /api/v1/redemptions",
                    "request_sha256": hashlib.sha256(raw).hexdigest(),
                    "locked_until": locked_until,
                    "created_at": now,
                },
            ).fetchone()
        items = body["items"]
        gtins = [i["gtin"].rjust(14, "0") for i in items]
        with c.transaction():
            row = c.execute(
                sql.CHECKOUT_FACTS,
                {"voucher_id": body["voucher_id"], "merchant_id": merchant_id, "gtins": gtins},
            ).fetchone()
            if row is None:
                return _json({"code": "voucher_not_found"}, 404)
            face = row[4]
            products = {p[0]: p for p in row[-1] or []}
            lines, total, eligible_total = [], 0, 0
            for n, (item, gtin) in enumerate(zip(items, gtins, strict=True)):
                line_total = item["quantity"] * item["unit_price_fen"]
                product = products.get(gtin)
                total += line_total
                eligible_total += line_total if product else 0
                lines.append(
                    {
                        "index": n,
                        "gtin": gtin,
                        "sku": None,
                        "name": item.get("name"),
                        "quantity": item["quantity"],
                        "unit_price_fen": item["unit_price_fen"],
                        "line_total_fen": line_total,
                        "eligible": product is not None,
                        "reason": None if product else "not_certified",
                        "certification_no": product[1] if product else None,
                        "county_code": product[3] if product else None,
                        "discount_share_fen": 0,
                    }
                )
            redemption_id = str(uuid.uuid4())
            answer = {
                "redemption_id": redemption_id,
                "voucher_id": body["voucher_id"],
                "discount_fen": face,
                "order_total_fen": total,
                "eligible_total_fen": eligible_total,
                "lines": lines,
            }
            answer_bytes = json.dumps(answer, ensure_ascii=False).encode()
            finished, from_status = c.execute(
                sql.REDEEM_IDEMPOTENT,
                {
                    "response_status": 201,
                    "response_body": answer_bytes,
                    "idem_merchant_id": merchant_id,
                    "idem_key": key,
                    "locked_until": locked_until,
                    "voucher_id": body["voucher_id"],
                    "allowed": ["issued"],
                    "at": now,
                    "now": now,
                    "redemption_id": redemption_id,
                    "program_id": body["program_id"],
                    "merchant_id": merchant_id,
                    "order_id": body["order_id"],
                    "channel": "online",
                    "terminal_id": None,
                    "order_total_fen": total,
                    "eligible_total_fen": eligible_total,
                    "discount_fen": face,
                    "receipt": f"R-{redemption_id[:8]}",
                    "source": "online",
                    "actor": f"merchant:{merchant_id}",
                    "lines": json.dumps(lines, ensure_ascii=False),
                    "audit_data": json.dumps(
                        {"voucher_id": body["voucher_id"], "order_id": body["order_id"]}
                    ),
                },
            ).fetchone() or (False, None)
            if not finished or from_status is None:
                return _json({"code": "voucher_not_redeemable"}, 409)
        return Response(answer_bytes, 201, mimetype="application/json")

    return app
