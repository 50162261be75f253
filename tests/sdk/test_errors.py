"""Every error code of the contract maps to its own exception class, carrying code, status and request id."""

from __future__ import annotations

import pytest

import merchant_sdk
from merchant_sdk import (
    BudgetExceeded,
    ClaimLimitReached,
    Forbidden,
    IdempotencyInProgress,
    IdempotencyKeyReused,
    MerchantNotEnrolled,
    NoEligibleItems,
    NotFound,
    PresentationInvalid,
    PresentationRequired,
    PresentationStale,
    ProgramNotActive,
    RateLimited,
    ReplayedRequest,
    ThresholdNotMet,
    TierSoldOut,
    TokenInvalid,
    TokenMalformed,
    Unauthorized,
    ValidationError,
    VoucherAlreadyRedeemed,
    VoucherError,
    VoucherExpired,
    VoucherNotYetValid,
    VoucherVoid,
)
from merchant_sdk._errors import ERROR_CLASSES
from tests.sdk.support import problem
from voucher_service.domain import errors as server_errors

# The contract's table (§2): code, status, class.
CONTRACT_CODES = [
    ("validation_error", 400, ValidationError),
    ("token_malformed", 400, TokenMalformed),
    ("unauthorized", 401, Unauthorized),
    ("replayed_request", 401, ReplayedRequest),
    ("forbidden", 403, Forbidden),
    ("merchant_not_enrolled", 403, MerchantNotEnrolled),
    ("not_found", 404, NotFound),
    ("program_not_active", 409, ProgramNotActive),
    ("tier_sold_out", 409, TierSoldOut),
    ("claim_limit_reached", 409, ClaimLimitReached),
    ("voucher_already_redeemed", 409, VoucherAlreadyRedeemed),
    ("idempotency_in_progress", 409, IdempotencyInProgress),
    ("idempotency_key_reused", 422, IdempotencyKeyReused),
    ("token_invalid", 422, TokenInvalid),
    ("voucher_expired", 422, VoucherExpired),
    ("voucher_not_yet_valid", 422, VoucherNotYetValid),
    ("voucher_void", 422, VoucherVoid),
    ("no_eligible_items", 422, NoEligibleItems),
    ("threshold_not_met", 422, ThresholdNotMet),
    ("budget_exceeded", 422, BudgetExceeded),
    ("rate_limited", 429, RateLimited),
    # §10, holder binding
    ("presentation_stale", 422, PresentationStale),
    ("presentation_invalid", 422, PresentationInvalid),
    ("presentation_required", 422, PresentationRequired),
]


@pytest.mark.parametrize(("code", "status", "cls"), CONTRACT_CODES)
def test_each_contract_code_raises_its_class(fake, client, code, status, cls) -> None:
    headers = {"Retry-After": "900"} if status == 429 else {}
    fake.reply("POST", "/api/v1/redemptions", (status, headers, problem(code, status)))
    with pytest.raises(cls) as info:
        client.redeem("VC1:X", [("6901234567892", 1, 100)], order_id="o")
    err = info.value
    assert type(err) is cls and isinstance(err, VoucherError)
    assert (err.code, err.status, err.request_id) == (code, status, f"req-{code}")
    assert err.detail == f"detail of {code}" and err.body["code"] == code
    assert code in str(err) and f"req-{code}" in str(err)


def test_the_table_has_one_class_per_code_and_all_are_exported() -> None:
    assert {c for c, _, _ in CONTRACT_CODES} == set(ERROR_CLASSES)
    assert len({cls for _, _, cls in CONTRACT_CODES}) == len(CONTRACT_CODES)
    for _, _, cls in CONTRACT_CODES:
        assert cls.__name__ in merchant_sdk.__all__


def test_the_sdk_and_the_server_agree_on_every_status() -> None:
    server = {}
    stack = [server_errors.VoucherServiceError]
    while stack:
        server_cls = stack.pop()
        server[server_cls.code] = server_cls.status
        stack.extend(server_cls.__subclasses__())
    for code, status, cls in CONTRACT_CODES:
        assert server.get(code) == status == cls.status, code


def test_threshold_not_met_carries_the_line_verdicts(fake, client) -> None:
    lines = [
        {"index": 0, "gtin": "6901234567892", "eligible": True, "reason": None, "line_total_fen": 100},
        {
            "index": 1,
            "gtin": "6901234567908",
            "eligible": False,
            "reason": "not_certified",
            "line_total_fen": 50,
        },
    ]
    fake.reply("POST", "/api/v1/redemptions", (422, {}, problem("threshold_not_met", 422, lines=lines)))
    with pytest.raises(ThresholdNotMet) as info:
        client.redeem("VC1:X", [("6901234567892", 1, 100)], order_id="o")
    assert info.value.lines == lines


def test_validation_error_carries_the_field_errors(fake, client) -> None:
    errors = [{"field": "items.0.quantity", "message": "must be >= 1"}]
    fake.reply("POST", "/api/v1/redemptions", (400, {}, problem("validation_error", 400, errors=errors)))
    with pytest.raises(ValidationError) as info:
        client.redeem("VC1:X", [("6901234567892", 1, 100)], order_id="o")
    assert info.value.errors == errors


def test_rate_limited_carries_retry_after(fake, client) -> None:
    client.max_retries = 0
    fake.reply("GET", "/api/v1/merchant/programs", (429, {"Retry-After": "7"}, problem("rate_limited", 429)))
    with pytest.raises(RateLimited) as info:
        client.programs()
    assert info.value.retry_after == 7.0


def test_an_unknown_code_is_a_plain_voucher_error(fake, client) -> None:
    fake.reply("POST", "/api/v1/redemptions", (409, {}, problem("invalid_state", 409)))
    with pytest.raises(VoucherError) as info:
        client.redeem("VC1:X", [("6901234567892", 1, 100)], order_id="o")
    assert type(info.value) is VoucherError
    assert (info.value.code, info.value.status) == ("invalid_state", 409)


def test_a_non_json_error_is_a_voucher_error_with_the_request_id_header(fake, client) -> None:
    client.max_retries = 0
    fake.reply(
        "GET",
        "/api/v1/merchant/programs",
        (502, {"X-Request-Id": "abc12345", "Content-Type": "text/html"}, b"<html>Bad Gateway</html>"),
    )
    with pytest.raises(VoucherError) as info:
        client.programs()
    assert (info.value.code, info.value.status, info.value.request_id) == ("http_502", 502, "abc12345")
