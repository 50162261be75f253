"""The certified-product registry: importing the registry file, and the lookups checkout uses.

An import is one transaction: the file is validated as a whole (any bad row refuses the file), the
registry's current state is loaded once into dicts, and the differences are written with bulk
statements. Every change is stamped with the import's `RegistryImport.seq`, the snapshot version
offline terminals ask for with `?since=`. What the API shows lives in registry_queries.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import delete, insert, select, text, update
from sqlalchemy.orm import Session

from voucher_service.adapters.db.engine import is_postgres
from voucher_service.adapters.db.models import (
    CertifiedProduct,
    County,
    ProductGtin,
    ProductVersion,
    RegistryImport,
    SkuMapping,
    Supplier,
)
from voucher_service.adapters.db.redemptions import products_of_gtins
from voucher_service.adapters.db.rows import built_once
from voucher_service.domain.errors import ValidationFailed
from voucher_service.domain.registry_rows import (
    ProductRow,
    RegistryFileError,
    RowError,
    canonical_values,
    decode_registry,
    parse_registry,
    row_sha256,
)
from voucher_service.domain.states import SkuMappingStatus
from voucher_service.services import audit_log
from voucher_service.services.context import ServiceContext
from voucher_service.services.registry_queries import product_json

REGISTRY_LOCK_KEY = 74110002  # PostgreSQL advisory lock: one import at a time, so seqs commit in order
CHUNK = 500
T = TypeVar("T")


@dataclass(frozen=True)
class ImportResult:
    """What an import did; `registry_version` is None when it changed nothing."""

    created: int
    updated: int
    unchanged: int
    total: int
    restamped: int
    registry_version: int | None
    file_sha256: str


@dataclass
class _Plan:
    """The differences between a file and the registry, worked out before anything is written."""

    new: list[ProductRow] = field(default_factory=list)
    changed: list[tuple[ProductRow, int]] = field(default_factory=list)  # row, current version
    unchanged: int = 0
    in_file: set[str] = field(default_factory=set)
    new_suppliers: dict[str, ProductRow] = field(default_factory=dict)
    renamed_suppliers: dict[str, str] = field(default_factory=dict)
    new_counties: dict[str, str] = field(default_factory=dict)
    renamed_counties: dict[str, str] = field(default_factory=dict)


def _chunks(items: Sequence[T], size: int = CHUNK) -> Iterator[Sequence[T]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def _read_source(source: str | bytes | Path) -> bytes:
    """Bytes of a path, of bytes, or of CSV text (a str with a line break is text, otherwise a path)."""
    if isinstance(source, bytes):
        return source
    if isinstance(source, str) and "\n" in source:
        return source.encode()
    return Path(source).read_bytes()


def _as_validation(exc: RegistryFileError) -> ValidationFailed:
    errors = [{"line": str(e.line), "field": e.field, "message": e.message} for e in exc.errors]
    return ValidationFailed(
        f"The registry file has {len(errors)} problem(s); nothing was imported. First: {exc.errors[0]}",
        errors,
    )


def import_products(ctx: ServiceContext, source: str | bytes | Path, actor: str) -> ImportResult:
    """Import a registry file atomically and idempotently; raise ValidationFailed naming bad lines."""
    data = _read_source(source)
    file_sha256 = hashlib.sha256(data).hexdigest()
    try:
        rows = parse_registry(decode_registry(data))
    except RegistryFileError as exc:
        raise _as_validation(exc) from None
    now = ctx.now()
    with ctx.sessions.begin() as s:
        if s.get_bind().dialect.name == "postgresql":
            s.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": REGISTRY_LOCK_KEY})
        plan = _plan(s, rows)
        seq: int | None = None
        restamped = 0
        if plan.new or plan.changed:
            record = RegistryImport(
                file_sha256=file_sha256,
                created=len(plan.new),
                updated=len(plan.changed),
                unchanged=plan.unchanged,
                imported_at=now,
            )
            s.add(record)
            s.flush()
            seq = record.seq
            restamped = _apply(s, plan, seq, now)
        result = ImportResult(
            created=len(plan.new),
            updated=len(plan.changed),
            unchanged=plan.unchanged,
            total=len(rows),
            restamped=restamped,
            registry_version=seq,
            file_sha256=file_sha256,
        )
        audit_log.record(
            s,
            actor,
            "registry.imported",
            "registry_import",
            str(seq) if seq else file_sha256,
            asdict(result),
            now,
        )
    return result


def _plan(s: Session, rows: list[ProductRow]) -> _Plan:
    """Load the registry once and sort every row into new, changed or unchanged."""
    existing = {
        cert: (version, sha)
        for cert, version, sha in s.execute(
            select(CertifiedProduct.certification_no, CertifiedProduct.version, CertifiedProduct.row_sha256)
        )
    }
    owners = {g: cert for g, cert in s.execute(select(ProductGtin.gtin, ProductGtin.certification_no))}
    in_file = {row.certification_no for row in rows}
    conflicts: list[RowError] = []
    for row in rows:
        for original, g14 in zip(row.gtins, row.gtins14, strict=True):
            owner = owners.get(g14)
            # A GTIN may move between two products of the same file; otherwise its owner keeps it.
            if owner is not None and owner != row.certification_no and owner not in in_file:
                conflicts.append(
                    RowError(row.line, "gtins", f"{original} already belongs to certification {owner}")
                )
    if conflicts:
        raise _as_validation(RegistryFileError(conflicts))
    plan = _Plan(in_file=in_file)
    for row in rows:
        current = existing.get(row.certification_no)
        if current is None:
            plan.new.append(row)
        elif current[1] != row.sha256:
            plan.changed.append((row, current[0]))
        else:
            plan.unchanged += 1
    suppliers = {sid: name for sid, name in s.execute(select(Supplier.id, Supplier.name))}
    counties = {code: name for code, name in s.execute(select(County.code, County.name))}
    for row in rows:
        known = suppliers.get(row.supplier_id)
        if known is None:
            plan.new_suppliers.setdefault(row.supplier_id, row)
        elif known != row.supplier_name:
            plan.renamed_suppliers[row.supplier_id] = row.supplier_name
        county = counties.get(row.county_code)
        if county is None:
            plan.new_counties[row.county_code] = row.county_name
        elif county != row.county_name:
            plan.renamed_counties[row.county_code] = row.county_name
    return plan


def _columns(row: ProductRow, version: int, seq: int, now: dt.datetime) -> dict[str, Any]:
    return {
        "certification_no": row.certification_no,
        "certification_type": row.certification_type,
        "product_name": row.product_name,
        "category": row.category,
        "supplier_id": row.supplier_id,
        "county_code": row.county_code,
        "county_name": row.county_name,
        "gtins": list(row.gtins),
        "valid_from": row.valid_from,
        "valid_to": row.valid_to,
        "status": row.status,
        "version": version,
        "row_sha256": row.sha256,
        "registry_seq": seq,
        "updated_at": now,
    }


def _version_row(cols: Mapping[str, Any], supplier_name: str, seq: int, now: dt.datetime) -> dict[str, Any]:
    data = product_json(cols, supplier_name)
    data["registered_gtins"] = list(cols["gtins"])  # the forms the file used, for the record
    return {
        "certification_no": cols["certification_no"],
        "version": cols["version"],
        "data": data,
        "registry_seq": seq,
        "imported_at": now,
    }


def _apply(s: Session, plan: _Plan, seq: int, now: dt.datetime) -> int:
    """Write the plan with bulk statements; return how many products outside the file were restamped."""
    if plan.new_counties:
        s.execute(insert(County), [{"code": c, "name": n} for c, n in plan.new_counties.items()])
    if plan.renamed_counties:
        s.execute(update(County), [{"code": c, "name": n} for c, n in plan.renamed_counties.items()])
    if plan.new_suppliers:
        s.execute(
            insert(Supplier),
            [
                {"id": sid, "name": r.supplier_name, "county_code": r.county_code}
                for sid, r in plan.new_suppliers.items()
            ],
        )
    if plan.renamed_suppliers:
        s.execute(update(Supplier), [{"id": sid, "name": n} for sid, n in plan.renamed_suppliers.items()])
    changed_certs = [row.certification_no for row, _ in plan.changed]
    for chunk in _chunks(changed_certs):
        s.execute(delete(ProductGtin).where(ProductGtin.certification_no.in_(chunk)))
    new_cols = [_columns(row, 1, seq, now) for row in plan.new]
    changed_cols = [_columns(row, version + 1, seq, now) for row, version in plan.changed]
    if new_cols:
        s.execute(insert(CertifiedProduct), new_cols)
    if changed_cols:
        s.execute(update(CertifiedProduct), changed_cols)
    gtin_rows = [
        {"gtin": g14, "certification_no": row.certification_no}
        for row in [*plan.new, *(r for r, _ in plan.changed)]
        for g14 in row.gtins14
    ]
    if gtin_rows:
        s.execute(insert(ProductGtin), gtin_rows)
    names = {r.supplier_id: r.supplier_name for r in [*plan.new, *(r for r, _ in plan.changed)]}
    versions = [_version_row(c, names[c["supplier_id"]], seq, now) for c in [*new_cols, *changed_cols]]
    versions.extend(_restamp(s, plan, seq, now))
    s.execute(insert(ProductVersion), versions)
    return len(versions) - len(new_cols) - len(changed_cols)


def _restamp(s: Session, plan: _Plan, seq: int, now: dt.datetime) -> list[dict[str, Any]]:
    """Version the products a supplier rename touches that the file did not list, so snapshots see it."""
    if not plan.renamed_suppliers:
        return []
    table = CertifiedProduct.__table__
    stmt = select(table).where(CertifiedProduct.supplier_id.in_(list(plan.renamed_suppliers)))
    updates, versions = [], []
    for product in s.execute(stmt).mappings():
        if product["certification_no"] in plan.in_file:
            continue
        cols = dict(product)
        name = plan.renamed_suppliers[cols["supplier_id"]]
        bumped = {
            "version": cols["version"] + 1,
            "registry_seq": seq,
            "updated_at": now,
            "row_sha256": row_sha256(_values_of(cols, name)),
        }
        cols.update(bumped)
        updates.append({"certification_no": cols["certification_no"], **bumped})  # by primary key
        versions.append(_version_row(cols, name, seq, now))
    if updates:
        s.execute(update(CertifiedProduct), updates)
    return versions


def _values_of(cols: Mapping[str, Any], supplier_name: str) -> list[str]:
    return canonical_values(
        cols["certification_no"],
        cols["certification_type"],
        cols["product_name"],
        cols["category"],
        cols["supplier_id"],
        supplier_name,
        cols["county_code"],
        cols["county_name"],
        cols["gtins"],
        cols["valid_from"],
        cols["valid_to"],
        cols["status"],
    )


# ---------------------------------------------------------------- lookups for redemption


def products_by_gtin(session: Session, gtins14: Sequence[str]) -> dict[str, CertifiedProduct]:
    """The certified product of each known 14-digit GTIN, in the caller's transaction."""
    wanted = sorted(set(gtins14))
    found: dict[str, CertifiedProduct] = {}
    for chunk in _chunks(wanted):
        stmt = (
            select(ProductGtin.gtin, CertifiedProduct)
            .join(CertifiedProduct, CertifiedProduct.certification_no == ProductGtin.certification_no)
            .where(ProductGtin.gtin.in_(chunk))
        )
        found.update({g: p for g, p in session.execute(stmt)})
    return found


