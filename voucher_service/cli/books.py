"""Reconciliation, settlement, reports, expiry and audit commands."""

from __future__ import annotations

from voucher_service.cli import main, pass_state  # noqa: F401
