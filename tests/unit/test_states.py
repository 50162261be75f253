"""The records' state machines: the transition table allows exactly the moves the services make."""

from __future__ import annotations

import datetime as dt
import itertools

import pytest

from voucher_service.adapters.db.models import Redemption, Voucher
from voucher_service.domain.errors import InvalidState
from voucher_service.domain.states import (
    TRANSITIONS,
    DisputeStatus,
    IdempotencyState,
    IllegalTransition,
    ProgramStatus,
    RedemptionStatus,
    SigningKeyStatus,
    SkuMappingStatus,
    VoucherStatus,
    can_transition,
    check_transition,
    sources,
)
from voucher_service.services.redemption import REDEEMABLE_FROM
from voucher_service.services.reversals import _claw_back

V = VoucherStatus

VOUCHER_MOVES = {
    (None, V.AVAILABLE),
    (V.AVAILABLE, V.ISSUED),
    (V.ISSUED, V.REDEEMED),
    (V.EXPIRED, V.REDEEMED),
    (V.ISSUED, V.EXPIRED),
    (V.ISSUED, V.VOID),
    (V.REDEEMED, V.ISSUED),
    (V.REDEEMED, V.EXPIRED),
}


def test_the_enums_keep_the_values_the_database_stores():
    assert [s.value for s in VoucherStatus] == ["available", "issued", "redeemed", "expired", "void"]
    assert [s.value for s in RedemptionStatus] == ["active", "reversed"]
    assert [s.value for s in ProgramStatus] == ["draft", "active", "suspended"]
    assert [s.value for s in SigningKeyStatus] == ["next", "active", "retired", "expired"]
    assert [s.value for s in IdempotencyState] == ["in_progress", "done"]
    assert [s.value for s in DisputeStatus] == ["open", "accepted", "rejected"]
    assert [s.value for s in SkuMappingStatus] == ["pending", "approved", "rejected"]


def test_a_member_is_the_text_it_stands_for():
    assert VoucherStatus.ISSUED == "issued"
    assert f"{VoucherStatus.ISSUED}" == "issued"
    assert {"issued": 1}[VoucherStatus.ISSUED] == 1


@pytest.mark.parametrize(
    ("current", "target"), list(itertools.product([None, *VoucherStatus], list(VoucherStatus)))
)
def test_a_voucher_moves_only_along_its_table(current, target):
    allowed = (current, target) in VOUCHER_MOVES
    assert can_transition(current, target) is allowed
    if allowed:
        assert check_transition(current, target) is target
    else:
        with pytest.raises(IllegalTransition) as caught:
            check_transition(current, target)
        assert caught.value.code == "invalid_state"
        assert caught.value.status == 409


def test_the_state_read_back_as_plain_text_is_checked_like_a_member():
    assert check_transition("issued", VoucherStatus.REDEEMED) is VoucherStatus.REDEEMED
    with pytest.raises(IllegalTransition, match="from redeemed to redeemed"):
        check_transition("redeemed", VoucherStatus.REDEEMED)


def test_an_unknown_stored_state_is_never_a_legal_start():
    assert not can_transition("lost", VoucherStatus.ISSUED)
    with pytest.raises(InvalidState):
        check_transition("ISSUED", VoucherStatus.REDEEMED)  # case matters: the database stores lower case


def test_a_redemption_is_reversed_once_and_never_comes_back():
    assert can_transition(RedemptionStatus.ACTIVE, RedemptionStatus.REVERSED)
    assert not can_transition(RedemptionStatus.REVERSED, RedemptionStatus.ACTIVE)
    assert not can_transition(RedemptionStatus.REVERSED, RedemptionStatus.REVERSED)
    assert can_transition(None, RedemptionStatus.ACTIVE)
    assert not can_transition(None, RedemptionStatus.REVERSED)


def test_a_programme_starts_as_draft_and_is_never_a_draft_again():
    assert can_transition(None, ProgramStatus.DRAFT)
    assert not can_transition(None, ProgramStatus.ACTIVE)
    assert can_transition("draft", ProgramStatus.ACTIVE)
    assert can_transition("active", ProgramStatus.SUSPENDED)
    assert can_transition("suspended", ProgramStatus.ACTIVE)
    assert not can_transition("draft", ProgramStatus.SUSPENDED)
    assert not can_transition("active", ProgramStatus.ACTIVE)
    assert not any(can_transition(s, ProgramStatus.DRAFT) for s in ProgramStatus)


