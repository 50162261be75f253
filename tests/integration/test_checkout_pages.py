"""/checkout over HTTP on PostgreSQL and Redis: concurrent redeem requests of one checkout make one
redemption and all get its receipt; a disabled cashier's session ends; the page parses money exactly."""

from __future__ import annotations

import datetime as dt
import json
import re
import threading
from typing import Any

import pytest
from sqlalchemy import func, select

from tests.helpers import Admin, issue_test_voucher
from voucher_service.adapters.db.models import Redemption
from voucher_service.domain.clock import local_date
from voucher_service.domain.registry_generator import generate_registry, registry_csv
from voucher_service.services import registry, staff

PASSWORD = "till-password-01"
CSRF_RE = re.compile(r'<meta name="csrf-token" content="([0-9a-f]+)">')
KEY_RE = re.compile(r'name="key" value="(chk-[A-Za-z0-9_-]+)"')


def certified_gtin(ctx: Any) -> str:
    rows = generate_registry(seed=5)
    registry.import_products(ctx, registry_csv(rows), "test")
    today = local_date(dt.datetime.now(dt.UTC)).isoformat()
    return next(r[8].split("|")[0] for r in rows if r[11] == "active" and r[9] <= today <= r[10])


def logged_in_cashier(app: Any, merchant_id: str, username: str) -> tuple[Any, str]:
    """A test client logged in as a new cashier of the merchant, and its CSRF token."""
    staff.create_staff(app.extensions["voucher"], merchant_id, username, PASSWORD, "test")
    client = app.test_client()
    page = client.get("/checkout/login").get_data(as_text=True)
    csrf = CSRF_RE.search(page).group(1)  # type: ignore[union-attr]
    resp = client.post(
        "/checkout/login", data={"csrf_token": csrf, "username": username, "password": PASSWORD}
    )
    assert resp.status_code == 302, resp.get_data(as_text=True)[:500]
    home = client.get("/checkout/").get_data(as_text=True)
    return client, CSRF_RE.search(home).group(1)  # type: ignore[union-attr]


