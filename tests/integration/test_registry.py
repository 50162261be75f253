"""The certified-product registry: import (atomic, idempotent, versioned), routes, SKU mappings."""

from __future__ import annotations

import csv
import io
import os
import secrets
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from tests.conftest import REDIS_URL, make_settings
from tests.helpers import MerchantCaller, problem_code
from voucher_service.adapters.db.models import (
    AuditEntry,
    CertifiedProduct,
    County,
    Merchant,
    ProductGtin,
    ProductVersion,
    RegistryImport,
    Supplier,
)
from voucher_service.cli import run
from voucher_service.domain.errors import ValidationFailed
from voucher_service.domain.gtin import is_valid_gtin, with_check_digit
from voucher_service.domain.registry_rows import HEADER
from voucher_service.services import registry, registry_queries
from voucher_service.services.context import ServiceContext

ROOT = Path(__file__).resolve().parents[2]
RICE = with_check_digit("690000000001")
PORK = with_check_digit("690000000002")
OIL = with_check_digit("690000000003")
TEA = with_check_digit("690000000004")
MANGO = with_check_digit("690000000005")


def product(cert: str, gtins: str, **overrides: str) -> list[str]:
    """A registry row (cells in header order) for a product of 巴马 unless overridden."""
    row = {
        "certification_no": cert,
        "certification_type": "guangxi",
        "product_name": "巴马香米 5kg",
        "category": "粮油",
        "supplier_id": "93451227MA5K000001",
        "supplier_name": "巴马长寿源农业专业合作社",
        "county_code": "451227",
        "county_name": "巴马瑶族自治县",
        "gtins": gtins,
        "valid_from": "2025-01-01",
        "valid_to": "2027-12-31",
        "status": "active",
    }
    row.update(overrides)
    return [row[h] for h in HEADER]


