"""The certified-product registry file (CONTRACT §5): parsing and validating rows, with no I/O.

Every problem is reported with its line number (line 1 is the header) and the field it is in, so an
administrator can fix the file; a file with any problem is refused as a whole by the import.
"""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import io
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass

from voucher_service.domain.gtin import check_digit, is_valid_gtin, normalise_gtin
from voucher_service.domain.states import ProductStatus

HEADER: tuple[str, ...] = (
    "certification_no",
    "certification_type",
    "product_name",
    "category",
    "supplier_id",
    "supplier_name",
    "county_code",
    "county_name",
    "gtins",
    "valid_from",
    "valid_to",
    "status",
)
CERTIFICATION_TYPES: tuple[str, ...] = ("national", "guangxi", "shenzhen")
STATUSES: tuple[str, ...] = tuple(ProductStatus)
MAX_LENGTHS: dict[str, int] = {
    "certification_no": 64,
    "product_name": 200,
    "category": 100,
    "supplier_id": 64,
    "supplier_name": 200,
    "county_name": 100,
}
TEXT_FIELDS = ("certification_no", "product_name", "category", "supplier_id", "supplier_name", "county_name")
MAX_GTINS_PER_PRODUCT = 20

_DATE_RE = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$")
_COUNTY_RE = re.compile(r"^[0-9]{6}$")
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")
# The number is a URL path segment (/products/{certification_no}): no separators or whitespace.
_CERT_NO_RE = re.compile(r"^[^\s/\\?#%]+$")
_RESERVED_CERT_NOS = frozenset({"snapshot"})  # /products/snapshot is the snapshot route


@dataclass(frozen=True)
class RowError:
    """One problem in a registry file: where it is and what is wrong."""

    line: int
    field: str
    message: str

    def __str__(self) -> str:
        return f"line {self.line}, field {self.field}: {self.message}"


class RegistryFileError(ValueError):
    """The registry file cannot be imported; `errors` lists every problem found."""

    def __init__(self, errors: list[RowError]) -> None:
        self.errors = sorted(
            errors, key=lambda e: (e.line, HEADER.index(e.field) if e.field in HEADER else -1)
        )
        first = self.errors[0] if self.errors else RowError(0, "file", "invalid")
        super().__init__(f"{len(self.errors)} problem(s) in the registry file; first: {first}")


@dataclass(frozen=True)
class ProductRow:
    """A valid registry row: one certified product."""

    line: int
    certification_no: str
    certification_type: str
    product_name: str
    category: str
    supplier_id: str
    supplier_name: str
    county_code: str
    county_name: str
    gtins: tuple[str, ...]  # as written in the file
    gtins14: tuple[str, ...]  # the same, normalised to 14 digits
    valid_from: dt.date
    valid_to: dt.date
    status: str

    def values(self) -> list[str]:
        """The row's canonical field values, in header order."""
        return canonical_values(
            self.certification_no,
            self.certification_type,
            self.product_name,
            self.category,
            self.supplier_id,
            self.supplier_name,
            self.county_code,
            self.county_name,
            self.gtins,
            self.valid_from,
            self.valid_to,
            self.status,
        )

    @property
    def sha256(self) -> str:
        """The fingerprint that tells an unchanged row from a changed one."""
        return row_sha256(self.values())


def canonical_values(
    certification_no: str,
    certification_type: str,
    product_name: str,
    category: str,
    supplier_id: str,
    supplier_name: str,
    county_code: str,
    county_name: str,
    gtins: Sequence[str],
    valid_from: dt.date,
    valid_to: dt.date,
    status: str,
) -> list[str]:
    """Field values in header order as the fingerprint covers them (also for products read back)."""
    return [
        certification_no,
        certification_type,
        product_name,
        category,
        supplier_id,
        supplier_name,
        county_code,
        county_name,
        "|".join(gtins),
        valid_from.isoformat(),
        valid_to.isoformat(),
        status,
    ]


