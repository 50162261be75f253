"""Test support for the SDK: a scripted fake service, token making with the server's signing code,
and the real app served over HTTP (werkzeug) for the tests that run the SDK against it."""

from __future__ import annotations

import dataclasses
import json
import socket
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from voucher_service.adapters import signing
from voucher_service.domain.gtin import with_check_digit
from voucher_service.domain.tokens import VoucherClaims
from voucher_service.services import offline_sync

DROP = "drop-connection"  # a reply that closes the connection without answering


@dataclass
class Seen:
    """One request the fake service received."""

    method: str
    target: str  # the request target as sent: path and query
    headers: dict[str, str]
    body: bytes

    @property
    def path(self) -> str:
        return urlsplit(self.target).path

    def json(self) -> Any:
        return json.loads(self.body)


Reply = tuple[int, dict[str, str], Any] | str
Handler = Callable[[Seen], Reply]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, *args: Any) -> None:  # keep pytest output clean
        pass

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        seen = Seen(self.command, self.path, {k: v for k, v in self.headers.items()}, self.rfile.read(length))
        reply = self.server.fake.dispatch(seen)
        if reply == DROP:
            self.close_connection = True
            return
        assert not isinstance(reply, str)
        status, headers, body = reply
        raw = body if isinstance(body, bytes) else b"" if body is None else json.dumps(body).encode()
        self.send_response(status)
        content_type = "application/problem+json" if status >= 400 else "application/json"
        self.send_header("Content-Type", headers.pop("Content-Type", content_type))
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    do_GET = do_POST = do_PUT = do_DELETE = _serve


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    fake: FakeService
    open_sockets: set[socket.socket]

    def process_request(self, request: Any, client_address: Any) -> None:
        self.open_sockets.add(request)
        super().process_request(request, client_address)

    def close_open_connections(self) -> None:
        """Cut kept-alive connections too, so a stopped service is really unreachable."""
        for sock in list(self.open_sockets):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self.open_sockets.clear()


class FakeService:
    """A tiny HTTP service in a thread, answering from scripted replies and recording every request."""

    def __init__(self) -> None:
        self.seen: list[Seen] = []
        self._routes: dict[tuple[str, str], Handler | list[Reply]] = {}
        self._lock = threading.Lock()
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.fake = self
        self._server.open_sockets = set()
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True)
        self._thread.start()
        self.running = True

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def reply(self, method: str, path: str, *replies: Reply) -> None:
        """Answer these replies in turn; the last one repeats."""
        self._routes[(method, path)] = list(replies)

    def handle(self, method: str, path: str, handler: Handler) -> None:
        """Answer with a function of the request."""
        self._routes[(method, path)] = handler

    def dispatch(self, seen: Seen) -> Reply:
        with self._lock:
            self.seen.append(seen)
            route = self._routes.get((seen.method, seen.path))
            if route is None:
                return 404, {}, problem("not_found", 404)
            if callable(route):
                handler = route
            else:
                return route.pop(0) if len(route) > 1 else route[0]
        return handler(seen)

    def requests_to(self, path: str) -> list[Seen]:
        return [s for s in self.seen if s.path == path]

    def stop(self) -> None:
        """Stop answering: later connections are refused."""
        if self.running:
            self._server.shutdown()
            self._server.close_open_connections()
            self._server.server_close()
            self._thread.join()
            self.running = False


def problem(code: str, status: int, **extra: Any) -> dict[str, Any]:
    """A problem+json body as the service sends it."""
    body = {
        "type": f"https://voucher.example.gov.cn/problems/{code}",
        "title": code,
        "status": status,
        "detail": f"detail of {code}",
        "code": code,
        "request_id": f"req-{code}",
    }
    body.update(extra)
    return body


