"""Typed SQLAlchemy 2 models of every table. Money columns are BigInteger fen; times are UTC.

Append-only tables (ledger_entries, audit_log, revocation_events, product_versions, reversals,
offline_records) are only ever inserted into by the services.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Date,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

# SQLite only autoincrements INTEGER PRIMARY KEY; PostgreSQL wants BIGINT for big append-only tables.
BigId = BigInteger().with_variant(Integer(), "sqlite")


class UTCDateTime(TypeDecorator[dt.datetime]):
    """A timezone-aware UTC datetime on both PostgreSQL and SQLite (which stores naive text)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: Any) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(dt.UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: dt.datetime | None, dialect: Any) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=dt.UTC)
        return value.astimezone(dt.UTC)


class Base(DeclarativeBase):
    """Declarative base of every table."""


# ---------------------------------------------------------------- administration


class AdminToken(Base):
    __tablename__ = "admin_tokens"
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(100))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    revoked_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)


class SigningKey(Base):
    """An ES256 voucher-signing key; the private half encrypted with the signing passphrase."""

    __tablename__ = "signing_keys"
    kid: Mapped[str] = mapped_column(String(16), primary_key=True)  # base64url of 8 bytes
    private_key_pem: Mapped[bytes] = mapped_column(LargeBinary)  # PKCS8, encrypted
    public_jwk: Mapped[dict[str, Any]] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(10))  # next | active | retired
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    activated_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)
    retired_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)
    # Until when a voucher signed by this key can still be valid; the key stays published until then.
    publish_until: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)


# ---------------------------------------------------------------- programmes


class Program(Base):
    __tablename__ = "programs"
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    budget_fen: Mapped[int] = mapped_column(BigInteger)
    starts_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    ends_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    voucher_validity_days: Mapped[int] = mapped_column(Integer)
    per_person_limit: Mapped[int] = mapped_column(Integer)
    channels: Mapped[list[str]] = mapped_column(JSON)
    eligibility: Mapped[dict[str, Any]] = mapped_column(JSON)
    max_offline_fen_per_terminal: Mapped[int] = mapped_column(BigInteger)
    max_offline_hours: Mapped[int] = mapped_column(Integer)
    timezone: Mapped[str] = mapped_column(String(64), default="Asia/Shanghai")
    status: Mapped[str] = mapped_column(String(12))  # draft | active | suspended
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    activated_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)
    # off | optional | required (docs/holder-binding.md); fixed when the programme is created.
    holder_binding: Mapped[str] = mapped_column(String(10), default="off", server_default="off")


class ProgramSuspension(Base):
    """A period during which the programme was suspended (resumed_at None while it lasts): offline
    records dated inside one are refused, since a till offline could not have known."""

    __tablename__ = "program_suspensions"
    program_id: Mapped[str] = mapped_column(ForeignKey("programs.id"), primary_key=True)
    suspended_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, primary_key=True)
    resumed_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)


class Tier(Base):
    __tablename__ = "tiers"
    program_id: Mapped[str] = mapped_column(ForeignKey("programs.id"), primary_key=True)
    code: Mapped[str] = mapped_column(String(32), primary_key=True)
    face_value_fen: Mapped[int] = mapped_column(BigInteger)
    min_spend_fen: Mapped[int] = mapped_column(BigInteger)
    quantity: Mapped[int] = mapped_column(Integer)
    position: Mapped[int] = mapped_column(Integer, default=0)


class ProgramTarget(Base):
    __tablename__ = "program_targets"
    program_id: Mapped[str] = mapped_column(ForeignKey("programs.id"), primary_key=True)
    county_code: Mapped[str] = mapped_column(String(6), primary_key=True)
    target_fen: Mapped[int] = mapped_column(BigInteger)


# ---------------------------------------------------------------- merchants


class Merchant(Base):
    __tablename__ = "merchants"
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    channels: Mapped[list[str]] = mapped_column(JSON)
    platform: Mapped[bool] = mapped_column(Boolean, default=False)
    # The API secret, AES-GCM encrypted under a key derived from VOUCHER_SECRET_KEY: the database
    # alone does not reveal it, yet the server can still check HMAC signatures.
    secret_ciphertext: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)


