"""`python scripts/expire.py ...`: the same arguments and exit code as `voucher-admin expire`."""

from __future__ import annotations

import sys
from pathlib import Path

# Run from a checkout without installing: the repository root holds the package.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from voucher_service.cli import run  # noqa: E402

if __name__ == "__main__":
    sys.exit(run(["expire", *sys.argv[1:]]))
