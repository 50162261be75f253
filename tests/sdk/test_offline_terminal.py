"""OfflineTerminal against a fake service whose offline routes judge records with the server's own code."""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from merchant_sdk import (
    APIConnectionError,
    MerchantNotEnrolled,
    NoEligibleItems,
    NotFound,
    OfflineLimitExceeded,
    OfflineRefreshRequired,
    OfflineTerminal,
    ProgramNotActive,
    ThresholdNotMet,
    TokenInvalid,
    ValidationError,
    VoucherAlreadyRedeemed,
    VoucherClient,
    VoucherExpired,
    VoucherRevoked,
)
from tests.sdk.conftest import MERCHANT_ID, SECRET
from tests.sdk.support import (
    GTIN_OIL,
    GTIN_OLD,
    GTIN_RICE,
    GTIN_SHENZHEN,
    GTIN_TEA,
    GTIN_UNKNOWN,
    FakeOfflineBackend,
    FakeService,
    TokenMaker,
    dead_port,
    fake_program,
    snapshot_product,
)
from tests.sdk.test_signing import assert_signed
from voucher_service.adapters import signing
from voucher_service.domain.money import split_proportionally
from voucher_service.domain.tokens import VoucherClaims
from voucher_service.services import offline_sync

START = dt.datetime(2026, 12, 5, 2, 0, tzinfo=dt.UTC).timestamp()
PRODUCTS = [
    snapshot_product("C-RICE", GTIN_RICE),
    snapshot_product("C-OIL", GTIN_OIL, certification_type="national", county_code="451228"),
    snapshot_product("C-TEA", GTIN_TEA, status="suspended"),
    snapshot_product("C-OLD", GTIN_OLD, valid_to="2021-12-31"),
    snapshot_product("C-SZ", GTIN_SHENZHEN, certification_type="shenzhen"),
]
BASKET = [{"gtin": GTIN_RICE, "quantity": 3, "unit_price_fen": 5990}]  # 17970 fen: meets T50's 15000


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@dataclass
class Till:
    terminal: OfflineTerminal
    backend: FakeOfflineBackend
    clock: Clock
    maker: TokenMaker
    fake: FakeService
    path: Path

    def claims(self, **kw: object) -> VoucherClaims:
        kw.setdefault("nbf", int(self.clock.now) - 3600)
        kw.setdefault("exp", int(self.clock.now) + 30 * 86_400)
        kw.setdefault("iat", int(self.clock.now) - 3600)
        return self.maker.claims(**kw)

    def token(self, **kw: object) -> str:
        return self.maker.token_for(self.claims(**kw))


@pytest.fixture
def till(fake: FakeService, maker: TokenMaker, client: VoucherClient, tmp_path: Path) -> Iterator[Till]:
    backend = FakeOfflineBackend(fake, maker, MERCHANT_ID, products=list(PRODUCTS)).install()
    clock = Clock(START)
    path = tmp_path / "till-1.sqlite3"
    terminal = OfflineTerminal(client, "till-1", str(path), clock=clock)
    yield Till(terminal, backend, clock, maker, fake, path)
    terminal.close()


def test_refresh_registers_the_terminal_key_once_with_a_signed_request(till: Till) -> None:
    till.terminal.refresh()
    till.terminal.refresh()
    posts = till.fake.requests_to(f"/api/v1/merchants/{MERCHANT_ID}/terminals")
    assert len(posts) == 1
    assert_signed(posts[0])
    assert posts[0].json() == {"terminal_id": "till-1", "public_key": till.terminal.public_jwk}
    assert signing.public_key_from_jwk(till.backend.terminals["till-1"]).public_numbers() == (
        till.terminal.journal.private_key().public_key().public_numbers()  # type: ignore[union-attr]
    )


def test_redeem_works_with_no_network_at_all(till: Till) -> None:
    till.terminal.refresh()
    till.fake.stop()
    token = till.token()
    r = till.terminal.redeem(token, BASKET, order_id="POS-1")
    assert (r.seq, r.discount_fen, r.eligible_total_fen, r.order_total_fen) == (1, 5000, 17970, 17970)
    assert r.redeemed_at == "2026-12-05T02:00:00Z" and r.terminal_id == "till-1"
    assert [ln.discount_share_fen for ln in r.lines] == [5000]
    assert till.terminal.verify_journal() == []


