"""Money is integer fen; this module holds the one function that splits an amount."""

from __future__ import annotations

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
    if not (whole or "0").isdigit() or (dot and not frac.isdigit()) or len(frac) > 2:
        raise ValueError(f"not an amount with at most two decimals: {text!r}")
    return sign * (int(whole or "0") * 100 + int(frac.ljust(2, "0") or "0"))
