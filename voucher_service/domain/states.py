"""The states of the service's records and the transitions between them, in one place.

Each state set is a `StrEnum` whose values are exactly what the database stores (the columns stay
`String`), so a member compares equal to the text read back and binds as that text. A record's life
is a table of allowed (from, to) pairs; `check_transition` refuses any other move with
`IllegalTransition` (code `invalid_state`, HTTP 409). `None` as the "from" state means a new record.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import TypeVar

from voucher_service.domain.errors import InvalidState


class VoucherStatus(enum.StrEnum):
    """A voucher: pre-minted `available`, claimed `issued`, then redeemed, expired or voided."""

    AVAILABLE = "available"
    ISSUED = "issued"
    REDEEMED = "redeemed"
    EXPIRED = "expired"
    VOID = "void"


class RedemptionStatus(enum.StrEnum):
    """A redemption stays `active` through partial returns; a full clawback makes it `reversed`."""

    ACTIVE = "active"
    REVERSED = "reversed"


class ProgramStatus(enum.StrEnum):
    DRAFT = "draft"
    ACTIVE = "active"
    SUSPENDED = "suspended"


class SigningKeyStatus(enum.StrEnum):
    """A signing key is published as `next`, signs while `active`, verifies while `retired`."""

    NEXT = "next"
    ACTIVE = "active"
    RETIRED = "retired"
    EXPIRED = "expired"


class IdempotencyState(enum.StrEnum):
    IN_PROGRESS = "in_progress"
    DONE = "done"


class DisputeStatus(enum.StrEnum):
    OPEN = "open"
    ACCEPTED = "accepted"
    REJECTED = "rejected"


class SkuMappingStatus(enum.StrEnum):
    PENDING = "pending"
    APPROVED = "approved"
    REJECTED = "rejected"


class ProductStatus(enum.StrEnum):
    """A certified product's status as the registry file states it; any import may change it."""

    ACTIVE = "active"
    SUSPENDED = "suspended"
    REVOKED = "revoked"


class OfflineVerdict(enum.StrEnum):
    """What became of an offline till's journal record; a verdict, stored once, never changed."""

    ACCEPTED = "accepted"
    CONFLICT = "conflict"
    REJECTED = "rejected"


S = TypeVar("S", bound=enum.StrEnum)

# (from, to) pairs; from None = the record is created in that state.
TRANSITIONS: Mapping[type[enum.StrEnum], frozenset[tuple[enum.StrEnum | None, enum.StrEnum]]] = {
    VoucherStatus: frozenset(
        {
            # minted into the pool (or recycled from an expired voucher's value)
            (None, VoucherStatus.AVAILABLE),
            (VoucherStatus.AVAILABLE, VoucherStatus.ISSUED),  # claimed
            (VoucherStatus.ISSUED, VoucherStatus.REDEEMED),
            # an offline till's record made before the voucher expired
            (VoucherStatus.EXPIRED, VoucherStatus.REDEEMED),
            (VoucherStatus.ISSUED, VoucherStatus.EXPIRED),
            (VoucherStatus.ISSUED, VoucherStatus.VOID),
            # a full clawback while the voucher is still valid
            (VoucherStatus.REDEEMED, VoucherStatus.ISSUED),
            (VoucherStatus.REDEEMED, VoucherStatus.EXPIRED),  # a full clawback after it expired
        }
    ),
    RedemptionStatus: frozenset(
        {(None, RedemptionStatus.ACTIVE), (RedemptionStatus.ACTIVE, RedemptionStatus.REVERSED)}
    ),
    ProgramStatus: frozenset(
        {
            (None, ProgramStatus.DRAFT),
            (ProgramStatus.DRAFT, ProgramStatus.ACTIVE),
            (ProgramStatus.ACTIVE, ProgramStatus.SUSPENDED),
            (ProgramStatus.SUSPENDED, ProgramStatus.ACTIVE),
        }
    ),
    SigningKeyStatus: frozenset(
        {
            (None, SigningKeyStatus.NEXT),
            (None, SigningKeyStatus.ACTIVE),  # the very first key of a new installation
            (SigningKeyStatus.NEXT, SigningKeyStatus.ACTIVE),
            (SigningKeyStatus.ACTIVE, SigningKeyStatus.RETIRED),
            (SigningKeyStatus.RETIRED, SigningKeyStatus.EXPIRED),
        }
    ),
    IdempotencyState: frozenset(
        {(None, IdempotencyState.IN_PROGRESS), (IdempotencyState.IN_PROGRESS, IdempotencyState.DONE)}
    ),
    DisputeStatus: frozenset(
        {
            (None, DisputeStatus.OPEN),
            (DisputeStatus.OPEN, DisputeStatus.ACCEPTED),
            (DisputeStatus.OPEN, DisputeStatus.REJECTED),
        }
    ),
    SkuMappingStatus: frozenset(
        {
            (None, SkuMappingStatus.PENDING),
            (None, SkuMappingStatus.APPROVED),  # an administrator maps a SKU directly
            (None, SkuMappingStatus.REJECTED),
            (SkuMappingStatus.PENDING, SkuMappingStatus.PENDING),  # asked again for another product
            (SkuMappingStatus.PENDING, SkuMappingStatus.APPROVED),
            (SkuMappingStatus.PENDING, SkuMappingStatus.REJECTED),
            (SkuMappingStatus.APPROVED, SkuMappingStatus.REJECTED),  # a decision may be revised
            (SkuMappingStatus.REJECTED, SkuMappingStatus.APPROVED),
            # asked again (for another product, or after a refusal)
            (SkuMappingStatus.APPROVED, SkuMappingStatus.PENDING),
            (SkuMappingStatus.REJECTED, SkuMappingStatus.PENDING),
        }
    ),
}


class IllegalTransition(InvalidState):  # type: ignore[valid-type,misc]  # InvalidState is built by _error()
    """A record was asked to move between two states its life does not connect."""

    def __init__(self, kind: type[enum.StrEnum], current: str | None, target: str) -> None:
        what = kind.__name__
        super().__init__(f"{what}: no transition from {current or 'nothing'} to {target}.")
        self.kind = kind
        self.current = current
        self.target = target


def can_transition(current: str | None, target: S) -> bool:
    """Whether a record of `target`'s kind may move from `current` (None: new) to `target`."""
    kind = type(target)
    table = TRANSITIONS.get(kind)
    if table is None:
        return False
    if current is None:
        return (None, target) in table
    try:
        member = kind(current)
    except ValueError:  # a value this machine does not know is never a legal start
        return False
    return (member, target) in table


def check_transition(current: str | None, target: S) -> S:
    """Return `target` if moving from `current` to it is allowed, else raise IllegalTransition."""
    if not can_transition(current, target):
        raise IllegalTransition(type(target), current, target)
    return target


def sources(target: S) -> frozenset[S]:
    """The states from which a record may move to `target` (for a guarded UPDATE's WHERE)."""
    table = TRANSITIONS.get(type(target), frozenset())
    return frozenset(f for f, t in table if t == target and f is not None)  # type: ignore[misc]


__all__ = [
    "TRANSITIONS",
    "DisputeStatus",
    "IdempotencyState",
    "IllegalTransition",
    "OfflineVerdict",
    "ProductStatus",
    "ProgramStatus",
    "RedemptionStatus",
    "SigningKeyStatus",
    "SkuMappingStatus",
    "VoucherStatus",
    "can_transition",
    "check_transition",
    "sources",
]
