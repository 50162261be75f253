"""Hardening against hostile input (issue 8, items 1 and 2): identity inputs have one canonical form,
digits are ASCII digits everywhere untrusted text is read, and bad input is a clear 4xx that changes
nothing, never a 500."""

from __future__ import annotations

import base64
import json
import secrets
import time
from typing import Any

import pytest
from sqlalchemy import func, select

from tests.helpers import (
    Admin,
    MerchantCaller,
    consumer_headers,
    merchant_headers,
    problem_code,
    program_body,
    sms_code,
)
from voucher_service.adapters.db.models import Program, Voucher
from voucher_service.services.context import ServiceContext
from voucher_service.services.credentials import create_admin_token, sign_merchant_request

PHONE = "13912345678"
FULLWIDTH = "１３９１２３４５６７８"  # what a Chinese input method in full-width mode types
# The same number in scripts whose digits Python's `\d`, isdigit() and int() all accept.
OTHER_SCRIPTS = {
    "arabic_indic": "١٣٩١٢٣٤٥٦٧٨",
    "extended_arabic_indic": "۱۳۹۱۲۳۴۵۶۷۸",
    "devanagari": "१३९१२३४५६७८",
    "thai": "๑๓๙๑๒๓๔๕๖๗๘",
    "bengali": "১৩৯১২৩৪৫৬৭৮",
    "mathematical_bold": "𝟏𝟑𝟗𝟏𝟐𝟑𝟒𝟓𝟔𝟕𝟖",
    "mixed": "1391234567٨",
    "superscript": "¹³⁹¹²³⁴⁵⁶⁷⁸",
}


def _ctx(app: Any) -> ServiceContext:
    return app.extensions["voucher"]  # type: ignore[no-any-return]


def _admin(app: Any) -> Admin:
    return Admin(app.test_client(), create_admin_token(_ctx(app), "tester"))


def _outbox_phones(app: Any) -> list[str]:
    path = _ctx(app).settings.sms_outbox
    assert path
    try:
        with open(path, encoding="utf-8") as fh:
            return [json.loads(line)["phone"] for line in fh if line.strip()]
    except FileNotFoundError:
        return []


@pytest.fixture(params=["app", pytest.param("pg_app", marks=pytest.mark.postgres)])
def service(request: pytest.FixtureRequest) -> Any:
    """The service on SQLite with the in-process store, then on PostgreSQL + Redis."""
    return request.getfixturevalue(request.param)


# --- item 1: one person, one holder ---------------------------------------------------------------


def test_a_full_width_number_is_the_same_holder_as_its_ascii_spelling(service: Any) -> None:
    client = service.test_client()
    assert client.post("/api/v1/consumer/otp", json={"phone": FULLWIDTH}).status_code == 202
    # The code goes to the canonical number, and that number's code opens the ASCII holder's session.
    assert _outbox_phones(service) == [PHONE]
    outbox = _ctx(service).settings.sms_outbox
    assert outbox
    resp = client.post(
        "/api/v1/consumer/sessions", json={"phone": "+86 139-1234-5678", "code": sms_code(outbox, PHONE)}
    )
    assert resp.status_code == 201, resp.get_json()


@pytest.mark.parametrize("script", sorted(OTHER_SCRIPTS))
def test_a_number_in_other_digits_is_refused_on_every_identity_route(service: Any, script: str) -> None:
    phone = OTHER_SCRIPTS[script]
    client = service.test_client()
    resp = client.post("/api/v1/consumer/otp", json={"phone": phone})
    assert resp.status_code == 400 and problem_code(resp) == "validation_error"
    assert resp.get_json()["errors"][0]["field"] == "phone"
    resp = client.post("/api/v1/consumer/sessions", json={"phone": phone, "code": "123456"})
    assert resp.status_code == 400 and problem_code(resp) == "validation_error"
    assert _outbox_phones(service) == []
    admin = _admin(service)
    program = admin.create_program()
    platform = admin.create_merchant("平台", ("online",), platform=True, enrol_in=program["id"])
    resp = platform.post(
        f"/api/v1/programs/{program['id']}/claims", {"tier": "T20", "holder_ref": "u1", "holder_phone": phone}
    )
    assert resp.status_code == 400 and problem_code(resp) == "validation_error"
    assert resp.get_json()["errors"][0]["field"] == "holder_phone"
    with _ctx(service).sessions() as s:
        taken = (
            select(func.count())
            .select_from(Voucher)
            .where(Voucher.program_id == program["id"], Voucher.status != "available")
        )
        assert s.scalar(taken) == 0


