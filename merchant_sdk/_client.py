"""VoucherClient: signed requests, idempotent retries, typed answers, offline token verification."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import random
import secrets
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any
from urllib.parse import quote

import requests

from merchant_sdk._cose import (
    PRESENTATION_PREFIX,
    KeySet,
    parse_presentation,
    parse_token,
    verify_parsed,
    verify_presentation,
)
from merchant_sdk._errors import (
    APIConnectionError,
    PresentationRequired,
    TokenInvalid,
    VoucherError,
    error_from_response,
    parse_retry_after,
)
from merchant_sdk._models import Claim, Item, Program, Redemption, Reversal, VoucherClaims

SDK_VERSION = "0.1.0"
RETRYABLE_EXCEPTIONS = (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError)
ItemLike = Item | Mapping[str, Any] | Sequence[Any]


def sign_request(
    secret: str, method: str, path_and_query: str, timestamp: str, nonce: str, body: bytes
) -> str:
    """The contract's v1 signature: HMAC-SHA256 of METHOD, PATH_AND_QUERY, TIMESTAMP, NONCE, sha256(body)."""
    canonical = "\n".join(
        [method.upper(), path_and_query, timestamp, nonce, hashlib.sha256(body).hexdigest()]
    )
    return "v1=" + hmac.new(secret.encode(), canonical.encode(), hashlib.sha256).hexdigest()


def seg(value: str) -> str:
    """Percent-encode one path segment."""
    return quote(str(value), safe="")


def _strict_int(value: Any, name: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"{name} must be an int (fen / count), not {type(value).__name__}")
    return value


def item_json(item: ItemLike) -> dict[str, Any]:
    """The JSON of a basket line given as an Item, a dict, or a (gtin, quantity, unit_price_fen) tuple."""
    if isinstance(item, Item):
        out = item.to_json()
    elif isinstance(item, Mapping):
        out = {k: v for k, v in item.items() if v is not None or k == "gtin"}
    elif isinstance(item, Sequence) and not isinstance(item, str | bytes) and len(item) == 3:
        out = {"gtin": item[0], "quantity": item[1], "unit_price_fen": item[2]}
    else:
        raise TypeError("an item is an Item, a mapping, or a (gtin, quantity, unit_price_fen) tuple")
    _strict_int(out.get("quantity"), "quantity")
    _strict_int(out.get("unit_price_fen"), "unit_price_fen")
    return out


def _time_param(value: dt.datetime | dt.date | str) -> str:
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            raise ValueError("give an aware datetime (UTC or with an offset)")
        return value.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    if isinstance(value, dt.date):
        return value.isoformat()
    return str(value)


