"""Faults under load: gunicorn (2 workers) on PostgreSQL behind a TCP proxy and a private Redis, while
claims and redemptions run (some retried with their Idempotency-Key, some replayed with their nonce),
Redis is flushed, stopped and started again empty, a worker is killed, PostgreSQL is cut off and its
connections are terminated. Afterwards: `voucher-admin audit` exits 0, no voucher is redeemed twice,
no replayed request succeeded, no Idempotency-Key is stuck, and every 5xx was a 503 with Retry-After.

Only what this test started is faulted: its own redis-server, its own proxy, its own database's
connections, its own gunicorn's worker. The shared PostgreSQL and Redis are never touched."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests
from sqlalchemy import create_engine, func, select, text
from sqlalchemy.engine import make_url

from benchmarks._server import gunicorn_server, server_log, settings_env
from tests.conftest import PG_ADMIN_URL, make_settings, prepare
from tests.faults import gunicorn_workers, private_redis, tcp_proxy
from tests.helpers import Admin, merchant_headers
from tests.redemption_support import checkout, item, make_world
from voucher_service import create_app
from voucher_service.adapters.db.models import Redemption, Voucher
from voucher_service.services.credentials import create_admin_token

LOAD_THREADS = 4
VOUCHERS = 80
FAULT_PLAN_S = 30.0


@dataclass
class Seen:
    """Every answer the load got, and what the checks afterwards need."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    answers: Counter[str] = field(default_factory=Counter)
    bad_5xx: list[str] = field(default_factory=list)
    replays_accepted: list[str] = field(default_factory=list)
    accepted: list[tuple[bytes, dict[str, str]]] = field(default_factory=list)  # to replay later
    keyed: dict[str, tuple[str, bytes]] = field(default_factory=dict)  # key -> (path, body)
    first_201: dict[str, bytes] = field(default_factory=dict)  # key -> the first 201 body seen
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
                self.bad_5xx.append(f"{what}: {resp.status_code} {resp.text[:200]}")


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
        return None  # a worker killed under the request, or the server restarting


def _terminate_backends(database: str) -> int:
    killer = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        with killer.connect() as conn:  # this test's own database, nobody else's
            return int(
                conn.execute(
                    text(
                        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                        "WHERE datname = :db AND pid <> pg_backend_pid()"
                    ),
                    {"db": database},
                ).scalar()
                or 0
            )
    finally:
        killer.dispose()


