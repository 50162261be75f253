#!/usr/bin/env python3
"""Print the SQL one real claim and one real redemption send to PostgreSQL, transaction by transaction.

The floor (benchmarks/floor_app.py) and the pgbench scripts must do the same statements and commits
as the real routes; this is how to read them off the running code instead of guessing. It seeds a
throwaway database (dropped at the end) as the benchmarks do, warms the app up in process (Flask's
test client, so caches fill as under gunicorn), then records every statement, COMMIT and ROLLBACK of
the next request of each kind through SQLAlchemy's engine events.

    python benchmarks/capture_sql.py [--route claims|redemptions|both]
"""

from __future__ import annotations

import argparse
import json
import secrets
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sqlalchemy import Engine, event  # noqa: E402

from benchmarks import claims as claims_bench  # noqa: E402
from benchmarks import redemptions as redemptions_bench  # noqa: E402
from benchmarks._load import signed_headers  # noqa: E402
from benchmarks._server import PG_ADMIN_URL, REDIS_URL, throwaway_settings  # noqa: E402

Log = list[tuple[str, str]]


def _record(log: Log) -> None:
    @event.listens_for(Engine, "before_cursor_execute")
    def _sql(_conn: Any, _cursor: Any, statement: str, params: Any, _ctx: Any, _many: bool) -> None:
        log.append(("sql", " ".join(statement.split())))

    @event.listens_for(Engine, "commit")
    def _commit(_conn: Any) -> None:
        log.append(("txn", "COMMIT"))

    @event.listens_for(Engine, "rollback")
    def _rollback(_conn: Any) -> None:
        log.append(("txn", "ROLLBACK"))


def _show(title: str, log: Log) -> None:
    statements = sum(1 for kind, _ in log if kind == "sql")
    commits = sum(1 for _, text in log if text == "COMMIT")
    print(f"== {title}: {statements} statements, {commits} commits")
    for _kind, text in log:
        print("  " + (text if len(text) < 400 else text[:400] + " ..."))


def capture_claims(settings: Any) -> None:
    from voucher_service import create_app

    program_id, platform = claims_bench.seed(settings, 200)
    app = create_app(settings, start_sealer=False)
    client = app.test_client()
    path = f"/api/v1/programs/{program_id}/claims"

    def claim(tier: str) -> int:
        body = json.dumps({"tier": tier, "holder_ref": secrets.token_hex(8)}).encode()
        headers = signed_headers(platform["id"], platform["api_secret"], path, body)
        return client.post(path, data=body, headers=headers).status_code

    for _ in range(3):
        claim("WARM")
    log: Log = []
    _record(log)
    status = claim("RUSH")
    _show(f"POST {path} -> {status}", log)


def capture_redemptions(settings: Any) -> None:
    from voucher_service import create_app

    _program_id, merchant, tokens, gtins = redemptions_bench.seed(settings, 20)
    app = create_app(settings, start_sealer=False)
    client = app.test_client()
    path = "/api/v1/redemptions"
    target = redemptions_bench.Target("", 0, merchant["id"], merchant["api_secret"], tuple(gtins))

    def redeem(n: int) -> int:
        body = redemptions_bench.request_body(target, tokens[n], n)
        headers = signed_headers(
            merchant["id"], merchant["api_secret"], path, body, **{"Idempotency-Key": secrets.token_hex(16)}
        )
        return client.post(path, data=body, headers=headers).status_code

    for n in range(3):
        redeem(n)
    log: Log = []
    _record(log)
    status = redeem(3)
    _show(f"POST {path} -> {status}", log)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--route", choices=("claims", "redemptions", "both"), default="both")
    args = parser.parse_args()
    if args.route in ("claims", "both"):
        with throwaway_settings(PG_ADMIN_URL, REDIS_URL, "capture") as settings:
            capture_claims(settings)
    if args.route in ("redemptions", "both"):
        with throwaway_settings(PG_ADMIN_URL, REDIS_URL, "capture") as settings:
            capture_redemptions(settings)
    return 0


if __name__ == "__main__":
    sys.exit(main())
