"""One exception per error code of the service, plus the SDK's own network and offline refusals."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


class VoucherError(Exception):
    """Base of every failure the SDK raises; `code` is the service's stable error code."""

    code: str = "voucher_error"
    status: int | None = None

    def __init__(
        self,
        detail: str | None = None,
        *,
        code: str | None = None,
        status: int | None = None,
        request_id: str | None = None,
        body: Mapping[str, Any] | None = None,
    ) -> None:
        self.detail = detail or self.__class__.__doc__ or self.code
        super().__init__(self.detail)
        if code is not None:
            self.code = code
        if status is not None:
            self.status = status
        self.request_id = request_id
        self.body: dict[str, Any] = dict(body or {})

    def __str__(self) -> str:
        where = f" [request {self.request_id}]" if self.request_id else ""
        return f"{self.code}: {self.detail}{where}"


class ValidationError(VoucherError):
    """The body or query does not match the schema; `errors` lists the fields."""

    code, status = "validation_error", 400

    @property
    def errors(self) -> list[dict[str, str]]:
        return list(self.body.get("errors") or [])


class TokenMalformed(VoucherError):
    """The text is not a VC1: token that decodes."""

    code, status = "token_malformed", 400


class Unauthorized(VoucherError):
    """Missing or wrong credentials, a bad request signature or a clock more than 300 s off."""

    code, status = "unauthorized", 401


class ReplayedRequest(VoucherError):
    """The request nonce was seen before."""

    code, status = "replayed_request", 401


class Forbidden(VoucherError):
    """Authenticated but not allowed."""

    code, status = "forbidden", 403


class MerchantNotEnrolled(VoucherError):
    """The merchant is not enrolled in the voucher's programme, or not for that channel."""

    code, status = "merchant_not_enrolled", 403


class NotFound(VoucherError):
    """No such resource."""

    code, status = "not_found", 404


class ProgramNotActive(VoucherError):
    """Outside the programme's window, or the programme is suspended."""

    code, status = "program_not_active", 409


class TierSoldOut(VoucherError):
    """No voucher of that tier is left to claim."""

    code, status = "tier_sold_out", 409


class ClaimLimitReached(VoucherError):
    """The holder already has the programme's per-person limit."""

    code, status = "claim_limit_reached", 409


class VoucherAlreadyRedeemed(VoucherError):
    """The voucher was already redeemed."""

    code, status = "voucher_already_redeemed", 409


class IdempotencyInProgress(VoucherError):
    """A request with the same Idempotency-Key is still running."""

    code, status = "idempotency_in_progress", 409


class IdempotencyKeyReused(VoucherError):
    """The Idempotency-Key was used before with a different body."""

    code, status = "idempotency_key_reused", 422


class TokenInvalid(VoucherError):
    """The token's signature does not verify, or its kid is unknown."""

    code, status = "token_invalid", 422


class VoucherExpired(VoucherError):
    """The voucher has expired."""

    code, status = "voucher_expired", 422


class VoucherNotYetValid(VoucherError):
    """The voucher is not valid yet."""

    code, status = "voucher_not_yet_valid", 422


class VoucherVoid(VoucherError):
    """The voucher was voided."""

    code, status = "voucher_void", 422


class NoEligibleItems(VoucherError):
    """No basket line is a certified product within the programme's scope."""

    code, status = "no_eligible_items", 422


class ThresholdNotMet(VoucherError):
    """The eligible total is below the tier's minimum spend; `lines` has the per-line verdicts."""

    code, status = "threshold_not_met", 422

    @property
    def lines(self) -> list[dict[str, Any]]:
        return list(self.body.get("lines") or [])


class BudgetExceeded(VoucherError):
    """The programme's tiers add up to more than its budget."""

    code, status = "budget_exceeded", 422


class RateLimited(VoucherError):
    """Too many requests; `retry_after` says how many seconds to wait."""

    code, status = "rate_limited", 429

    def __init__(self, detail: str | None = None, *, retry_after: float | None = None, **kw: Any) -> None:
        super().__init__(detail, **kw)
        self.retry_after = retry_after


class APIConnectionError(VoucherError):
    """The service could not be reached (connection refused, DNS, timeout, TLS)."""

    code = "api_connection_error"


class OfflineLimitExceeded(VoucherError):
    """The terminal reached its programme's cap of offline discounts since the last sync: sync first."""

    code = "offline_limit_exceeded"


class OfflineRefreshRequired(OfflineLimitExceeded):
    """The terminal's offline data is missing or older than the programme allows: refresh() online."""

    code = "offline_refresh_required"


class VoucherRevoked(VoucherError):
    """The voucher is on the programme's revocation list (redeemed or voided elsewhere)."""

    code, status = "voucher_revoked", 409


class PresentationStale(VoucherError):
    """The live code (VP1) is older than 60 s, or dated too far ahead: ask for the code on the phone again."""

    code, status = "presentation_stale", 422


class PresentationInvalid(VoucherError):
    """The live code (VP1) is not signed by the device key its voucher is bound to (or that key was replaced)."""

    code, status = "presentation_invalid", 422


class PresentationRequired(VoucherError):
    """The voucher is holder-bound: only its live code (VP1) from the holder's phone redeems it."""

    code, status = "presentation_required", 422


ERROR_CLASSES: dict[str, type[VoucherError]] = {
    cls.code: cls
    for cls in (
        ValidationError,
        TokenMalformed,
        Unauthorized,
        ReplayedRequest,
        Forbidden,
        MerchantNotEnrolled,
        NotFound,
        ProgramNotActive,
        TierSoldOut,
        ClaimLimitReached,
        VoucherAlreadyRedeemed,
        IdempotencyInProgress,
        IdempotencyKeyReused,
        TokenInvalid,
        VoucherExpired,
        VoucherNotYetValid,
        VoucherVoid,
        NoEligibleItems,
        ThresholdNotMet,
        BudgetExceeded,
        RateLimited,
        PresentationStale,
        PresentationInvalid,
        PresentationRequired,
    )
}


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or an HTTP date), or None."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    import email.utils
    import time

    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def error_from_response(status: int, body: Any, headers: Mapping[str, str]) -> VoucherError:
    """The exception for an error response: by its problem+json `code`, else a plain VoucherError."""
    problem: dict[str, Any] = body if isinstance(body, dict) else {}
    code = problem.get("code") if isinstance(problem.get("code"), str) else None
    request_id = problem.get("request_id") or headers.get("X-Request-Id") or None
    detail = problem.get("detail") or problem.get("title") or f"HTTP {status}"
    cls = ERROR_CLASSES.get(code or "", VoucherError)
    kw: dict[str, Any] = dict(
        code=code or f"http_{status}", status=status, request_id=request_id, body=problem
    )
    if cls is RateLimited:
        return RateLimited(str(detail), retry_after=parse_retry_after(headers.get("Retry-After")), **kw)
    return cls(str(detail), **kw)
