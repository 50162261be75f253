"""The Guangxi county table and the seed-scale registry generator."""

from __future__ import annotations

import collections
import random

from voucher_service.domain.gtin import is_valid_gtin
from voucher_service.domain.guangxi_counties import (
    GUANGXI_COUNTIES,
    PREFECTURES,
    REGISTRY_COUNTIES,
    prefecture_of,
    short_name,
)
from voucher_service.domain.registry_generator import (
    USCC_ALPHABET,
    USCC_WEIGHTS,
    generate_registry,
    registry_csv,
    uscc,
)
from voucher_service.domain.registry_rows import parse_registry


def _kind(name: str) -> str:
    if name.endswith("自治县"):
        return "自治县"
    return name[-1]


def test_guangxi_has_111_county_level_divisions_of_the_official_kinds():
    assert len(GUANGXI_COUNTIES) == 111
    assert collections.Counter(_kind(n) for n in GUANGXI_COUNTIES.values()) == {
        "区": 41,
        "市": 10,
        "县": 48,
        "自治县": 12,
    }
    assert all(
        code.startswith("45") and len(code) == 6 and code[:4] in PREFECTURES for code in GUANGXI_COUNTIES
    )


def test_well_known_codes_name_the_right_counties():
    expected = {
        "451227": "巴马瑶族自治县",
        "451022": "田东县",
        "451226": "环江毛南族自治县",
        "451229": "大化瑶族自治县",
        "451002": "右江区",
        "451024": "德保县",
        "450332": "恭城瑶族自治县",
        "451123": "富川瑶族自治县",
        "450181": "横州市",
        "450381": "荔浦市",
        "451082": "平果市",
        "450421": "苍梧县",
    }
    assert {code: GUANGXI_COUNTIES[code] for code in expected} == expected
    assert prefecture_of("451227") == "河池市"


def test_the_registry_uses_106_counties_including_bama():
    assert len(REGISTRY_COUNTIES) == 106
    assert "451227" in REGISTRY_COUNTIES
    assert set(REGISTRY_COUNTIES) < set(GUANGXI_COUNTIES)


def test_short_names_drop_the_division_suffix():
    assert short_name("巴马瑶族自治县") == "巴马"
    assert short_name("隆林各族自治县") == "隆林"
    assert short_name("田东县") == "田东"
    assert short_name("西乡塘区") == "西乡塘"
    assert short_name("容县") == "容县"


def test_supplier_ids_are_well_formed_unified_social_credit_codes():
    code = uscc(random.Random(3), "451227", "3")
    assert len(code) == 18 and code.startswith("93451227")
    check = (
        31 - sum(w * USCC_ALPHABET.index(c) for w, c in zip(USCC_WEIGHTS, code[:17], strict=True)) % 31
    ) % 31
    assert code[17] == USCC_ALPHABET[check]


def test_the_generator_is_deterministic_in_its_seed():
    assert generate_registry(5) == generate_registry(5)
    assert generate_registry(5) != generate_registry(6)


def test_the_generated_registry_is_a_valid_file_with_realistic_content():
    rows = parse_registry(registry_csv(generate_registry(1)))
    assert len(rows) == 3552
    gtins = [g for r in rows for g in r.gtins]
    assert all(len(g) == 13 and g.startswith("69") and is_valid_gtin(g) for g in gtins)
    assert len(set(gtins)) == len(gtins)
    assert {len(r.gtins) for r in rows} == {1, 2, 3}
    types = collections.Counter(r.certification_type for r in rows)
    assert set(types) == {"national", "guangxi", "shenzhen"}
    statuses = collections.Counter(r.status for r in rows)
    assert statuses["active"] > 0.8 * len(rows) and statuses["suspended"] > 0 and statuses["revoked"] > 0
    expired = [r for r in rows if r.status == "active" and r.valid_to.year < 2026]
    assert expired
    assert all(r.county_name == REGISTRY_COUNTIES[r.county_code] for r in rows)
    bama = [r for r in rows if r.county_code == "451227" and r.status == "active"]
    assert {r.certification_type for r in bama} == {"national", "guangxi", "shenzhen"}
    assert any("巴马香米" in r.product_name for r in bama)