class StaffAccount(Base):
    """A merchant's staff member (a cashier) who logs in to the checkout page."""

    __tablename__ = "staff_accounts"
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    merchant_id: Mapped[str] = mapped_column(ForeignKey("merchants.id"), index=True)
    # NFKC + casefold, [a-z0-9._-]; unique across merchants, so a cashier logs in with it alone.
    username: Mapped[str] = mapped_column(String(64), unique=True)
    password_hash: Mapped[str] = mapped_column(String(200))  # argon2id, parameters in the string
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    disabled_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)


class Enrolment(Base):
    __tablename__ = "program_merchants"
    program_id: Mapped[str] = mapped_column(ForeignKey("programs.id"), primary_key=True)
    merchant_id: Mapped[str] = mapped_column(ForeignKey("merchants.id"), primary_key=True)
    enrolled_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)


class Terminal(Base):
    __tablename__ = "terminals"
    merchant_id: Mapped[str] = mapped_column(ForeignKey("merchants.id"), primary_key=True)
    terminal_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    public_key_jwk: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    last_refresh_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)


# ---------------------------------------------------------------- vouchers and claims


class Voucher(Base):
    """A voucher: pre-minted as `available` when its programme is activated, then claimed.

    status: available -> issued -> redeemed (-> issued again after a full clawback)
            issued -> expired (-> available when recycled) ; issued -> void
    """

    __tablename__ = "vouchers"
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    program_id: Mapped[str] = mapped_column(ForeignKey("programs.id"))
    tier_code: Mapped[str] = mapped_column(String(32))
    face_value_fen: Mapped[int] = mapped_column(BigInteger)
    min_spend_fen: Mapped[int] = mapped_column(BigInteger)
    status: Mapped[str] = mapped_column(String(12))
    holder_hash: Mapped[str | None] = mapped_column(String(64), nullable=True)
    claimed_by_merchant_id: Mapped[str | None] = mapped_column(String(40), nullable=True)
    claimed_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)
    valid_from: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)
    expires_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)
    kid: Mapped[str | None] = mapped_column(String(16), nullable=True)
    token: Mapped[str | None] = mapped_column(Text, nullable=True)
    status_changed_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)
    # Set when an expired voucher's value went back to its tier's pool as a fresh `available` row
    # (voucher-admin expire --recycle); the expired row stays for the record.
    recycled_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)

    __table_args__ = (
        Index("ix_vouchers_pool", "program_id", "tier_code", "status"),
        Index("ix_vouchers_holder", "program_id", "holder_hash"),
    )


class HolderBinding(Base):
    """A device key a voucher was bound to (its VC1's `cnf`); the one with revoked_at None is current.

    Re-binding (after an SMS login on a new phone) sets the old row's revoked_at and adds a new row, in
    the transaction that appends the `rebound` revocation event the offline tills learn it from."""

    __tablename__ = "holder_bindings"
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    voucher_id: Mapped[str] = mapped_column(String(36))
    program_id: Mapped[str] = mapped_column(String(36))
    thumbprint: Mapped[str] = mapped_column(String(64))  # RFC 9679 COSE Key thumbprint, hex
    public_jwk: Mapped[dict[str, Any]] = mapped_column(JSON)  # {"kty","crv","x","y"}
    bound_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    bound_by: Mapped[str] = mapped_column(String(100))
    revoked_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)
    revoked_by: Mapped[str | None] = mapped_column(String(100), nullable=True)
    # The revocation event of the re-binding that replaced this key (the feed's version).
    revocation_event_id: Mapped[int | None] = mapped_column(BigInteger, nullable=True)

    __table_args__ = (
        Index("ix_holder_bindings_voucher", "voucher_id", "revoked_at"),
        Index("ix_holder_bindings_revocation", "revocation_event_id"),
    )


class HolderClaimCount(Base):
    """Per-person claim counter: one row per (programme, holder), so only one holder's claims contend."""

    __tablename__ = "holder_claim_counts"
    program_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    holder_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    claimed: Mapped[int] = mapped_column(Integer)


class HolderSessionEpoch(Base):
    """A resident's session generation: a session token issued under an older epoch is no longer valid."""

    __tablename__ = "holder_session_epochs"
    holder_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    epoch: Mapped[int] = mapped_column(Integer)
    changed_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)