def test_a_signing_key_only_moves_forward():
    order = list(SigningKeyStatus)
    for a, b in itertools.product(order, order):
        assert can_transition(a, b) is (order.index(b) == order.index(a) + 1)
    assert can_transition(None, SigningKeyStatus.NEXT) and can_transition(None, SigningKeyStatus.ACTIVE)
    assert not can_transition(None, SigningKeyStatus.RETIRED)


def test_an_idempotency_record_is_done_once():
    assert can_transition("in_progress", IdempotencyState.DONE)
    assert not can_transition("done", IdempotencyState.IN_PROGRESS)
    assert not can_transition("done", IdempotencyState.DONE)


def test_a_dispute_is_decided_once():
    assert can_transition("open", DisputeStatus.ACCEPTED) and can_transition("open", DisputeStatus.REJECTED)
    for decided in (DisputeStatus.ACCEPTED, DisputeStatus.REJECTED):
        assert not any(can_transition(decided, s) for s in DisputeStatus)


def test_a_sku_mapping_decision_may_be_revised_but_not_repeated():
    assert can_transition("approved", SkuMappingStatus.REJECTED)
    assert can_transition("rejected", SkuMappingStatus.APPROVED)
    assert not can_transition("approved", SkuMappingStatus.APPROVED)
    assert can_transition("pending", SkuMappingStatus.PENDING)


def test_sources_name_the_states_a_guarded_update_may_start_from():
    assert sources(VoucherStatus.REDEEMED) == {VoucherStatus.ISSUED, VoucherStatus.EXPIRED}
    assert sources(VoucherStatus.ISSUED) == {VoucherStatus.AVAILABLE, VoucherStatus.REDEEMED}
    assert sources(VoucherStatus.AVAILABLE) == set()


def test_every_table_stays_within_its_own_kind():
    for kind, table in TRANSITIONS.items():
        for current, target in table:
            assert type(target) is kind
            assert current is None or type(current) is kind


def test_the_contracts_status_fields_name_the_domains_states():
    """The API documents statuses as literals (CONTRACT); they may leave states out, never invent one."""
    from typing import get_args

    from voucher_service.api import admin_schemas, consumer_schemas, merchant_schemas, offline, products
    from voucher_service.domain.states import OfflineVerdict, ProductStatus

    def literal(model: type, field: str = "status") -> set[str]:
        return set(get_args(model.model_fields[field].annotation))

    assert literal(consumer_schemas.VoucherOut) == set(VoucherStatus) - {VoucherStatus.AVAILABLE}
    assert literal(merchant_schemas.StoredRedemptionOut) == set(RedemptionStatus)
    assert literal(admin_schemas.ProgramOut) == set(ProgramStatus)
    assert literal(consumer_schemas.Jwk) == set(SigningKeyStatus) - {SigningKeyStatus.EXPIRED}
    assert literal(products.Product) == set(ProductStatus)
    assert set(get_args(products.MappingStatus)) == set(SkuMappingStatus)
    assert literal(offline.OfflineRecordResult) == set(OfflineVerdict) | {"duplicate"}


@pytest.mark.parametrize(
    ("redemption_status", "voucher_status"),
    [("reversed", "redeemed"), ("active", "void"), ("active", "issued"), ("active", "expired")],
)
def test_a_full_clawback_checks_both_records_moves(redemption_status, voucher_status):
    # reversals._claw_back refuses a move the tables do not allow before it writes anything (the
    # voucher is still valid here: a clawback would move it to issued)
    redemption = Redemption(id="r1", status=redemption_status)
    voucher = Voucher(id="v1", status=voucher_status, expires_at=dt.datetime(2100, 1, 1, tzinfo=dt.UTC))
    with pytest.raises(IllegalTransition):
        _claw_back(None, redemption, voucher, 100, dt.datetime(2030, 1, 1, tzinfo=dt.UTC))  # type: ignore[arg-type]


def test_redemptions_take_vouchers_only_from_states_the_table_allows():
    assert REDEEMABLE_FROM == {"online": (V.ISSUED,), "offline": (V.ISSUED, V.EXPIRED)}
    assert set(REDEEMABLE_FROM["offline"]) == sources(V.REDEEMED)