def dead_port() -> int:
    """A local port nothing listens on (connections are refused)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# ---------------------------------------------------------------- tokens signed as the server signs them


class TokenMaker:
    """A voucher-signing key and VC1 tokens made with the server's own signing code."""

    def __init__(self) -> None:
        self.key = signing.generate_private_key()
        self.kid = signing.kid_bytes_for(self.key.public_key())
        self.jwk = {**signing.public_jwk(self.key.public_key()), "status": "active"}

    def jwks(self, *others: TokenMaker) -> dict[str, Any]:
        return {"keys": [self.jwk, *(o.jwk for o in others)]}

    def claims(self, **overrides: Any) -> VoucherClaims:
        now = int(time.time())
        values: dict[str, Any] = dict(
            voucher_id=str(uuid.uuid4()),
            program_id="prog-1",
            tier="T50",
            face_value_fen=5000,
            min_spend_fen=15000,
            iat=now - 60,
            nbf=now - 60,
            exp=now + 86_400,
        )
        values.update(overrides)
        return VoucherClaims(**values)

    def token(self, **overrides: Any) -> str:
        return signing.encode_token(self.key, self.kid, self.claims(**overrides).to_cbor_map())

    def token_for(self, claims: VoucherClaims) -> str:
        return signing.encode_token(self.key, self.kid, claims.to_cbor_map())


def gtin(body: str) -> str:
    """A valid GTIN-13 from its 12-digit body."""
    return with_check_digit(body)


GTIN_RICE, GTIN_OIL, GTIN_TEA, GTIN_OLD, GTIN_SHENZHEN = (
    gtin("690123456789"),
    gtin("690123456790"),
    gtin("690123456791"),
    gtin("690123456792"),
    gtin("690123456793"),
)
GTIN_UNKNOWN = gtin("690999999999")


def snapshot_product(cert: str, gtin13: str, **overrides: Any) -> dict[str, Any]:
    """One product of GET /products/snapshot."""
    product = {
        "certification_no": cert,
        "certification_type": "guangxi",
        "product_name": f"product {cert}",
        "category": "grain",
        "supplier_id": "S1",
        "supplier_name": "巴马供应商",
        "county_code": "451227",
        "county_name": "巴马瑶族自治县",
        "gtins": [gtin13.zfill(14)],
        "valid_from": "2020-01-01",
        "valid_to": "2099-12-31",
        "status": "active",
        "version": 1,
    }
    product.update(overrides)
    return product


def fake_program(program_id: str = "prog-1", **overrides: Any) -> dict[str, Any]:
    """One programme of GET /merchant/programs."""
    program = {
        "id": program_id,
        "name": "龙岗区扶贫产品消费券",
        "status": "active",
        "starts_at": "2020-01-01T00:00:00Z",
        "ends_at": "2099-01-31T23:59:59Z",
        "timezone": "Asia/Shanghai",
        "channels": ["online", "offline"],
        "tiers": [{"code": "T50", "face_value_fen": 5000, "min_spend_fen": 15000}],
        "eligibility": {"certification_types": ["national", "guangxi"], "county_codes": None},
        "offline": {"max_offline_fen_per_terminal": 20_000, "max_offline_hours": 24},
    }
    program.update(overrides)
    return program