class EndedSession(Base):
    """A consumer session ended by its own logout; kept until the token would have expired anyway."""

    __tablename__ = "ended_sessions"
    session_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    holder_hash: Mapped[str] = mapped_column(String(64), index=True)
    expires_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, index=True)


# ---------------------------------------------------------------- registry


class County(Base):
    __tablename__ = "counties"
    code: Mapped[str] = mapped_column(String(6), primary_key=True)
    name: Mapped[str] = mapped_column(String(100))


class Supplier(Base):
    __tablename__ = "suppliers"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    county_code: Mapped[str] = mapped_column(String(6))


class CertifiedProduct(Base):
    __tablename__ = "certified_products"
    certification_no: Mapped[str] = mapped_column(String(64), primary_key=True)
    certification_type: Mapped[str] = mapped_column(String(10))  # national | guangxi | shenzhen
    product_name: Mapped[str] = mapped_column(String(200))
    category: Mapped[str] = mapped_column(String(100))
    supplier_id: Mapped[str] = mapped_column(String(64))
    county_code: Mapped[str] = mapped_column(String(6))
    county_name: Mapped[str] = mapped_column(String(100))
    gtins: Mapped[list[str]] = mapped_column(JSON)
    valid_from: Mapped[dt.date] = mapped_column(Date)
    valid_to: Mapped[dt.date] = mapped_column(Date)
    status: Mapped[str] = mapped_column(String(10))  # active | suspended | revoked
    version: Mapped[int] = mapped_column(Integer)
    row_sha256: Mapped[str] = mapped_column(String(64))
    registry_seq: Mapped[int] = mapped_column(BigInteger)  # snapshot version of the last change
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)


class ProductGtin(Base):
    __tablename__ = "product_gtins"
    gtin: Mapped[str] = mapped_column(String(14), primary_key=True)  # normalised to 14 digits
    certification_no: Mapped[str] = mapped_column(ForeignKey("certified_products.certification_no"))


class ProductVersion(Base):
    """Every version a product has had, appended on import."""

    __tablename__ = "product_versions"
    certification_no: Mapped[str] = mapped_column(String(64), primary_key=True)
    version: Mapped[int] = mapped_column(Integer, primary_key=True)
    data: Mapped[dict[str, Any]] = mapped_column(JSON)
    registry_seq: Mapped[int] = mapped_column(BigInteger)
    imported_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)


class RegistryImport(Base):
    """One import of a registry file; its id is the snapshot version that changes are stamped with."""

    __tablename__ = "registry_imports"
    seq: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    file_sha256: Mapped[str] = mapped_column(String(64))
    created: Mapped[int] = mapped_column(Integer)
    updated: Mapped[int] = mapped_column(Integer)
    unchanged: Mapped[int] = mapped_column(Integer)
    imported_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)


class SkuMapping(Base):
    """A merchant's own SKU mapped to a certified product; used only once an admin approved it."""

    __tablename__ = "sku_mappings"
    merchant_id: Mapped[str] = mapped_column(ForeignKey("merchants.id"), primary_key=True)
    sku: Mapped[str] = mapped_column(String(64), primary_key=True)
    certification_no: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(10))  # pending | approved | rejected
    requested_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    approved_by: Mapped[str | None] = mapped_column(String(100), nullable=True)
    approved_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)


# ---------------------------------------------------------------- redemption


class Redemption(Base):
    __tablename__ = "redemptions"
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    voucher_id: Mapped[str] = mapped_column(ForeignKey("vouchers.id"))
    program_id: Mapped[str] = mapped_column(String(36))
    merchant_id: Mapped[str] = mapped_column(ForeignKey("merchants.id"))
    order_id: Mapped[str] = mapped_column(String(128))
    channel: Mapped[str] = mapped_column(String(10))
    terminal_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    order_total_fen: Mapped[int] = mapped_column(BigInteger)
    eligible_total_fen: Mapped[int] = mapped_column(BigInteger)
    discount_fen: Mapped[int] = mapped_column(BigInteger)
    clawed_back_fen: Mapped[int] = mapped_column(BigInteger, default=0)
    status: Mapped[str] = mapped_column(String(10))  # active | reversed
    redeemed_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    receipt: Mapped[str] = mapped_column(Text)
    source: Mapped[str] = mapped_column(String(10), default="online")  # online | offline

    __table_args__ = (
        # Exactly once, enforced by the database: at most one active redemption per voucher.
        Index(
            "uq_redemptions_active_voucher",
            "voucher_id",
            unique=True,
            sqlite_where=text("status = 'active'"),
            postgresql_where=text("status = 'active'"),
        ),
        Index("ix_redemptions_merchant_time", "merchant_id", "redeemed_at", "id"),
        Index("ix_redemptions_program", "program_id", "redeemed_at"),
    )