def test_never_refreshed_terminal_refuses(till: Till) -> None:
    with pytest.raises(OfflineRefreshRequired):
        till.terminal.redeem(till.token(), BASKET, order_id="POS-1")


def test_line_verdicts_follow_the_snapshot_and_the_programme_scope(till: Till) -> None:
    till.terminal.refresh()
    basket: list[dict[str, object]] = [
        {"gtin": GTIN_RICE, "quantity": 2, "unit_price_fen": 5000},
        {"gtin": GTIN_OIL, "quantity": 1, "unit_price_fen": 7001},
        {"gtin": GTIN_TEA, "quantity": 1, "unit_price_fen": 100},
        {"gtin": GTIN_OLD, "quantity": 1, "unit_price_fen": 100},
        {"gtin": GTIN_SHENZHEN, "quantity": 1, "unit_price_fen": 100},
        {"gtin": GTIN_UNKNOWN, "quantity": 1, "unit_price_fen": 100},
        {"gtin": "6901234567890", "quantity": 1, "unit_price_fen": 100},  # bad check digit
        {"gtin": None, "sku": "house-blend", "quantity": 1, "unit_price_fen": 100},
        {"gtin": GTIN_RICE[1:].rjust(14, "0"), "quantity": 1, "unit_price_fen": 3},  # digit lost
    ]
    r = till.terminal.redeem(till.token(), basket, order_id="POS-2")
    reasons = [(ln.eligible, ln.reason) for ln in r.lines]
    assert reasons == [
        (True, None),
        (True, None),
        (False, "certification_suspended"),
        (False, "certification_expired"),
        (False, "out_of_scope"),
        (False, "not_certified"),
        (False, "invalid_gtin"),
        (False, "sku_not_mapped"),
        (False, "invalid_gtin"),
    ]
    assert r.lines[0].certification_no == "C-RICE" and r.lines[1].county_code == "451228"
    assert r.eligible_total_fen == 17001 and r.order_total_fen == 17001 + 600 + 3
    shares = [ln.discount_share_fen for ln in r.lines]
    assert sum(shares) == 5000 and shares[:2] == split_proportionally(5000, [10000, 7001])


def test_gtin14_and_gtin13_forms_find_the_same_product(till: Till) -> None:
    till.terminal.refresh()
    as14 = "0" + GTIN_RICE
    r = till.terminal.redeem(
        till.token(), [{"gtin": as14, "quantity": 3, "unit_price_fen": 5990}], order_id="x"
    )
    assert r.lines[0].eligible and r.lines[0].certification_no == "C-RICE"


@pytest.mark.parametrize("totals", [[3333, 3333, 3334, 5000], [1, 1, 1, 14997], [7777, 7777, 7777]])
def test_the_discount_split_is_largest_remainder_and_sums_exactly(till: Till, totals: list[int]) -> None:
    till.terminal.refresh()
    basket = [{"gtin": GTIN_RICE, "quantity": 1, "unit_price_fen": t} for t in totals]
    r = till.terminal.redeem(till.token(), basket, order_id="split")
    shares = [ln.discount_share_fen for ln in r.lines]
    assert shares == split_proportionally(5000, totals) and sum(shares) == 5000


def test_below_the_minimum_spend_and_nothing_eligible_are_refused_and_not_journaled(till: Till) -> None:
    till.terminal.refresh()
    with pytest.raises(ThresholdNotMet) as info:
        till.terminal.redeem(
            till.token(), [{"gtin": GTIN_RICE, "quantity": 1, "unit_price_fen": 14999}], order_id="a"
        )
    assert info.value.lines[0]["eligible"] is True and info.value.lines[0]["line_total_fen"] == 14999
    with pytest.raises(NoEligibleItems):
        till.terminal.redeem(
            till.token(), [{"gtin": GTIN_TEA, "quantity": 9, "unit_price_fen": 9000}], order_id="b"
        )
    assert till.terminal.records() == []


def test_revoked_and_already_journaled_vouchers_are_refused(till: Till) -> None:
    revoked = till.claims()
    till.backend.revoked.append(revoked.voucher_id)
    till.terminal.refresh()
    with pytest.raises(VoucherRevoked):
        till.terminal.redeem(till.maker.token_for(revoked), BASKET, order_id="r")
    token = till.token()
    till.terminal.redeem(token, BASKET, order_id="once")
    with pytest.raises(VoucherAlreadyRedeemed):
        till.terminal.redeem(token, BASKET, order_id="twice")
    assert len(till.terminal.records()) == 1


