"""RFC 9285 Base45, the QR-alphanumeric encoding the voucher token is written in."""

from __future__ import annotations

import functools

ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ $%*+-./:"
_INVALID = 0xFF
# bytes.translate table: ASCII code -> Base45 value, 0xFF for anything outside the alphabet.
_TABLE = bytes(ALPHABET.index(chr(c)) if chr(c) in ALPHABET else _INVALID for c in range(256))


@functools.lru_cache(maxsize=64)
def _overflow_mask(groups: int) -> int:
    """An integer with the top byte of each of `groups` 24-bit lanes set."""
    return int.from_bytes(b"\xff\x00\x00" * groups, "big")


def b45encode(data: bytes) -> str:
    """Encode bytes as Base45 text."""
    out: list[str] = []
    for i in range(0, len(data) - 1, 2):
        n = (data[i] << 8) | data[i + 1]
        c, n = divmod(n, 2025)
        e, d = divmod(n, 45)
        out += (ALPHABET[d], ALPHABET[e], ALPHABET[c])
    if len(data) % 2:
        e, d = divmod(data[-1], 45)
        out += (ALPHABET[d], ALPHABET[e])
    return "".join(out)


def b45decode(text: str) -> bytes:
    """Decode Base45 text; raise ValueError for a character or a group that is not Base45."""
    try:
        raw = text.encode("ascii")
    except (UnicodeEncodeError, AttributeError):
        raise ValueError("Base45 text must be ASCII") from None
    values = raw.translate(_TABLE)
    if _INVALID in values:
        bad = chr(raw[values.index(_INVALID)])
        raise ValueError(f"not a Base45 character: {bad!r}")
    full, rest = divmod(len(values), 3)
    if rest == 1:
        raise ValueError("Base45 text has a dangling character")
    # verify()'s hot path, so no per-group Python loop: each group's three digits go into 24-bit lanes of
    # three big integers, one multiply-add decodes every group at once (a group is < 2**17, so lanes
    # never carry into each other), and a lane's low 16 bits are its two output bytes.
    end = full * 3
    lanes = bytearray(end)
    lanes[2::3] = values[0:end:3]
    low = int.from_bytes(lanes, "big")
    lanes[2::3] = values[1:end:3]
    mid = int.from_bytes(lanes, "big")
    lanes[2::3] = values[2:end:3]
    high = int.from_bytes(lanes, "big")
    total = low + 45 * mid + 2025 * high
    if total & _overflow_mask(full):  # a lane's top byte is set: that group is above 0xFFFF
        raise ValueError("Base45 group out of range")
    words = total.to_bytes(end, "big")
    out = bytearray(2 * full)
    out[0::2] = words[1::3]
    out[1::2] = words[2::3]
    if rest == 2:
        last = values[end] + 45 * values[end + 1]
        if last > 0xFF:
            raise ValueError("Base45 group out of range")
        out.append(last)
    return bytes(out)