class RedemptionLine(Base):
    __tablename__ = "redemption_lines"
    redemption_id: Mapped[str] = mapped_column(ForeignKey("redemptions.id"), primary_key=True)
    index: Mapped[int] = mapped_column(Integer, primary_key=True)
    gtin: Mapped[str | None] = mapped_column(String(14), nullable=True)
    sku: Mapped[str | None] = mapped_column(String(64), nullable=True)
    name: Mapped[str | None] = mapped_column(String(200), nullable=True)
    quantity: Mapped[int] = mapped_column(Integer)
    unit_price_fen: Mapped[int] = mapped_column(BigInteger)
    line_total_fen: Mapped[int] = mapped_column(BigInteger)
    eligible: Mapped[bool] = mapped_column(Boolean)
    reason: Mapped[str | None] = mapped_column(String(40), nullable=True)
    certification_no: Mapped[str | None] = mapped_column(String(64), nullable=True)
    county_code: Mapped[str | None] = mapped_column(String(6), nullable=True)
    discount_share_fen: Mapped[int] = mapped_column(BigInteger)
    returned_quantity: Mapped[int] = mapped_column(Integer, default=0)


class Reversal(Base):
    __tablename__ = "reversals"
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    redemption_id: Mapped[str] = mapped_column(ForeignKey("redemptions.id"))
    merchant_id: Mapped[str] = mapped_column(String(40))
    lines: Mapped[list[dict[str, int]] | None] = mapped_column(JSON, nullable=True)
    clawback_fen: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)


class IdempotencyRecord(Base):
    """The stored answer to an idempotent request, written in the same transaction as its effect."""

    __tablename__ = "idempotency_records"
    merchant_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    route: Mapped[str] = mapped_column(String(200))
    request_sha256: Mapped[str] = mapped_column(String(64))
    state: Mapped[str] = mapped_column(String(12))  # in_progress | done
    locked_until: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    response_status: Mapped[int | None] = mapped_column(Integer, nullable=True)
    response_body: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)


class NonceEpoch(Base):
    """Per Redis namespace (key prefix): the nonce epoch, begun anew whenever Redis lost its data.

    Merchant requests signed before `started_unix` are refused as possible replays (see services.nonces)."""

    __tablename__ = "nonce_epochs"
    namespace: Mapped[str] = mapped_column(String(100), primary_key=True)
    epoch: Mapped[int] = mapped_column(Integer)
    started_unix: Mapped[int] = mapped_column(BigInteger)
    not_before_unix: Mapped[int] = mapped_column(BigInteger)
    changed_at_ms: Mapped[int] = mapped_column(BigInteger)


class RevocationEvent(Base):
    """A voucher redeemed, voided or restored; the id is the revocations feed's version."""

    __tablename__ = "revocation_events"
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    program_id: Mapped[str] = mapped_column(String(36))
    voucher_id: Mapped[str] = mapped_column(String(36))
    kind: Mapped[str] = mapped_column(String(10))  # redeemed | void | restored | rebound
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)

    __table_args__ = (Index("ix_revocations_program", "program_id", "id"),)


# ---------------------------------------------------------------- offline


