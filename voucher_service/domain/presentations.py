"""Holder binding (docs/holder-binding.md): the device key a VC1 names in its `cnf` claim, and the
rules a VP1 presentation made with that key must meet. Pure: no I/O, no cryptography library."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

# A programme's `holder_binding` setting.
BINDING_OFF, BINDING_OPTIONAL, BINDING_REQUIRED = "off", "optional", "required"
BINDING_MODES = (BINDING_OFF, BINDING_OPTIONAL, BINDING_REQUIRED)

# CWT claim 8 is RFC 8747's `cnf`; in it, member 1 is a COSE_Key (RFC 8747 §3.2).
CLAIM_CNF = 8
CNF_COSE_KEY = 1
# COSE_Key labels (RFC 9052/9053): kty 1 = EC2 (2); crv -1 = P-256 (1); x -2; y -3.
KEY_KTY, KEY_CRV, KEY_X, KEY_Y = 1, -1, -2, -3
KTY_EC2, CRV_P256 = 2, 1

# VP1 payload: the presented VC1's COSE_Sign1 bytes and the moment the device signed it.
PRESENTATION_PREFIX = "VP1:"
VP_CLAIM_IAT = 6  # CWT iat, unix seconds
VP_CLAIM_TOKEN = -70201  # bstr: the VC1 COSE_Sign1, exactly the bytes its Base45 text decodes to
# A presentation is fresh while its age (verifier's clock minus its iat) is at most MAX_AGE_S; one
# dated up to CLOCK_ALLOWANCE_S ahead of the verifier's clock (a phone whose clock runs fast) also is.
PRESENTATION_MAX_AGE_S = 60
PRESENTATION_CLOCK_ALLOWANCE_S = 10
WALLET_REDRAW_S = 20


@dataclass(frozen=True)
class HolderKey:
    """A device's P-256 public key: the affine coordinates, 32 bytes each, big-endian."""

    x: bytes
    y: bytes

    def __post_init__(self) -> None:
        if len(self.x) != 32 or len(self.y) != 32:
            raise ValueError("a P-256 coordinate is 32 bytes")

    def cose_key(self) -> dict[int, object]:
        """The COSE_Key map, with only the required members, in deterministic order."""
        return {KEY_KTY: KTY_EC2, KEY_CRV: CRV_P256, KEY_X: self.x, KEY_Y: self.y}

    def cnf(self) -> dict[int, object]:
        """The `cnf` claim value: {1: COSE_Key}."""
        return {CNF_COSE_KEY: self.cose_key()}

    def thumbprint(self) -> bytes:
        """RFC 9679 COSE Key thumbprint: SHA-256 over the deterministic CBOR of {1, -1, -2, -3}."""
        # map(4) {1: 2, -1: 1, -2: bstr(32) x, -3: bstr(32) y}, keys in bytewise order 01 20 21 22.
        encoded = b"\xa4\x01\x02\x20\x01\x21\x58\x20" + self.x + b"\x22\x58\x20" + self.y
        return hashlib.sha256(encoded).digest()

    def thumbprint_hex(self) -> str:
        """The thumbprint as lowercase hex (the revocations feed and the database use it)."""
        return self.thumbprint().hex()

    @classmethod
    def from_cnf(cls, cnf: object) -> HolderKey:
        """Read a `cnf` claim; raise ValueError unless it is {1: COSE_Key} of an EC2 P-256 key."""
        if not isinstance(cnf, dict) or set(cnf) != {CNF_COSE_KEY}:
            raise ValueError("cnf must be {1: COSE_Key}")
        key = cnf[CNF_COSE_KEY]
        if not isinstance(key, dict) or set(key) != {KEY_KTY, KEY_CRV, KEY_X, KEY_Y}:
            raise ValueError("the COSE_Key must have exactly kty, crv, x and y")
        if key[KEY_KTY] != KTY_EC2 or key[KEY_CRV] != CRV_P256:
            raise ValueError("the COSE_Key must be EC2 P-256")
        x, y = key[KEY_X], key[KEY_Y]
        if type(x) is not bytes or type(y) is not bytes:
            raise ValueError("the COSE_Key coordinates must be byte strings")
        return cls(x, y)


def freshness_verdict(presented_at: int, now: int) -> str | None:
    """None when a presentation dated `presented_at` is fresh at `now`, else 'presentation_stale'."""
    if presented_at > now + PRESENTATION_CLOCK_ALLOWANCE_S:
        return "presentation_stale"  # from the future beyond the allowance: a clock far off, or forged
    if now - presented_at > PRESENTATION_MAX_AGE_S:
        return "presentation_stale"
    return None
