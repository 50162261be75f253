"""The append-only, hash-chained audit log.

Requests append unsealed entries inside their own transaction (no reading of the previous entry,
so no funnel on the hot path). A single sealer, serialised by a lock row, then assigns each unsealed
entry the next `seq` in id order and chains `entry_hash = sha256(prev_hash || canonical(entry))`,
and records the chain head in `audit_seals`. Verification walks the chain by seq.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from voucher_service.adapters.db.models import AuditEntry, AuditSeal

GENESIS = "0" * 64
SEAL_BATCH = 5000


def record(
    session: Session,
    actor: str,
    action: str,
    entity: str,
    entity_id: str,
    data: dict[str, Any],
    at: dt.datetime,
) -> None:
    """Append an unsealed audit entry in the caller's transaction."""
    session.add(AuditEntry(**entry(actor, action, entity, entity_id, data, at)))


def entry(
    actor: str, action: str, entity: str, entity_id: str, data: dict[str, Any], at: dt.datetime
) -> dict[str, Any]:
    """The column values of an unsealed entry (for write paths that insert them with Core)."""
    return {
        "at": at,
        "actor": actor,
        "action": action,
        "entity": entity,
        "entity_id": entity_id,
        "data": data,
    }


def canonical(entry: AuditEntry) -> bytes:
    """The bytes an entry's hash covers: every field but the hash itself."""
    at = entry.at.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    body = [entry.seq, entry.id, at, entry.actor, entry.action, entry.entity, entry.entity_id, entry.data]
    return json.dumps(body, sort_keys=True, ensure_ascii=False, separators=(",", ":")).encode()


def chain_hash(prev_hash: str, entry: AuditEntry) -> str:
    """sha256(prev_hash || canonical(entry)) as hex."""
    return hashlib.sha256(prev_hash.encode() + canonical(entry)).hexdigest()


def seal(session: Session, batch: int = SEAL_BATCH) -> int:
    """Seal up to `batch` unsealed entries in the caller's transaction; return how many were sealed."""
    if session.get_bind().dialect.name == "postgresql":
        # One sealer at a time across processes. Waiting (rather than skipping) means a caller such
        # as `audit` that seals before verifying never sees entries another sealer is still chaining.
        session.execute(text("SELECT pg_advisory_xact_lock(74110001)"))
    # Only sealed entries: PostgreSQL sorts NULLs first in DESC order, so unsealed ones would come first.
    head = session.execute(
        select(AuditEntry.seq, AuditEntry.entry_hash)
        .where(AuditEntry.seq.is_not(None))
        .order_by(AuditEntry.seq.desc())
        .limit(1)
    ).first()
    last_seq, prev = (int(head[0]), str(head[1])) if head and head[0] is not None else (0, GENESIS)
    pending = list(
        session.scalars(
            select(AuditEntry).where(AuditEntry.seq.is_(None)).order_by(AuditEntry.id).limit(batch)
        )
    )
    if not pending:
        return 0
    for entry in pending:
        last_seq += 1
        entry.seq = last_seq
        entry.prev_hash = prev
        prev = chain_hash(prev, entry)
        entry.entry_hash = prev
    session.flush()
    session.add(
        AuditSeal(last_seq=last_seq, head_hash=prev, entries=len(pending), sealed_at=dt.datetime.now(dt.UTC))
    )
    return len(pending)


def seal_all(sessions: Any) -> int:
    """Seal every unsealed entry, in batches, each in its own transaction."""
    total = 0
    while True:
        with sessions.begin() as s:
            n = seal(s)
        total += n
        if n < SEAL_BATCH:
            return total


@dataclass
class ChainReport:
    """What a walk of the audit chain found."""

    entries: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def verify_chain(session: Session, limit_problems: int = 20) -> ChainReport:
    """Walk the sealed chain by seq and check every link, then the seals against it."""
    report = ChainReport()
    prev = GENESIS
    expected_seq = 1
    heads: dict[int, str] = {}
    rows = session.execute(
        select(AuditEntry).where(AuditEntry.seq.is_not(None)).order_by(AuditEntry.seq)
    ).scalars()
    for entry in rows.yield_per(2000):
        report.entries += 1
        assert entry.seq is not None
        if entry.seq != expected_seq:
            report.problems.append(
                f"audit entries with seq {expected_seq}..{entry.seq - 1} are missing (deleted?)"
            )
            expected_seq = entry.seq
        if entry.prev_hash != prev:
            report.problems.append(
                f"audit entry seq {entry.seq} (id {entry.id}) does not link to the one before it"
            )
        recomputed = chain_hash(entry.prev_hash or "", entry)
        if recomputed != entry.entry_hash:
            report.problems.append(
                f"audit entry seq {entry.seq} (id {entry.id}) was altered: its hash does not match"
            )
        prev = entry.entry_hash or ""
        heads[entry.seq] = prev
        expected_seq += 1
        if len(report.problems) >= limit_problems:
            return report
    for sealed in session.scalars(select(AuditSeal).order_by(AuditSeal.id)):
        if sealed.last_seq not in heads:
            report.problems.append(
                f"seal {sealed.id} covers seq {sealed.last_seq}, which is missing (deleted?)"
            )
        elif heads[sealed.last_seq] != sealed.head_hash:
            report.problems.append(
                f"seal {sealed.id}: the chain head at seq {sealed.last_seq} differs from the seal"
            )
    unsealed = session.scalar(select(func.count()).select_from(AuditEntry).where(AuditEntry.seq.is_(None)))
    if unsealed:
        report.problems.append(f"{unsealed} audit entries are not sealed yet")
    return report