class OfflineRecord(Base):
    """A journal record uploaded by an offline terminal, kept whatever its verdict."""

    __tablename__ = "offline_records"
    merchant_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    terminal_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    seq: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    record_hash: Mapped[str] = mapped_column(String(64))
    prev_hash: Mapped[str] = mapped_column(String(64))
    voucher_id: Mapped[str | None] = mapped_column(String(36), nullable=True)
    program_id: Mapped[str | None] = mapped_column(String(36), nullable=True)
    order_id: Mapped[str | None] = mapped_column(String(128), nullable=True)
    discount_fen: Mapped[int] = mapped_column(BigInteger, default=0)
    redeemed_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(10))  # accepted | conflict | rejected
    code: Mapped[str | None] = mapped_column(String(40), nullable=True)
    redemption_id: Mapped[str | None] = mapped_column(String(36), nullable=True)
    received_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)

    __table_args__ = (
        Index("ix_offline_conflicts", "program_id", "status"),
        # A terminal's accepted discount of a programme over a seq range (its offline period).
        Index("ix_offline_period", "merchant_id", "terminal_id", "program_id", "status", "seq"),
    )


# ---------------------------------------------------------------- books


class LedgerEntry(Base):
    """A movement of budget between buckets, in fen; append-only.

    Buckets: unallocated, unclaimed, outstanding, redeemed, expired, void.
    """

    __tablename__ = "ledger_entries"
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    program_id: Mapped[str] = mapped_column(String(36))
    voucher_id: Mapped[str | None] = mapped_column(String(36), nullable=True)
    kind: Mapped[str] = mapped_column(
        String(20)
    )  # mint | claim | redeem | clawback | expire | recycle | void
    from_bucket: Mapped[str] = mapped_column(String(12))
    to_bucket: Mapped[str] = mapped_column(String(12))
    amount_fen: Mapped[int] = mapped_column(BigInteger)
    ref: Mapped[str | None] = mapped_column(String(64), nullable=True)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)

    __table_args__ = (Index("ix_ledger_program", "program_id", "kind"),)


class AuditEntry(Base):
    """An append-only audit record. Written unsealed on the hot path; a single sealer later assigns
    `seq` in order and chains `entry_hash = sha256(prev_hash || canonical entry)`."""

    __tablename__ = "audit_log"
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    actor: Mapped[str] = mapped_column(String(100))
    action: Mapped[str] = mapped_column(String(50))
    entity: Mapped[str] = mapped_column(String(30))
    entity_id: Mapped[str] = mapped_column(String(64))
    data: Mapped[dict[str, Any]] = mapped_column(JSON)
    seq: Mapped[int | None] = mapped_column(BigInteger, nullable=True, unique=True)
    prev_hash: Mapped[str | None] = mapped_column(String(64), nullable=True)
    entry_hash: Mapped[str | None] = mapped_column(String(64), nullable=True)

    __table_args__ = (Index("ix_audit_unsealed", "seq", "id"),)


class AuditSeal(Base):
    """A sealed batch: the chain head after it. Deleting trailing entries breaks the last seal."""

    __tablename__ = "audit_seals"
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    last_seq: Mapped[int] = mapped_column(BigInteger)
    head_hash: Mapped[str] = mapped_column(String(64))
    entries: Mapped[int] = mapped_column(Integer)
    sealed_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)


# ---------------------------------------------------------------- reconciliation


class ReconciliationRun(Base):
    __tablename__ = "reconciliation_runs"
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    program_id: Mapped[str] = mapped_column(String(36))
    merchant_id: Mapped[str] = mapped_column(String(40))
    statement_format: Mapped[str] = mapped_column(String(12))
    input_sha256: Mapped[str] = mapped_column(String(64))
    period_from: Mapped[dt.date | None] = mapped_column(Date, nullable=True)
    period_to: Mapped[dt.date | None] = mapped_column(Date, nullable=True)
    parameters: Mapped[dict[str, Any]] = mapped_column(JSON)
    summary: Mapped[dict[str, Any]] = mapped_column(JSON)
    exit_code: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)

    # A merchant's own runs, newest first (GET /merchant/reconciliations).
    __table_args__ = (Index("ix_reconciliation_runs_merchant", "merchant_id", "created_at", "id"),)


class ReconciliationMatch(Base):
    """A ledger redemption matched and payable in a run."""

    __tablename__ = "reconciliation_matches"
    # No foreign key: a run inserts up to millions of matches in one statement, written in the same
    # transaction as its run row, and a per-row key check would cost a third of that insert.
    run_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    redemption_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    discount_fen: Mapped[int] = mapped_column(BigInteger)
    line_no: Mapped[int | None] = mapped_column(Integer, nullable=True)  # the statement line it matched


