"""The pages' shared rules through the Flask test client: headers, cookies, CSRF, languages, rate
limits, logout revocation, sold-out tiers, money formatting."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.conftest import copy_sqlite_template, make_settings
from tests.helpers import sms_code
from voucher_service import create_app
from voucher_service.services import issuance
from voucher_service.services.consumers import phone_holder
from voucher_service.web.i18n import money

PHONE = "13800138000"


def csrf(resp) -> str:
    return re.search(r'name="csrf_token" value="([^"]+)"', resp.get_data(as_text=True)).group(1)


def log_in(client, ctx, phone=PHONE):
    token = csrf(client.get("/wallet/login"))
    assert client.post("/wallet/login/code", data={"phone": phone, "csrf_token": token}).status_code == 200
    resp = client.post(
        "/wallet/login",
        data={"phone": phone, "code": sms_code(ctx.settings.sms_outbox, phone), "csrf_token": token},
    )
    assert resp.status_code == 302 and resp.headers["Location"] == "/wallet/"
    return resp


def test_pages_send_the_security_headers_and_the_api_is_unchanged(client):
    resp = client.get("/")
    assert resp.status_code == 200 and resp.mimetype == "text/html"
    csp = resp.headers["Content-Security-Policy"]
    assert "frame-ancestors 'none'" in csp and "unsafe-inline" not in csp
    assert re.search(r"script-src 'self'( 'wasm-unsafe-eval')?;", csp)
    assert resp.headers["Referrer-Policy"] == "same-origin"
    assert resp.headers["X-Content-Type-Options"] == "nosniff"
    assert "no-store" in resp.headers["Cache-Control"]
    api = client.get("/api/v1/keys")
    assert "Content-Security-Policy" not in api.headers
    assert client.get("/no-such-page").mimetype == "application/problem+json"  # unknown URLs as before


def test_session_cookie_flags_and_logout_revokes_the_session(app, ctx):
    client = app.test_client()
    resp = log_in(client, ctx)
    cookie = next(h for h in resp.headers.getlist("Set-Cookie") if h.startswith("vs_session="))
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and "Max-Age=" in cookie
    assert "Secure" not in cookie  # only in production (below)
    stolen = client.get_cookie("vs_session").value
    assert client.get("/wallet/").status_code == 200
    token = csrf(client.get("/wallet/"))
    assert client.post("/wallet/logout", data={"csrf_token": token}).status_code == 302
    replay = app.test_client()
    replay.set_cookie("vs_session", stolen)
    resp = replay.get("/wallet/")
    assert resp.status_code == 302 and resp.headers["Location"].startswith("/wallet/login")


def test_cookies_are_secure_in_production(tmp_path, sqlite_template):
    url = copy_sqlite_template(sqlite_template, tmp_path / "v.sqlite3")
    settings = make_settings(tmp_path, url, env="production")
    app = create_app(settings, start_sealer=False)
    resp = app.test_client().get("/")
    assert all("Secure" in h for h in resp.headers.getlist("Set-Cookie") if h.startswith("vs_csrf="))
    app.extensions["voucher"].engine.dispose()


def test_a_post_without_the_csrf_token_is_refused_before_anything_happens(app, ctx):
    client = app.test_client()
    client.get("/wallet/login")
    resp = client.post("/wallet/login/code", data={"phone": PHONE})
    assert resp.status_code == 403 and "csrf_failed" in resp.get_data(as_text=True)
    outbox = Path(ctx.settings.sms_outbox)
    assert not outbox.exists() or PHONE not in outbox.read_text()  # no code was sent
    other = app.test_client()  # a token of another browser does not work either
    token = csrf(other.get("/wallet/login"))
    assert client.post("/wallet/login/code", data={"phone": PHONE, "csrf_token": token}).status_code == 403


def test_languages_default_to_chinese(client):
    assert '<html lang="zh-CN">' in client.get("/").get_data(as_text=True)
    assert "进行中的活动" in client.get("/").get_data(as_text=True)
    en = client.get("/", headers={"Accept-Language": "en-GB,en;q=0.8"}).get_data(as_text=True)
    assert '<html lang="en">' in en and "Open programmes" in en
    resp = client.get("/?lang=en", headers={"Accept-Language": "zh-CN"})
    assert "Open programmes" in resp.get_data(as_text=True)
    assert any(h.startswith("lang=en") for h in resp.headers.getlist("Set-Cookie"))
    assert "Product check" in client.get("/check", headers={"Accept-Language": "zh-CN"}).get_data(
        as_text=True
    )
    assert "产品查询" in client.get("/check?lang=zh").get_data(as_text=True)


def test_sms_codes_and_logins_are_rate_limited(app, ctx):
    client = app.test_client()
    token = csrf(client.get("/wallet/login"))
    for _ in range(ctx.settings.otp_sends_per_hour):
        assert (
            client.post("/wallet/login/code", data={"phone": PHONE, "csrf_token": token}).status_code == 200
        )
    resp = client.post("/wallet/login/code", data={"phone": PHONE, "csrf_token": token})
    assert resp.status_code == 429 and int(resp.headers["Retry-After"]) > 0
    assert "尝试次数过多" in resp.get_data(as_text=True)
    statuses = [
        client.post("/wallet/login", data={"phone": PHONE, "code": "000000", "csrf_token": token}).status_code
        for _ in range(12)
    ]
    assert statuses[0] == 401 and statuses[-1] == 429  # wrong codes, then the per-number login limit


def test_a_bad_phone_is_explained_and_sends_nothing(app, ctx):
    client = app.test_client()
    token = csrf(client.get("/wallet/login"))
    for phone in ("12345", "1380013800٠", "+1 4155550100"):
        resp = client.post("/wallet/login/code", data={"phone": phone, "csrf_token": token})
        assert resp.status_code == 400 and "请输入中国大陆手机号" in resp.get_data(as_text=True)


def test_a_fullwidth_phone_logs_in_as_the_same_resident(app, ctx, admin):
    program = admin.create_program()
    issuance.claim_voucher(ctx, program["id"], "T20", issuance.Claimant(phone_holder(ctx, PHONE), "test"))
    client = app.test_client()
    token = csrf(client.get("/wallet/login"))
    wide = "１３８００１３８０００"
    assert client.post("/wallet/login/code", data={"phone": wide, "csrf_token": token}).status_code == 200
    resp = client.post(
        "/wallet/login",
        data={"phone": wide, "code": sms_code(ctx.settings.sms_outbox, PHONE), "csrf_token": token},
        follow_redirects=True,
    )
    assert "减 ¥20.00" in resp.get_data(as_text=True)  # the voucher of 13800138000


def test_a_sold_out_tier_is_shown_and_refused(app, ctx, admin):
    program = admin.create_program(
        tiers=[
            {"code": "T50", "face_value_fen": 5000, "min_spend_fen": 15000, "quantity": 1},
            {"code": "T20", "face_value_fen": 2000, "min_spend_fen": 6000, "quantity": 5},
        ]
    )
    issuance.claim_voucher(
        ctx, program["id"], "T50", issuance.Claimant(phone_holder(ctx, "13900139000"), "test")
    )
    app.extensions.pop("voucher_open_programmes", None)
    client = app.test_client()
    log_in(client, ctx)
    page = client.get("/wallet/").get_data(as_text=True)
    assert "已领完" in page and "剩余 5 张" in page and 'data-tier="T50"' not in page
    token = csrf(client.get("/wallet/"))
    resp = client.post(
        "/wallet/claim",
        data={"program_id": program["id"], "tier": "T50", "csrf_token": token},
        follow_redirects=True,
    )
    assert "该消费券已领完" in resp.get_data(as_text=True)
    assert issuance.holder_vouchers(ctx, phone_holder(ctx, PHONE)) == []


def test_money_is_formatted_from_integer_fen_only():
    assert money(5000) == "¥50.00" and money(1) == "¥0.01" and money(123456789) == "¥1,234,567.89"
    with pytest.raises(TypeError):
        money(50.0)  # type: ignore[arg-type]


def test_a_claim_form_sent_twice_claims_once_and_shows_that_voucher(app, ctx, admin):
    program = admin.create_program()
    client = app.test_client()
    log_in(client, ctx)
    page = client.get("/wallet/")
    form = {
        "program_id": program["id"],
        "tier": "T50",
        "csrf_token": csrf(page),
        "form_id": re.search(r'name="form_id" value="([^"]+)"', page.get_data(as_text=True)).group(1),
    }
    first = client.post("/wallet/claim", data=form)
    again = client.post("/wallet/claim", data=form)  # a double click, or the page sent again
    assert first.status_code == again.status_code == 302
    assert first.headers["Location"] == again.headers["Location"]
    assert first.headers["Location"].startswith("/wallet/vouchers/")
    assert len(issuance.holder_vouchers(ctx, phone_holder(ctx, PHONE))) == 1
    other_tier = client.post("/wallet/claim", data={**form, "tier": "T20"})  # another button of that page
    assert other_tier.headers["Location"] != first.headers["Location"]
    assert len(issuance.holder_vouchers(ctx, phone_holder(ctx, PHONE))) == 2


def test_the_cached_status_of_an_open_voucher_page_follows_a_redemption_and_a_return_at_once(app, ctx, admin):
    """The status is served from the FastStore for 30 s, yet a redemption (and a whole return) shows at
    the next poll: the services bump the voucher's generation after they commit."""
    import datetime as dt

    from voucher_service.domain.clock import local_date
    from voucher_service.domain.registry_generator import generate_registry, registry_csv
    from voucher_service.services import registry

    rows = generate_registry(seed=7)
    today = local_date(dt.datetime.now(dt.UTC)).isoformat()
    ok = next(r for r in rows if r[11] == "active" and r[9] <= today <= r[10])
    registry.import_products(ctx, registry_csv([ok]), "test")
    program = admin.create_program()
    shop = admin.create_merchant(enrol_in=program["id"])
    client = app.test_client()
    log_in(client, ctx)
    out = issuance.claim_voucher(
        ctx, program["id"], "T50", issuance.Claimant(phone_holder(ctx, PHONE), "test")
    )
    url = f"/wallet/vouchers/{out['voucher_id']}/status"
    first = client.get(url)
    assert first.get_json()["status"] == "issued"
    assert client.get(url, headers={"If-None-Match": first.headers["ETag"]}).status_code == 304
    items = [{"gtin": ok[8].split("|")[0], "name": "x", "quantity": 2, "unit_price_fen": 9000}]
    redeemed = shop.post(
        "/api/v1/redemptions",
        {"token": out["token"], "order_id": "O-1", "channel": "offline", "items": items},
        headers={"Idempotency-Key": "k-1"},
    )
    assert redeemed.status_code == 201, redeemed.get_json()
    after = client.get(url, headers={"If-None-Match": first.headers["ETag"]})
    assert after.status_code == 200 and after.get_json() == {"status": "redeemed", "label": "已使用"}
    back = shop.post(
        f"/api/v1/redemptions/{redeemed.get_json()['redemption_id']}/reversals",
        {},
        headers={"Idempotency-Key": "k-2"},
    )
    assert back.status_code == 201, back.get_json()
    assert client.get(url).get_json()["status"] == "issued"  # returned in full: the voucher is usable again