def test_every_spelling_of_one_number_counts_against_one_per_person_limit(service: Any) -> None:
    admin = _admin(service)
    program = admin.create_program(per_person_limit=2)
    platform = admin.create_merchant("平台", ("online",), platform=True, enrol_in=program["id"])
    path = f"/api/v1/programs/{program['id']}/claims"
    spellings = [
        PHONE,
        FULLWIDTH,
        "+86 139 1234 5678",
        "0086-139-1234-5678",
        "＋８６　１３９１２３４５６７８",
        *OTHER_SCRIPTS.values(),
    ]
    issued = 0
    for i, spelling in enumerate(spellings):
        resp = platform.post(path, {"tier": "T20", "holder_ref": f"u{i}", "holder_phone": spelling})
        assert resp.status_code in (201, 400, 409), resp.get_json()
        issued += resp.status_code == 201
    assert issued == 2
    # The consumer who logs in with the number holds both, and may claim no more.
    outbox = _ctx(service).settings.sms_outbox
    assert outbox
    headers = consumer_headers(service.test_client(), outbox, PHONE)
    mine = service.test_client().get("/api/v1/consumer/vouchers", headers=headers).get_json()["vouchers"]
    # (On PostgreSQL the database is shared by the session's tests: count this programme's vouchers.)
    assert len([v for v in mine if v["program_id"] == program["id"]]) == 2
    resp = service.test_client().post(path, json={"tier": "T20"}, headers=headers)
    assert resp.status_code == 409 and problem_code(resp) == "claim_limit_reached"


@pytest.mark.parametrize(
    "phone",
    [
        "139 1234 5678\n",
        "\t13912345678",
        "139\u200b12345678",
        "+86+8613912345678",
        "1391234567８\u0301",
        "13912345678\u3000\u3000x",
    ],
)
def test_anything_but_digits_spaces_hyphens_and_the_country_prefix_is_refused(app: Any, phone: str) -> None:
    resp = app.test_client().post("/api/v1/consumer/otp", json={"phone": phone})
    assert resp.status_code == 400 and problem_code(resp) == "validation_error"


@pytest.mark.parametrize("code", ["١٢٣٤٥٦", "１２３４５６", "12345６", "¹²³⁴⁵⁶"])
def test_a_one_time_code_in_other_digits_is_a_validation_error(app: Any, code: str) -> None:
    resp = app.test_client().post("/api/v1/consumer/sessions", json={"phone": PHONE, "code": code})
    assert resp.status_code == 400 and problem_code(resp) == "validation_error"


# --- item 2: merchant timestamps ----------------------------------------------------------------------


@pytest.fixture
def platform_setup(app: Any) -> tuple[Any, MerchantCaller, str]:
    admin = _admin(app)
    program = admin.create_program(per_person_limit=100)
    platform = admin.create_merchant("平台", ("online",), platform=True, enrol_in=program["id"])
    return app, platform, f"/api/v1/programs/{program['id']}/claims"


def _to_script(text: str, zero: str) -> str:
    return "".join(chr(ord(zero) + int(c)) for c in text)


