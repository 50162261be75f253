"""Tokens checked by an independent COSE implementation against /keys, QR codes decoded back, key rotation."""

from __future__ import annotations

import base64
import io
import uuid
from typing import Any

import cbor2
import pytest
import zxingcpp
from click.testing import CliRunner
from PIL import Image
from pycose.headers import KID
from pycose.keys import EC2Key
from pycose.keys.curves import P256
from pycose.messages import Sign1Message
from qrcode import QRCode
from qrcode.constants import ERROR_CORRECT_M
from qrcode.util import MODE_8BIT_BYTE, MODE_ALPHA_NUM, QRData

from tests.helpers import Admin, consumer_headers, problem_code
from voucher_service.adapters import qr
from voucher_service.cli import main as cli
from voucher_service.services.credentials import create_admin_token

B45 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ $%*+-./:"


def b45decode(text: str) -> bytes:
    """RFC 9285 Base45, written here from the RFC so the check does not reuse the service's codec."""
    out = bytearray()
    values = [B45.index(c) for c in text]
    for i in range(0, len(values), 3):
        chunk = values[i : i + 3]
        n = sum(v * 45**k for k, v in enumerate(chunk))
        out += n.to_bytes(2 if len(chunk) == 3 else 1, "big")
    return bytes(out)


def b64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def verify_with_pycose(token: str, jwks: dict[str, Any]) -> tuple[str, dict[int, Any]]:
    """Verify a VC1 token with pycose and a JWKS; return (kid, payload claims)."""
    assert token.startswith("VC1:")
    raw = b45decode(token[4:])
    assert cbor2.loads(raw).tag == 18
    msg = Sign1Message.decode(raw)
    kid = base64.urlsafe_b64encode(msg.phdr[KID]).rstrip(b"=").decode()
    jwk = next(k for k in jwks["keys"] if k["kid"] == kid)
    assert (jwk["kty"], jwk["crv"], jwk["alg"]) == ("EC", "P-256", "ES256")
    msg.key = EC2Key(crv=P256, x=b64url(jwk["x"]), y=b64url(jwk["y"]))
    assert msg.verify_signature()
    assert msg.payload is not None
    return kid, cbor2.loads(msg.payload)


@pytest.fixture(params=["app", pytest.param("pg_app", marks=pytest.mark.postgres)])
def service(request: pytest.FixtureRequest) -> Any:
    return request.getfixturevalue(request.param)


def _claim(
    service: Any, phone: str = "13800138000"
) -> tuple[dict[str, Any], dict[str, str], Admin, dict[str, Any]]:
    ctx = service.extensions["voucher"]
    admin = Admin(service.test_client(), create_admin_token(ctx, "tester"))
    program = admin.create_program()
    headers = consumer_headers(service.test_client(), ctx.settings.sms_outbox, phone)
    resp = service.test_client().post(
        f"/api/v1/programs/{program['id']}/claims", json={"tier": "T50"}, headers=headers
    )
    assert resp.status_code == 201
    return resp.get_json(), headers, admin, program


def test_keys_are_a_cacheable_jwks_of_the_active_and_next_keys(client: Any) -> None:
    resp = client.get("/api/v1/keys")
    assert resp.status_code == 200
    assert "max-age=300" in resp.headers["Cache-Control"]
    keys = resp.get_json()["keys"]
    assert sorted(k["status"] for k in keys) == ["active", "next"]
    for k in keys:
        assert {"kty", "crv", "x", "y", "kid", "alg", "use", "nbf", "status"} <= set(k)
        assert len(b64url(k["kid"])) == 8 and k["use"] == "sig"


def test_a_claimed_token_verifies_with_pycose_and_the_published_keys(service: Any) -> None:
    voucher, _, _, program = _claim(service)
    jwks = service.test_client().get("/api/v1/keys").get_json()
    _, payload = verify_with_pycose(voucher["token"], jwks)
    assert payload[7] == uuid.UUID(voucher["voucher_id"]).bytes
    assert (payload[-70001], payload[-70002], payload[-70003], payload[-70004]) == (
        program["id"],
        "T50",
        5000,
        15000,
    )
    assert payload[5] < payload[4] and payload[6] == payload[5]
    # A tampered token does not verify.
    raw = bytearray(b45decode(voucher["token"][4:]))
    raw[-1] ^= 1
    msg = Sign1Message.decode(bytes(raw))
    jwk = next(k for k in jwks["keys"] if k["status"] == "active")
    msg.key = EC2Key(crv=P256, x=b64url(jwk["x"]), y=b64url(jwk["y"]))
    assert not msg.verify_signature()


def test_the_png_decodes_back_to_the_exact_token_in_alphanumeric_mode_at_level_m(service: Any) -> None:
    voucher, headers, _, _ = _claim(service)
    resp = service.test_client().get(voucher["qr_png_url"], headers=headers)
    assert resp.status_code == 200 and resp.mimetype == "image/png"
    found = zxingcpp.read_barcodes(Image.open(io.BytesIO(resp.data)))
    assert [r.text for r in found] == [voucher["token"]]
    assert found[0].ec_level == "M"
    token = voucher["token"]
    assert QRData(token).mode == MODE_ALPHA_NUM  # the alphabet of Base45 is QR's alphanumeric set

    def version(mode: int) -> int:
        code = QRCode(error_correction=ERROR_CORRECT_M)
        code.add_data(QRData(token.encode(), mode=mode), optimize=0)
        code.make(fit=True)
        return int(code.version)

    alphanumeric, byte_mode = version(MODE_ALPHA_NUM), version(MODE_8BIT_BYTE)
    assert alphanumeric < byte_mode
    extra: Any = found[0].extra
    assert int(extra["Version"]) == alphanumeric


