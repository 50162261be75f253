"""The producing-county report: `voucher-admin report counties` and GET /programs/{id}/reports/counties."""

from __future__ import annotations

import datetime as dt

import pytest

from tests.helpers import problem_code
from tests.integration.books_fixtures import BACKENDS, BAISE, BAMA, BooksEnv, open_books
from voucher_service.adapters.db.models import CertifiedProduct, County

QINGXIU = "450102"
TARGETS = [{"county_code": BAMA, "target_fen": 100_000}, {"county_code": QINGXIU, "target_fen": 5_000_000}]


@pytest.fixture(params=BACKENDS)
def env(request: pytest.FixtureRequest) -> BooksEnv:
    env = open_books(request, targets=TARGETS)
    with env.ctx.sessions.begin() as s:
        for code, name in ((BAMA, "巴马瑶族自治县"), (QINGXIU, "青秀区")):
            if s.get(County, code) is None:
                s.add(County(code=code, name=name))
        if s.get(CertifiedProduct, "GX-TEST-BAISE") is None:
            now = dt.datetime.now(dt.UTC)
            s.add(
                CertifiedProduct(
                    certification_no="GX-TEST-BAISE",
                    certification_type="guangxi",
                    product_name="百色芒果",
                    category="水果",
                    supplier_id="S-1",
                    county_code=BAISE,
                    county_name="右江区",
                    gtins=["06901234567892"],
                    valid_from=dt.date(2026, 1, 1),
                    valid_to=dt.date(2027, 12, 31),
                    status="active",
                    version=1,
                    row_sha256="0" * 64,
                    registry_seq=1,
                    updated_at=now,
                )
            )
    return env


def sell(env: BooksEnv) -> None:
    b = env.books
    b.redeem("C-1", lines=[(BAMA, 2, 7_500), (None, 1, 3_000)])  # Bama 150.00, discount 50.00
    mixed = b.redeem("C-2", lines=[(BAMA, 1, 10_000), (BAISE, 2, 5_000)])  # discount split 25.00 / 25.00
    b.return_units(mixed.id, 1, 1)  # one mango box back: Baise sales 50.00
    undone = b.redeem("C-3", lines=[(BAISE, 4, 5_000)])
    b.reverse(undone.id)  # a reversed redemption sells nothing


EXPECTED = [
    {
        "county_code": QINGXIU,
        "county_name": "青秀区",
        "redemptions": 0,
        "eligible_sales_fen": 0,
        "discount_fen": 0,
        "target_fen": 5_000_000,
        "progress_bp": 0,
        "progress_pct": "0.00",
    },
    {
        "county_code": BAISE,
        "county_name": "右江区",
        "redemptions": 1,
        "eligible_sales_fen": 5_000,
        "discount_fen": 2_500,
        "target_fen": 0,
        "progress_bp": None,
        "progress_pct": None,
    },
    {
        "county_code": BAMA,
        "county_name": "巴马瑶族自治县",
        "redemptions": 2,
        "eligible_sales_fen": 25_000,
        "discount_fen": 7_500,
        "target_fen": 100_000,
        "progress_bp": 2_500,
        "progress_pct": "25.00",
    },
]


def test_the_route_reports_each_producing_county_against_its_target(env):
    sell(env)
    resp = env.admin.get(f"/api/v1/programs/{env.program['id']}/reports/counties")
    assert resp.status_code == 200
    assert resp.get_json() == {"program_id": env.program["id"], "counties": EXPECTED}


def test_the_command_writes_the_same_figures_as_csv(env, tmp_path, capsys):
    sell(env)
    out = tmp_path / "counties.csv"
    assert env.cli("report", "counties", "--program", env.program["id"], "--out", str(out)) == 0
    lines = out.read_text(encoding="utf-8").splitlines()
    assert lines == ["county_code,county_name,redemptions,eligible_sales_fen,discount_fen,target_fen"] + [
        f"{c['county_code']},{c['county_name']},{c['redemptions']},{c['eligible_sales_fen']},{c['discount_fen']},"
        f"{c['target_fen']}"
        for c in EXPECTED
    ]
    capsys.readouterr()
    assert env.cli("report", "counties", "--program", env.program["id"]) == 0
    assert capsys.readouterr().out.splitlines() == lines


def test_a_programme_without_sales_lists_its_targets_with_zeros(env):
    body = env.admin.get(f"/api/v1/programs/{env.program['id']}/reports/counties").get_json()
    assert [
        (c["county_code"], c["redemptions"], c["eligible_sales_fen"], c["target_fen"])
        for c in body["counties"]
    ] == [(QINGXIU, 0, 0, 5_000_000), (BAMA, 0, 0, 100_000)]


def test_unknown_programmes_and_missing_credentials_are_refused(env, capsys):
    assert problem_code(env.admin.get("/api/v1/programs/nope/reports/counties")) == "not_found"
    anonymous = env.admin.client.get(f"/api/v1/programs/{env.program['id']}/reports/counties")
    assert problem_code(anonymous) == "unauthorized"
    assert env.cli("report", "counties", "--program", "nope") == 2
    assert "No programme nope" in capsys.readouterr().err


def test_the_route_is_in_the_openapi_document(env):
    doc = env.admin.client.get("/api/v1/openapi.json").get_json()
    assert "get" in doc["paths"]["/api/v1/programs/{program_id}/reports/counties"]