# The columns checkout judges a product by, for every GTIN of a basket in one round trip (PostgreSQL).
PG_SNAPSHOTS_BY_GTIN = built_once(products_of_gtins())


def product_snapshots_by_gtin(session: Session, gtins14: Sequence[str]) -> dict[str, Any]:
    """What checkout needs of the product of each known 14-digit GTIN (rows with certification_no,
    certification_type, county_code, valid_from, valid_to, status), in the caller's transaction."""
    wanted = sorted(set(gtins14))
    if not is_postgres(session):
        return dict(products_by_gtin(session, wanted))
    found: dict[str, Any] = {}
    for chunk in _chunks(wanted):
        found.update(
            {
                row.gtin: row
                for row in session.connection().execute(PG_SNAPSHOTS_BY_GTIN, {"gtins": list(chunk)})
            }
        )
    return found


def approved_sku_map(session: Session, merchant_id: str, skus: Sequence[str]) -> dict[str, str]:
    """The certification number of each of the merchant's SKUs whose mapping an admin approved."""
    wanted = sorted(set(skus))
    found: dict[str, str] = {}
    for chunk in _chunks(wanted):
        stmt = select(SkuMapping.sku, SkuMapping.certification_no).where(
            SkuMapping.merchant_id == merchant_id,
            SkuMapping.status == SkuMappingStatus.APPROVED,
            SkuMapping.sku.in_(chunk),
        )
        found.update({sku: cert for sku, cert in session.execute(stmt)})
    return found
