"""A mixed load for the scale tests (claims with and without Idempotency-Keys, redemptions retried with
their key, exact replays of accepted requests) spread over one or more servers, and the checks that
must hold afterwards whatever happened meanwhile: no 5xx but 503 with Retry-After, no replay accepted,
no voucher redeemed twice, no holder over the per-person limit, no tier issued past its quantity, a
key's answer never changing, and `voucher-admin audit` (the budget identity) exiting 0.

The same checks as tests/e2e/test_faults.py, for loads whose servers, Redis or pooler change under them.
"""

from __future__ import annotations

import itertools
import json
import os
import random
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests
from sqlalchemy import func, select

from benchmarks._server import settings_env
from tests.helpers import Admin, MerchantCaller, merchant_headers
from tests.redemption_support import World, checkout, item, make_world
from voucher_service.adapters.db.models import Redemption, Voucher
from voucher_service.config import Settings

CLAIMS_PATH = "/api/v1/programs/{program_id}/claims"
REDEEM_PATH = "/api/v1/redemptions"
T20_QUANTITY = 2000


@dataclass
class Seen:
    """Every answer the load got, and what the checks afterwards need."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    answers: Counter[str] = field(default_factory=Counter)
    bad_5xx: list[str] = field(default_factory=list)
    replays_accepted: list[str] = field(default_factory=list)
    accepted: list[tuple[bytes, dict[str, str]]] = field(default_factory=list)
    keyed: dict[str, tuple[str, bytes]] = field(default_factory=dict)  # key -> (path, body)
    first_201: dict[str, bytes] = field(default_factory=dict)
    replays: int = 0

    def note(self, what: str, resp: requests.Response | None) -> None:
        with self.lock:
            if resp is None:
                self.answers[f"{what}:connection-error"] += 1
                return
            code = ""
            if resp.headers.get("Content-Type", "").startswith("application/problem+json"):
                code = resp.json().get("code", "")
            self.answers[f"{what}:{resp.status_code}:{code}"] += 1
            if resp.status_code >= 500 and not (
                resp.status_code == 503 and code == "service_unavailable" and resp.headers.get("Retry-After")
            ):
                self.bad_5xx.append(f"{what}: {resp.status_code} {resp.text[:300]}")

    def count(self, prefix: str) -> int:
        with self.lock:
            return sum(n for k, n in self.answers.items() if k.startswith(prefix))


@dataclass
class Shop:
    """The programme, its redeeming merchant and claiming platform, and vouchers ready to redeem."""

    world: World
    platform: MerchantCaller
    tokens: list[str]

    @property
    def claims_path(self) -> str:
        return CLAIMS_PATH.format(program_id=self.world.program_id)


def open_shop(admin: Admin, ctx: Any, vouchers: int) -> Shop:
    """A programme with `vouchers` T50 issued for redemption and T20 left to claim."""
    world = make_world(
        admin,
        ctx,
        tiers=[
            {"code": "T50", "face_value_fen": 5000, "min_spend_fen": 15000, "quantity": vouchers + 10},
            {"code": "T20", "face_value_fen": 2000, "min_spend_fen": 6000, "quantity": T20_QUANTITY},
        ],
    )
    platform = admin.create_merchant(
        "电商平台", channels=("online",), platform=True, enrol_in=world.program_id
    )
    tokens = [world.voucher("T50")[1] for _ in range(vouchers)]
    return Shop(world, platform, tokens)


def post(
    http: requests.Session,
    base: str,
    merchant: Any,
    path: str,
    raw: bytes,
    key: str | None = None,
    headers: dict[str, str] | None = None,
) -> requests.Response | None:
    h = headers or merchant_headers(merchant.id, merchant.secret, "POST", path, raw)
    if key is not None:
        h = {**h, "Idempotency-Key": key}
    try:
        return http.post(base + path, data=raw, headers=h, timeout=30)
    except requests.RequestException:
        return None


class MixedLoad:
    """Threads sending claims, keyed claims, redemptions and replays, round-robin over `bases`."""

    def __init__(self, shop: Shop, bases: list[str], threads: int = 4, pause_s: float = 0.01) -> None:
        self.shop = shop
        self.bases = bases
        self.seen = Seen()
        self.stop = threading.Event()
        self.pause_s = pause_s
        self._pool = list(shop.tokens)
        self._pool_lock = threading.Lock()
        self._threads = [threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(threads)]

    @property
    def vouchers_left(self) -> int:
        """Vouchers not yet sent for redemption."""
        with self._pool_lock:
            return len(self._pool)

    def __enter__(self) -> MixedLoad:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for t in self._threads:
            t.join(90)

    def _run(self, no: int) -> None:
        http = requests.Session()
        rng = random.Random(no)
        shop, seen = self.shop, self.seen
        bases = itertools.cycle(self.bases[no % len(self.bases) :] + self.bases[: no % len(self.bases)])
        for n in itertools.count(1):
            if self.stop.is_set():
                return
            base = next(bases)
            kind = n % 3
            token = None
            if kind == 0:
                with self._pool_lock:
                    token = self._pool.pop() if self._pool else None
                kind = 0 if token else 1
            if kind == 0 and token:  # a redemption, retried with its key (on another server) half the time
                key = f"redeem-{no}-{n}"
                raw = json.dumps(checkout(token, [item(shop.world.catalog.rice, 3, 5000)])).encode()
                seen.keyed[key] = (REDEEM_PATH, raw)
                for attempt in range(2 if rng.random() < 0.5 else 1):
                    resp = post(
                        http,
                        base if attempt == 0 else next(bases),
                        shop.world.merchant,
                        REDEEM_PATH,
                        raw,
                        key,
                    )
                    seen.note("redeem" if attempt == 0 else "redeem-retry", resp)
                    if resp is not None and resp.status_code == 201:
                        with seen.lock:
                            seen.first_201.setdefault(key, resp.content)
            elif kind == 1:  # a claim without a key, replayed exactly later
                raw = json.dumps({"tier": "T20", "holder_ref": f"plain-{no}-{n}"}).encode()
                headers = merchant_headers(
                    shop.platform.id, shop.platform.secret, "POST", shop.claims_path, raw
                )
                resp = post(http, base, shop.platform, shop.claims_path, raw, headers=headers)
                seen.note("claim", resp)
                if resp is not None and resp.status_code == 201:
                    with seen.lock:
                        seen.accepted.append((raw, headers))
            else:  # a claim with a key, retried with it
                key = f"claim-{no}-{n}"
                raw = json.dumps({"tier": "T20", "holder_ref": f"keyed-{no}-{n}"}).encode()
                seen.keyed[key] = (shop.claims_path, raw)
                for attempt in range(2):
                    resp = post(
                        http, base if attempt == 0 else next(bases), shop.platform, shop.claims_path, raw, key
                    )
                    seen.note("keyed-claim" if attempt == 0 else "keyed-claim-retry", resp)
                    if resp is not None and resp.status_code == 201:
                        with seen.lock:
                            seen.first_201.setdefault(key, resp.content)
            with seen.lock:
                old = rng.choice(seen.accepted) if seen.accepted else None
            if old is not None:
                self.replay(http, next(bases), *old)
            time.sleep(self.pause_s)

    def replay(self, http: requests.Session, base: str, raw: bytes, headers: dict[str, str]) -> None:
        """Send an accepted request again exactly (nonce, timestamp, signature): it must be refused."""
        resp = post(http, base, self.shop.platform, self.shop.claims_path, raw, headers=headers)
        self.seen.note("replay", resp)
        with self.seen.lock:
            self.seen.replays += 1
            if resp is not None and resp.status_code < 300:
                self.seen.replays_accepted.append(resp.text[:200])

    def replay_all(self) -> None:
        http = requests.Session()
        with self.seen.lock:
            every = list(self.seen.accepted)
        for i, old in enumerate(every):
            self.replay(http, self.bases[i % len(self.bases)], *old)

    def settle_keys(self, rounds: int = 8) -> dict[str, requests.Response]:
        """Retry every key until it has its final answer; return key -> that answer (unresolved: absent)."""
        http = requests.Session()
        unresolved = dict(self.seen.keyed)
        final: dict[str, requests.Response] = {}
        for r in range(rounds):
            waits = [0]
            for i, (key, (path, raw)) in enumerate(list(unresolved.items())):
                merchant = self.shop.world.merchant if path == REDEEM_PATH else self.shop.platform
                resp = post(http, self.bases[(i + r) % len(self.bases)], merchant, path, raw, key)
                self.seen.note("final-retry", resp)
                if (
                    resp is None
                    or resp.status_code >= 500
                    or (resp.status_code == 409 and resp.json().get("code") == "idempotency_in_progress")
                ):
                    waits.append(int(resp.headers.get("Retry-After", "1")) if resp is not None else 1)
                    continue
                final[key] = resp
                del unresolved[key]
            if not unresolved:
                break
            time.sleep(min(max(waits), 2))
        return final

    def summary(self) -> str:
        return f"answers: {dict(sorted(self.seen.answers.items()))}"


def check_books(
    load: MixedLoad, settings: Settings, ctx: Any, final: dict[str, requests.Response], note: str
) -> None:
    """Every invariant the scale tests share (see the module docstring)."""
    seen = load.seen
    summary = f"{note}\n{load.summary()}"
    assert set(final) == set(seen.keyed), (
        f"keys still stuck: {sorted(set(seen.keyed) - set(final))[:10]}\n{summary}"
    )
    assert not seen.bad_5xx, f"5xx that were not 503 with Retry-After: {seen.bad_5xx[:5]}\n{summary}"
    assert not seen.replays_accepted, f"replays accepted: {seen.replays_accepted[:5]}\n{summary}"
    for key, body in seen.first_201.items():  # a key's answer never changes once given
        assert final[key].status_code == 201 and final[key].content == body, (key, summary)
    assert seen.count("redeem:201") and seen.count("claim:201"), summary
    program_id = load.shop.world.program_id
    with ctx.sessions() as s:
        twice = s.execute(
            select(Redemption.voucher_id, func.count())
            .group_by(Redemption.voucher_id)
            .having(func.count() > 1)
        ).all()
        assert twice == [], f"vouchers redeemed twice: {twice}"
        # Every platform claim names its own holder: two vouchers for one holder means a replay won.
        doubled = s.execute(
            select(Voucher.holder_hash, func.count())
            .where(Voucher.program_id == program_id, Voucher.holder_hash.is_not(None))
            .where(Voucher.holder_hash != ctx.box.keyed_hash("phone", "h1"))
            .group_by(Voucher.holder_hash)
            .having(func.count() > 1)
        ).all()
        assert doubled == [], f"a holder got two vouchers: {doubled}\n{summary}"
        issued_t20 = s.scalar(
            select(func.count()).where(
                Voucher.program_id == program_id, Voucher.tier_code == "T20", Voucher.holder_hash.is_not(None)
            )
        )
        assert issued_t20 is not None and issued_t20 <= T20_QUANTITY
        redeemed = s.scalar(
            select(func.count()).select_from(Redemption).where(Redemption.program_id == program_id)
        )
        # Each redemption key carries its own voucher: exactly one redemption per key answered 201.
        answered = sum(1 for k, r in final.items() if k.startswith("redeem-") and r.status_code == 201)
        assert redeemed == answered, (redeemed, answered, summary)
    audit = subprocess.run(
        [str(Path(sys.executable).with_name("voucher-admin")), "audit"],
        env={
            **{k: v for k, v in os.environ.items() if not k.startswith("VOUCHER_")},
            **settings_env(settings),
        },
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert audit.returncode == 0, (audit.stdout[-2000:], audit.stderr[-2000:], summary)
