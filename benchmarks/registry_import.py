#!/usr/bin/env python3
"""Importing the seed-scale registry (3,552 products) on SQLite and PostgreSQL.

Each import is timed against a baseline measured in the same run: parsing and validating the file
alone (no database). The contract's budget for the first import is 30 s.

    python benchmarks/registry_import.py [--pg-admin-url URL] [--skip-postgres]
"""

from __future__ import annotations

import argparse
import os
import secrets
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import TypeVar

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sqlalchemy import create_engine, text  # noqa: E402

from benchmarks._server import PG_ADMIN_URL  # noqa: E402
from voucher_service.adapters.db.migrate import upgrade  # noqa: E402
from voucher_service.config import Settings  # noqa: E402
from voucher_service.domain.registry_generator import generate_registry, registry_csv  # noqa: E402
from voucher_service.domain.registry_rows import decode_registry, parse_registry  # noqa: E402
from voucher_service.services.context import ServiceContext  # noqa: E402
from voucher_service.services.registry import import_products  # noqa: E402

BUDGET_S = 30.0
T = TypeVar("T")


def timed(fn: Callable[[], T]) -> tuple[float, T]:
    """Run fn once; return (seconds, result)."""
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def run_backend(name: str, url: str, files: dict[str, bytes], baseline: float, var_dir: Path) -> None:
    """Import the seed file, the same file again, then a file with every row changed."""
    settings = Settings(
        database_url=url,
        redis_url=None,
        env="test",
        secret_key="bench-" + "x" * 40,
        signing_key_passphrase="bench",
        sms_outbox=None,
        var_dir=var_dir,
    )
    ctx = ServiceContext.build(settings)
    try:
        upgrade(ctx.engine)
        for label, data in files.items():
            seconds, result = timed(partial(import_products, ctx, data, "benchmark"))
            counts = f"created={result.created} updated={result.updated} unchanged={result.unchanged}"
            print(
                f"{name:<10} {label:<14} {seconds:7.3f} s  {seconds / baseline:6.1f}x parse  "
                f"{seconds / BUDGET_S:6.1%} of budget  {counts}"
            )
    finally:
        ctx.engine.dispose()


def main() -> int:
    """Measure and print."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pg-admin-url", default=PG_ADMIN_URL)
    parser.add_argument("--skip-postgres", action="store_true")
    args = parser.parse_args()
    rows = generate_registry(1)
    seed = registry_csv(rows).encode()
    changed = registry_csv([[*r[:2], r[2] + " 新包装", *r[3:]] for r in rows]).encode()
    files = {"first import": seed, "same again": seed, "all changed": changed}
    baseline, parsed = timed(lambda: parse_registry(decode_registry(seed)))
    print(f"{len(parsed)} products; baseline (parse + validate, no database): {baseline:.3f} s")
    with tempfile.TemporaryDirectory() as tmp:
        run_backend("sqlite", f"sqlite:///{tmp}/bench.sqlite3", files, baseline, Path(tmp))
        if args.skip_postgres:
            return 0
        admin = create_engine(args.pg_admin_url, isolation_level="AUTOCOMMIT")
        db = f"bench_registry_{os.getpid()}_{secrets.token_hex(3)}"
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{db}"'))
        try:
            run_backend(
                "postgresql", args.pg_admin_url.rsplit("/", 1)[0] + "/" + db, files, baseline, Path(tmp)
            )
        finally:
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)'))
            admin.dispose()
    return 0


if __name__ == "__main__":
    sys.exit(main())
