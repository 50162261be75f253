"""voucher-merchant, the shop's command line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import qrcode

from merchant_sdk import cli
from tests.sdk.conftest import MERCHANT_ID, SECRET
from tests.sdk.support import FakeService, TokenMaker, problem

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, fake: FakeService) -> FakeService:
    monkeypatch.setenv("VOUCHER_BASE_URL", fake.base_url)
    monkeypatch.setenv("VOUCHER_MERCHANT_ID", MERCHANT_ID)
    monkeypatch.setenv("VOUCHER_API_SECRET", SECRET)
    return fake


def test_verify_prints_the_claims(env: FakeService, maker: TokenMaker, capsys) -> None:
    env.handle("GET", "/api/v1/keys", lambda s: (200, {}, maker.jwks()))
    claims = maker.claims()
    assert cli.main(["verify", maker.token_for(claims)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["voucher_id"] == claims.voucher_id and out["face_value_fen"] == 5000


def test_verify_of_a_bad_token_exits_1_with_the_code(env: FakeService, capsys) -> None:
    assert cli.main(["verify", "VC1:nonsense!"]) == 1
    assert capsys.readouterr().err.startswith("token_malformed:")


def test_missing_configuration_exits_2(monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    for name in ("VOUCHER_BASE_URL", "VOUCHER_MERCHANT_ID", "VOUCHER_API_SECRET"):
        monkeypatch.delenv(name, raising=False)
    assert cli.main(["verify", "VC1:X"]) == 2
    assert "VOUCHER_BASE_URL" in capsys.readouterr().err


def test_redeem_sends_the_items_and_prints_the_redemption(env: FakeService, capsys) -> None:
    answer = {
        "redemption_id": "r-1",
        "voucher_id": "v",
        "program_id": "p",
        "order_id": "X-1",
        "order_total_fen": 17970,
        "eligible_total_fen": 17970,
        "discount_fen": 5000,
        "lines": [],
        "receipt": "VR1:Z",
    }
    env.reply("POST", "/api/v1/redemptions", (201, {}, answer))
    assert (
        cli.main(
            [
                "redeem",
                "VC1:T",
                "--item",
                "6901234567892:3:5990",
                "--item",
                "6901234567908:1:100",
                "--order-id",
                "X-1",
            ]
        )
        == 0
    )
    assert json.loads(capsys.readouterr().out)["discount_fen"] == 5000
    sent = env.seen[-1]
    assert sent.json()["items"] == [
        {"gtin": "6901234567892", "quantity": 3, "unit_price_fen": 5990},
        {"gtin": "6901234567908", "quantity": 1, "unit_price_fen": 100},
    ]
    assert sent.json()["order_id"] == "X-1" and sent.headers["Idempotency-Key"]


def test_redeem_reports_a_refusal(env: FakeService, capsys) -> None:
    lines = [{"index": 0, "eligible": False, "reason": "not_certified"}]
    env.reply("POST", "/api/v1/redemptions", (422, {}, problem("threshold_not_met", 422, lines=lines)))
    assert cli.main(["redeem", "VC1:T", "--item", "6901234567892:1:1", "--order-id", "X"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("threshold_not_met:") and "not_certified" in err


def test_a_malformed_item_is_a_usage_error(env: FakeService, capsys) -> None:
    with pytest.raises(SystemExit) as info:
        cli.main(["redeem", "VC1:T", "--item", "6901234567892:1:59.90", "--order-id", "X"])
    assert info.value.code == 2
    assert "GTIN:QTY:UNIT_PRICE_FEN" in capsys.readouterr().err


def test_decode_qr_reads_a_voucher_qr_image(tmp_path: Path, maker: TokenMaker, capsys) -> None:
    token = maker.token()
    qr = qrcode.QRCode(error_correction=qrcode.constants.ERROR_CORRECT_M)
    qr.add_data(token)
    qr.make_image().save(tmp_path / "voucher.png")
    assert cli.main(["decode-qr", str(tmp_path / "voucher.png")]) == 0
    assert capsys.readouterr().out.strip() == token


def test_decode_qr_without_the_extra_says_how_to_install_it(tmp_path: Path) -> None:
    code = "\n".join(
        [
            "import sys",
            "sys.modules['zxingcpp'] = None",
            "from merchant_sdk import cli",
            "sys.exit(cli.main(sys.argv[1:]))",
        ]
    )
    out = subprocess.run(
        [sys.executable, "-c", code, "decode-qr", str(tmp_path / "x.png")],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert out.returncode == 2
    assert "voucher-merchant-sdk[qr]" in out.stderr


def test_the_console_script_is_installed() -> None:
    script = Path(sys.executable).parent / "voucher-merchant"
    out = subprocess.run([str(script), "--help"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "decode-qr" in out.stdout and "sync" in out.stdout


def test_refresh_offline_redeem_and_sync_from_the_command_line(
    env: FakeService, maker: TokenMaker, tmp_path: Path, capsys
) -> None:
    from tests.sdk.support import GTIN_RICE, FakeOfflineBackend, snapshot_product

    backend = FakeOfflineBackend(
        env, maker, MERCHANT_ID, products=[snapshot_product("C-RICE", GTIN_RICE)]
    ).install()
    journal = str(tmp_path / "till.sqlite3")
    assert cli.main(["refresh", "--terminal", "till-cli", "--journal", journal]) == 0
    capsys.readouterr()
    assert (
        cli.main(
            [
                "redeem",
                maker.token(),
                "--item",
                f"{GTIN_RICE}:3:5990",
                "--order-id",
                "POS-9",
                "--terminal",
                "till-cli",
                "--journal",
                journal,
            ]
        )
        == 0
    )
    assert json.loads(capsys.readouterr().out)["seq"] == 1
    assert cli.main(["sync", "--terminal", "till-cli", "--journal", journal]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["results"][0]["status"] == "accepted" and len(backend.stored) == 1