class VoucherClient:
    """A merchant's connection to the voucher service. Thread-safe for concurrent calls."""

    def __init__(
        self,
        base_url: str,
        merchant_id: str,
        api_secret: str,
        max_retries: int = 2,
        timeout: float = 10.0,
        *,
        session: requests.Session | None = None,
        backoff_base: float = 0.5,
        backoff_cap: float = 8.0,
        max_retry_after: float = 60.0,
        keys_ttl: float = 3600.0,
        clock: Callable[[], float] | None = None,
    ) -> None:
        if max_retries < 0:
            raise ValueError("max_retries must be >= 0")
        self.base_url = base_url.rstrip("/")
        self.merchant_id = merchant_id
        self._secret = api_secret
        self.max_retries = max_retries
        self.timeout = timeout
        self.backoff_base = backoff_base
        self.backoff_cap = backoff_cap
        self.max_retry_after = max_retry_after
        self.keys_ttl = keys_ttl
        self._clock = clock or time.time  # unix seconds: what verify() judges validity and freshness by
        self._http = session or requests.Session()
        self._http.headers["User-Agent"] = f"voucher-merchant-sdk/{SDK_VERSION}"
        self._sleep: Callable[[float], None] = time.sleep
        self.key_set = KeySet()
        self._keys_fetched_at = float("-inf")

    def __repr__(self) -> str:  # never show the secret
        return f"VoucherClient({self.base_url!r}, merchant_id={self.merchant_id!r})"

    def close(self) -> None:
        """Close the pooled HTTP connections."""
        self._http.close()

    def __enter__(self) -> VoucherClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ transport

    def _backoff(self, attempt: int) -> float:
        """Exponential backoff with full jitter."""
        return random.uniform(0.0, min(self.backoff_cap, self.backoff_base * (2**attempt)))

    def _send_once(
        self,
        method: str,
        path: str,
        query: Mapping[str, Any] | None,
        body: bytes,
        headers: dict[str, str],
        signed: bool,
    ) -> requests.Response:
        prepped = self._http.prepare_request(
            requests.Request(
                method, self.base_url + path, params=dict(query or {}), data=body or None, headers=headers
            )
        )
        if signed:
            # Fresh timestamp, nonce and signature on every attempt; signed over the target as sent.
            timestamp, nonce = str(int(time.time())), secrets.token_urlsafe(24)
            prepped.headers["X-Voucher-Merchant"] = self.merchant_id
            prepped.headers["X-Voucher-Timestamp"] = timestamp
            prepped.headers["X-Voucher-Nonce"] = nonce
            prepped.headers["X-Voucher-Signature"] = sign_request(
                self._secret, method, prepped.path_url, timestamp, nonce, body
            )
        settings = self._http.merge_environment_settings(prepped.url or "", {}, None, None, None)
        return self._http.send(prepped, timeout=self.timeout, allow_redirects=False, **settings)

    def request(
        self,
        method: str,
        path: str,
        *,
        query: Mapping[str, Any] | None = None,
        json_body: Any = None,
        signed: bool = True,
        idempotency_key: str | None = None,
    ) -> Any:
        """Send a request with retries; return the decoded JSON of a 2xx answer or raise a VoucherError."""
        body = (
            b""
            if json_body is None
            else json.dumps(json_body, ensure_ascii=False, separators=(",", ":")).encode()
        )
        headers = {"Accept": "application/json"}
        if body:
            headers["Content-Type"] = "application/json"
        if idempotency_key is not None:
            headers["Idempotency-Key"] = idempotency_key
        attempt = 0
        while True:
            try:
                resp = self._send_once(method, path, query, body, headers, signed)
            except RETRYABLE_EXCEPTIONS as exc:
                if attempt >= self.max_retries:
                    raise APIConnectionError(f"{method} {path}: {exc.__class__.__name__}: {exc}") from exc
                self._sleep(self._backoff(attempt))
                attempt += 1
                continue
            except requests.RequestException as exc:
                raise APIConnectionError(f"{method} {path}: {exc}") from exc
            if resp.status_code < 300:
                return self._decode(resp)
            error = error_from_response(resp.status_code, self._decode_error(resp), resp.headers)
            if not self._retryable(resp.status_code, error) or attempt >= self.max_retries:
                raise error
            retry_after = parse_retry_after(resp.headers.get("Retry-After"))
            if retry_after is not None and retry_after > self.max_retry_after:
                raise error  # the service asks for a longer pause than a till should block for
            self._sleep(retry_after if retry_after is not None else self._backoff(attempt))
            attempt += 1

    @staticmethod
    def _retryable(status: int, error: VoucherError) -> bool:
        """5xx, 429 and 409 `idempotency_in_progress` (the key's first attempt is still running or its
        lease has yet to run out): the same request with the same key may succeed later."""
        return status >= 500 or status == 429 or (status == 409 and error.code == "idempotency_in_progress")

    @staticmethod
    def _decode(resp: requests.Response) -> Any:
        if not resp.content:
            return None
        try:
            return resp.json()
        except ValueError:
            raise VoucherError(
                f"HTTP {resp.status_code} answer is not JSON", code="bad_response", status=resp.status_code
            ) from None

    @staticmethod
    def _decode_error(resp: requests.Response) -> Any:
        try:
            return resp.json()
        except ValueError:
            return {"detail": resp.text[:200] or f"HTTP {resp.status_code}"}

    # ------------------------------------------------------------------ redemption

    def _redemption_body(
        self, token: str, items: Iterable[ItemLike], order_id: str, channel: str, terminal_id: str | None
    ) -> dict[str, Any]:
        return {
            "token": token,
            "order_id": order_id,
            "channel": channel,
            "terminal_id": terminal_id,
            "items": [item_json(i) for i in items],
        }

    def preview(
        self,
        token: str,
        items: Iterable[ItemLike],
        *,
        order_id: str,
        channel: str = "online",
        terminal_id: str | None = None,
    ) -> Redemption:
        """Compute a redemption without changing anything (POST /api/v1/redemptions/preview)."""
        body = self._redemption_body(token, items, order_id, channel, terminal_id)
        return Redemption.from_json(self.request("POST", "/api/v1/redemptions/preview", json_body=body))

    def redeem(
        self,
        token: str,
        items: Iterable[ItemLike],
        *,
        order_id: str,
        channel: str = "online",
        idempotency_key: str | None = None,
        terminal_id: str | None = None,
    ) -> Redemption:
        """Redeem a voucher against a basket; retried safely under one Idempotency-Key."""
        body = self._redemption_body(token, items, order_id, channel, terminal_id)
        key = idempotency_key or str(uuid.uuid4())
        return Redemption.from_json(
            self.request("POST", "/api/v1/redemptions", json_body=body, idempotency_key=key)
        )

    def reverse(
        self,
        redemption_id: str,
        lines: Iterable[Mapping[str, int] | tuple[int, int]] | None = None,
        idempotency_key: str | None = None,
    ) -> Reversal:
        """Reverse a redemption in full (lines=None) or some lines: [{"index", "quantity"}] or tuples."""
        body: dict[str, Any] = {}
        if lines is not None:
            body["lines"] = [
                {
                    "index": _strict_int(x["index"], "index"),
                    "quantity": _strict_int(x["quantity"], "quantity"),
                }
                if isinstance(x, Mapping)
                else {"index": _strict_int(x[0], "index"), "quantity": _strict_int(x[1], "quantity")}
                for x in lines
            ]
        key = idempotency_key or str(uuid.uuid4())
        path = f"/api/v1/redemptions/{seg(redemption_id)}/reversals"
        return Reversal.from_json(self.request("POST", path, json_body=body, idempotency_key=key))

    def redemptions(self, since: dt.datetime | dt.date | str | None = None) -> Iterator[Redemption]:
        """Iterate over the merchant's redemptions (from `since`), following `next_cursor` page by page."""
        query: dict[str, str] = {} if since is None else {"from": _time_param(since)}
        while True:
            page = self.request("GET", "/api/v1/redemptions", query=query) or {}
            items: list[Any] = next(
                (page[k] for k in ("redemptions", "items", "data") if isinstance(page.get(k), list)), []
            )
            for item in items:
                yield Redemption.from_json(item)
            cursor = page.get("next_cursor")
            if not cursor:
                return
            query = {**query, "cursor": str(cursor)}

    def claim(
        self,
        program_id: str,
        tier: str,
        holder_ref: str,
        holder_phone: str | None = None,
        idempotency_key: str | None = None,
        device_key: Mapping[str, Any] | None = None,
    ) -> Claim:
        """Claim a voucher for one of a platform's users (POST /api/v1/programs/{id}/claims).

        `device_key`: the public JWK (EC P-256) of the key the user's app holds, for a programme with
        holder binding (CONTRACT §10); the app then shows VP1 live codes made with it."""
        body: dict[str, Any] = {"tier": tier, "holder_ref": holder_ref}
        if holder_phone is not None:
            body["holder_phone"] = holder_phone
        if device_key is not None:
            body["device_key"] = {k: device_key[k] for k in ("kty", "crv", "x", "y") if k in device_key}
        key = idempotency_key or str(uuid.uuid4())
        path = f"/api/v1/programs/{seg(program_id)}/claims"
        return Claim.from_json(self.request("POST", path, json_body=body, idempotency_key=key))

    # ------------------------------------------------------------------ keys and offline verification

    def refresh_keys(self) -> dict[str, Any]:
        """Fetch the voucher-signing keys (GET /api/v1/keys, public) and cache them parsed."""
        jwks = self.request("GET", "/api/v1/keys", signed=False)
        if not isinstance(jwks, dict) or not isinstance(jwks.get("keys"), list):
            raise VoucherError("GET /api/v1/keys did not answer a JWKS", code="bad_response")
        self.load_keys(jwks)
        return self.key_set.jwks

    def load_keys(self, jwks: Mapping[str, Any]) -> None:
        """Use this JWKS (e.g. provisioned with the till) as the cached keys, as if just fetched."""
        self.key_set.load(jwks)
        self._keys_fetched_at = time.monotonic()

    def verify(self, token: str) -> VoucherClaims:
        """Verify a VC1 token or a VP1 live code offline against the cached keys (one refresh for an
        unknown kid when online). A VP1's device signature and freshness are checked too; a holder-bound
        VC1 alone raises PresentationRequired (CONTRACT §10)."""
        presented = (
            parse_presentation(token)
            if isinstance(token, str) and token.startswith(PRESENTATION_PREFIX)
            else None
        )
        parsed = presented.token if presented is not None else parse_token(token)
        if not self.key_set.loaded:
            self.refresh_keys()  # no keys at all: nothing to verify against without the network
        elif self.key_set.get(parsed.kid) is None:
            try:
                self.refresh_keys()
            except VoucherError as exc:  # offline or the service failing: the kid stays unknown
                raise TokenInvalid(
                    f"The voucher's key is not cached and the keys could not be refreshed: {exc}"
                ) from exc
        elif time.monotonic() - self._keys_fetched_at > self.keys_ttl:
            self._refresh_keys_quietly()
        if presented is not None:
            return verify_presentation(presented, self.key_set, self._clock())
        claims = verify_parsed(parsed, self.key_set, self._clock())
        if claims.holder_key_thumbprint is not None:
            raise PresentationRequired(
                "This voucher is bound to its holder's phone: scan the live code (VP1:)."
            )
        return claims

    def _refresh_keys_quietly(self) -> None:
        try:
            self.refresh_keys()
        except VoucherError:  # keep verifying offline with the cached keys; try again in a minute
            self._keys_fetched_at = time.monotonic() - self.keys_ttl + 60.0

    # ------------------------------------------------------------------ what an offline terminal fetches

    def programs(self) -> list[Program]:
        """The programmes this merchant is enrolled in (GET /api/v1/merchant/programs)."""
        return [Program.from_json(p) for p in self.programs_json()]

    def programs_json(self) -> list[dict[str, Any]]:
        """The raw JSON objects of GET /api/v1/merchant/programs."""
        data = self.request("GET", "/api/v1/merchant/programs") or {}
        return [p for p in data.get("programs") or [] if isinstance(p, dict)]

    def revocations(self, program_id: str, since: int = 0) -> dict[str, Any]:
        """Vouchers of a programme redeemed or voided since `since`: {"version", "voucher_ids"}."""
        path = f"/api/v1/programs/{seg(program_id)}/revocations"
        return dict(self.request("GET", path, query={"since": str(since)}) or {})

    def product_snapshot(self, since: int = 0) -> dict[str, Any]:
        """Registry changes since `since`: {"version", "since", "products"} (public)."""
        return dict(
            self.request("GET", "/api/v1/products/snapshot", query={"since": str(since)}, signed=False) or {}
        )

    def register_terminal(self, terminal_id: str, public_key: Mapping[str, Any]) -> Any:
        """Register an offline terminal's public key (POST /api/v1/merchants/{id}/terminals)."""
        path = f"/api/v1/merchants/{seg(self.merchant_id)}/terminals"
        return self.request(
            "POST", path, json_body={"terminal_id": terminal_id, "public_key": dict(public_key)}
        )

    def upload_offline_records(self, terminal_id: str, records: list[dict[str, Any]]) -> dict[str, Any]:
        """Upload journal records (POST /api/v1/offline-redemptions); safe to repeat."""
        body = {"terminal_id": terminal_id, "records": records}
        return dict(self.request("POST", "/api/v1/offline-redemptions", json_body=body) or {})