def row_sha256(values: Sequence[str]) -> str:
    """SHA-256 over the canonical values (JSON, so no separator inside a value can collide)."""
    return hashlib.sha256(json.dumps(list(values), ensure_ascii=False).encode()).hexdigest()


def decode_registry(data: bytes) -> str:
    """Decode the file as UTF-8, dropping a BOM; raise RegistryFileError naming the bad line."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise RegistryFileError([RowError(line, "file", f"not valid UTF-8 at byte {exc.start}")]) from None


def _gtin_problem(text: str) -> str | None:
    if not (text.isascii() and text.isdigit()):
        return f"{text!r} is not a GTIN: only digits are allowed"
    if len(text) not in (8, 12, 13, 14):
        return f"{text!r} has {len(text)} digits; a GTIN has 8, 12, 13 or 14"
    if not is_valid_gtin(text):
        return f"{text!r} has a wrong check digit (expected {check_digit(text[:-1])})"
    return None


def _parse_gtins(raw: str, line: int, errors: list[RowError]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    parts = [p.strip() for p in raw.split("|")]
    if not raw.strip():
        errors.append(RowError(line, "gtins", "at least one GTIN is required"))
        return (), ()
    if len(parts) > MAX_GTINS_PER_PRODUCT:
        errors.append(RowError(line, "gtins", f"at most {MAX_GTINS_PER_PRODUCT} GTINs per product"))
    seen: set[str] = set()
    originals: list[str] = []
    for part in parts:
        problem = "an empty GTIN between '|' separators" if not part else _gtin_problem(part)
        if problem:
            errors.append(RowError(line, "gtins", problem))
            continue
        g14 = normalise_gtin(part)
        if g14 in seen:
            errors.append(RowError(line, "gtins", f"{part!r} is listed twice for this product"))
            continue
        seen.add(g14)
        originals.append(part)
    return tuple(originals), tuple(normalise_gtin(g) for g in originals)


def _parse_date(raw: str, field: str, line: int, errors: list[RowError]) -> dt.date | None:
    if not raw:
        errors.append(RowError(line, field, "is required (YYYY-MM-DD)"))
        return None
    if not _DATE_RE.fullmatch(raw):
        errors.append(RowError(line, field, f"{raw!r} is not a date in the form YYYY-MM-DD"))
        return None
    try:
        return dt.date.fromisoformat(raw)
    except ValueError:
        errors.append(RowError(line, field, f"{raw!r} is not a calendar date"))
        return None


def _check_text(record: dict[str, str], line: int, errors: list[RowError]) -> None:
    for name in TEXT_FIELDS:
        value = record[name]
        if not value:
            errors.append(RowError(line, name, "is required"))
        elif len(value) > MAX_LENGTHS[name]:
            errors.append(RowError(line, name, f"is longer than {MAX_LENGTHS[name]} characters"))
        elif _CONTROL_RE.search(value):
            errors.append(RowError(line, name, "contains control characters (line breaks, tabs, ...)"))
    cert_no = record["certification_no"]
    if cert_no and (not _CERT_NO_RE.fullmatch(cert_no) or cert_no.lower() in _RESERVED_CERT_NOS):
        errors.append(RowError(line, "certification_no", f"{cert_no!r} may not contain spaces or / \\ ? # %"))


def parse_row(line: int, cells: Sequence[str]) -> tuple[ProductRow | None, list[RowError]]:
    """Validate one data row; return the product, or None with every problem of the row."""
    if len(cells) != len(HEADER):
        return None, [RowError(line, "row", f"expected {len(HEADER)} fields, found {len(cells)}")]
    record = {name: cell.strip() for name, cell in zip(HEADER, cells, strict=True)}
    errors: list[RowError] = []
    _check_text(record, line, errors)
    if record["certification_type"] not in CERTIFICATION_TYPES:
        errors.append(
            RowError(
                line,
                "certification_type",
                f"{record['certification_type']!r} is not one of " + ", ".join(CERTIFICATION_TYPES),
            )
        )
    if not _COUNTY_RE.fullmatch(record["county_code"]):
        errors.append(
            RowError(line, "county_code", f"{record['county_code']!r} is not a 6-digit division code")
        )
    gtins, gtins14 = _parse_gtins(record["gtins"], line, errors)
    valid_from = _parse_date(record["valid_from"], "valid_from", line, errors)
    valid_to = _parse_date(record["valid_to"], "valid_to", line, errors)
    if valid_from and valid_to and valid_from > valid_to:
        errors.append(RowError(line, "valid_to", f"{valid_to} is before valid_from {valid_from}"))
    if record["status"] not in STATUSES:
        errors.append(RowError(line, "status", f"{record['status']!r} is not one of " + ", ".join(STATUSES)))
    if errors or valid_from is None or valid_to is None:
        return None, errors
    return (
        ProductRow(
            line=line,
            certification_no=record["certification_no"],
            certification_type=record["certification_type"],
            product_name=record["product_name"],
            category=record["category"],
            supplier_id=record["supplier_id"],
            supplier_name=record["supplier_name"],
            county_code=record["county_code"],
            county_name=record["county_name"],
            gtins=gtins,
            gtins14=gtins14,
            valid_from=valid_from,
            valid_to=valid_to,
            status=record["status"],
        ),
        [],
    )


class _FileChecks:
    """What must hold across rows: unique numbers and GTINs, one name per supplier and county."""

    def __init__(self) -> None:
        self.cert_lines: dict[str, int] = {}
        self.gtin_owner: dict[str, tuple[str, int]] = {}
        self.supplier_names: dict[str, tuple[str, int]] = {}
        self.county_names: dict[str, tuple[str, int]] = {}

    def check(self, row: ProductRow, errors: list[RowError]) -> None:
        first = self.cert_lines.setdefault(row.certification_no, row.line)
        if first != row.line:
            errors.append(
                RowError(row.line, "certification_no", f"{row.certification_no} is also on line {first}")
            )
        for original, g14 in zip(row.gtins, row.gtins14, strict=True):
            owner = self.gtin_owner.setdefault(g14, (row.certification_no, row.line))
            if owner[1] != row.line:
                errors.append(
                    RowError(
                        row.line, "gtins", f"{original} is also listed for {owner[0]} on line {owner[1]}"
                    )
                )
        for field, names, key, value in (
            ("supplier_name", self.supplier_names, row.supplier_id, row.supplier_name),
            ("county_name", self.county_names, row.county_code, row.county_name),
        ):
            known = names.setdefault(key, (value, row.line))
            if known[0] != value:
                errors.append(RowError(row.line, field, f"{key} is named {known[0]!r} on line {known[1]}"))


def parse_registry(text: str) -> list[ProductRow]:
    """Parse and validate a whole registry file; raise RegistryFileError listing every problem."""
    text = text.removeprefix("\ufeff")
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    errors: list[RowError] = []
    rows: list[ProductRow] = []
    checks = _FileChecks()
    next_line = 1
    try:
        for cells in reader:
            line, next_line = next_line, reader.line_num + 1  # a quoted field may span lines
            if line == 1:
                if tuple(cells) != HEADER:
                    errors.append(RowError(1, "header", "the header must be exactly: " + ",".join(HEADER)))
                    break
                continue
            if not any(c.strip() for c in cells):
                continue  # blank lines (a trailing newline, an empty spreadsheet row) carry nothing
            row, row_errors = parse_row(line, cells)
            errors.extend(row_errors)
            if row is not None:
                checks.check(row, errors)
                rows.append(row)
    except csv.Error as exc:
        errors.append(RowError(next_line, "row", f"malformed CSV: {exc}"))
    if next_line == 1 and not errors:
        errors.append(RowError(1, "header", "the file is empty; expected the header " + ",".join(HEADER)))
    if errors:
        raise RegistryFileError(errors)
    return rows
