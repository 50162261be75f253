"""Redemptions and reversals (merchant)."""

from __future__ import annotations

from flask import Blueprint

bp = Blueprint("merchant", __name__, url_prefix="/api/v1")
