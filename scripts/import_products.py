#!/usr/bin/env python3
"""Import the certified-product registry: `python scripts/import_products.py FILE.csv`.

The same as `voucher-admin import-products FILE.csv` (same arguments, output and exit codes).
"""

from __future__ import annotations

import sys
from pathlib import Path

# Run from a checkout without installing: the repository root holds voucher_service.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from voucher_service.cli import run  # noqa: E402

if __name__ == "__main__":
    sys.exit(run(["import-products", *sys.argv[1:]]))
