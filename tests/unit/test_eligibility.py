"""Eligibility verdicts: examples for every reason, and a property test against a small reference model."""

from __future__ import annotations

import datetime as dt
from fractions import Fraction

from hypothesis import given, settings
from hypothesis import strategies as st

from voucher_service.domain.eligibility import (
    BasketLine,
    EligibilityScope,
    ProductSnapshot,
    judge_basket,
    remaining_eligible_total_fen,
    reversal_clawback_fen,
)

ON = dt.date(2026, 12, 10)
ALL = EligibilityScope(frozenset({"national", "guangxi", "shenzhen"}), None)


def gs1(body: str) -> str:
    """Append a GS1 check digit, computed here independently of domain.gtin."""
    weights = [3 if i % 2 == 0 else 1 for i in range(len(body))]
    total = sum(int(d) * w for d, w in zip(reversed(body), weights, strict=True))
    return body + str(-total % 10)


RICE = gs1("690123456789")  # GTIN-13
SHORT = gs1("9638507")  # GTIN-8
UPC = gs1("04210000526")  # GTIN-12


def product(no: str, **kw: object) -> ProductSnapshot:
    values: dict[str, object] = dict(
        certification_type="guangxi",
        county_code="451227",
        valid_from=dt.date(2026, 1, 1),
        valid_to=dt.date(2026, 12, 31),
        status="active",
    )
    values.update(kw)
    return ProductSnapshot(no, **values)  # type: ignore[arg-type]


def judge(
    lines: list[BasketLine],
    by_gtin: dict[str, ProductSnapshot],
    by_sku: dict[str, ProductSnapshot] | None = None,
    scope: EligibilityScope = ALL,
    face: int = 5000,
    min_spend: int = 15000,
):  # type: ignore[no-untyped-def]
    return judge_basket(lines, by_gtin, by_sku or {}, scope, ON, face_value_fen=face, min_spend_fen=min_spend)


def line(gtin: str | None = None, sku: str | None = None, qty: int = 1, price: int = 20000) -> BasketLine:
    return BasketLine(gtin=gtin, sku=sku, quantity=qty, unit_price_fen=price)


def test_a_certified_line_in_scope_is_eligible_and_takes_the_whole_discount() -> None:
    v = judge([line(RICE)], {RICE.zfill(14): product("C1")})
    (only,) = v.lines
    assert (only.eligible, only.reason, only.certification_no, only.county_code) == (
        True,
        None,
        "C1",
        "451227",
    )
    assert (v.eligible_total_fen, v.discount_fen, only.discount_share_fen) == (20000, 5000, 5000)


def test_gtin_8_12_13_and_14_all_resolve_through_the_14_digit_form() -> None:
    table = {g.zfill(14): product(f"C-{g}") for g in (SHORT, UPC, RICE)}
    v = judge([line(SHORT), line(UPC), line(RICE), line("0" + RICE)], table)
    assert [x.certification_no for x in v.lines] == [f"C-{SHORT}", f"C-{UPC}", f"C-{RICE}", f"C-{RICE}"]


def test_every_reason_is_given_for_its_case() -> None:
    table = {
        gs1("690000000001").zfill(14): product("EXP", valid_to=ON - dt.timedelta(days=1)),
        gs1("690000000002").zfill(14): product("NEW", valid_from=ON + dt.timedelta(days=1)),
        gs1("690000000003").zfill(14): product("SUS", status="suspended"),
        gs1("690000000004").zfill(14): product("REV", status="revoked"),
        gs1("690000000005").zfill(14): product("SZ", certification_type="shenzhen"),
        gs1("690000000006").zfill(14): product("FAR", county_code="440300"),
    }
    scope = EligibilityScope(frozenset({"guangxi", "national"}), frozenset({"451227"}))
    bad = RICE[:-1] + str((int(RICE[-1]) + 1) % 10)
    lines = [line(gs1(f"69000000000{i}")) for i in range(1, 7)] + [
        line(gs1("690000000009")),
        line(bad),
        line("12AB"),
        line(sku="S-404"),
        line(gs1("690000000009"), sku="S-404"),
    ]
    v = judge(lines, table, scope=scope)
    assert [x.reason for x in v.lines] == [
        "certification_expired",
        "certification_expired",
        "certification_suspended",
        "certification_revoked",
        "out_of_scope",
        "out_of_scope",
        "not_certified",
        "invalid_gtin",
        "invalid_gtin",
        "sku_not_mapped",
        "not_certified",
    ]
    assert not any(x.eligible for x in v.lines) and v.discount_fen == 0
    assert all(x.certification_no is None and x.county_code is None for x in v.lines)


def test_validity_dates_are_inclusive_at_both_ends() -> None:
    table = {gs1("690000000001").zfill(14): product("A", valid_from=ON, valid_to=ON)}
    assert judge([line(gs1("690000000001"))], table).lines[0].eligible


def test_an_approved_sku_resolves_when_the_gtin_is_absent_or_unknown_but_not_when_it_is_invalid() -> None:
    by_sku = {"SKU-1": product("BY-SKU")}
    bad = RICE[:-1] + str((int(RICE[-1]) + 1) % 10)
    v = judge([line(sku="SKU-1"), line(gs1("690000000009"), sku="SKU-1"), line(bad, sku="SKU-1")], {}, by_sku)
    assert [(x.eligible, x.reason) for x in v.lines] == [(True, None), (True, None), (False, "invalid_gtin")]


def test_the_gtin_wins_over_the_sku_mapping() -> None:
    v = judge([line(RICE, sku="SKU-1")], {RICE.zfill(14): product("BY-GTIN")}, {"SKU-1": product("BY-SKU")})
    assert v.lines[0].certification_no == "BY-GTIN"