def test_the_offline_cap_refuses_beyond_it_and_a_sync_lifts_it(till: Till) -> None:
    till.terminal.refresh()  # cap 20000 fen; each T50 is 5000
    for i in range(4):
        till.terminal.redeem(till.token(), BASKET, order_id=f"cap-{i}")  # the 4th reaches the cap exactly
    with pytest.raises(OfflineLimitExceeded) as info:
        till.terminal.redeem(till.token(), BASKET, order_id="cap-4")
    assert info.value.code == "offline_limit_exceeded" and info.value.body["unsynced_fen"] == 20_000
    assert len(till.terminal.records()) == 4
    assert till.terminal.sync().ok
    assert till.terminal.redeem(till.token(), BASKET, order_id="cap-5").seq == 5


def test_the_cap_counts_each_programme_separately(till: Till) -> None:
    till.backend.programs.append(fake_program("prog-2"))
    till.backend.install()
    till.terminal.refresh()
    for i in range(4):
        till.terminal.redeem(till.token(), BASKET, order_id=f"p1-{i}")
    assert till.terminal.redeem(till.token(program_id="prog-2"), BASKET, order_id="p2").discount_fen == 5000


def test_offline_hours_are_counted_from_the_last_refresh(till: Till) -> None:
    till.terminal.refresh()
    till.clock.now += 24 * 3600
    till.terminal.redeem(till.token(), BASKET, order_id="at-24h")
    till.clock.now += 1
    with pytest.raises(OfflineRefreshRequired):
        till.terminal.redeem(till.token(), BASKET, order_id="after-24h")
    till.terminal.refresh()
    till.terminal.redeem(till.token(), BASKET, order_id="refreshed")


def test_programme_rules_apply_offline(till: Till) -> None:
    till.backend.programs[:] = [
        fake_program("prog-1", channels=["online"]),
        fake_program("prog-s", status="suspended"),
        fake_program("prog-late", starts_at="2027-01-01T00:00:00Z"),
    ]
    till.backend.install()
    till.terminal.refresh()
    with pytest.raises(MerchantNotEnrolled):
        till.terminal.redeem(till.token(), BASKET, order_id="online-only")
    with pytest.raises(MerchantNotEnrolled):
        till.terminal.redeem(till.token(program_id="prog-unknown"), BASKET, order_id="not-enrolled")
    with pytest.raises(ProgramNotActive):
        till.terminal.redeem(till.token(program_id="prog-s"), BASKET, order_id="suspended")
    with pytest.raises(ProgramNotActive):
        till.terminal.redeem(till.token(program_id="prog-late"), BASKET, order_id="not-started")


def test_certification_dates_are_days_in_the_programmes_time_zone(till: Till) -> None:
    till.backend.products.append(snapshot_product("C-LAST", GTIN_UNKNOWN, valid_to="2026-12-05"))
    till.terminal.refresh()
    basket = [{"gtin": GTIN_UNKNOWN, "quantity": 1, "unit_price_fen": 20000}]
    till.clock.now = dt.datetime(2026, 12, 5, 15, 59, 59, tzinfo=dt.UTC).timestamp()  # 23:59:59 in Shanghai
    assert till.terminal.redeem(till.token(), basket, order_id="last-day").lines[0].eligible
    till.clock.now += 1  # midnight in Shanghai: 2026-12-06
    with pytest.raises(NoEligibleItems) as info:
        till.terminal.redeem(till.token(), basket, order_id="day-after")
    assert info.value.body["lines"][0]["reason"] == "certification_expired"


def test_token_checks_happen_offline(till: Till) -> None:
    till.terminal.refresh()
    till.fake.stop()
    with pytest.raises(VoucherExpired):
        till.terminal.redeem(till.token(exp=int(till.clock.now) - 1), BASKET, order_id="exp")
    with pytest.raises(TokenInvalid):
        till.terminal.redeem(TokenMaker().token(), BASKET, order_id="stranger")


def test_bad_baskets_are_validation_errors(till: Till) -> None:
    till.terminal.refresh()
    for basket in (
        [],
        [{"gtin": GTIN_RICE, "quantity": 0, "unit_price_fen": 1}],
        [{"gtin": None, "quantity": 1, "unit_price_fen": 1}],
        [{"gtin": "1" * 15, "quantity": 1, "unit_price_fen": 1}],
    ):
        with pytest.raises(ValidationError):
            till.terminal.redeem(till.token(), basket, order_id="bad")


