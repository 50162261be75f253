#!/usr/bin/env python3
"""Write a deterministic certified-product registry at the seed scale (CONTRACT §5 format).

    python scripts/generate_registry.py [--out FILE] [--seed N]

3,552 products from 1,252 suppliers across 106 Guangxi counties; the same seed gives the same bytes.
Without --out the CSV goes to stdout.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from voucher_service.domain.registry_generator import generate_registry, registry_csv  # noqa: E402


def main(argv: Sequence[str] | None = None) -> int:
    """Generate the registry and write it to --out (or stdout)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=None, help="file to write (default: stdout)")
    parser.add_argument("--seed", type=int, default=1, help="random seed (default: 1)")
    args = parser.parse_args(argv)
    text = registry_csv(generate_registry(args.seed))
    if args.out is None:
        sys.stdout.write(text)
    else:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text, encoding="utf-8")
        print(f"wrote {text.count(chr(10)) - 1} products to {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