def test_below_the_minimum_spend_there_is_no_discount() -> None:
    v = judge(
        [line(RICE, price=14999), line(gs1("690000000009"), price=50000)], {RICE.zfill(14): product("C1")}
    )
    assert v.has_eligible_line and not v.threshold_met
    assert (v.order_total_fen, v.eligible_total_fen, v.discount_fen) == (64999, 14999, 0)


def test_reversal_rule_keeps_the_discount_only_while_the_remaining_total_meets_the_minimum() -> None:
    remaining = remaining_eligible_total_fen([(True, 5000, 4, 1), (False, 9000, 1, 0), (True, 1000, 2, 2)])
    assert remaining == 15000
    assert reversal_clawback_fen(remaining, 15000, 5000) == 0
    assert reversal_clawback_fen(remaining - 1, 15000, 5000) == 5000


# ---------------------------------------------------------------- against a reference model

BODIES = [f"6900000000{i:02d}" for i in range(8)]
GTINS = [gs1(b) for b in BODIES]
STATUSES = ["active", "active", "suspended", "revoked"]


def reference_line(
    ln: BasketLine,
    gtin_table: dict[str, ProductSnapshot],
    sku_table: dict[str, ProductSnapshot],
    scope: EligibilityScope,
) -> tuple[str | None, ProductSnapshot | None]:
    """The rules as the contract words them, written without the domain module's helpers."""
    found = None
    if ln.gtin is not None:
        digits_ok = ln.gtin.isdigit() and len(ln.gtin) in (8, 12, 13, 14) and gs1(ln.gtin[:-1]) == ln.gtin
        if not digits_ok:
            return "invalid_gtin", None
        found = gtin_table.get(("00000000000000" + ln.gtin)[-14:])
    if found is None and ln.sku is not None:
        found = sku_table.get(ln.sku)
    if found is None:
        return ("not_certified" if ln.gtin is not None else "sku_not_mapped"), None
    if found.status == "revoked":
        return "certification_revoked", found
    if found.status == "suspended":
        return "certification_suspended", found
    if ON < found.valid_from or ON > found.valid_to:
        return "certification_expired", found
    in_county = scope.county_codes is None or found.county_code in scope.county_codes
    if found.certification_type not in scope.certification_types or not in_county:
        return "out_of_scope", found
    return None, found


products = st.builds(
    product,
    st.sampled_from(["C1", "C2", "C3"]),
    certification_type=st.sampled_from(["national", "guangxi", "shenzhen"]),
    county_code=st.sampled_from(["451227", "450100", "440300"]),
    valid_from=st.sampled_from([ON - dt.timedelta(days=30), ON, ON + dt.timedelta(days=1)]),
    valid_to=st.sampled_from([ON - dt.timedelta(days=1), ON, ON + dt.timedelta(days=30)]),
    status=st.sampled_from(STATUSES),
)
gtin_texts = st.one_of(
    st.none(),
    st.sampled_from(GTINS),
    st.sampled_from([g[:-1] + "0" for g in GTINS]),
    st.sampled_from(["0" + GTINS[0], "ABCDEFGH", "123"]),
)
basket_lines = st.builds(
    BasketLine,
    gtin=gtin_texts,
    sku=st.one_of(st.none(), st.sampled_from(["S1", "S2", "S3"])),
    quantity=st.integers(1, 5),
    unit_price_fen=st.integers(0, 20000),
).filter(lambda ln: ln.gtin is not None or ln.sku is not None)
scopes = st.builds(
    EligibilityScope,
    st.frozensets(st.sampled_from(["national", "guangxi", "shenzhen"]), min_size=1),
    st.one_of(st.none(), st.frozensets(st.sampled_from(["451227", "450100", "440300"]), min_size=1)),
)


@settings(max_examples=300, deadline=None)
@given(
    lines=st.lists(basket_lines, min_size=1, max_size=8),
    gtin_table=st.dictionaries(st.sampled_from([g.zfill(14) for g in GTINS]), products, max_size=6),
    sku_table=st.dictionaries(st.sampled_from(["S1", "S2", "S3"]), products, max_size=3),
    scope=scopes,
    face=st.integers(1, 10000),
    extra=st.integers(0, 30000),
)
def test_verdicts_and_split_match_the_reference_model(
    lines: list[BasketLine],
    gtin_table: dict[str, ProductSnapshot],
    sku_table: dict[str, ProductSnapshot],
    scope: EligibilityScope,
    face: int,
    extra: int,
) -> None:
    min_spend = face + extra
    v = judge_basket(lines, gtin_table, sku_table, scope, ON, face_value_fen=face, min_spend_fen=min_spend)
    expected = [reference_line(ln, gtin_table, sku_table, scope) for ln in lines]
    assert [x.reason for x in v.lines] == [reason for reason, _ in expected]
    assert [x.eligible for x in v.lines] == [reason is None for reason, _ in expected]
    assert [x.certification_no for x in v.lines] == [
        p.certification_no if r is None and p else None for r, p in expected
    ]
    eligible_total = sum(
        ln.quantity * ln.unit_price_fen for ln, (r, _) in zip(lines, expected, strict=True) if r is None
    )
    assert v.order_total_fen == sum(ln.quantity * ln.unit_price_fen for ln in lines)
    assert v.eligible_total_fen == eligible_total
    qualifies = any(r is None for r, _ in expected) and eligible_total >= min_spend
    assert v.discount_fen == (face if qualifies else 0)
    assert sum(x.discount_share_fen for x in v.lines) == v.discount_fen
    for x in v.lines:
        if not x.eligible or not qualifies:
            assert x.discount_share_fen == 0
        else:
            assert abs(Fraction(x.discount_share_fen) - Fraction(face * x.line_total_fen, eligible_total)) < 1
