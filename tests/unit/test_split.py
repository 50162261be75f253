"""Properties of the one rounding function: split_proportionally (largest remainder)."""

from __future__ import annotations

from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from voucher_service.domain.money import split_proportionally

amounts = st.integers(min_value=0, max_value=10**9)
weights_lists = st.lists(st.integers(min_value=0, max_value=10**10), min_size=1, max_size=60).filter(
    lambda ws: sum(ws) > 0
)


def hamilton_reference(amount: int, weights: list[int]) -> list[int]:
    """An independent largest-remainder split with exact fractions; ties go to the earlier weight."""
    total = sum(weights)
    exact = [Fraction(amount * w, total) for w in weights]
    shares = [int(q) for q in exact]  # floor: everything is non-negative
    left = amount - sum(shares)
    by_remainder = sorted(range(len(weights)), key=lambda i: (-(exact[i] - shares[i]), i))
    for i in by_remainder[:left]:
        shares[i] += 1
    return shares


@given(amounts, weights_lists)
def test_shares_add_up_to_the_amount_exactly(amount: int, weights: list[int]) -> None:
    assert sum(split_proportionally(amount, weights)) == amount


@given(amounts, weights_lists)
def test_no_share_is_negative(amount: int, weights: list[int]) -> None:
    assert all(share >= 0 for share in split_proportionally(amount, weights))


@given(amounts, weights_lists)
def test_each_share_is_within_one_fen_of_the_exact_proportion(amount: int, weights: list[int]) -> None:
    total = sum(weights)
    for share, w in zip(split_proportionally(amount, weights), weights, strict=True):
        assert abs(Fraction(share) - Fraction(amount * w, total)) < 1


@given(amounts, weights_lists)
def test_the_split_is_deterministic_and_matches_an_independent_reference(
    amount: int, weights: list[int]
) -> None:
    first = split_proportionally(amount, weights)
    assert split_proportionally(amount, list(weights)) == first
    assert first == hamilton_reference(amount, weights)


@given(amounts, weights_lists)
def test_a_larger_weight_never_gets_a_smaller_share(amount: int, weights: list[int]) -> None:
    shares = split_proportionally(amount, weights)
    for i in range(len(weights)):
        for j in range(len(weights)):
            if weights[i] > weights[j]:
                assert shares[i] >= shares[j]


@given(amounts, weights_lists)
def test_a_zero_weight_gets_nothing(amount: int, weights: list[int]) -> None:
    for share, w in zip(split_proportionally(amount, weights), weights, strict=True):
        if w == 0:
            assert share == 0


def test_largest_remainder_goes_first_and_ties_to_the_earlier_line() -> None:
    # 100 over 1:1:1 -> 33.33 each; the single leftover fen goes to the first line.
    assert split_proportionally(100, [1, 1, 1]) == [34, 33, 33]
    # 5000 over 11980 and 4000: exact 3747.65 and 1252.35 -> the larger remainder rounds up.
    assert split_proportionally(5000, [11980, 4000]) == [3748, 1252]


@pytest.mark.parametrize(("amount", "weights"), [(-1, [1]), (1, []), (5, [0, 0]), (5, [3, -1])])
def test_impossible_splits_are_refused(amount: int, weights: list[int]) -> None:
    with pytest.raises(ValueError):
        split_proportionally(amount, weights)


def test_nothing_over_no_weights_is_nothing() -> None:
    assert split_proportionally(0, []) == []
