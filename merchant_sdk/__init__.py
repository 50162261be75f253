"""Merchant SDK for the consumption-voucher service (being written)."""

__all__: list[str] = []
