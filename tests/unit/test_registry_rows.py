"""Parsing and validating registry rows (CONTRACT §5): every kind of error names its line and field."""

from __future__ import annotations

import datetime as dt

import pytest

from voucher_service.domain.gtin import normalise_gtin, with_check_digit
from voucher_service.domain.registry_rows import (
    HEADER,
    RegistryFileError,
    decode_registry,
    parse_registry,
    parse_row,
)

HEADER_LINE = ",".join(HEADER)
RICE = with_check_digit("690123456789")  # 13 digits
OIL = with_check_digit("690123456790")


def cells(**overrides: str) -> list[str]:
    """A valid row's cells, with some fields replaced."""
    base = {
        "certification_no": "GXFP-2025-451227-0001",
        "certification_type": "guangxi",
        "product_name": "巴马香米 5kg",
        "category": "粮油",
        "supplier_id": "93451227MA5K000001",
        "supplier_name": "巴马长寿源农业专业合作社",
        "county_code": "451227",
        "county_name": "巴马瑶族自治县",
        "gtins": RICE,
        "valid_from": "2025-01-01",
        "valid_to": "2027-12-31",
        "status": "active",
    }
    base.update(overrides)
    return [base[name] for name in HEADER]


def csv_text(*rows: list[str]) -> str:
    return HEADER_LINE + "\n" + "".join(",".join(r) + "\n" for r in rows)


def errors_of(text: str) -> list[tuple[int, str]]:
    with pytest.raises(RegistryFileError) as info:
        parse_registry(text)
    return [(e.line, e.field) for e in info.value.errors]


def row_errors(**overrides: str) -> list[tuple[int, str, str]]:
    row, errors = parse_row(7, cells(**overrides))
    assert row is None
    return [(e.line, e.field, e.message) for e in errors]


def fields_of(**overrides: str) -> list[str]:
    return [field for _, field, _ in row_errors(**overrides)]


# ---------------------------------------------------------------- a valid row


def test_a_valid_row_parses_into_a_product_with_normalised_gtins():
    row, errors = parse_row(2, cells(gtins=f"{RICE}|0{OIL}"))
    assert errors == []
    assert row is not None
    assert row.line == 2
    assert row.gtins == (RICE, "0" + OIL)
    assert row.gtins14 == ("0" + RICE, "0" + OIL)
    assert row.valid_from == dt.date(2025, 1, 1)
    assert row.valid_to == dt.date(2027, 12, 31)


def test_surrounding_spaces_are_ignored_and_do_not_change_the_fingerprint():
    plain, _ = parse_row(2, cells())
    padded, _ = parse_row(2, [f"  {c} " for c in cells()])
    assert plain is not None and padded is not None
    assert padded.product_name == "巴马香米 5kg"
    assert padded.sha256 == plain.sha256


def test_the_fingerprint_changes_with_any_field():
    base, _ = parse_row(2, cells())
    assert base is not None
    for name, value in [
        ("status", "suspended"),
        ("valid_to", "2028-01-01"),
        ("gtins", f"{RICE}|{OIL}"),
        ("supplier_name", "另一个合作社"),
        ("product_name", "巴马香米 10kg"),
    ]:
        other, _ = parse_row(2, cells(**{name: value}))
        assert other is not None
        assert other.sha256 != base.sha256, name


def test_all_gtin_lengths_are_accepted():
    gtins = [
        with_check_digit("9638507"),
        with_check_digit("03600029145"),
        RICE,
        with_check_digit("1690123456789"),
    ]
    row, errors = parse_row(2, cells(gtins="|".join(gtins)))
    assert errors == [] and row is not None
    assert all(len(g) == 14 for g in row.gtins14)


# ---------------------------------------------------------------- field errors


@pytest.mark.parametrize(
    "field",
    ["certification_no", "product_name", "category", "supplier_id", "supplier_name", "county_name"],
)
def test_required_text_fields_must_not_be_empty(field):
    assert row_errors(**{field: "  "}) == [(7, field, "is required")]


def test_text_fields_have_a_maximum_length():
    assert fields_of(product_name="米" * 201) == ["product_name"]
    assert fields_of(certification_no="X" * 65) == ["certification_no"]


def test_control_characters_are_refused():
    assert fields_of(product_name="巴马\t香米") == ["product_name"]


@pytest.mark.parametrize("number", ["GX 001", "GX/001", "a?b", "snapshot"])
def test_certification_numbers_must_be_usable_in_a_url(number):
    assert fields_of(certification_no=number) == ["certification_no"]


def test_certification_type_must_be_one_of_the_three():
    [(line, field, message)] = row_errors(certification_type="provincial")
    assert (line, field) == (7, "certification_type")
    assert "national, guangxi, shenzhen" in message


@pytest.mark.parametrize("code", ["45122", "4512270", "45122X", "", "４５１２２７"])
def test_county_code_must_be_six_ascii_digits(code):
    assert fields_of(county_code=code) == ["county_code"]


