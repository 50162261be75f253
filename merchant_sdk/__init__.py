"""Merchant SDK for the consumption-voucher service: online redemption, offline tills, token checks.

    from merchant_sdk import VoucherClient, OfflineTerminal
    client = VoucherClient("https://vouchers.example.gov.cn", merchant_id, api_secret)

See docs/merchant-sdk.md. This package never imports the service, Flask or SQLAlchemy.
"""

from merchant_sdk._base45 import b45decode, b45encode
from merchant_sdk._client import SDK_VERSION, VoucherClient, sign_request
from merchant_sdk._cose import KeySet
from merchant_sdk._errors import (
    APIConnectionError,
    BudgetExceeded,
    ClaimLimitReached,
    Forbidden,
    IdempotencyInProgress,
    IdempotencyKeyReused,
    MerchantNotEnrolled,
    NoEligibleItems,
    NotFound,
    OfflineLimitExceeded,
    OfflineRefreshRequired,
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
    VoucherRevoked,
    VoucherVoid,
)
from merchant_sdk._journal import JournalRecord
from merchant_sdk._models import (
    Claim,
    Item,
    OfflineRedemption,
    Program,
    Redemption,
    RedemptionLine,
    Reversal,
    SyncReport,
    SyncResult,
    Tier,
    VoucherClaims,
)
from merchant_sdk._offline import OfflineTerminal

__version__ = SDK_VERSION

__all__ = [
    "APIConnectionError",
    "BudgetExceeded",
    "Claim",
    "ClaimLimitReached",
    "Forbidden",
    "IdempotencyInProgress",
    "IdempotencyKeyReused",
    "Item",
    "JournalRecord",
    "KeySet",
    "MerchantNotEnrolled",
    "NoEligibleItems",
    "NotFound",
    "OfflineLimitExceeded",
    "OfflineRedemption",
    "OfflineRefreshRequired",
    "OfflineTerminal",
    "PresentationInvalid",
    "PresentationRequired",
    "PresentationStale",
    "Program",
    "ProgramNotActive",
    "RateLimited",
    "Redemption",
    "RedemptionLine",
    "ReplayedRequest",
    "Reversal",
    "SyncReport",
    "SyncResult",
    "ThresholdNotMet",
    "Tier",
    "TierSoldOut",
    "TokenInvalid",
    "TokenMalformed",
    "Unauthorized",
    "ValidationError",
    "VoucherAlreadyRedeemed",
    "VoucherClaims",
    "VoucherClient",
    "VoucherError",
    "VoucherExpired",
    "VoucherNotYetValid",
    "VoucherRevoked",
    "VoucherVoid",
    "__version__",
    "b45decode",
    "b45encode",
    "sign_request",
]
