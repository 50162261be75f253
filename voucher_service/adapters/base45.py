"""RFC 9285 Base45, the QR-alphanumeric-friendly encoding of the voucher token."""

from __future__ import annotations

import array
import sys

ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ $%*+-./:"
_INDEX = {c: i for i, c in enumerate(ALPHABET)}
# The two characters of every value below 45 * 45, least significant first (a word's low part).
_PAIRS = [ALPHABET[i % 45] + ALPHABET[i // 45] for i in range(45 * 45)]


def b45encode(data: bytes) -> str:
    """Encode bytes as Base45 text: each big-endian 16-bit word n as the three characters of
    n % 45, n // 45 % 45 and n // 2025; a last odd byte as two."""
    even = len(data) - len(data) % 2
    words = array.array("H", data[:even])
    if sys.byteorder == "little":
        words.byteswap()  # the words are big-endian
    out = [_PAIRS[n % 2025] + ALPHABET[n // 2025] for n in words]
    if even != len(data):
        out.append(_PAIRS[data[-1]])
    return "".join(out)


def b45decode(text: str) -> bytes:
    """Decode Base45 text; raise ValueError on a character or group that is not Base45."""
    try:
        values = [_INDEX[c] for c in text]
    except KeyError as exc:
        raise ValueError(f"not a Base45 character: {exc.args[0]!r}") from None
    out = bytearray()
    for i in range(0, len(values), 3):
        group = values[i : i + 3]
        if len(group) == 3:
            n = group[0] + group[1] * 45 + group[2] * 45 * 45
            if n > 0xFFFF:
                raise ValueError("Base45 group out of range")
            out += n.to_bytes(2, "big")
        elif len(group) == 2:
            n = group[0] + group[1] * 45
            if n > 0xFF:
                raise ValueError("Base45 group out of range")
            out.append(n)
        else:
            raise ValueError("Base45 text has a dangling character")
    return bytes(out)