@pytest.mark.parametrize(
    ("gtins", "fragment"),
    [
        ("", "at least one"),
        (f"{RICE}||{OIL}", "empty GTIN"),
        ("69012345678X", "only digits"),
        ("6901234567", "10 digits"),
        (RICE[:-1] + str((int(RICE[-1]) + 1) % 10), "wrong check digit"),
        (f"{RICE}|0{RICE}", "listed twice"),
    ],
)
def test_gtins_must_be_valid_and_distinct(gtins, fragment):
    [(line, field, message)] = row_errors(gtins=gtins)
    assert (line, field) == (7, "gtins")
    assert fragment in message


def test_a_product_has_at_most_twenty_gtins():
    many = "|".join(with_check_digit(f"6901234{i:05d}") for i in range(21))
    assert "gtins" in fields_of(gtins=many)


@pytest.mark.parametrize("value", ["2025/01/01", "01-01-2025", "20250101", "2025-1-1", "2025-02-30", ""])
def test_dates_must_be_calendar_days_as_yyyy_mm_dd(value):
    assert fields_of(valid_from=value) == ["valid_from"]


def test_validity_may_not_end_before_it_starts():
    assert row_errors(valid_from="2026-01-02", valid_to="2026-01-01") == [
        (7, "valid_to", "2026-01-01 is before valid_from 2026-01-02")
    ]
    row, errors = parse_row(7, cells(valid_from="2026-01-01", valid_to="2026-01-01"))
    assert errors == [] and row is not None


def test_status_must_be_active_suspended_or_revoked():
    assert fields_of(status="expired") == ["status"]


def test_a_row_reports_every_problem_it_has():
    assert fields_of(certification_type="x", county_code="1", status="y", gtins="1") == [
        "certification_type",
        "county_code",
        "gtins",
        "status",
    ]


def test_a_row_with_the_wrong_number_of_fields_is_refused():
    row, errors = parse_row(4, cells()[:-1])
    assert row is None
    assert [(e.line, e.field) for e in errors] == [(4, "row")]


# ---------------------------------------------------------------- whole-file checks


def test_a_file_parses_with_bom_crlf_and_blank_lines():
    text = "\ufeff" + csv_text(cells(), cells(certification_no="B", gtins=OIL)).replace("\n", "\r\n") + "\r\n"
    rows = parse_registry(text)
    assert [(r.line, r.certification_no) for r in rows] == [(2, "GXFP-2025-451227-0001"), (3, "B")]


def test_decoding_accepts_a_bom_and_names_the_line_of_invalid_utf8():
    assert decode_registry("\ufeff".encode() + b"a,b\n") == "a,b\n"
    with pytest.raises(RegistryFileError) as info:
        decode_registry(HEADER_LINE.encode() + b"\nok\n\xff\xfe\n")
    assert [(e.line, e.field) for e in info.value.errors] == [(3, "file")]


def test_the_header_must_be_exact():
    assert errors_of("certification_no,type\n") == [(1, "header")]
    assert errors_of(HEADER_LINE.upper() + "\n") == [(1, "header")]
    assert errors_of("") == [(1, "header")]


def test_a_header_alone_is_an_empty_registry():
    assert parse_registry(HEADER_LINE + "\n") == []


def test_line_numbers_count_physical_lines_of_quoted_fields():
    multiline = (
        '"GX-1",guangxi,"巴马香米\n5kg",粮油,S1,合作社,451227,巴马瑶族自治县,'
        + RICE
        + ",2025-01-01,2027-01-01,active"
    )
    text = (
        HEADER_LINE + "\n" + multiline + "\n" + ",".join(cells(certification_no="GX-2", status="bad")) + "\n"
    )
    # The quoted name spans lines 2-3 (and is refused: a line break); the next record is on line 4.
    assert errors_of(text) == [(2, "product_name"), (4, "status")]


def test_malformed_csv_is_reported_with_its_line():
    text = csv_text(cells()) + '"unterminated,quote\n'
    assert errors_of(text) == [(3, "row")]


def test_duplicate_certification_numbers_are_refused_at_the_second_line():
    text = csv_text(cells(), cells(gtins=OIL))
    with pytest.raises(RegistryFileError) as info:
        parse_registry(text)
    [err] = info.value.errors
    assert (err.line, err.field) == (3, "certification_no")
    assert "line 2" in err.message


def test_a_gtin_may_not_belong_to_two_certifications_even_written_differently():
    text = csv_text(cells(), cells(certification_no="OTHER", gtins=f"{OIL}|{normalise_gtin(RICE)}"))
    with pytest.raises(RegistryFileError) as info:
        parse_registry(text)
    [err] = info.value.errors
    assert (err.line, err.field) == (3, "gtins")
    assert "GXFP-2025-451227-0001" in err.message and "line 2" in err.message


def test_a_supplier_and_a_county_have_one_name_per_file():
    text = csv_text(
        cells(),
        cells(certification_no="B", gtins=OIL, supplier_name="别的名字", county_name="巴马县"),
    )
    assert errors_of(text) == [(3, "supplier_name"), (3, "county_name")]


def test_every_bad_line_is_reported_in_line_order():
    text = csv_text(
        cells(status="x"), cells(certification_no="B", gtins=OIL), cells(certification_no="C", gtins="1")
    )
    assert errors_of(text) == [(2, "status"), (4, "gtins")]
    with pytest.raises(RegistryFileError) as info:
        parse_registry(text)
    assert str(info.value.errors[0]).startswith("line 2, field status:")