@pytest.mark.slow
@pytest.mark.postgres
def test_faults_under_load_keep_the_books_replay_protection_and_idempotency(
    tmp_path: Path, pg_database_factory: Any
) -> None:
    direct = pg_database_factory()
    url = make_url(direct)
    with (
        tcp_proxy(url.host or "127.0.0.1", url.port or 5432) as proxy,
        private_redis(tmp_path / "redis") as r,
    ):
        settings = make_settings(tmp_path, direct, r.url)
        prepare(settings).engine.dispose()
        app = create_app(settings)
        ctx = app.extensions["voucher"]
        admin = Admin(app.test_client(), create_admin_token(ctx, "faults"))
        world = make_world(
            admin,
            ctx,
            tiers=[
                {"code": "T50", "face_value_fen": 5000, "min_spend_fen": 15000, "quantity": VOUCHERS + 10},
                {"code": "T20", "face_value_fen": 2000, "min_spend_fen": 6000, "quantity": 2000},
            ],
        )
        platform = admin.create_merchant(
            "电商平台", channels=("online",), platform=True, enrol_in=world.program_id
        )
        vouchers = [world.voucher("T50") for _ in range(VOUCHERS)]
        claims_path = f"/api/v1/programs/{world.program_id}/claims"
        redeem_path = "/api/v1/redemptions"
        via_proxy = url.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
        env = settings_env(
            settings,
            VOUCHER_DATABASE_URL=via_proxy,
            VOUCHER_ENV="development",
            VOUCHER_CLAIM_RATE_PER_MINUTE="1000000",
        )
        seen = Seen()
        stop = threading.Event()
        pool = list(vouchers)
        pool_lock = threading.Lock()
        log_path = tmp_path / "gunicorn.log"

        with gunicorn_server(env, workers=2, threads=4, log_path=log_path) as base:

            def load(thread_no: int) -> None:
                http = requests.Session()
                rng = random.Random(thread_no)
                n = 0
                while not stop.is_set():
                    n += 1
                    kind = n % 3
                    if kind == 0:  # a redemption, retried with its key half the time
                        with pool_lock:
                            if not pool:
                                kind = 1
                            else:
                                _, token = pool.pop()
                    if kind == 0:
                        key = f"redeem-{thread_no}-{n}"
                        raw = json.dumps(checkout(token, [item(world.catalog.rice, 3, 5000)])).encode()
                        seen.keyed[key] = (redeem_path, raw)
                        for attempt in range(2 if rng.random() < 0.5 else 1):
                            resp = post(http, base, world.merchant, redeem_path, raw, key)
                            seen.note("redeem" if attempt == 0 else "redeem-retry", resp)
                            if resp is not None and resp.status_code == 201:
                                seen.first_201.setdefault(key, resp.content)
                    elif kind == 1:  # a claim without a key, whose exact request is replayed later
                        raw = json.dumps({"tier": "T20", "holder_ref": f"plain-{thread_no}-{n}"}).encode()
                        headers = merchant_headers(platform.id, platform.secret, "POST", claims_path, raw)
                        resp = post(http, base, platform, claims_path, raw, headers=headers)
                        seen.note("claim", resp)
                        if resp is not None and resp.status_code == 201:
                            with seen.lock:
                                seen.accepted.append((raw, headers))
                    else:  # a claim with a key, retried with it
                        key = f"claim-{thread_no}-{n}"
                        raw = json.dumps({"tier": "T20", "holder_ref": f"keyed-{thread_no}-{n}"}).encode()
                        seen.keyed[key] = (claims_path, raw)
                        for attempt in range(2):
                            resp = post(http, base, platform, claims_path, raw, key)
                            seen.note("keyed-claim" if attempt == 0 else "keyed-claim-retry", resp)
                            if resp is not None and resp.status_code == 201:
                                seen.first_201.setdefault(key, resp.content)
                    with seen.lock:
                        old = rng.choice(seen.accepted) if seen.accepted else None
                    if old is not None:  # replay an accepted request exactly: nonce, timestamp, signature
                        replay(http, *old)
                    time.sleep(0.01)

            def replay(http: requests.Session, raw: bytes, headers: dict[str, str]) -> None:
                resp = post(http, base, platform, claims_path, raw, headers=headers)
                seen.note("replay", resp)
                with seen.lock:
                    seen.replays += 1
                    if resp is not None and resp.status_code < 300:
                        seen.replays_accepted.append(resp.text[:200])

            def replay_all() -> None:
                http = requests.Session()
                with seen.lock:
                    every = list(seen.accepted)
                for old in every:
                    replay(http, *old)

            faults: list[str] = []

            def at(t0: float, offset: float) -> None:
                time.sleep(max(0.0, t0 + offset - time.monotonic()))

            def fault_plan() -> None:
                t0 = time.monotonic()
                at(t0, 3)
                r.flush()
                faults.append("redis flushed")
                at(t0, 4)
                replay_all()
                at(t0, 7)
                r.stop()
                faults.append("redis stopped")
                at(t0, 11)
                r.start()  # the same port, empty: no persistence
                faults.append("redis started empty")
                at(t0, 12)
                replay_all()
                at(t0, 15)
                workers = gunicorn_workers(base)
                assert workers, "no gunicorn worker found"
                os.kill(workers[0], signal.SIGKILL)
                faults.append(f"worker {workers[0]} killed")
                at(t0, 19)
                proxy.refuse()
                proxy.cut()
                faults.append("postgresql cut off")
                at(t0, 22)
                proxy.refuse(False)
                faults.append("postgresql back")
                at(t0, 25)
                faults.append(f"{_terminate_backends(url.database or '')} backends terminated")
                at(t0, 28)
                replay_all()
                at(t0, FAULT_PLAN_S)

            threads = [threading.Thread(target=load, args=(i,), daemon=True) for i in range(LOAD_THREADS)]
            for t in threads:
                t.start()
            try:
                fault_plan()
            finally:
                stop.set()
                for t in threads:
                    t.join(60)
            replay_all()

            # No key is stuck: a retry of every key gets its final answer within a few seconds (the
            # last database fault was 6 s ago; a lease of 30 s, as before, would still hold keys).
            http = requests.Session()
            unresolved = dict(seen.keyed)
            final: dict[str, requests.Response] = {}
            for _ in range(5):
                waits = [0]
                for key, (path, raw) in list(unresolved.items()):
                    merchant = world.merchant if path == redeem_path else platform
                    resp = post(http, base, merchant, path, raw, key)
                    seen.note("final-retry", resp)
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
            log_tail = server_log(log_path)

        summary = f"faults: {faults}\nanswers: {dict(seen.answers)}\nserver log:\n{log_tail}"
        assert not unresolved, f"keys still stuck: {sorted(unresolved)[:10]}\n{summary}"
        assert not seen.bad_5xx, f"5xx that were not 503 with Retry-After: {seen.bad_5xx[:5]}\n{summary}"
        assert not seen.replays_accepted, f"replays accepted: {seen.replays_accepted[:5]}\n{summary}"
        assert seen.replays > 20 and len(faults) == 7, summary
        for key, body in seen.first_201.items():  # a key's answer never changes once given
            assert final[key].status_code == 201 and final[key].content == body, (key, summary)
        assert any(k.startswith("redeem:201") for k in seen.answers), summary
        assert any(k.endswith(":503:service_unavailable") for k in seen.answers), summary

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
                .where(
                    Voucher.holder_hash.is_not(None), Voucher.holder_hash != ctx.box.keyed_hash("phone", "h1")
                )
                .group_by(Voucher.holder_hash)
                .having(func.count() > 1)
            ).all()
            assert doubled == [], f"a holder got two vouchers: {doubled}\n{summary}"
        ctx.engine.dispose()

        audit = subprocess.run(
            [str(Path(sys.executable).with_name("voucher-admin")), "audit"],
            env={
                **{k: v for k, v in os.environ.items() if not k.startswith("VOUCHER_")},
                **settings_env(settings),
            },
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert audit.returncode == 0, (audit.stdout[-2000:], audit.stderr[-2000:])
        print(summary.split("server log:")[0])  # what the load saw, for -s
