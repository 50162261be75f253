"""Money is integer fen; this module holds the one function that splits an amount."""

from __future__ import annotations

import re
from collections.abc import Sequence


def split_proportionally(amount_fen: int, weights: Sequence[int]) -> list[int]:
    """Split `amount_fen` over `weights` in proportion, largest remainder first; shares sum exactly.

    Ties in the remainder go to the earlier weight, so the result is deterministic.
    """
    if amount_fen < 0:
        raise ValueError("amount_fen must not be negative")
    if any(w < 0 for w in weights):
        raise ValueError("weights must not be negative")
    total = sum(weights)
    if not weights:
        if amount_fen:
            raise ValueError("cannot split a non-zero amount over no weights")
        return []
    if total == 0:
        raise ValueError("cannot split over weights that add up to zero")
    floors = [amount_fen * w // total for w in weights]
    remainders = [amount_fen * w % total for w in weights]
    left = amount_fen - sum(floors)
    order = sorted(range(len(weights)), key=lambda i: (-remainders[i], i))
    for i in order[:left]:
        floors[i] += 1
    return floors


def format_yuan(fen: int) -> str:
    """Render fen as yuan with two decimals, without floats (for reports and pages)."""
    sign = "-" if fen < 0 else ""
    whole, part = divmod(abs(fen), 100)
    return f"{sign}{whole:,}.{part:02d}"


def _ascii_digits(s: str) -> bool:
    return s.isascii() and s.isdigit()


def fullwidth_to_ascii(text: str) -> str:
    """Fullwidth forms (U+FF01-FF5E, what a Chinese IME types in fullwidth mode) as ASCII; nothing else."""
    return "".join(
        chr(ord(c) - 0xFEE0) if 0xFF01 <= ord(c) <= 0xFF5E else " " if c == "\u3000" else c for c in text
    )


def parse_yuan(text: str) -> int:
    """Parse a yuan amount with at most two decimals ('1234.56', '0.10', '-3') into fen, exactly."""
    s = text.strip().replace(",", "")
    if s.startswith("¥"):
        s = s[1:]
    sign = 1
    if s.startswith(("-", "+")):
        sign = -1 if s[0] == "-" else 1
        s = s[1:]
    whole, dot, frac = s.partition(".")
    if not whole and not frac:
        raise ValueError(f"not an amount: {text!r}")
    # ASCII digits only: str.isdigit() and int() also take Arabic-Indic, superscript and other digits.
    if not _ascii_digits(whole or "0") or (dot and not _ascii_digits(frac)) or len(frac) > 2:
        raise ValueError(f"not an amount with at most two decimals: {text!r}")
    return sign * (int(whole or "0") * 100 + int(frac.ljust(2, "0") or "0"))


# What a till accepts as one unit price: up to 100 million yuan (the API's own bound), two decimals.
MAX_PRICE_FEN = 10_000_000_000
_PRICE_RE = re.compile(
    r"(?:0|[1-9][0-9]{0,8}|[1-9][0-9]{0,2}(?:,[0-9]{3}){1,2})(?:\.([0-9]{1,2}))?", re.ASCII
)
_QUANTITY_RE = re.compile(r"[1-9][0-9]{0,6}", re.ASCII)
MAX_QUANTITY = 1_000_000


def parse_price_yuan(text: str) -> int:
    """A price typed at the till ('59.90', '59.9', '¥8', fullwidth '５９.９０') as exact fen; ValueError otherwise.

    Fullwidth forms become ASCII first (a Chinese IME in fullwidth mode types them), then only ASCII digits
    count: Python's int() would also take Arabic-Indic or superscript digits, which no price is written in.
    """
    s = fullwidth_to_ascii(text).strip()
    if s.startswith("¥"):
        s = s[1:].strip()
    m = _PRICE_RE.fullmatch(s)
    if m is None:
        raise ValueError(f"not a price in yuan with at most two decimals: {text!r}")
    whole, _, frac = s.replace(",", "").partition(".")
    fen = int(whole) * 100 + int(frac.ljust(2, "0") or "0")
    if fen > MAX_PRICE_FEN:
        raise ValueError(f"a price above {MAX_PRICE_FEN // 100} yuan: {text!r}")
    return fen


def parse_quantity(text: str) -> int:
    """A quantity typed at the till: a whole number 1-1,000,000 (ASCII or fullwidth digits); ValueError otherwise."""
    s = fullwidth_to_ascii(text).strip()
    if not _QUANTITY_RE.fullmatch(s) or int(s) > MAX_QUANTITY:
        raise ValueError(f"not a quantity of 1-{MAX_QUANTITY}: {text!r}")
    return int(s)