@dataclass
class FakeOfflineBackend:
    """The offline routes of the service, faked: judged records are verified with the server's own
    offline_sync functions (so the SDK's record format is checked against the server's reading of it)."""

    fake: FakeService
    maker: TokenMaker
    merchant_id: str
    programs: list[dict[str, Any]] = field(default_factory=lambda: [fake_program()])
    revoked: list[str] = field(default_factory=list)
    products: list[dict[str, Any]] = field(default_factory=list)
    terminals: dict[str, dict[str, Any]] = field(default_factory=dict)
    stored: dict[tuple[str, int], dict[str, Any]] = field(default_factory=dict)
    lose_next_sync_answer: bool = False

    def install(self) -> FakeOfflineBackend:
        f = self.fake
        f.handle("GET", "/api/v1/keys", lambda s: (200, {}, self.maker.jwks()))
        f.handle("GET", "/api/v1/merchant/programs", lambda s: (200, {}, {"programs": self.programs}))
        for p in self.programs:
            f.handle(
                "GET",
                f"/api/v1/programs/{p['id']}/revocations",
                lambda s: (200, {}, {"version": len(self.revoked), "voucher_ids": list(self.revoked)}),
            )
        f.handle(
            "GET",
            "/api/v1/products/snapshot",
            lambda s: (200, {}, {"version": 7, "since": 0, "products": self.products}),
        )
        f.handle("POST", f"/api/v1/merchants/{self.merchant_id}/terminals", self._register)
        f.handle("POST", "/api/v1/offline-redemptions", self._upload)
        return self

    def _register(self, seen: Seen) -> Reply:
        body = seen.json()
        self.terminals[body["terminal_id"]] = body["public_key"]
        return 201, {}, {"terminal_id": body["terminal_id"], "public_key": body["public_key"]}

    def _upload(self, seen: Seen) -> Reply:
        body = seen.json()
        terminal_id = body["terminal_id"]
        if terminal_id not in self.terminals:
            return 404, {}, problem("not_found", 404)
        key = signing.public_key_from_jwk(self.terminals[terminal_id])
        results, broken = [], False
        for rec in sorted(body["records"], key=lambda r: r["seq"]):
            stored = self.stored.get((terminal_id, rec["seq"]))
            if broken:
                results.append(
                    {
                        "seq": rec["seq"],
                        "status": "rejected",
                        "code": offline_sync.AFTER_REJECTED,
                        "redemption_id": None,
                    }
                )
                continue
            if stored is not None and stored["record_hash"] == rec["record_hash"]:
                results.append(
                    {
                        "seq": rec["seq"],
                        "status": "duplicate",
                        "code": None,
                        "redemption_id": stored["redemption_id"],
                    }
                )
                continue
            heads = [k[1] for k in self.stored if k[0] == terminal_id]
            prev_seq = max(heads, default=0)
            prev_hash = (
                self.stored[(terminal_id, prev_seq)]["record_hash"] if prev_seq else offline_sync.GENESIS_HASH
            )
            record = offline_sync.UploadedRecord(
                rec["seq"], rec["prev_hash"], rec["record_hash"], rec["signature"], rec["payload"]
            )
            code = offline_sync.integrity_problem(record, prev_seq, prev_hash, key)
            if code is not None:
                broken = True
                results.append({"seq": rec["seq"], "status": "rejected", "code": code, "redemption_id": None})
                continue
            redemption_id = str(uuid.uuid4())
            self.stored[(terminal_id, rec["seq"])] = {
                "record_hash": rec["record_hash"],
                "redemption_id": redemption_id,
            }
            results.append(
                {"seq": rec["seq"], "status": "accepted", "code": None, "redemption_id": redemption_id}
            )
        if self.lose_next_sync_answer:
            self.lose_next_sync_answer = False
            return DROP
        return 200, {}, {"terminal_id": terminal_id, "results": results}


# ---------------------------------------------------------------- the real app


def declared_routes() -> set[str]:
    """'METHOD /rule' of every route the app declares now (built once, touching no database)."""
    from tests.conftest import make_settings
    from voucher_service import create_app

    with tempfile.TemporaryDirectory() as tmp:
        app = create_app(make_settings(Path(tmp), f"sqlite:///{tmp}/routes.sqlite3"))
        routes = {f"{m} {r.rule}" for r in app.url_map.iter_rules() for m in (r.methods or ())}
        app.extensions["voucher"].engine.dispose()
    return routes


_ROUTES: set[str] | None = None


def needs_routes(*routes: str) -> pytest.MarkDecorator:
    """Skip until the app declares these routes ('POST /api/v1/redemptions', ...)."""
    global _ROUTES
    if _ROUTES is None:
        _ROUTES = declared_routes()
    missing = [r for r in routes if r not in _ROUTES]
    return pytest.mark.skipif(bool(missing), reason=f"routes not built yet: {', '.join(missing)}")


def needs_offline_redemption_service() -> pytest.MarkDecorator:
    """Skip until services.redemption.record_offline_redemption (the redemption area's) exists."""
    try:
        from voucher_service.services import redemption

        present = callable(getattr(redemption, "record_offline_redemption", None))
    except ImportError:
        present = False
    return pytest.mark.skipif(
        not present, reason="services.redemption.record_offline_redemption not built yet"
    )


def asdict(obj: Any) -> dict[str, Any]:
    return dataclasses.asdict(obj)
