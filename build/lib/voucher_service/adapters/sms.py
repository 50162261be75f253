"""One-time codes leave the service through an SMS gateway; development writes them to a file."""

from __future__ import annotations

import datetime as dt
import json
import logging
import threading
from pathlib import Path
from typing import Protocol

log = logging.getLogger(__name__)


class SmsSender(Protocol):
    """Sends a one-time code to a phone."""

    def send_code(self, phone: str, code: str) -> None:
        """Deliver the code."""


class OutboxSms:
    """Development backend: one JSON line {"phone","code","sent_at"} per code, appended to a file."""

    def __init__(self, path: str) -> None:
        self._path = Path(path)
        self._lock = threading.Lock()

    def send_code(self, phone: str, code: str) -> None:
        sent_at = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        line = json.dumps({"phone": phone, "code": code, "sent_at": sent_at}, ensure_ascii=False)
        self._path.parent.mkdir(parents=True, exist_ok=True)
        with self._lock, self._path.open("a", encoding="utf-8") as fh:
            fh.write(line + "\n")


class LogSms:
    """Fallback when no outbox is set: the code is logged, with the phone masked."""

    def send_code(self, phone: str, code: str) -> None:
        log.warning("one-time code for %s: %s (no SMS backend configured)", mask_phone(phone), code)


def mask_phone(phone: str) -> str:
    """Keep only the last four digits of a phone number for logs."""
    return "*" * max(0, len(phone) - 4) + phone[-4:]


def make_sms(outbox: str | None) -> SmsSender:
    """The configured SMS backend."""
    return OutboxSms(outbox) if outbox else LogSms()