def test_sync_uploads_once_and_keeps_the_verdicts(till: Till) -> None:
    till.terminal.refresh()
    for i in range(3):
        till.terminal.redeem(till.token(), BASKET, order_id=f"s-{i}")
    report = till.terminal.sync()
    assert [(r.seq, r.status) for r in report.results] == [(1, "accepted"), (2, "accepted"), (3, "accepted")]
    assert report.ok and report.pending == 0
    upload = till.fake.requests_to("/api/v1/offline-redemptions")[0]
    assert_signed(upload)
    assert [r.redemption_id for r in till.terminal.records()] == [r.redemption_id for r in report.results]
    again = till.terminal.sync()
    assert again.results == [] and len(till.fake.requests_to("/api/v1/offline-redemptions")) == 1


def test_records_whose_answer_was_lost_are_sent_again_and_come_back_duplicate(till: Till) -> None:
    till.terminal.refresh()
    till.terminal.redeem(till.token(), BASKET, order_id="lost-1")
    till.terminal.redeem(till.token(), BASKET, order_id="lost-2")
    till.backend.lose_next_sync_answer = True
    till.terminal.client.max_retries = 0
    with pytest.raises(APIConnectionError):
        till.terminal.sync()
    assert len(till.backend.stored) == 2  # the service did record them
    assert [r.status for r in till.terminal.records()] == [None, None]
    till.terminal.redeem(till.token(), BASKET, order_id="after")
    report = till.terminal.sync()
    assert [(r.seq, r.status) for r in report.results] == [
        (1, "duplicate"),
        (2, "duplicate"),
        (3, "accepted"),
    ]
    stored_ids = [till.backend.stored[("till-1", s)]["redemption_id"] for s in (1, 2)]
    assert [r.redemption_id for r in report.results[:2]] == stored_ids


def test_an_unregistered_terminal_registers_again_at_the_next_refresh(till: Till) -> None:
    till.terminal.refresh()
    till.terminal.redeem(till.token(), BASKET, order_id="x")
    till.backend.terminals.clear()  # the service forgot the terminal
    with pytest.raises(NotFound):
        till.terminal.sync()
    till.terminal.refresh()
    assert "till-1" in till.backend.terminals
    assert till.terminal.sync().ok


def _tamper(path: Path, sql: str, *params: object) -> None:
    with sqlite3.connect(path) as db:
        db.execute(sql, params)


def test_an_altered_record_is_detected_locally_and_rejected_with_all_after_it(till: Till) -> None:
    till.terminal.refresh()
    for i in range(3):
        till.terminal.redeem(till.token(), BASKET, order_id=f"t-{i}")
    row = sqlite3.connect(till.path).execute("SELECT payload FROM records WHERE seq = 2").fetchone()[0]
    payload = json.loads(row)
    payload["discount_fen"] = 50_000
    _tamper(till.path, "UPDATE records SET payload = ? WHERE seq = 2", json.dumps(payload))
    problems = till.terminal.verify_journal()
    assert any("record 2 was altered" in p for p in problems)
    report = till.terminal.sync()
    assert [(r.seq, r.status, r.code) for r in report.results] == [
        (1, "accepted", None),
        (2, "rejected", offline_sync.BAD_HASH),
        (3, "rejected", offline_sync.AFTER_REJECTED),
    ]
    assert not report.ok


def test_a_rehashed_forgery_still_fails_the_signature(till: Till) -> None:
    import hashlib

    from merchant_sdk._journal import chained_bytes

    till.terminal.refresh()
    till.terminal.redeem(till.token(), BASKET, order_id="f-1")
    rec = till.terminal.records()[0]
    payload = dict(rec.payload, order_id="forged")
    new_hash = hashlib.sha256(chained_bytes(rec.prev_hash, 1, payload)).hexdigest()
    _tamper(
        till.path,
        "UPDATE records SET payload = ?, record_hash = ? WHERE seq = 1",
        json.dumps(payload),
        new_hash,
    )
    assert any("not signed by this terminal" in p for p in till.terminal.verify_journal())
    assert till.terminal.sync().results[0].code == offline_sync.BAD_SIGNATURE