def test_the_svg_is_an_svg_of_the_same_symbol(service: Any) -> None:
    voucher, headers, _, _ = _claim(service)
    resp = service.test_client().get(voucher["qr_svg_url"], headers=headers)
    assert resp.status_code == 200 and resp.mimetype == "image/svg+xml"
    assert b"<svg" in resp.data and b"<path" in resp.data
    assert resp.data == qr.render(voucher["token"], "svg")


def test_qr_images_are_cached_and_revalidated_with_etags(
    service: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    voucher, headers, _, _ = _claim(service)
    renders: list[str] = []
    real_render = qr.render

    def counting_render(token: str, fmt: str) -> bytes:
        renders.append(fmt)
        return real_render(token, fmt)

    monkeypatch.setattr(qr, "render", counting_render)
    client = service.test_client()
    first = client.get(voucher["qr_png_url"], headers=headers)
    second = client.get(voucher["qr_png_url"], headers=headers)
    assert first.data == second.data and renders == ["png"]
    assert "private" in first.headers["Cache-Control"] and "max-age=" in first.headers["Cache-Control"]
    etag = first.headers["ETag"]
    again = client.get(voucher["qr_png_url"], headers={**headers, "If-None-Match": etag})
    assert again.status_code == 304 and again.data == b""
    svg = client.get(voucher["qr_svg_url"], headers=headers)
    assert svg.headers["ETag"] != etag and renders == ["png", "svg"]


def test_only_the_holder_or_the_claiming_platform_may_see_a_qr_code(service: Any) -> None:
    voucher, headers, admin, program = _claim(service)
    ctx = service.extensions["voucher"]
    client = service.test_client()
    stranger = consumer_headers(client, ctx.settings.sms_outbox, "13700000000")
    assert problem_code(client.get(voucher["qr_png_url"], headers=stranger)) == "forbidden"
    assert problem_code(client.get(voucher["qr_png_url"])) == "unauthorized"
    assert problem_code(client.get(voucher["qr_png_url"], headers=admin.headers)) == "forbidden"
    unknown = f"/api/v1/vouchers/{uuid.uuid4()}/qr.svg"
    assert problem_code(client.get(unknown, headers=headers)) == "not_found"
    platform = admin.create_merchant("平台", ("online",), platform=True, enrol_in=program["id"])
    other_platform = admin.create_merchant("另一个平台", ("online",), platform=True, enrol_in=program["id"])
    mine = platform.post(
        f"/api/v1/programs/{program['id']}/claims", {"tier": "T20", "holder_ref": "u1"}
    ).get_json()
    assert platform.get(mine["qr_png_url"]).status_code == 200
    assert problem_code(other_platform.get(mine["qr_png_url"])) == "forbidden"
    assert problem_code(platform.get(voucher["qr_png_url"])) == "forbidden"
    # The platform's user never logged in, so no consumer holds it either.
    assert problem_code(client.get(mine["qr_png_url"], headers=headers)) == "forbidden"


def test_after_rotate_keys_old_vouchers_still_verify_and_new_ones_carry_the_new_kid(
    app: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    ctx = app.extensions["voucher"]
    old_voucher, headers, _, program = _claim(app)
    old_kid = verify_with_pycose(old_voucher["token"], app.test_client().get("/api/v1/keys").get_json())[0]
    settings = ctx.settings
    env = {
        "VOUCHER_DATABASE_URL": settings.database_url,
        "VOUCHER_SECRET_KEY": settings.secret_key,
        "VOUCHER_SIGNING_KEY_PASSPHRASE": settings.signing_key_passphrase,
        "VOUCHER_VAR_DIR": str(settings.var_dir),
        "VOUCHER_ENV": "test",
        "VOUCHER_TEST_CHEAP_HASHING": "1",
    }
    for name in ("VOUCHER_REDIS_URL", "VOUCHER_SMS_OUTBOX"):
        monkeypatch.delenv(name, raising=False)
    result = CliRunner().invoke(cli, ["rotate-keys"], env=env)
    assert result.exit_code == 0, result.output
    printed = dict(line.split(": ") for line in result.output.strip().splitlines())
    assert (
        printed["retired"] == old_kid and len({printed["retired"], printed["active"], printed["next"]}) == 3
    )
    # Another process (this app) picks the rotation up within its key ring's TTL; don't wait for it here.
    ctx.keys.reload()
    jwks = app.test_client().get("/api/v1/keys").get_json()
    statuses = {k["kid"]: k["status"] for k in jwks["keys"]}
    assert statuses == {printed["retired"]: "retired", printed["active"]: "active", printed["next"]: "next"}
    assert verify_with_pycose(old_voucher["token"], jwks)[0] == old_kid
    retired = next(k for k in jwks["keys"] if k["kid"] == old_kid)
    assert retired["exp"] >= int(ctx.now().timestamp()) + 29 * 86400  # until its vouchers have expired
    new = app.test_client().post(
        f"/api/v1/programs/{program['id']}/claims", json={"tier": "T20"}, headers=headers
    )
    assert new.status_code == 201
    assert verify_with_pycose(new.get_json()["token"], jwks)[0] == printed["active"]
