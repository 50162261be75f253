"""Times on the wire (RFC 3339 UTC) and calendar days in a programme's time zone."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

DEFAULT_TZ = "Asia/Shanghai"


def rfc3339(value: dt.datetime | None) -> str | None:
    """Render an aware datetime as `2026-11-29T08:00:00Z` (seconds, UTC)."""
    if value is None:
        return None
    if value.tzinfo is None:
        raise ValueError("naive datetime")
    return value.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_rfc3339(text: str) -> dt.datetime:
    """Parse an RFC 3339 timestamp with an offset or Z; raise ValueError for naive or malformed text."""
    value = dt.datetime.fromisoformat(text.replace("z", "Z").replace("Z", "+00:00"))
    if value.tzinfo is None:
        raise ValueError("timestamp needs a time zone offset or Z")
    return value.astimezone(dt.UTC)


def local_date(value: dt.datetime, tz: str = DEFAULT_TZ) -> dt.date:
    """The calendar day of an instant in the programme's time zone."""
    return value.astimezone(ZoneInfo(tz)).date()


def day_bounds(day: dt.date, tz: str = DEFAULT_TZ) -> tuple[dt.datetime, dt.datetime]:
    """The UTC instants [start, end) of a calendar day in the programme's time zone."""
    start = dt.datetime.combine(day, dt.time(), ZoneInfo(tz))
    end = start + dt.timedelta(days=1)
    return start.astimezone(dt.UTC), end.astimezone(dt.UTC)