def registry_file(*rows: list[str]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(HEADER)
    writer.writerows(rows)
    return out.getvalue()


BASE = registry_file(
    product("GX-001", RICE),
    product(
        "GX-002",
        f"{PORK}|0{OIL}",
        product_name="巴马香猪 1kg",
        category="畜禽肉蛋",
        certification_type="national",
    ),
    product(
        "SZ-003",
        MANGO,
        product_name="百色芒果 5kg",
        category="水果",
        certification_type="shenzhen",
        supplier_id="91451002MA5K000002",
        supplier_name="百色右江果业有限公司",
        county_code="451002",
        county_name="右江区",
    ),
)


def count(ctx: ServiceContext, model: Any, *where: Any) -> int:
    with ctx.sessions() as s:
        return int(s.scalar(select(func.count()).select_from(model).where(*where)) or 0)


def products_state(ctx: ServiceContext) -> list[tuple[Any, ...]]:
    with ctx.sessions() as s:
        rows = s.execute(select(CertifiedProduct).order_by(CertifiedProduct.certification_no)).scalars()
        return [(p.certification_no, p.version, p.registry_seq, p.row_sha256, p.updated_at) for p in rows]


def add_merchant(ctx: ServiceContext, client: Any, merchant_id: str) -> MerchantCaller:
    """A merchant with an API secret, inserted directly (programmes and merchants are not this area's)."""
    secret = secrets.token_urlsafe(24)
    with ctx.sessions.begin() as s:
        s.add(
            Merchant(
                id=merchant_id,
                name="巴马特产店",
                channels=["online"],
                platform=False,
                secret_ciphertext=ctx.box.encrypt(secret, merchant_id),
                created_at=ctx.now(),
            )
        )
    return MerchantCaller(client, merchant_id, secret)


@pytest.fixture
def cli_env(sqlite_settings: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    """Point voucher-admin at the test app's SQLite database."""
    monkeypatch.setenv("VOUCHER_DATABASE_URL", sqlite_settings.database_url)
    monkeypatch.setenv("VOUCHER_VAR_DIR", str(sqlite_settings.var_dir))
    monkeypatch.delenv("VOUCHER_REDIS_URL", raising=False)
    return sqlite_settings


# ---------------------------------------------------------------- import


def test_an_import_creates_products_suppliers_counties_and_one_audit_entry(ctx):
    result = registry.import_products(ctx, BASE, "tester")
    assert (result.created, result.updated, result.unchanged, result.total) == (3, 0, 0, 3)
    assert result.registry_version is not None
    assert count(ctx, CertifiedProduct) == 3
    assert count(ctx, ProductGtin) == 4
    assert count(ctx, Supplier) == 2 and count(ctx, County) == 2
    assert count(ctx, ProductVersion) == 3
    assert count(ctx, AuditEntry, AuditEntry.action == "registry.imported") == 1
    with ctx.sessions() as s:
        pork = s.get(CertifiedProduct, "GX-002")
        assert pork is not None
        assert pork.gtins == [PORK, "0" + OIL]  # as the file wrote them
        assert (pork.version, pork.registry_seq) == (1, result.registry_version)
        assert s.get(ProductGtin, "0" + OIL) is not None  # looked up by the 14-digit form


def test_importing_the_same_file_twice_changes_nothing(ctx):
    registry.import_products(ctx, BASE, "tester")
    before = products_state(ctx)
    again = registry.import_products(ctx, BASE.encode("utf-8-sig"), "tester")  # with a BOM this time
    assert (again.created, again.updated, again.unchanged, again.registry_version) == (0, 0, 3, None)
    assert products_state(ctx) == before
    assert count(ctx, ProductVersion) == 3
    assert count(ctx, RegistryImport) == 1
    assert count(ctx, AuditEntry, AuditEntry.action == "registry.imported") == 2  # one per import


def test_a_changed_row_bumps_its_version_and_is_stamped_with_the_new_snapshot_version(ctx):
    first = registry.import_products(ctx, BASE, "tester")
    changed = BASE.replace("GX-001,guangxi,巴马香米 5kg", "GX-001,guangxi,巴马香米 10kg")
    second = registry.import_products(ctx, changed, "tester")
    assert (second.created, second.updated, second.unchanged) == (0, 1, 2)
    assert second.registry_version is not None and second.registry_version > (first.registry_version or 0)
    with ctx.sessions() as s:
        rice = s.get(CertifiedProduct, "GX-001")
        pork = s.get(CertifiedProduct, "GX-002")
        assert rice is not None and pork is not None
        assert (rice.product_name, rice.version, rice.registry_seq) == (
            "巴马香米 10kg",
            2,
            second.registry_version,
        )
        assert (pork.version, pork.registry_seq) == (1, first.registry_version)
        history = s.scalars(
            select(ProductVersion)
            .where(ProductVersion.certification_no == "GX-001")
            .order_by(ProductVersion.version)
        ).all()
        assert [(v.version, v.data["product_name"]) for v in history] == [
            (1, "巴马香米 5kg"),
            (2, "巴马香米 10kg"),
        ]


def test_a_bad_row_commits_nothing_and_names_its_line_and_field(ctx):
    bad = BASE + ",".join(product("GX-004", "6901234567890")) + "\n"  # wrong check digit, line 5
    with pytest.raises(ValidationFailed) as info:
        registry.import_products(ctx, bad, "tester")
    assert [(e["line"], e["field"]) for e in info.value.extra["errors"]] == [("5", "gtins")]
    assert count(ctx, CertifiedProduct) == 0 and count(ctx, Supplier) == 0 and count(ctx, RegistryImport) == 0


def test_a_failure_while_writing_rolls_the_whole_import_back(ctx, monkeypatch):
    registry.import_products(ctx, BASE, "tester")
    before = products_state(ctx)

    def broken(*args: Any) -> list[dict[str, Any]]:
        raise RuntimeError("disk full")

    monkeypatch.setattr(registry, "_restamp", broken)
    with pytest.raises(RuntimeError):
        registry.import_products(ctx, BASE.replace("巴马香米 5kg", "巴马香米 2.5kg"), "tester")
    assert products_state(ctx) == before
    assert count(ctx, RegistryImport) == 1 and count(ctx, ProductVersion) == 3


def test_the_cli_reports_the_bad_line_and_exits_2(cli_env, ctx, tmp_path, capsys):
    path = tmp_path / "registry.csv"
    path.write_text(BASE + ",".join(product("GX-004", TEA, valid_from="2025-13-01")) + "\n", encoding="utf-8")
    assert run(["import-products", str(path)]) == 2
    err = capsys.readouterr().err
    assert "line 5, field valid_from" in err and "nothing was imported" in err
    assert count(ctx, CertifiedProduct) == 0
    path.write_text(BASE, encoding="utf-8")
    assert run(["import-products", str(path)]) == 0
    assert "created=3 updated=0 unchanged=0 total=3" in capsys.readouterr().out


def test_a_gtin_of_another_certification_in_the_registry_is_refused(ctx):
    registry.import_products(ctx, BASE, "tester")
    other = registry_file(product("GX-009", f"{TEA}|{RICE}", product_name="巴马茶"))
    with pytest.raises(ValidationFailed) as info:
        registry.import_products(ctx, other, "tester")
    [err] = info.value.extra["errors"]
    assert (err["line"], err["field"]) == ("2", "gtins")
    assert "GX-001" in err["message"]
    assert count(ctx, CertifiedProduct) == 3


def test_a_gtin_may_move_between_two_products_of_the_same_file(ctx):
    registry.import_products(ctx, BASE, "tester")
    moved = registry_file(product("GX-001", TEA), product("GX-009", RICE, product_name="巴马香米 5kg 新包装"))
    result = registry.import_products(ctx, moved, "tester")
    assert (result.created, result.updated) == (1, 1)
    with ctx.sessions() as s:
        found = registry.products_by_gtin(s, ["0" + RICE, "0" + TEA, "0" + MANGO, "00000000000000"])
        assert {g: p.certification_no for g, p in found.items()} == {
            "0" + RICE: "GX-009",
            "0" + TEA: "GX-001",
            "0" + MANGO: "SZ-003",
        }


def test_renaming_a_supplier_restamps_its_products_missing_from_the_file(ctx):
    first = registry.import_products(ctx, BASE, "tester")
    renamed = registry_file(product("GX-001", RICE, supplier_name="巴马长寿源生态农业专业合作社"))
    result = registry.import_products(ctx, renamed, "tester")
    assert (result.updated, result.restamped) == (1, 1)
    snapshot = registry_queries.registry_snapshot(ctx, first.registry_version or 0)
    assert {p["certification_no"]: p["supplier_name"] for p in snapshot["products"]} == {
        "GX-001": "巴马长寿源生态农业专业合作社",
        "GX-002": "巴马长寿源生态农业专业合作社",
    }


# ---------------------------------------------------------------- routes


def test_products_are_found_by_any_form_of_their_gtin(client, ctx):
    registry.import_products(ctx, BASE, "tester")
    for form in (OIL, "0" + OIL):
        body = client.get(f"/api/v1/products?gtin={form}").get_json()
        assert [p["certification_no"] for p in body["products"]] == ["GX-002"], form
    pork = body["products"][0]
    assert pork == {
        "certification_no": "GX-002",
        "certification_type": "national",
        "product_name": "巴马香猪 1kg",
        "category": "畜禽肉蛋",
        "supplier_id": "93451227MA5K000001",
        "supplier_name": "巴马长寿源农业专业合作社",
        "county_code": "451227",
        "county_name": "巴马瑶族自治县",
        "gtins": ["0" + PORK, "0" + OIL],
        "valid_from": "2025-01-01",
        "valid_to": "2027-12-31",
        "status": "active",
        "version": 1,
    }
    assert client.get(f"/api/v1/products?gtin={TEA}").get_json() == {"products": [], "next_cursor": None}


@pytest.mark.parametrize(
    "query",
    [
        "gtin=6901234567890",
        "gtin=abc",
        "county_code=4512",
        "limit=0",
        "certification_type=x",
        "cursor=%%%",
        "colour=red",
    ],
)
def test_a_malformed_query_is_a_validation_error(client, query):
    resp = client.get(f"/api/v1/products?{query}")
    assert resp.status_code == 400
    assert problem_code(resp) == "validation_error"
    assert resp.get_json()["errors"]


def test_products_filter_by_county_and_type_and_page_with_a_cursor(client, ctx):
    registry.import_products(ctx, BASE, "tester")
    by_county = client.get("/api/v1/products?county_code=451227").get_json()["products"]
    assert [p["certification_no"] for p in by_county] == ["GX-001", "GX-002"]
    by_type = client.get("/api/v1/products?certification_type=shenzhen").get_json()["products"]
    assert [p["certification_no"] for p in by_type] == ["SZ-003"]
    seen, cursor = [], ""
    while True:
        page = client.get(f"/api/v1/products?limit=2{cursor}").get_json()
        seen += [p["certification_no"] for p in page["products"]]
        if page["next_cursor"] is None:
            break
        cursor = f"&cursor={page['next_cursor']}"
    assert seen == ["GX-001", "GX-002", "SZ-003"]


def test_one_product_by_certification_number_or_404(client, ctx):
    registry.import_products(ctx, BASE, "tester")
    assert client.get("/api/v1/products/SZ-003").get_json()["county_name"] == "右江区"
    resp = client.get("/api/v1/products/NOPE-1")
    assert resp.status_code == 404 and problem_code(resp) == "not_found"


def test_the_snapshot_returns_what_changed_since_a_version(client, ctx):
    empty = client.get("/api/v1/products/snapshot")
    assert empty.status_code == 200 and empty.get_json() == {"version": 0, "since": 0, "products": []}
    first = registry.import_products(ctx, BASE, "tester").registry_version
    registry.import_products(ctx, BASE.replace("百色芒果 5kg", "百色芒果 9斤装"), "tester")
    full = client.get("/api/v1/products/snapshot").get_json()
    assert full["version"] > (first or 0) and full["since"] == 0
    assert [p["certification_no"] for p in full["products"]] == ["GX-001", "GX-002", "SZ-003"]
    delta = client.get(f"/api/v1/products/snapshot?since={first}").get_json()
    assert [(p["certification_no"], p["version"]) for p in delta["products"]] == [("SZ-003", 2)]
    assert delta["products"][0]["gtins"] == ["0" + MANGO]
    latest = client.get(f"/api/v1/products/snapshot?since={full['version']}").get_json()
    assert latest == {"version": full["version"], "since": full["version"], "products": []}
    bad = client.get("/api/v1/products/snapshot?since=-1")
    assert bad.status_code == 400 and problem_code(bad) == "validation_error"


def test_the_snapshot_is_cacheable_with_an_etag(client, ctx):
    registry.import_products(ctx, BASE, "tester")
    resp = client.get("/api/v1/products/snapshot")
    etag = resp.headers["ETag"]
    assert "max-age" in resp.headers["Cache-Control"]
    again = client.get("/api/v1/products/snapshot", headers={"If-None-Match": etag})
    assert again.status_code == 304 and again.data == b""
    registry.import_products(ctx, BASE.replace("巴马香米 5kg", "巴马香米 1kg"), "tester")
    changed = client.get("/api/v1/products/snapshot", headers={"If-None-Match": etag})
    assert changed.status_code == 200 and changed.headers["ETag"] != etag


# ---------------------------------------------------------------- SKU mappings


def test_a_merchant_asks_for_a_sku_mapping_and_an_admin_approves_it(client, ctx, admin):
    registry.import_products(ctx, BASE, "tester")
    shop = add_merchant(ctx, client, "M-BAMA-1")
    other = add_merchant(ctx, client, "M-OTHER-2")
    asked = shop.post("/api/v1/sku-mappings", {"sku": "RICE-5KG", "certification_no": "GX-001"})
    assert asked.status_code == 201, asked.get_json()
    assert asked.get_json()["status"] == "pending"
    assert (
        shop.post("/api/v1/sku-mappings", {"sku": "RICE-5KG", "certification_no": "GX-001"}).status_code
        == 200
    )
    other.post("/api/v1/sku-mappings", {"sku": "X/1", "certification_no": "SZ-003"})
    with ctx.sessions() as s:
        assert registry.approved_sku_map(s, "M-BAMA-1", ["RICE-5KG"]) == {}  # pending does not count
    own = shop.get("/api/v1/sku-mappings").get_json()["sku_mappings"]
    assert [(m["merchant_id"], m["sku"]) for m in own] == [("M-BAMA-1", "RICE-5KG")]
    assert shop.get("/api/v1/sku-mappings?merchant_id=M-OTHER-2").status_code == 403
    pending = admin.get("/api/v1/sku-mappings?status=pending").get_json()["sku_mappings"]
    assert {m["sku"] for m in pending} == {"RICE-5KG", "X/1"}
    assert (
        shop.post("/api/v1/sku-mappings/M-BAMA-1/RICE-5KG/approve").status_code == 403
    )  # a merchant, not an admin: forbidden (CONTRACT §2)
    approved = admin.post("/api/v1/sku-mappings/M-BAMA-1/RICE-5KG/approve")
    assert approved.status_code == 200
    assert approved.get_json()["status"] == "approved" and approved.get_json()["decided_by"] == "admin:tester"
    assert admin.post("/api/v1/sku-mappings/M-OTHER-2/X/1/reject").get_json()["status"] == "rejected"
    with ctx.sessions() as s:
        assert registry.approved_sku_map(s, "M-BAMA-1", ["RICE-5KG", "NOPE"]) == {"RICE-5KG": "GX-001"}
        assert registry.approved_sku_map(s, "M-OTHER-2", ["X/1"]) == {}
    # Asking for another product puts the mapping back to pending: a merchant cannot widen it alone.
    assert (
        shop.post("/api/v1/sku-mappings", {"sku": "RICE-5KG", "certification_no": "GX-002"}).status_code
        == 201
    )
    with ctx.sessions() as s:
        assert registry.approved_sku_map(s, "M-BAMA-1", ["RICE-5KG"]) == {}
    actions = [
        a
        for (a,) in ctx.sessions().execute(
            select(AuditEntry.action).where(AuditEntry.entity == "sku_mapping")
        )
    ]
    assert sorted(actions) == sorted(
        ["sku_mapping.requested"] * 3 + ["sku_mapping.approved", "sku_mapping.rejected"]
    )


def test_sku_mapping_requests_are_validated(client, ctx, admin):
    registry.import_products(ctx, BASE, "tester")
    shop = add_merchant(ctx, client, "M-BAMA-1")
    unknown = shop.post("/api/v1/sku-mappings", {"sku": "A", "certification_no": "NOPE"})
    assert unknown.status_code == 400 and unknown.get_json()["errors"][0]["field"] == "certification_no"
    assert shop.post("/api/v1/sku-mappings", {"sku": "", "certification_no": "GX-001"}).status_code == 400
    assert shop.post("/api/v1/sku-mappings", {"sku": 5, "certification_no": "GX-001"}).status_code == 400
    missing = admin.post("/api/v1/sku-mappings/M-BAMA-1/NOPE/approve")
    assert missing.status_code == 404 and problem_code(missing) == "not_found"


def test_the_cli_approves_a_mapping_directly(cli_env, client, ctx, capsys):
    registry.import_products(ctx, BASE, "tester")
    add_merchant(ctx, client, "M-BAMA-1")
    assert (
        run(["approve-sku", "--merchant", "M-BAMA-1", "--sku", "PORK-1", "--certification-no", "GX-002"]) == 0
    )
    assert "approved" in capsys.readouterr().out
    with ctx.sessions() as s:
        assert registry.approved_sku_map(s, "M-BAMA-1", ["PORK-1"]) == {"PORK-1": "GX-002"}
    assert run(["approve-sku", "--merchant", "M-NOBODY", "--sku", "A", "--certification-no", "GX-002"]) == 2
    assert run(["approve-sku", "--merchant", "M-BAMA-1", "--sku", "NEVER-ASKED"]) == 2
    assert run(["reject-sku", "--merchant", "M-BAMA-1", "--sku", "PORK-1"]) == 0
    with ctx.sessions() as s:
        assert registry.approved_sku_map(s, "M-BAMA-1", ["PORK-1"]) == {}


# ---------------------------------------------------------------- seed scale


def _script(name: str, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(ROOT / "scripts" / name), *args],
        capture_output=True,
        text=True,
        timeout=240,
        env={**os.environ, **(env or {})},
        check=False,
    )


def _check_seed_file(path: Path) -> int:
    """Check the seed file's counts; return how many GTINs it lists."""
    with path.open(encoding="utf-8", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 3552
    assert len({r["supplier_id"] for r in rows}) == 1252
    assert len({r["county_code"] for r in rows}) == 106
    gtins = [g for r in rows for g in r["gtins"].split("|")]
    assert len(gtins) == len(set(gtins)) and all(is_valid_gtin(g) and g.startswith("69") for g in gtins)
    assert any(r["county_code"] == "451227" for r in rows)
    return len(gtins)


def test_the_seed_registry_is_generated_and_imported(sqlite_settings, tmp_path):
    out = tmp_path / "seed.csv"
    assert _script("generate_registry.py", "--out", str(out), "--seed", "7").returncode == 0
    again = _script("generate_registry.py", "--seed", "7")
    assert again.returncode == 0 and again.stdout == out.read_text(encoding="utf-8")  # deterministic
    n_gtins = _check_seed_file(out)
    env = {"VOUCHER_DATABASE_URL": sqlite_settings.database_url, "VOUCHER_VAR_DIR": str(tmp_path)}
    first = _script("import_products.py", str(out), env=env)
    assert first.returncode == 0, first.stderr
    assert "created=3552 updated=0 unchanged=0 total=3552" in first.stdout
    second = _script("import_products.py", str(out), env=env)
    assert "created=0 updated=0 unchanged=3552 total=3552" in second.stdout
    ctx = ServiceContext.build(sqlite_settings)
    try:
        assert (count(ctx, CertifiedProduct), count(ctx, Supplier), count(ctx, County)) == (3552, 1252, 106)
        assert count(ctx, ProductGtin) == n_gtins
    finally:
        ctx.engine.dispose()


# ---------------------------------------------------------------- PostgreSQL


@pytest.fixture
def pg_registry_ctx(pg_database_factory: Any, tmp_path: Path) -> Any:
    """A fresh PostgreSQL database of its own: registry state is global, so tests must not share it."""
    ctx = ServiceContext.build(make_settings(tmp_path, pg_database_factory(migrated=True), REDIS_URL))
    yield ctx
    ctx.engine.dispose()


@pytest.mark.postgres
def test_the_seed_registry_imports_idempotently_on_postgres(pg_registry_ctx, tmp_path):
    from voucher_service.domain.registry_generator import generate_registry, registry_csv

    text = registry_csv(generate_registry(11))
    first = registry.import_products(pg_registry_ctx, text, "tester")
    assert (first.created, first.total) == (3552, 3552)
    before = products_state(pg_registry_ctx)
    second = registry.import_products(pg_registry_ctx, text, "tester")
    assert (second.unchanged, second.registry_version) == (3552, None)
    assert products_state(pg_registry_ctx) == before
    snapshot = registry_queries.registry_snapshot(pg_registry_ctx, 0)
    assert snapshot["version"] == first.registry_version and len(snapshot["products"]) == 3552


@pytest.mark.postgres
def test_concurrent_imports_of_one_file_apply_it_once_on_postgres(pg_registry_ctx):
    results: list[Any] = []
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            results.append(registry.import_products(pg_registry_ctx, BASE, "tester"))
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert sorted(r.created for r in results) == [0, 0, 0, 3]
    assert count(pg_registry_ctx, CertifiedProduct) == 3 and count(pg_registry_ctx, ProductVersion) == 3
    assert count(pg_registry_ctx, RegistryImport) == 1