@pytest.mark.parametrize(
    "timestamp",
    [
        "²",
        "¹²³",
        "1" * 4301,
        "9" * 40,
        "-1",
        "+1700000000",
        " 1700000000",
        "1e9",
        "0x10",
        "",
        "now-arabic",
        "now-fullwidth",
        "now-with-newline",
        "now-float",
    ],
)
def test_a_timestamp_that_is_not_ascii_unix_seconds_is_unauthorized(
    platform_setup: tuple[Any, MerchantCaller, str], timestamp: str
) -> None:
    app, m, path = platform_setup
    now = str(int(time.time()))
    timestamp = {
        "now-arabic": _to_script(now, "٠"),
        "now-fullwidth": _to_script(now, "０"),
        "now-with-newline": now + "\n",
        "now-float": now + ".0",
    }.get(timestamp, timestamp)
    body = json.dumps({"tier": "T20", "holder_ref": "u1"}).encode()
    nonce = secrets.token_hex(12)
    headers = {
        "X-Voucher-Merchant": m.id,
        "X-Voucher-Timestamp": timestamp,
        "X-Voucher-Nonce": nonce,
        # Correctly signed over the hostile timestamp: only the timestamp's form can refuse it.
        "X-Voucher-Signature": sign_merchant_request(m.secret, "POST", path, timestamp, nonce, body),
        "Content-Type": "application/json",
    }
    try:
        resp = app.test_client().post(path, data=body, headers=headers)
    except ValueError:  # werkzeug refuses a header value with a newline before it is sent
        assert "\n" in timestamp
        return
    assert resp.status_code == 401 and problem_code(resp) == "unauthorized", resp.get_json()
    with _ctx(app).sessions() as s:
        assert s.scalar(select(func.count()).select_from(Voucher).where(Voucher.status != "available")) == 0


# --- item 2: redemption periods -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "query",
    [
        "from=0001-01-01",
        "to=9999-12-31",
        "from=0001-01-01T00:00:00%2B01:00",
        "to=9999-12-31T23:59:59-01:00",
        "from=%D9%A2%D9%A0%D9%A2%D9%A6-01-01",
        "from=%EF%BC%92026-01-01",
        "from=2026-01-01%0A",
        "to=2026-13-01",
        "from=0000-01-01",
        "cursor=" + base64.urlsafe_b64encode("١٢٣|x".encode()).decode().rstrip("="),
        "cursor=" + base64.urlsafe_b64encode(("9" * 5000 + "|x").encode()).decode().rstrip("="),
        "limit=%D9%A5",
        "limit=%C2%B2",
    ],
)
def test_a_redemption_period_outside_the_calendar_is_a_validation_error(app: Any, query: str) -> None:
    merchant = _admin(app).create_merchant("店", ("online",))
    resp = merchant.get(f"/api/v1/redemptions?{query}")
    assert resp.status_code == 400 and problem_code(resp) == "validation_error", resp.get_json()


def test_the_first_and_last_days_that_fit_still_list(app: Any) -> None:
    merchant = _admin(app).create_merchant("店", ("online",))
    for query in ("from=0001-01-02", "to=9999-12-30", "from=2026-01-01&to=2026-01-31"):
        resp = merchant.get(f"/api/v1/redemptions?{query}")
        assert resp.status_code == 200, (query, resp.get_json())


# --- item 2: programmes ---------------------------------------------------------------------------------


def _program_count(app: Any) -> int:
    with _ctx(app).sessions() as s:
        return int(s.scalar(select(func.count()).select_from(Program)) or 0)


