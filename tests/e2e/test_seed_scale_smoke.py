"""The seed-scale benchmark at a tiny scale: the whole programme, first claim to audit, through a real
gunicorn on PostgreSQL + Redis, and the books balance at the end."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REDIS_URL

ROOT = Path(__file__).resolve().parents[2]
BUCKETS = ("unallocated", "unclaimed", "outstanding", "redeemed", "expired", "void")

pytestmark = [pytest.mark.slow, pytest.mark.postgres]


@pytest.mark.timeout(420)
def test_seed_programme_at_a_tiny_scale_balances_its_books_to_the_fen(tmp_path: Path) -> None:
    out = tmp_path / "figures.json"
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "seed_scale.py"),
            "--scale",
            "0.0005",
            "--redis-url",
            REDIS_URL,
            "--connections",
            "16",
            "--json",
            str(out),
        ],
        cwd=str(ROOT),
        capture_output=True,
        text=True,
        timeout=400,
    )
    # The report without its last line (the figures as JSON), tables of sizes left out: what to read.
    report = "\n".join(line for line in proc.stdout.splitlines() if not line.startswith(("{", "    index ")))
    assert proc.returncode == 0, report[-8000:] + proc.stderr[-3000:]
    figures = json.loads(out.read_text())
    failed = [name for name, ok in figures["invariants"].items() if not ok]
    assert not failed, report[-8000:]
    books = figures["books"]
    ledger = books["ledger"]
    # Budget identity: every fen of the budget sits in exactly one bucket, by the ledger and by the state.
    assert sum(ledger[b] for b in BUCKETS) == books["budget_fen"] == 500_000  # 50 x T50 + 125 x T20
    assert ledger == books["state"]
    issued = ledger["outstanding"] + ledger["redeemed"] + ledger["expired"] + ledger["void"]
    assert issued + ledger["unallocated"] + ledger["unclaimed"] == books["budget_fen"]
    assert figures["audit_exit"] == 0
    # The rush sold both tiers out, turned the rest away, and the sync caught the planted double spends.
    assert figures["claims"]["201"] == 175
    assert figures["claims"].get("409:tier_sold_out", 0) > 175
    assert figures["offline"].get("conflict", 0) >= 1  # 2 planted; one may be undone by a return
    assert not [k for k in figures["claims"] if k.startswith("5")]