class ReconciliationItem(Base):
    """What a run found besides payable matches: a discrepancy of one of the six categories, or a
    row set aside (already_settled, reversed_agreed, out_of_period, unrelated)."""

    __tablename__ = "reconciliation_items"
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("reconciliation_runs.id"))
    category: Mapped[str] = mapped_column(String(24))
    line_no: Mapped[int | None] = mapped_column(Integer, nullable=True)
    voucher_id: Mapped[str | None] = mapped_column(String(36), nullable=True)
    order_id: Mapped[str | None] = mapped_column(String(128), nullable=True)
    redemption_id: Mapped[str | None] = mapped_column(String(36), nullable=True)
    ledger_discount_fen: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    statement_discount_fen: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    detail: Mapped[str] = mapped_column(String(300))

    __table_args__ = (Index("ix_reconciliation_items_run", "run_id", "redemption_id"),)


class StatementRow(Base):
    """Staging for a statement being reconciled; rows of a run are deleted when it finishes."""

    __tablename__ = "statement_staging"
    run_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    line_no: Mapped[int] = mapped_column(Integer, primary_key=True)
    order_id: Mapped[str] = mapped_column(String(128))
    voucher_id: Mapped[str | None] = mapped_column(String(36), nullable=True)
    redeemed_at: Mapped[str | None] = mapped_column(String(40), nullable=True)
    discount_fen: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    status: Mapped[str] = mapped_column(String(12))
    paid_fen: Mapped[int | None] = mapped_column(BigInteger, nullable=True)

    __table_args__ = (Index("ix_statement_staging_order", "run_id", "order_id"),)


class Settlement(Base):
    __tablename__ = "settlements"
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("reconciliation_runs.id"))
    program_id: Mapped[str] = mapped_column(String(36))
    merchant_id: Mapped[str] = mapped_column(String(40))
    payable_fen: Mapped[int] = mapped_column(BigInteger)
    redemptions: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)

    __table_args__ = (Index("ix_settlements_run", "run_id"),)


class SettledRedemption(Base):
    """A redemption paid in a settlement; the primary key makes paying it twice impossible."""

    __tablename__ = "settled_redemptions"
    redemption_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    settlement_id: Mapped[str] = mapped_column(ForeignKey("settlements.id"))
    discount_fen: Mapped[int] = mapped_column(BigInteger)

    __table_args__ = (Index("ix_settled_redemptions_settlement", "settlement_id"),)


class Dispute(Base):
    """A merchant contesting one discrepancy of a reconciliation run (one dispute per discrepancy).

    Accepted, its redemption's discount becomes payable in the next settlement of that programme and
    merchant; `settlement_id` is the batch that paid it (settled_redemptions keeps it paid only once)."""

    __tablename__ = "disputes"
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("reconciliation_runs.id"))
    item_id: Mapped[int] = mapped_column(BigInteger, unique=True)  # reconciliation_items.id
    program_id: Mapped[str] = mapped_column(String(36))
    merchant_id: Mapped[str] = mapped_column(String(40))
    category: Mapped[str] = mapped_column(String(24))
    redemption_id: Mapped[str] = mapped_column(String(36))
    voucher_id: Mapped[str | None] = mapped_column(String(36), nullable=True)
    order_id: Mapped[str | None] = mapped_column(String(128), nullable=True)
    amount_fen: Mapped[int] = mapped_column(BigInteger)  # the ledger's discount, as the run saw it
    note: Mapped[str] = mapped_column(String(1000))
    status: Mapped[str] = mapped_column(String(12))  # open, accepted, rejected
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    decided_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)
    decided_by: Mapped[str | None] = mapped_column(String(100), nullable=True)
    decision_note: Mapped[str | None] = mapped_column(String(1000), nullable=True)
    settlement_id: Mapped[str | None] = mapped_column(String(36), nullable=True)

    __table_args__ = (
        Index("ix_disputes_merchant", "merchant_id", "created_at"),
        Index("ix_disputes_payable", "program_id", "merchant_id", "status"),
    )


__all__ = [name for name in dir() if name[0].isupper()]
