"""Offline terminals' journal uploads."""

from __future__ import annotations

from flask import Blueprint

bp = Blueprint("offline", __name__, url_prefix="/api/v1")