@pytest.mark.postgres
def test_concurrent_redeems_of_one_checkout_make_one_redemption_and_one_receipt(
    pg_app: Any, pg_admin: Admin
) -> None:
    ctx = pg_app.extensions["voucher"]
    gtin = certified_gtin(ctx)
    program = pg_admin.create_program()
    shop = pg_admin.create_merchant("百色芒果直营店", enrol_in=program["id"])
    client, csrf = logged_in_cashier(pg_app, shop.id, f"pg-till-{shop.id[-6:]}")
    key = KEY_RE.search(client.get("/checkout/").get_data(as_text=True)).group(1)  # type: ignore[union-attr]
    voucher_id, token = issue_test_voucher(ctx, program["id"], "T50", holder="pg-checkout")
    basket = json.dumps({"token": token, "lines": [{"gtin": gtin, "quantity": "2", "price": "80.00"}]})
    form = {"csrf_token": csrf, "key": key, "basket": basket}
    cookies = {c.key: c.value for c in client._cookies.values()}  # the same browser, many requests at once

    answers: list[Any] = []
    lock = threading.Lock()

    def click() -> None:
        c = pg_app.test_client()
        for name, value in cookies.items():
            c.set_cookie(name, value)
        resp = c.post("/checkout/redeem", data=form)
        with lock:
            answers.append((resp.status_code, resp.headers.get("Location")))

    threads = [threading.Thread(target=click) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    with ctx.sessions() as s:
        rows = list(s.scalars(select(Redemption).where(Redemption.voucher_id == voucher_id)))
    assert len(rows) == 1
    assert {a for a in answers} == {(303, f"/checkout/receipts/{rows[0].id}")}, answers
    assert rows[0].discount_fen == 5000 and rows[0].order_total_fen == 16000
    # Reopening the checkout shows the one receipt again.
    again = client.get("/checkout/")
    assert again.status_code == 302 and again.headers["Location"] == f"/checkout/receipts/{rows[0].id}"


def test_a_disabled_cashier_is_logged_out_at_the_next_request(app: Any, admin: Admin) -> None:
    shop = admin.create_merchant()
    client, _ = logged_in_cashier(app, shop.id, "soon-gone")
    assert client.get("/checkout/").status_code == 200
    ident = staff.authenticate(app.extensions["voucher"], "soon-gone", PASSWORD, client="t")
    staff.disable_staff(app.extensions["voucher"], shop.id, ident.staff_id, "test")
    resp = client.get("/checkout/")
    assert resp.status_code == 302 and "/checkout/login" in resp.headers["Location"]


def test_the_basket_is_read_exactly_and_bad_input_is_named(app: Any, admin: Admin) -> None:
    shop = admin.create_merchant()
    client, csrf = logged_in_cashier(app, shop.id, "exact-till")
    lines = [
        {"gtin": "6901234567892", "quantity": "3", "price": "0.10"},
        {"gtin": "６９０１２３４５６７８９２", "quantity": "１", "price": "５９.９０"},
        {"gtin": "69012345", "quantity": "0", "price": "1.005"},
        {"gtin": "٦٩٠١٢٣٤٥٦٧٨٩٢", "quantity": "²", "price": "١٠"},
    ]
    resp = client.post(
        "/checkout/basket",
        json={"token": "", "lines": lines},
        headers={"X-CSRF-Token": csrf, "X-Requested-With": "fetch"},
    )
    assert resp.status_code == 200
    html = resp.get_json()["html"]
    assert "3 × ¥0.10 = <strong>¥0.30</strong>" in html
    assert "1 × ¥59.90 = <strong>¥59.90</strong>" in html
    assert html.count('class="line-error"') == 5  # quantity+price of line 3, barcode+quantity+price of line 4
    assert 'id="order-total">¥60.20<' in html
    assert resp.get_json()["redeemable"] is False
    forged = client.post(
        "/checkout/basket", json={"token": "", "lines": lines}, headers={"X-CSRF-Token": "0" * 64}
    )
    assert forged.status_code == 403


def test_another_merchants_receipt_is_forbidden(app: Any, admin: Admin) -> None:
    ctx = app.extensions["voucher"]
    gtin = certified_gtin(ctx)
    program = admin.create_program()
    a = admin.create_merchant("A", enrol_in=program["id"])
    admin.create_merchant("B", enrol_in=program["id"])
    _, token = issue_test_voucher(ctx, program["id"], "T50", holder="iso")
    made = a.post(
        "/api/v1/redemptions",
        {
            "token": token,
            "order_id": "o-1",
            "channel": "offline",
            "items": [{"gtin": gtin, "quantity": 2, "unit_price_fen": 9000}],
        },
        headers={"Idempotency-Key": "k-1"},
    )
    rid = made.get_json()["redemption_id"]
    b_shop = admin.create_merchant("B2")
    client, _ = logged_in_cashier(app, b_shop.id, "other-till")
    assert client.get(f"/checkout/receipts/{rid}").status_code == 403
    assert rid not in client.get("/checkout/today").get_data(as_text=True)
    with ctx.sessions() as s:
        assert s.scalar(select(func.count()).select_from(Redemption)) == 1


def test_a_refused_redemption_says_why_and_the_corrected_basket_gets_a_new_key(
    app: Any, admin: Admin
) -> None:
    ctx = app.extensions["voucher"]
    gtin = certified_gtin(ctx)
    program = admin.create_program()
    shop = admin.create_merchant("A", enrol_in=program["id"])
    client, csrf = logged_in_cashier(app, shop.id, "refused-till")
    key = KEY_RE.search(client.get("/checkout/?lang=en").get_data(as_text=True)).group(1)  # type: ignore[union-attr]
    voucher_id, token = issue_test_voucher(ctx, program["id"], "T50", holder="refused")
    small = json.dumps({"token": token, "lines": [{"gtin": gtin, "quantity": "1", "price": "99.00"}]})
    resp = client.post("/checkout/redeem", data={"csrf_token": csrf, "key": key, "basket": small})
    page = resp.get_data(as_text=True)
    assert resp.status_code == 422 and "below the voucher&#39;s minimum spend" in page
    new_key = KEY_RE.search(page).group(1)  # type: ignore[union-attr]
    assert new_key != key and f'value="{new_key}"' in client.get("/checkout/").get_data(as_text=True)
    # The same refused form again is answered the same, from the store (nothing redeemed).
    again = client.post("/checkout/redeem", data={"csrf_token": csrf, "key": key, "basket": small})
    assert again.status_code == 422
    enough = json.dumps({"token": token, "lines": [{"gtin": gtin, "quantity": "2", "price": "99.00"}]})
    done = client.post("/checkout/redeem", data={"csrf_token": csrf, "key": new_key, "basket": enough})
    assert done.status_code == 303
    with ctx.sessions() as s:
        assert (
            s.scalar(select(func.count()).select_from(Redemption).where(Redemption.voucher_id == voucher_id))
            == 1
        )
