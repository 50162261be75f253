"""voucher-merchant: the shop's command line (verify, decode-qr, redeem, refresh, sync).

Configuration: VOUCHER_BASE_URL, VOUCHER_MERCHANT_ID, VOUCHER_API_SECRET. Exit status: 0 done,
1 the voucher or request was refused (the error code is printed), 2 bad usage or configuration.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import sys
from collections.abc import Sequence
from typing import Any

from merchant_sdk._client import VoucherClient
from merchant_sdk._errors import VoucherError
from merchant_sdk._models import Item
from merchant_sdk._offline import OfflineTerminal

_DIGITS = re.compile(r"[0-9]{1,15}")

QR_EXTRA_HINT = (
    "decode-qr needs the optional QR extra: pip install 'voucher-merchant-sdk[qr]' (zxing-cpp, pillow)"
)


class UsageError(Exception):
    """Bad arguments or missing configuration (exit 2)."""


def _print(obj: Any) -> None:
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        obj = dataclasses.asdict(obj)
    print(json.dumps(obj, ensure_ascii=False, indent=2))


def _client() -> VoucherClient:
    names = ("VOUCHER_BASE_URL", "VOUCHER_MERCHANT_ID", "VOUCHER_API_SECRET")
    values = [os.environ.get(n, "").strip() for n in names]
    missing = [n for n, v in zip(names, values, strict=True) if not v]
    if missing:
        raise UsageError("set " + ", ".join(missing))
    base_url, merchant_id, api_secret = values
    return VoucherClient(base_url, merchant_id, api_secret)


def _token(text: str) -> str:
    return sys.stdin.read().strip() if text == "-" else text.strip()


def parse_item(text: str) -> Item:
    """GTIN:QTY:UNIT_PRICE_FEN -> Item."""
    parts = text.split(":")
    # ASCII digits only (fullmatch, so no trailing newline): isdigit() and int() also take '٢' and '²'.
    if len(parts) != 3 or not all(_DIGITS.fullmatch(p) for p in parts[1:]):
        raise argparse.ArgumentTypeError(f"{text!r} is not GTIN:QTY:UNIT_PRICE_FEN (integers, price in fen)")
    return Item(gtin=parts[0], quantity=int(parts[1]), unit_price_fen=int(parts[2]))


def _terminal(args: argparse.Namespace, client: VoucherClient) -> OfflineTerminal:
    return OfflineTerminal(client, args.terminal, args.journal)


def cmd_verify(args: argparse.Namespace) -> int:
    with _client() as client:
        _print(client.verify(_token(args.token)))
    return 0


def cmd_decode_qr(args: argparse.Namespace) -> int:
    try:
        import zxingcpp
        from PIL import Image
    except ImportError:
        raise UsageError(QR_EXTRA_HINT) from None
    try:
        with Image.open(args.image) as image:
            texts = [b.text for b in zxingcpp.read_barcodes(image)]
    except OSError as exc:
        raise UsageError(f"cannot read image {args.image}: {exc}") from None
    if not texts:
        print("no QR code found in the image", file=sys.stderr)
        return 1
    for text in texts:
        print(text)
    return 0


def cmd_redeem(args: argparse.Namespace) -> int:
    token = _token(args.token)
    if (args.terminal is None) != (args.journal is None):
        raise UsageError("offline redemption needs both --terminal and --journal")
    with _client() as client:
        if args.terminal is not None:
            with _terminal(args, client) as terminal:
                _print(terminal.redeem(token, args.item, order_id=args.order_id))
        elif args.preview:
            _print(client.preview(token, args.item, order_id=args.order_id, channel=args.channel))
        else:
            key = args.idempotency_key
            _print(
                client.redeem(
                    token, args.item, order_id=args.order_id, channel=args.channel, idempotency_key=key
                )
            )
    return 0


def cmd_refresh(args: argparse.Namespace) -> int:
    with _client() as client, _terminal(args, client) as terminal:
        terminal.refresh()
        _print(
            {
                "terminal_id": terminal.terminal_id,
                "last_refresh_at": terminal.last_refresh_at,
                "refreshed": True,
            }
        )
    return 0


def cmd_sync(args: argparse.Namespace) -> int:
    with _client() as client, _terminal(args, client) as terminal:
        report = terminal.sync()
    _print(report)
    return 0 if report.ok else 1


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of voucher-merchant."""
    parser = argparse.ArgumentParser(
        prog="voucher-merchant",
        description="Verify and redeem consumption vouchers. Configured by VOUCHER_BASE_URL, "
        "VOUCHER_MERCHANT_ID and VOUCHER_API_SECRET.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("verify", help="verify a VC1: token's signature and validity (keys are fetched once)")
    p.add_argument("token", help="the VC1: text, or - to read it from stdin")
    p.set_defaults(run=cmd_verify)
    p = sub.add_parser(
        "decode-qr", help="print the text of the QR code(s) in an image (needs the [qr] extra)"
    )
    p.add_argument("image")
    p.set_defaults(run=cmd_decode_qr)
    p = sub.add_parser("redeem", help="redeem a voucher online, or offline with --terminal and --journal")
    p.add_argument("token", help="the VC1: text, or - to read it from stdin")
    p.add_argument(
        "--item", action="append", type=parse_item, required=True, metavar="GTIN:QTY:UNIT_PRICE_FEN"
    )
    p.add_argument("--order-id", required=True)
    p.add_argument("--channel", default="online", choices=("online", "offline"))
    p.add_argument("--idempotency-key")
    p.add_argument("--preview", action="store_true", help="compute the redemption without redeeming")
    p.add_argument("--terminal", help="offline: the terminal id")
    p.add_argument("--journal", help="offline: the terminal's journal file")
    p.set_defaults(run=cmd_redeem)
    for name, run, text in (
        ("refresh", cmd_refresh, "fetch keys, revocations, products and limits for an offline terminal"),
        ("sync", cmd_sync, "upload an offline terminal's journal"),
    ):
        p = sub.add_parser(name, help=text)
        p.add_argument("--terminal", required=True)
        p.add_argument("--journal", required=True)
        p.set_defaults(run=run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run voucher-merchant; return the exit status."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.run(args))
    except UsageError as exc:
        print(f"voucher-merchant: {exc}", file=sys.stderr)
        return 2
    except VoucherError as exc:
        print(f"{exc.code}: {exc.detail}", file=sys.stderr)
        if exc.body.get("lines"):
            print(json.dumps(exc.body["lines"], ensure_ascii=False, indent=2), file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
