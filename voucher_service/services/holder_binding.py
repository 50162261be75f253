"""Holder binding (CONTRACT §10, docs/holder-binding.md): which device key a voucher is bound to.

- At claim, a device key (the wallet's WebCrypto P-256 public key) goes into the VC1's `cnf` claim and
  into a `holder_bindings` row, in the claim's transaction (`prepare_claim`).
- At redemption, services.tokens verifies the VP1 presentation and asks here whether the key it was
  made with is still the voucher's (`check_key`).
- Re-binding after an SMS login on a new phone (`rebind`) revokes the old key at once online, appends a
  `rebound` revocation event that the tills' feed carries (services.revocations), signs the VC1 again
  with the new key and audits who did it.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from voucher_service.adapters.db.models import HolderBinding, Program, RevocationEvent, Voucher
from voucher_service.adapters.lru import LRU
from voucher_service.adapters.signing import b64url, encode_token, holder_key_from_jwk
from voucher_service.domain.errors import (
    InvalidState,
    NotFound,
    PresentationInvalid,
    ValidationFailed,
)
from voucher_service.domain.presentations import (
    BINDING_OFF,
    BINDING_REQUIRED,
    HolderKey,
)
from voucher_service.domain.states import VoucherStatus
from voucher_service.domain.tokens import VoucherClaims
from voucher_service.services import audit_log, voucher_status
from voucher_service.services.context import ServiceContext

if TYPE_CHECKING:
    from voucher_service.services.issuance import Claimant

# A programme's holder_binding is fixed at creation, so a bounded cache of it is never stale.
_MODES: LRU[str, str] = LRU(4096)
Finish = Callable[[Session, dict[str, Any]], None]


def device_key(jwk: object, field: str = "device_key") -> HolderKey:
    """A device key from its public JWK; raise ValidationFailed naming `field` when it is not one."""
    try:
        return holder_key_from_jwk(jwk)
    except ValueError as exc:
        raise ValidationFailed(
            f"The {field} is not a public EC P-256 JWK: {exc}.", [{"field": field, "message": str(exc)}]
        ) from None


def key_jwk(key: HolderKey) -> dict[str, str]:
    """The public JWK stored for a device key."""
    return {"kty": "EC", "crv": "P-256", "x": b64url(key.x), "y": b64url(key.y)}


def binding_mode(ctx: ServiceContext, program_id: str, session: Session | None = None) -> str:
    """The programme's holder_binding ('off' for an unknown programme, which later checks refuse)."""
    mode = _MODES.get(program_id)
    if mode is not None:
        return mode
    if session is not None:
        found = session.scalar(select(Program.holder_binding).where(Program.id == program_id))
    else:
        with ctx.sessions() as s:
            found = s.scalar(select(Program.holder_binding).where(Program.id == program_id))
    if found is None:
        return BINDING_OFF
    _MODES.put(program_id, found)
    return str(found)


def prepare_claim(
    ctx: ServiceContext, program_id: str, claimant: Claimant, finish: Finish | None
) -> tuple[Claimant, Finish | None]:
    """Apply the programme's holder_binding to a claim: refuse a `required` claim without a device key,
    drop the key of an `off` programme (its vouchers stay bearer tokens, as before), and otherwise have
    the claim's transaction record the binding. Returns the claimant and the `finish` to use."""
    mode = binding_mode(ctx, program_id)
    key = claimant.holder_key
    if key is None:
        if mode == BINDING_REQUIRED:
            raise ValidationFailed(
                "This programme binds vouchers to the holder's phone: the claim must send a device_key.",
                [
                    {
                        "field": "device_key",
                        "message": "is required by this programme (holder_binding: required)",
                    }
                ],
            )
        return claimant, finish
    if mode == BINDING_OFF:
        return dataclasses.replace(claimant, holder_key=None), finish

    def bind_then_finish(s: Session, out: dict[str, Any]) -> None:
        s.add(
            HolderBinding(
                voucher_id=out["voucher_id"],
                program_id=out["program_id"],
                thumbprint=key.thumbprint_hex(),
                public_jwk=key_jwk(key),
                bound_at=ctx.now(),
                bound_by=claimant.actor,
            )
        )
        s.flush()
        if finish is not None:
            finish(s, out)

    return claimant, bind_then_finish


def check_key(
    ctx: ServiceContext, claims: VoucherClaims, *, at: dt.datetime | None, session: Session | None
) -> None:
    """Raise PresentationInvalid unless the presentation's key is the voucher's: online (`at` None) the
    current binding; for an offline record dated `at`, a binding not yet replaced at that time (a till
    learns of a re-binding only at its next refresh)."""
    assert claims.holder_key is not None
    thumbprint = claims.holder_key.thumbprint_hex()
    query = select(HolderBinding.thumbprint, HolderBinding.revoked_at).where(
        HolderBinding.voucher_id == claims.voucher_id
    )
    if session is not None:
        rows = session.execute(query).all()
    else:
        with ctx.sessions() as s:
            rows = s.execute(query).all()
    for bound, revoked_at in rows:
        if bound != thumbprint:
            continue
        if revoked_at is None or (at is not None and at < revoked_at):
            return
        raise PresentationInvalid(
            "The voucher was moved to another phone (re-bound): this device's code no longer works."
        )
    raise PresentationInvalid("The presentation's key is not the key this voucher is bound to.")


