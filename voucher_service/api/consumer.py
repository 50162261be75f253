"""Consumer sessions, claims and vouchers."""

from __future__ import annotations

from flask import Blueprint

bp = Blueprint("consumer", __name__, url_prefix="/api/v1")