def test_a_deleted_record_breaks_the_chain(till: Till) -> None:
    till.terminal.refresh()
    for i in range(3):
        till.terminal.redeem(till.token(), BASKET, order_id=f"d-{i}")
    _tamper(till.path, "DELETE FROM records WHERE seq = 2")
    assert any("missing" in p for p in till.terminal.verify_journal())
    report = till.terminal.sync()
    assert [(r.seq, r.status, r.code) for r in report.results] == [
        (1, "accepted", None),
        (3, "rejected", offline_sync.CHAIN_BROKEN),
    ]


def test_the_terminal_key_is_kept_in_the_journal(till: Till, client: VoucherClient, tmp_path: Path) -> None:
    again = OfflineTerminal(client, "till-1", str(till.path))
    assert again.public_jwk == till.terminal.public_jwk
    again.close()
    with pytest.raises(ValueError):
        OfflineTerminal(client, "till-1", str(till.path), private_key=signing.generate_private_key())
    with pytest.raises(ValueError):
        OfflineTerminal(client, "till-2", str(till.path))  # one journal belongs to one terminal
    mine = signing.generate_private_key()
    given = OfflineTerminal(client, "till-9", str(tmp_path / "given.sqlite3"), private_key=mine)
    assert given.public_jwk == signing.public_jwk(mine.public_key())
    given.close()
    assert (till.path.stat().st_mode & 0o777) == 0o600


def test_two_terminal_objects_on_one_file_keep_one_chain(till: Till, client: VoucherClient) -> None:
    till.terminal.refresh()
    till.backend.programs[0]["offline"]["max_offline_fen_per_terminal"] = 10**9
    till.terminal.refresh()
    other = OfflineTerminal(client, "till-1", str(till.path), clock=till.clock)
    tokens = [till.token() for _ in range(20)]
    errors: list[BaseException] = []

    def run(t: OfflineTerminal, mine: list[str]) -> None:
        try:
            for i, tok in enumerate(mine):
                t.redeem(tok, BASKET, order_id=f"{id(t)}-{i}")
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [
        threading.Thread(target=run, args=(t, tokens[i::2])) for i, t in enumerate((till.terminal, other))
    ]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    other.close()
    assert errors == []
    assert [r.seq for r in till.terminal.records()] == list(range(1, 21))
    assert till.terminal.verify_journal() == []


CHILD = """
import json, sys
from merchant_sdk import OfflineTerminal, VoucherClient
base_url, journal, token = sys.argv[1:4]
client = VoucherClient(base_url, {merchant!r}, "not-needed-offline", max_retries=0, timeout=1)
terminal = OfflineTerminal(client, "till-1", journal, clock=lambda: {now!r})
basket = [{{"gtin": {gtin!r}, "quantity": 3, "unit_price_fen": 5990}}]
r = terminal.redeem(token, basket, order_id="after-restart")
print(json.dumps({{"seq": r.seq, "discount_fen": r.discount_fen, "kid": terminal.public_jwk["kid"]}}))
"""


def test_a_restarted_till_works_offline_from_its_journal_alone(till: Till) -> None:
    till.terminal.refresh()
    till.terminal.redeem(till.token(), BASKET, order_id="before-restart")
    kid = till.terminal.public_jwk["kid"]
    till.terminal.close()
    till.fake.stop()
    code = CHILD.format(merchant=MERCHANT_ID, now=till.clock.now + 3600, gtin=GTIN_RICE)
    offline_url = f"http://127.0.0.1:{dead_port()}"
    out = subprocess.run(
        [sys.executable, "-c", code, offline_url, str(till.path), till.token()],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=Path(__file__).parents[2],
    )
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == {"seq": 2, "discount_fen": 5000, "kid": kid}
    # Back in this process, online again: the chain is whole and the service accepts both records.
    revived = FakeService()
    try:
        backend = FakeOfflineBackend(
            revived, till.maker, MERCHANT_ID, products=list(PRODUCTS), terminals=dict(till.backend.terminals)
        ).install()
        client = VoucherClient(revived.base_url, MERCHANT_ID, SECRET)
        terminal = OfflineTerminal(client, "till-1", str(till.path), clock=till.clock)
        assert terminal.verify_journal() == []
        assert [(r.seq, r.status) for r in terminal.sync().results] == [(1, "accepted"), (2, "accepted")]
        assert len(backend.stored) == 2
        terminal.close()
        client.close()
    finally:
        revived.stop()
