"""One hierarchy of failures, each with the stable code and HTTP status of the contract."""

from __future__ import annotations

from typing import Any


class VoucherServiceError(Exception):
    """Base of every expected failure; the API maps it to problem+json in one place."""

    code = "internal_error"
    status = 500
    title = "Internal error"

    def __init__(self, detail: str | None = None, **extra: Any) -> None:
        super().__init__(detail or self.title)
        self.detail = detail or self.title
        self.extra = extra


def _error(name: str, code: str, status: int, title: str) -> type[VoucherServiceError]:
    return type(name, (VoucherServiceError,), {"code": code, "status": status, "title": title})


class ValidationFailed(VoucherServiceError):
    """Body or query does not match the schema; carries per-field messages."""

    code = "validation_error"
    status = 400
    title = "Validation error"

    def __init__(self, detail: str | None = None, errors: list[dict[str, str]] | None = None) -> None:
        super().__init__(detail or "The request does not match the schema.", errors=errors or [])


class RateLimited(VoucherServiceError):
    """Too many requests; the caller may retry after `retry_after` seconds."""

    code = "rate_limited"
    status = 429
    title = "Too many requests"

    def __init__(self, retry_after: int, detail: str | None = None) -> None:
        super().__init__(detail or f"Too many requests; retry after {retry_after} s.")
        self.retry_after = max(1, int(retry_after))


class ThresholdNotMet(VoucherServiceError):
    """The certified subtotal is below the tier's minimum spend; carries the per-line verdicts."""

    code = "threshold_not_met"
    status = 422
    title = "Minimum spend not met"

    def __init__(self, detail: str, lines: list[dict[str, Any]], **extra: Any) -> None:
        super().__init__(detail, lines=lines, **extra)


TokenMalformed = _error("TokenMalformed", "token_malformed", 400, "Malformed voucher token")
Unauthorized = _error("Unauthorized", "unauthorized", 401, "Unauthorized")
ReplayedRequest = _error("ReplayedRequest", "replayed_request", 401, "Replayed request")
Forbidden = _error("Forbidden", "forbidden", 403, "Forbidden")
MerchantNotEnrolled = _error("MerchantNotEnrolled", "merchant_not_enrolled", 403, "Merchant not enrolled")
NotFound = _error("NotFound", "not_found", 404, "Not found")
ProgramNotActive = _error("ProgramNotActive", "program_not_active", 409, "Programme not active")
OfflineLimitExceeded = _error("OfflineLimitExceeded", "offline_limit_exceeded", 409, "Offline limit exceeded")
OfflineRefreshRequired = _error(
    "OfflineRefreshRequired", "offline_refresh_required", 409, "Offline refresh required"
)
TierSoldOut = _error("TierSoldOut", "tier_sold_out", 409, "Tier sold out")
ClaimLimitReached = _error("ClaimLimitReached", "claim_limit_reached", 409, "Claim limit reached")
VoucherAlreadyRedeemed = _error(
    "VoucherAlreadyRedeemed", "voucher_already_redeemed", 409, "Voucher already redeemed"
)


class IdempotencyInProgress(VoucherServiceError):
    """Another attempt holds the key's lease; the answer says when to retry (Retry-After)."""

    code = "idempotency_in_progress"
    status = 409
    title = "Request with this key still running"

    def __init__(self, detail: str | None = None, retry_after: int = 1) -> None:
        super().__init__(detail)
        self.retry_after = max(1, int(retry_after))


class ServiceUnavailable(VoucherServiceError):
    """A dependency cannot do its part right now; the same request may succeed after `retry_after` s."""

    code = "service_unavailable"
    status = 503
    title = "Service unavailable"

    def __init__(self, detail: str | None = None, retry_after: int = 2) -> None:
        super().__init__(detail)
        self.retry_after = max(1, int(retry_after))


Conflict = _error("Conflict", "conflict", 409, "Conflict")
IdempotencyKeyReused = _error(
    "IdempotencyKeyReused", "idempotency_key_reused", 422, "Idempotency-Key reused with another body"
)
TokenInvalid = _error("TokenInvalid", "token_invalid", 422, "Invalid voucher token")
VoucherExpired = _error("VoucherExpired", "voucher_expired", 422, "Voucher expired")
VoucherNotYetValid = _error("VoucherNotYetValid", "voucher_not_yet_valid", 422, "Voucher not yet valid")
VoucherVoid = _error("VoucherVoid", "voucher_void", 422, "Voucher void")
NoEligibleItems = _error("NoEligibleItems", "no_eligible_items", 422, "No eligible items")
BudgetExceeded = _error("BudgetExceeded", "budget_exceeded", 422, "Budget exceeded")
InvalidState = _error("InvalidState", "invalid_state", 409, "Invalid state for this operation")
# Holder binding (docs/holder-binding.md): a bound voucher is redeemed only with a fresh VP1 presentation.
PresentationStale = _error("PresentationStale", "presentation_stale", 422, "Presentation too old")
PresentationInvalid = _error("PresentationInvalid", "presentation_invalid", 422, "Presentation invalid")
PresentationRequired = _error(
    "PresentationRequired", "presentation_required", 422, "Holder presentation required"
)
