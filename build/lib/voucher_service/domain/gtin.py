"""GTIN-8/12/13/14 with verified check digits, normalised to 14 digits for lookups."""

from __future__ import annotations

VALID_LENGTHS = (8, 12, 13, 14)


def check_digit(body: str) -> int:
    """The GS1 mod-10 check digit for the digits before it."""
    total = 0
    for i, ch in enumerate(reversed(body)):
        total += int(ch) * (3 if i % 2 == 0 else 1)
    return (10 - total % 10) % 10


def is_valid_gtin(text: str) -> bool:
    """True for 8, 12, 13 or 14 digits whose last digit is the right check digit."""
    return (
        isinstance(text, str)
        and text.isascii()
        and text.isdigit()
        and len(text) in VALID_LENGTHS
        and check_digit(text[:-1]) == int(text[-1])
    )


def normalise_gtin(text: str) -> str:
    """The 14-digit form of a valid GTIN; raise ValueError for an invalid one."""
    if not is_valid_gtin(text):
        raise ValueError(f"not a valid GTIN-8/12/13/14: {text!r}")
    return text.zfill(14)


def with_check_digit(body: str) -> str:
    """Append the check digit to a GTIN body (for generators and tests)."""
    return body + str(check_digit(body))