def current_binding(ctx: ServiceContext, voucher_id: str) -> dict[str, Any] | None:
    """The voucher's current device key: {"thumbprint", "jwk", "bound_at"}, or None when unbound."""
    with ctx.sessions() as s:
        row = s.scalars(
            select(HolderBinding)
            .where(HolderBinding.voucher_id == voucher_id, HolderBinding.revoked_at.is_(None))
            .limit(1)
        ).first()
        if row is None:
            return None
        return {"thumbprint": row.thumbprint, "jwk": dict(row.public_jwk), "bound_at": row.bound_at}


def rebind(
    ctx: ServiceContext, voucher_id: str, holder_hash: str, key: HolderKey, actor: str
) -> dict[str, Any]:
    """Bind the holder's voucher to a new device key: the old key stops working at once online; the
    tills learn it from the revocations feed. Returns {"voucher_id", "token", "thumbprint"}."""
    now = ctx.now()
    signing_key = ctx.keys.active()  # before the transaction: the key ring may read the database
    assert signing_key.private_key is not None
    with ctx.sessions.begin() as s:
        voucher = s.get(Voucher, voucher_id, with_for_update=True)
        if voucher is None or voucher.holder_hash != holder_hash or voucher.token is None:
            raise NotFound(f"No voucher {voucher_id} of this holder.")
        if voucher.status != VoucherStatus.ISSUED or (
            voucher.expires_at is not None and voucher.expires_at <= now
        ):
            raise InvalidState(f"A voucher that is {voucher.status} cannot be moved to another phone.")
        old = s.scalars(
            select(HolderBinding)
            .where(HolderBinding.voucher_id == voucher_id, HolderBinding.revoked_at.is_(None))
            .with_for_update()
        ).all()
        if not old:
            raise InvalidState("This voucher is not bound to a phone.")
        thumbprint = key.thumbprint_hex()
        if any(b.thumbprint == thumbprint for b in old):
            return {"voucher_id": voucher_id, "token": voucher.token, "thumbprint": thumbprint}
        event = RevocationEvent(
            program_id=voucher.program_id, voucher_id=voucher_id, kind="rebound", created_at=now
        )
        s.add(event)
        s.flush()
        s.execute(
            update(HolderBinding)
            .where(HolderBinding.id.in_([b.id for b in old]))
            .values(revoked_at=now, revoked_by=actor, revocation_event_id=event.id)
            .execution_options(synchronize_session=False)
        )
        assert voucher.valid_from is not None and voucher.expires_at is not None
        claims = VoucherClaims(
            voucher_id=voucher.id,
            program_id=voucher.program_id,
            tier=voucher.tier_code,
            face_value_fen=voucher.face_value_fen,
            min_spend_fen=voucher.min_spend_fen,
            iat=int(now.timestamp()),
            nbf=int(voucher.valid_from.timestamp()),
            exp=int(voucher.expires_at.timestamp()),
            holder_key=key,
        )
        token = encode_token(signing_key.private_key, signing_key.kid_bytes, claims.to_cbor_map())
        voucher.token, voucher.kid = token, signing_key.kid
        s.add(
            HolderBinding(
                voucher_id=voucher_id,
                program_id=voucher.program_id,
                thumbprint=thumbprint,
                public_jwk=key_jwk(key),
                bound_at=now,
                bound_by=actor,
            )
        )
        audit_log.record(
            s,
            actor,
            "voucher.rebound",
            "voucher",
            voucher_id,
            {
                "program_id": voucher.program_id,
                "holder": holder_hash[:12],
                "old_keys": [b.thumbprint for b in old],
                "new_key": thumbprint,
                "revocation_version": event.id,
            },
            now,
        )
    voucher_status.status_changed(ctx, voucher_id)  # an open page on the old phone stops showing a code
    return {"voucher_id": voucher_id, "token": token, "thumbprint": thumbprint}


def revoked_keys(s: Session, program_id: str, since: int) -> list[dict[str, Any]]:
    """Device keys of the programme replaced by re-binding after feed version `since`."""
    rows = s.execute(
        select(HolderBinding.voucher_id, HolderBinding.thumbprint, HolderBinding.revocation_event_id)
        .where(HolderBinding.program_id == program_id, HolderBinding.revocation_event_id > since)
        .order_by(HolderBinding.revocation_event_id, HolderBinding.id)
    )
    return [{"voucher_id": v, "thumbprint": t, "version": e} for v, t, e in rows]