@pytest.mark.parametrize(
    "overrides, field",
    [
        ({"timezone": "Asia"}, "timezone"),
        ({"timezone": "America"}, "timezone"),
        ({"timezone": "A" * 300}, "timezone"),
        ({"timezone": "Asia/" + "x" * 300}, "timezone"),
        ({"timezone": "Asia/Shanghai/"}, "timezone"),
        ({"timezone": "../../../../etc/passwd"}, "timezone"),
        (
            {
                "targets": [
                    {"county_code": "451227", "target_fen": 1},
                    {"county_code": "451227", "target_fen": 2},
                ]
            },
            "targets.1.county_code",
        ),
        ({"targets": [{"county_code": "٤٥١٢٢٧", "target_fen": 1}]}, "targets.0.county_code"),
        ({"targets": [{"county_code": "４５１２２７", "target_fen": 1}]}, "targets.0.county_code"),
        (
            {"eligibility": {"certification_types": ["national"], "county_codes": ["٤٥١٢٢٧"]}},
            "eligibility.county_codes",
        ),
        (
            {"eligibility": {"certification_types": ["national"], "county_codes": ["451227\n"]}},
            "eligibility.county_codes",
        ),
        (
            {"eligibility": {"certification_types": ["national"], "county_codes": ["451227", "451227"]}},
            "eligibility.county_codes",
        ),
    ],
)
def test_a_programme_that_cannot_run_is_a_validation_error_and_creates_nothing(
    service: Any, overrides: dict[str, Any], field: str
) -> None:
    admin = _admin(service)
    before = _program_count(service)
    resp = admin.post("/api/v1/programs", program_body(**overrides))
    assert resp.status_code == 400 and problem_code(resp) == "validation_error", resp.get_json()
    fields = [e["field"] for e in resp.get_json()["errors"]]
    assert any(f == field or f.startswith(field + ".") for f in fields), fields
    assert _program_count(service) == before


def test_a_programme_in_a_real_time_zone_is_still_accepted(app: Any) -> None:
    resp = _admin(app).post("/api/v1/programs", program_body(timezone="Asia/Urumqi"))
    assert resp.status_code == 201, resp.get_json()
    assert resp.get_json()["timezone"] == "Asia/Urumqi"


def test_merchant_headers_helper_still_signs_ascii_timestamps(
    platform_setup: tuple[Any, MerchantCaller, str],
) -> None:
    app, m, path = platform_setup
    body = json.dumps({"tier": "T20", "holder_ref": "u1"}).encode()
    resp = app.test_client().post(
        path, data=body, headers=merchant_headers(m.id, m.secret, "POST", path, body)
    )
    assert resp.status_code == 201, resp.get_json()


# --- `$` also matches before a trailing newline: identifiers are matched whole -----------------------


def test_a_tier_code_with_a_trailing_newline_is_a_validation_error(app: Any) -> None:
    tiers = [{"code": "T50\n", "face_value_fen": 5000, "min_spend_fen": 15000, "quantity": 1}]
    resp = _admin(app).post("/api/v1/programs", program_body(tiers=tiers))
    assert resp.status_code == 400 and problem_code(resp) == "validation_error", resp.get_json()


@pytest.mark.parametrize("terminal_id", ["till-1\n", "till-١"])
def test_a_terminal_id_with_a_trailing_newline_or_other_digits_is_a_validation_error(
    app: Any, terminal_id: str
) -> None:
    from cryptography.hazmat.primitives.asymmetric import ec

    from voucher_service.adapters.signing import public_jwk

    admin = _admin(app)
    merchant = admin.create_merchant("店", ("offline",))
    jwk = public_jwk(ec.generate_private_key(ec.SECP256R1()).public_key())
    resp = admin.post(
        f"/api/v1/merchants/{merchant.id}/terminals", {"terminal_id": terminal_id, "public_key": jwk}
    )
    assert resp.status_code == 400 and problem_code(resp) == "validation_error", resp.get_json()


def test_a_request_id_with_a_trailing_newline_is_replaced(app: Any) -> None:
    resp = app.test_client().get("/healthz", environ_overrides={"HTTP_X_REQUEST_ID": "abcdefgh1234\n"})
    assert resp.headers["X-Request-Id"] != "abcdefgh1234\n" and "\n" not in resp.headers["X-Request-Id"]
