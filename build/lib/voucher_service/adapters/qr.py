"""QR codes of voucher tokens: error correction M, alphanumeric mode (CONTRACT §3), PNG or SVG."""

from __future__ import annotations

import io

import qrcode
import qrcode.image.svg
from qrcode.constants import ERROR_CORRECT_M
from qrcode.util import MODE_ALPHA_NUM, QRData

FORMATS = {"png": "image/png", "svg": "image/svg+xml"}
BOX_SIZE = 8
BORDER = 4  # the quiet zone the QR specification asks for


def token_qr(token: str) -> qrcode.QRCode:  # type: ignore[type-arg]
    """Lay out a token as a QR symbol, forcing alphanumeric mode.

    Base45 uses exactly the QR alphanumeric alphabet, which packs 2 characters in 11 bits instead of
    8 bits per character: the symbol is about a quarter smaller and easier to scan from a phone.
    QRData raises if a character falls outside that alphabet, so a wrong token never silently
    becomes a larger byte-mode code.
    """
    qr = qrcode.QRCode(error_correction=ERROR_CORRECT_M, box_size=BOX_SIZE, border=BORDER)
    qr.add_data(QRData(token, mode=MODE_ALPHA_NUM), optimize=0)
    qr.make(fit=True)
    return qr


def render(token: str, fmt: str) -> bytes:
    """Render a token's QR code as PNG or SVG bytes."""
    qr = token_qr(token)
    buf = io.BytesIO()
    if fmt == "png":
        qr.make_image().save(buf)
    elif fmt == "svg":
        qr.make_image(image_factory=qrcode.image.svg.SvgPathImage).save(buf)
    else:
        raise ValueError(f"unknown QR format {fmt!r}")
    return buf.getvalue()
