"""The terminal's SQLite file: its key, the cached keys, revocations, products, programmes, and the
hash-chained, signed journal of offline redemptions (docs/merchant-sdk.md, "Offline record format")."""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from merchant_sdk._cose import b64url, b64url_decode, sign_raw, verify_raw

GENESIS_HASH = "0" * 64
SCHEMA_VERSION = "1"
SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS programs (id TEXT PRIMARY KEY, data TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS revocations (
    program_id TEXT NOT NULL, voucher_id TEXT NOT NULL, PRIMARY KEY (program_id, voucher_id));
CREATE TABLE IF NOT EXISTS revoked_holder_keys (
    program_id TEXT NOT NULL, voucher_id TEXT NOT NULL, thumbprint TEXT NOT NULL,
    PRIMARY KEY (voucher_id, thumbprint));
CREATE TABLE IF NOT EXISTS revocation_versions (program_id TEXT PRIMARY KEY, version INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS products (certification_no TEXT PRIMARY KEY, data TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS product_gtins (gtin TEXT PRIMARY KEY, certification_no TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS sku_mappings (sku TEXT PRIMARY KEY, certification_no TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS records (
    seq INTEGER PRIMARY KEY,
    prev_hash TEXT NOT NULL,
    record_hash TEXT NOT NULL,
    signature TEXT NOT NULL,
    payload TEXT NOT NULL,
    voucher_id TEXT NOT NULL,
    program_id TEXT NOT NULL,
    discount_fen INTEGER NOT NULL,
    created_at REAL NOT NULL,
    sent_at REAL,
    status TEXT,
    code TEXT,
    redemption_id TEXT,
    synced_at REAL);
CREATE INDEX IF NOT EXISTS ix_records_voucher ON records (voucher_id);
CREATE INDEX IF NOT EXISTS ix_records_unsynced ON records (status, seq);
"""


def canonical_record(seq: int, payload: Mapping[str, Any]) -> bytes:
    """RFC 8785 (JCS) bytes of {"payload", "seq"}: sorted keys, no spaces, UTF-8, integers only."""
    return json.dumps(
        {"payload": payload, "seq": seq},
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
        allow_nan=False,
    ).encode("utf-8")


def chained_bytes(prev_hash: str, seq: int, payload: Mapping[str, Any]) -> bytes:
    """What is hashed and signed: the previous record_hash (64 ASCII hex), then the canonical record."""
    return prev_hash.encode("ascii") + canonical_record(seq, payload)


@dataclass(frozen=True)
class JournalRecord:
    """One stored record and what the service said about it."""

    seq: int
    prev_hash: str
    record_hash: str
    signature: str
    payload: dict[str, Any]
    voucher_id: str
    program_id: str
    discount_fen: int
    status: str | None
    code: str | None
    redemption_id: str | None

    def upload_json(self) -> dict[str, Any]:
        """The record as POST /api/v1/offline-redemptions takes it."""
        return {
            "seq": self.seq,
            "prev_hash": self.prev_hash,
            "record_hash": self.record_hash,
            "signature": self.signature,
            "payload": self.payload,
        }


class Journal:
    """The SQLite file behind an OfflineTerminal. One connection, serialised by a lock; writes take
    SQLite's write lock up front (BEGIN IMMEDIATE) so two processes on one file cannot fork the chain."""

    def __init__(self, path: str | os.PathLike[str], terminal_id: str, merchant_id: str) -> None:
        self.path = Path(path)
        if not self.path.exists():
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # The file holds the terminal's private key: readable by its owner only.
            os.close(os.open(self.path, os.O_WRONLY | os.O_CREAT, 0o600))
        self._lock = threading.RLock()
        self._db = sqlite3.connect(self.path, timeout=30.0, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")  # a journal record is money: survive power loss
        self._db.executescript(SCHEMA)  # idempotent DDL; executescript manages its own transaction
        with self.write():
            self._bind("terminal_id", terminal_id)
            self._bind("merchant_id", merchant_id)
            if self.get_meta("schema_version") is None:
                self.set_meta("schema_version", SCHEMA_VERSION)

    def _bind(self, key: str, value: str) -> None:
        stored = self.get_meta(key)
        if stored is None:
            self.set_meta(key, value)
        elif stored != value:
            raise ValueError(f"{self.path} belongs to {key} {stored!r}, not {value!r}")

    def close(self) -> None:
        """Close the database."""
        with self._lock:
            self._db.close()

    @contextmanager
    def write(self) -> Iterator[sqlite3.Connection]:
        """A write transaction holding SQLite's write lock from its start."""
        with self._lock:
            if self._db.in_transaction:  # nested: join the outer transaction
                yield self._db
                return
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def _one(self, sql: str, params: Sequence[Any] = ()) -> Any:
        with self._lock:
            row = self._db.execute(sql, params).fetchone()
        return None if row is None else row[0]

    # ------------------------------------------------------------------ meta, key, caches

    def get_meta(self, key: str) -> str | None:
        """A stored setting."""
        value = self._one("SELECT value FROM meta WHERE key = ?", (key,))
        return None if value is None else str(value)

    def set_meta(self, key: str, value: str) -> None:
        """Store a setting."""
        with self.write() as db:
            db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))

    def delete_meta(self, key: str) -> None:
        """Forget a setting."""
        with self.write() as db:
            db.execute("DELETE FROM meta WHERE key = ?", (key,))

    def private_key(self) -> ec.EllipticCurvePrivateKey | None:
        """The terminal's key, if one is stored."""
        pem = self.get_meta("private_key_pem")
        if pem is None:
            return None
        key = serialization.load_pem_private_key(pem.encode(), None)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise ValueError("the journal's terminal key is not an EC key")
        return key

    def store_private_key(self, key: ec.EllipticCurvePrivateKey) -> None:
        """Keep the terminal's key (PKCS8 PEM; the file is mode 0600)."""
        pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ).decode()
        with self.write():
            if self.get_meta("private_key_pem") is None:
                self.set_meta("private_key_pem", pem)

    def jwks(self) -> dict[str, Any] | None:
        """The cached voucher-signing keys."""
        text = self.get_meta("jwks")
        return None if text is None else dict(json.loads(text))

    def programs(self) -> dict[str, dict[str, Any]]:
        """The cached programme policies by id."""
        with self._lock:
            rows = self._db.execute("SELECT id, data FROM programs").fetchall()
        return {r[0]: json.loads(r[1]) for r in rows}

    def is_revoked(self, program_id: str, voucher_id: str) -> bool:
        """Tell whether the voucher is on its programme's cached revocation list."""
        sql = "SELECT 1 FROM revocations WHERE program_id = ? AND voucher_id = ?"
        return self._one(sql, (program_id, voucher_id)) is not None

    def is_holder_key_revoked(self, voucher_id: str, thumbprint: str) -> bool:
        """Tell whether re-binding replaced this device key of the voucher (as of the last refresh)."""
        sql = "SELECT 1 FROM revoked_holder_keys WHERE voucher_id = ? AND thumbprint = ?"
        return self._one(sql, (voucher_id, thumbprint)) is not None

    def revocation_version(self, program_id: str) -> int:
        """The revocation feed version cached for a programme (0: none yet)."""
        return int(
            self._one("SELECT version FROM revocation_versions WHERE program_id = ?", (program_id,)) or 0
        )

    def product_for_gtin(self, gtin14: str) -> dict[str, Any] | None:
        """The cached product a 14-digit GTIN belongs to."""
        sql = "SELECT p.data FROM product_gtins g JOIN products p USING (certification_no) WHERE g.gtin = ?"
        text = self._one(sql, (gtin14,))
        return None if text is None else dict(json.loads(text))

    def product_for_sku(self, sku: str) -> dict[str, Any] | None:
        """The cached product the merchant's approved mapping of `sku` points to."""
        sql = "SELECT p.data FROM sku_mappings m JOIN products p USING (certification_no) WHERE m.sku = ?"
        text = self._one(sql, (sku,))
        return None if text is None else dict(json.loads(text))

    def apply_refresh(
        self,
        jwks: Mapping[str, Any],
        programs: list[dict[str, Any]],
        revocations: Mapping[str, Mapping[str, Any]],
        snapshot: Mapping[str, Any],
        refreshed_at: float,
        sku_mappings: Sequence[Mapping[str, Any]] = (),
    ) -> None:
        """Store everything one refresh fetched, in one transaction."""
        with self.write() as db:
            # The service sends the full set of approved mappings: one no longer sent was withdrawn.
            db.execute("DELETE FROM sku_mappings")
            db.executemany(
                "INSERT OR REPLACE INTO sku_mappings (sku, certification_no) VALUES (?, ?)",
                [(str(m["sku"]), str(m["certification_no"])) for m in sku_mappings],
            )
            self.set_meta("jwks", json.dumps(jwks))
            db.execute("DELETE FROM programs")
            db.executemany(
                "INSERT INTO programs (id, data) VALUES (?, ?)", [(p["id"], json.dumps(p)) for p in programs]
            )
            for program_id, feed in revocations.items():
                db.executemany(
                    "INSERT OR IGNORE INTO revocations (program_id, voucher_id) VALUES (?, ?)",
                    [(program_id, str(v)) for v in feed.get("voucher_ids") or []],
                )
                # The service's feed also names vouchers given back to their holder (a full clawback).
                db.executemany(
                    "DELETE FROM revocations WHERE program_id = ? AND voucher_id = ?",
                    [(program_id, str(v)) for v in feed.get("restored_voucher_ids") or []],
                )
                # Device keys replaced by re-binding (holder-bound programmes, CONTRACT §10).
                db.executemany(
                    "INSERT OR IGNORE INTO revoked_holder_keys (program_id, voucher_id, thumbprint)"
                    " VALUES (?, ?, ?)",
                    [
                        (program_id, str(k["voucher_id"]), str(k["thumbprint"]))
                        for k in feed.get("revoked_holder_keys") or []
                        if isinstance(k, Mapping) and "voucher_id" in k and "thumbprint" in k
                    ],
                )
                db.execute(
                    "INSERT OR REPLACE INTO revocation_versions (program_id, version) VALUES (?, ?)",
                    (program_id, int(feed.get("version") or 0)),
                )
            for product in snapshot.get("products") or []:
                cert = str(product["certification_no"])
                db.execute(
                    "INSERT OR REPLACE INTO products (certification_no, data) VALUES (?, ?)",
                    (cert, json.dumps(product)),
                )
                db.execute("DELETE FROM product_gtins WHERE certification_no = ?", (cert,))
                db.executemany(
                    "INSERT OR REPLACE INTO product_gtins (gtin, certification_no) VALUES (?, ?)",
                    [(str(g).zfill(14), cert) for g in product.get("gtins") or []],
                )
            if snapshot.get("version") is not None:
                self.set_meta("snapshot_version", str(int(snapshot["version"])))
            self.set_meta("last_refresh_at", repr(refreshed_at))

    # ------------------------------------------------------------------ the journal

    def last_link(self) -> tuple[int, str]:
        """The (seq, record_hash) new records chain to: (0, GENESIS_HASH) for an empty journal."""
        with self._lock:
            row = self._db.execute(
                "SELECT seq, record_hash FROM records ORDER BY seq DESC LIMIT 1"
            ).fetchone()
        return (0, GENESIS_HASH) if row is None else (int(row[0]), str(row[1]))

    def voucher_used(self, voucher_id: str) -> bool:
        """Tell whether this journal already redeemed the voucher."""
        return self._one("SELECT 1 FROM records WHERE voucher_id = ? LIMIT 1", (voucher_id,)) is not None

    def unsynced_discount_fen(self, program_id: str) -> int:
        """Discounts of this programme journaled but not yet answered by the service."""
        sql = "SELECT COALESCE(SUM(discount_fen), 0) FROM records WHERE program_id = ? AND status IS NULL"
        return int(self._one(sql, (program_id,)))

    def append(
        self, payload: dict[str, Any], key: ec.EllipticCurvePrivateKey, created_at: float
    ) -> JournalRecord:
        """Sign and chain a record after the last one (inside the caller's write() when it checked limits)."""
        with self.write() as db:
            last_seq, prev_hash = self.last_link()
            seq = last_seq + 1
            message = chained_bytes(prev_hash, seq, payload)
            record_hash = hashlib.sha256(message).hexdigest()
            signature = b64url(sign_raw(key, message))
            db.execute(
                "INSERT INTO records (seq, prev_hash, record_hash, signature, payload, voucher_id,"
                " program_id,"
                " discount_fen, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    seq,
                    prev_hash,
                    record_hash,
                    signature,
                    json.dumps(payload, ensure_ascii=False),
                    payload["voucher_id"],
                    payload["program_id"],
                    payload["discount_fen"],
                    created_at,
                ),
            )
        return JournalRecord(
            seq,
            prev_hash,
            record_hash,
            signature,
            payload,
            payload["voucher_id"],
            payload["program_id"],
            payload["discount_fen"],
            None,
            None,
            None,
        )

    def records(self, *, unsynced_only: bool = False) -> list[JournalRecord]:
        """The records in seq order (only those without a verdict when `unsynced_only`)."""
        sql = (
            "SELECT seq, prev_hash, record_hash, signature, payload, voucher_id, program_id, discount_fen,"
            " status, code, redemption_id FROM records"
        )
        if unsynced_only:
            sql += " WHERE status IS NULL"
        with self._lock:
            rows = self._db.execute(sql + " ORDER BY seq").fetchall()
        return [
            JournalRecord(
                int(r[0]), r[1], r[2], r[3], json.loads(r[4]), r[5], r[6], int(r[7]), r[8], r[9], r[10]
            )
            for r in rows
        ]

    def mark_sent(self, seqs: Sequence[int], at: float) -> None:
        """Note that these records were sent (a lost answer is found out by sending them again)."""
        with self.write() as db:
            db.executemany("UPDATE records SET sent_at = ? WHERE seq = ?", [(at, s) for s in seqs])

    def store_result(
        self, seq: int, status: str, code: str | None, redemption_id: str | None, at: float
    ) -> None:
        """Keep the service's verdict on a record."""
        with self.write() as db:
            db.execute(
                "UPDATE records SET status = ?, code = ?, redemption_id = ?, synced_at = ? WHERE seq = ?",
                (status, code, redemption_id, at, seq),
            )

    def verify_chain(self, public_key: ec.EllipticCurvePublicKey) -> list[str]:
        """Say what is wrong with the journal: gaps, broken links, altered or badly signed records."""
        problems: list[str] = []
        expected_seq, prev = 1, GENESIS_HASH
        for rec in self.records():
            if rec.seq != expected_seq:
                problems.append(f"records {expected_seq}..{rec.seq - 1} are missing")
            if rec.prev_hash != prev:
                problems.append(f"record {rec.seq} does not link to the record before it")
            message = chained_bytes(rec.prev_hash, rec.seq, rec.payload)
            if hashlib.sha256(message).hexdigest() != rec.record_hash:
                problems.append(f"record {rec.seq} was altered: its hash does not match")
            try:
                signature = b64url_decode(rec.signature)
            except ValueError:
                signature = b""
            if not verify_raw(public_key, message, signature):
                problems.append(f"record {rec.seq} is not signed by this terminal's key")
            if (rec.voucher_id, rec.program_id, rec.discount_fen) != (
                rec.payload.get("voucher_id"),
                rec.payload.get("program_id"),
                rec.payload.get("discount_fen"),
            ):
                problems.append(f"record {rec.seq}: its indexed columns differ from its payload")
            expected_seq, prev = rec.seq + 1, rec.record_hash
        return problems
