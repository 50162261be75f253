"""Prometheus text metrics of this process: requests by route and status, and their latency."""

from __future__ import annotations

import threading
from collections import defaultdict

BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
# Label values come from the request: anything outside these sets is counted under one label.
KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
OTHER = "other"
MAX_SERIES = 2000


class Metrics:
    """Counters and a latency histogram, kept per process (each gunicorn worker reports its own)."""

    def __init__(self, max_series: int = MAX_SERIES) -> None:
        self.max_series = max_series
        self._lock = threading.Lock()
        self.requests: dict[tuple[str, str, int], int] = defaultdict(int)
        self.latency: dict[str, list[int]] = defaultdict(lambda: [0] * (len(BUCKETS) + 1))
        self.latency_sum: dict[str, float] = defaultdict(float)
        self.events: dict[str, int] = defaultdict(int)

    def observe(self, route: str, method: str, status: int, seconds: float) -> None:
        """Count one request; unknown methods, and series beyond the bound, share the label `other`."""
        method = method if method in KNOWN_METHODS else OTHER
        with self._lock:
            if (route, method, status) not in self.requests and len(self.requests) >= self.max_series - 1:
                route, method, status = OTHER, OTHER, 0
            if route not in self.latency and len(self.latency) >= self.max_series - 1:
                route = OTHER
            self.requests[(route, method, status)] += 1
            buckets = self.latency[route]
            for i, bound in enumerate(BUCKETS):
                if seconds <= bound:
                    buckets[i] += 1
            buckets[-1] += 1
            self.latency_sum[route] += seconds

    def count(self, event: str, n: int = 1) -> None:
        """Count a domain event (claims, redemptions, sold-out answers...)."""
        with self._lock:
            if event not in self.events and len(self.events) >= self.max_series:
                event = OTHER
            self.events[event] += n

    def render(self) -> str:
        """The Prometheus text exposition."""
        lines = [
            "# HELP voucher_http_requests_total HTTP requests by route, method and status.",
            "# TYPE voucher_http_requests_total counter",
        ]
        with self._lock:
            for (route, method, status), n in sorted(self.requests.items()):
                lines.append(
                    f'voucher_http_requests_total{{route="{route}",method="{method}",status="{status}"}} {n}'
                )
            lines += [
                "# HELP voucher_http_request_seconds Request latency.",
                "# TYPE voucher_http_request_seconds histogram",
            ]
            for route, buckets in sorted(self.latency.items()):
                for bound, n in zip(BUCKETS, buckets, strict=False):
                    lines.append(f'voucher_http_request_seconds_bucket{{route="{route}",le="{bound}"}} {n}')
                lines.append(
                    f'voucher_http_request_seconds_bucket{{route="{route}",le="+Inf"}} {buckets[-1]}'
                )
                lines.append(f'voucher_http_request_seconds_count{{route="{route}"}} {buckets[-1]}')
                lines.append(
                    f'voucher_http_request_seconds_sum{{route="{route}"}} {self.latency_sum[route]:.6f}'
                )
            lines += ["# HELP voucher_events_total Domain events.", "# TYPE voucher_events_total counter"]
            for event, n in sorted(self.events.items()):
                lines.append(f'voucher_events_total{{event="{event}"}} {n}')
        return "\n".join(lines) + "\n"


def replica_lines(lag_s: float | None, served: dict[str, int]) -> str:
    """The read replica's gauges: how far behind it may be (-1: unknown) and where lag-tolerant reads went."""
    lines = [
        "# HELP voucher_replica_lag_seconds Upper bound of the read replica's lag as last measured (-1: unknown).",
        "# TYPE voucher_replica_lag_seconds gauge",
        f"voucher_replica_lag_seconds {-1 if lag_s is None else round(lag_s, 3)}",
        "# HELP voucher_replica_reads_total Lag-tolerant reads (reports, listings) by the server that served them.",
        "# TYPE voucher_replica_reads_total counter",
    ]
    lines += [f'voucher_replica_reads_total{{target="{t}"}} {n}' for t, n in sorted(served.items())]
    return "\n".join(lines) + "\n"
