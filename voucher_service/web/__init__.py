"""Pages people look at."""

from __future__ import annotations

from flask import Flask


def register_web(app: Flask) -> None:
    """Attach the web pages (none yet beyond the API's)."""
