#!/usr/bin/env python3
"""The seed's programme at its own scale, first claim to last settlement, on this machine.

10,000,000 yuan: 100,000 T50 (50 off 150) and 250,000 T20 (20 off 60) vouchers, 500,000 residents
and two e-commerce platforms, 300 shops with one till each (at --scale 1). The service runs for real:
gunicorn (`benchmarks/_server.py`) on its own PostgreSQL database and its own Redis server, driven
through its HTTP API by pre-signed requests over many keep-alive connections.

Phases (each printed with its time, its rate, the CPU it cost in gunicorn, PostgreSQL, Redis and the
client, and the machine's load and steal):
  setup        database, registry (3,552 products), programme, merchants, activation (pool minting)
  logins       the wallet residents (0.2 %) log in by SMS one-time code
  rush T50     every resident tries T50 once (platform A or B with the resident's phone, or the wallet)
  rush T20     every resident tries T20, T50 winners twice (the second over the per-person limit)
  tills        every shop's till (merchant_sdk.OfflineTerminal) refreshes, then goes offline and
               redeems its share, including vouchers that will be spent elsewhere too (double spends)
  redeem       online redemptions at shops and platforms (3-line baskets)
  returns      3 % of them: two thirds in full (clawed back), one third the uncertified line only
  sync         the tills come back and sync late: the double spends come back `conflict`
  expire       32 days later: every unspent voucher expires and is recycled to the pools
  statements   each merchant's file: native CSV (shops), WeChat Pay 交易账单 (platform A), Alipay
               业务明细 zip (platform B); three shops' files carry deliberate errors
  reconcile    every merchant, then settle every run
  audit        `voucher-admin audit --program P` (a subprocess), then the money invariants
Then the per-operation costs and every table's and index's bytes per voucher (docs/capacity.md).

    python benchmarks/seed_scale.py [--scale 1] [--workers 2] [--threads 8] [--connections 64]

Exit 0 when every invariant holds; 1 otherwise. The last line is JSON with the figures.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime as dt
import json
import os
import platform as host_platform
import random
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sqlalchemy import create_engine, text  # noqa: E402

from benchmarks import _seed_books as books  # noqa: E402
from benchmarks._seed_client import (  # noqa: E402
    CpuMeter,
    MachineMeter,
    Outcome,
    bearer_request,
    children,
    percentiles,
    run_requests,
    run_signed_batches,
    signed_request,
)
from benchmarks._server import PG_ADMIN_URL, gunicorn_server, settings_env  # noqa: E402
from merchant_sdk import OfflineTerminal, VoucherClient, VoucherError  # noqa: E402
from merchant_sdk._errors import OfflineLimitExceeded  # noqa: E402
from voucher_service.adapters.db.migrate import upgrade  # noqa: E402
from voucher_service.config import Settings  # noqa: E402
from voucher_service.domain.gtin import with_check_digit  # noqa: E402
from voucher_service.domain.registry_generator import generate_registry, registry_csv  # noqa: E402
from voucher_service.services import merchants, programs, registry  # noqa: E402
from voucher_service.services.context import ServiceContext  # noqa: E402
from voucher_service.services.demo import demo_spec  # noqa: E402
from voucher_service.services.keys import ensure_signing_keys  # noqa: E402

DB_STATS = ("commits", "rollbacks", "inserted", "updated", "deleted", "fetched", "blks_read", "blks_hit")
GUNICORN_PORTS = range(8900, 8940)
REDIS_PORTS = range(8940, 8950)
UNCERTIFIED_GTIN = with_check_digit("697000000000")
RETURN_SHARE, OFFLINE_SHARE, UNSPENT_SHARE = 0.03, 0.08, 0.20
DOUBLE_SPEND_SHARE = 0.004  # of the claimed vouchers; half till + online, half two tills
TILL_VOUCHERS_MAX = 90  # ≤ 500,000 fen of T50 between syncs (the programme's offline limit)


@dataclass(frozen=True)
class Plan:
    """The programme's shape at a scale."""

    scale: float
    residents: int
    t50: int
    t20: int
    shops: int
    wallet: int

    @classmethod
    def at(cls, scale: float) -> Plan:
        residents = max(50, round(500_000 * scale))
        return cls(
            scale=scale,
            residents=residents,
            t50=max(10, round(100_000 * scale)),
            t20=max(25, round(250_000 * scale)),
            shops=max(3, round(300 * scale)),
            wallet=max(5, residents // 500),
        )

    @property
    def budget_fen(self) -> int:
        return self.t50 * 5000 + self.t20 * 2000


@dataclass
class Voucher:
    voucher_id: str
    token: str
    tier: str
    face_fen: int
    resident: int


@dataclass
class Sale:
    """One redemption as the merchant's own books have it (the source of its statement)."""

    merchant: int
    order_id: str
    voucher_id: str
    tier: str
    redeemed_at: str
    discount_fen: int
    order_total_fen: int
    channel: str
    terminal_id: str | None = None
    redemption_id: str | None = None
    returned: str = ""  # "" | "partial" (the uncertified line) | "full"
    offline_status: str = ""  # for till sales: accepted | conflict | ...


@dataclass
class Run:
    """Everything the phases learn, for the books at the end."""

    plan: Plan
    program_id: str = ""
    shops: list[dict[str, Any]] = field(default_factory=list)
    platforms: list[dict[str, Any]] = field(default_factory=list)
    gtins: list[str] = field(default_factory=list)
    vouchers: list[Voucher] = field(default_factory=list)
    claim_statuses: Counter[str] = field(default_factory=Counter)
    sales: list[Sale] = field(default_factory=list)
    statuses: dict[str, Counter[str]] = field(default_factory=dict)
    planned_double_spends: int = 0
    offline_statuses: Counter[str] = field(default_factory=Counter)
    till_sales: dict[tuple[str, str], Sale] = field(default_factory=dict)
    till_and_online: set[str] = field(default_factory=set)
    mid_day_syncs: int = 0
    expiry: dict[str, Any] = field(default_factory=dict)
    reconciled: list[Any] = field(default_factory=list)
    settled: list[dict[str, Any]] = field(default_factory=list)
    audit_exit: int = -1
    probe: int = 0
    books: dict[str, Any] = field(default_factory=dict)
    phases: list[dict[str, Any]] = field(default_factory=list)
    invariants: list[tuple[str, bool, str]] = field(default_factory=list)

    @property
    def merchants(self) -> list[dict[str, Any]]:
        return self.shops + self.platforms


# ----------------------------------------------------------------------------------------- helpers


def port_in(ports: range) -> int:
    """The first port of the range nobody listens on."""
    for port in ports:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port in {ports.start}-{ports.stop - 1}")


def pids_listening_on(port: int) -> list[int]:
    """gunicorn's master and workers: the processes whose command line binds this port."""
    needle = f"127.0.0.1:{port}".encode()
    out = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            with contextlib.suppress(OSError):
                if needle in (proc / "cmdline").read_bytes():
                    out.append(int(proc.name))
    return out


@contextlib.contextmanager
def own_redis(tmp: Path) -> Iterator[tuple[str, int]]:
    """A Redis server of this run alone (no persistence) on a port of 8940-8949: its CPU is ours."""
    port = port_in(REDIS_PORTS)
    proc = subprocess.Popen(
        [
            "redis-server",
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(tmp),
            "--maxmemory-policy",
            "noeviction",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        for _ in range(100):
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
                break
            time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/0", proc.pid
    finally:
        proc.terminate()
        proc.wait(10)


def redis_pid(url: str) -> int | None:
    """The process id of a Redis server we did not start (INFO server), if it is on this host."""
    import redis

    with contextlib.suppress(Exception):
        return int(redis.Redis.from_url(url).info("server")["process_id"])
    return None


class Meters:
    """One CpuMeter and MachineMeter per phase, over the processes of this run."""

    def __init__(self, run: Run, db_name: str, redis_pid: int | None) -> None:
        self.run, self.db_name = run, db_name
        self.admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT", pool_size=1)
        self.gunicorn_port: int | None = None
        self.groups: dict[str, Callable[[], list[int]]] = {
            "gunicorn": self._gunicorn,
            "postgres": self._backends,
            # The server's own processes (checkpointer, WAL writer, background writer): shared by every
            # database, so they are this run's only on an otherwise idle server.
            "pg server": self._server_processes,
            "redis": lambda: [redis_pid] if redis_pid else [],
            "client": lambda: [os.getpid()],
        }

    def _gunicorn(self) -> list[int]:
        if self.gunicorn_port is None:
            return []
        pids = pids_listening_on(self.gunicorn_port)
        return pids + [c for p in pids for c in children(p)]

    def _backends(self) -> list[int]:
        with self.admin.connect() as conn:
            return list(
                conn.scalars(text("SELECT pid FROM pg_stat_activity WHERE datname = :d"), {"d": self.db_name})
            )

    def _server_processes(self) -> list[int]:
        with self.admin.connect() as conn:
            return list(conn.scalars(text("SELECT pid FROM pg_stat_activity WHERE datname IS NULL")))

    def _db_stats(self) -> dict[str, int]:
        # This database's own counters (the server is shared: its WAL and bgwriter figures are not ours).
        with self.admin.connect() as conn:
            row = conn.execute(
                text(
                    "SELECT xact_commit, xact_rollback, tup_inserted, tup_updated, tup_deleted, tup_fetched, "
                    "blks_read, blks_hit FROM pg_stat_database WHERE datname = :d"
                ),
                {"d": self.db_name},
            ).one()
        return dict(zip(DB_STATS, (int(x) for x in row), strict=True))

    @contextlib.contextmanager
    def phase(self, name: str, unit: str) -> Iterator[dict[str, Any]]:
        """Time a phase; the body sets row['count'] (operations done) and may add notes."""
        row: dict[str, Any] = {"phase": name, "unit": unit, "count": 0}
        cpu, machine = CpuMeter(self.groups).start(), MachineMeter()
        db0 = self._db_stats()
        t0 = time.monotonic()
        try:
            yield row
        finally:
            row["seconds"] = time.monotonic() - t0
            cpu.stop()
            time.sleep(0.6)  # backends report their counters at most every 500 ms
            db1 = self._db_stats()
            row["db"] = {k: db1[k] - db0[k] for k in DB_STATS}
            row["cpu_s"] = {k: round(v, 2) for k, v in cpu.seconds.items()}
            row["machine"] = {k: round(v, 2) for k, v in machine.read().items()}
            self.run.phases.append(row)
            print_phase(row)


def print_phase(row: dict[str, Any]) -> None:
    secs, n = row["seconds"], row["count"]
    rate = f"{n / secs:,.0f} {row['unit']}/s" if n and secs else "-"
    cpu = ", ".join(f"{k} {v:.1f}" for k, v in row["cpu_s"].items())
    per = ""
    if n:
        per = "; CPU ms per op: " + ", ".join(f"{k} {1000 * v / n:.2f}" for k, v in row["cpu_s"].items())
    m = row["machine"]
    print(
        f"[{row['phase']}] {n:,} {row['unit']} in {secs:.1f} s = {rate}; CPU s: {cpu}{per}; "
        f"load {m['load1']:.1f}, steal {m['steal_pct']:.1f} %, busy {m['busy_pct']:.0f} %",
        flush=True,
    )
    if n and row.get("db"):
        d = row["db"]
        print(
            f"    PostgreSQL per op: {d['commits'] / n:.2f} commits, {d['inserted'] / n:.2f} rows inserted, "
            f"{d['updated'] / n:.2f} updated, {(d['blks_hit'] + d['blks_read']) / n:.0f} buffer reads "
            f"({d['blks_read'] / n:.2f} from disk)",
            flush=True,
        )
    for note in row.get("notes", []):
        print(f"    {note}", flush=True)


# ----------------------------------------------------------------------------------------- phases


def setup(run: Run, settings: Settings) -> ServiceContext:
    """Schema, keys, registry, the programme, 2 platforms and the shops, activation."""
    ctx = ServiceContext.build(settings)
    upgrade(ctx.engine)
    ensure_signing_keys(ctx)
    registry.import_products(ctx, registry_csv(generate_registry(1)).encode(), "seed")
    plan = run.plan
    spec = dataclasses.replace(
        demo_spec(ctx.now(), plan.scale),
        name=f"龙岗区扶贫产品消费券（seed scale {plan.scale:g}）",
        budget_fen=plan.budget_fen,
    )
    spec = dataclasses.replace(
        spec,
        tiers=tuple(
            dataclasses.replace(t, quantity=plan.t50 if t.code == "T50" else plan.t20) for t in spec.tiers
        ),
    )
    program = programs.create_program(ctx, spec, "seed")
    run.program_id = pid = program["id"]
    for name in ("平台A 消费帮扶电商", "平台B 扶贫馆"):
        m = merchants.create_merchant(ctx, name, ["online"], True, "seed")
        merchants.enrol_merchant(ctx, pid, m["id"], "seed")
        run.platforms.append(m)
    for k in range(plan.shops):
        m = merchants.create_merchant(ctx, f"龙岗门店 {k:03d}", ["online", "offline"], False, "seed")
        merchants.enrol_merchant(ctx, pid, m["id"], "seed")
        run.shops.append(m)
    programs.activate_program(ctx, pid, "seed")
    run.gtins = books.eligible_gtins(ctx)
    return ctx


def phone(resident: int) -> str:
    return f"13{resident:09d}"


def wallet_logins(run: Run, host: str, port: int, outbox: Path, connections: int) -> dict[int, str]:
    """The wallet residents ask for a code (SMS outbox) and open a session; return their tokens."""
    residents = range(run.plan.wallet)
    otp = [
        bearer_request(host, "POST", "/api/v1/consumer/otp", json.dumps({"phone": phone(r)}).encode(), None)
        for r in residents
    ]
    sent = run_requests(host, port, otp, connections)
    codes = {}
    for line in outbox.read_text(encoding="utf-8").splitlines():
        msg = json.loads(line)
        codes[msg["phone"]] = msg["code"]
    opens = [
        bearer_request(
            host,
            "POST",
            "/api/v1/consumer/sessions",
            json.dumps({"phone": phone(r), "code": codes.get(phone(r), "000000")}).encode(),
            None,
        )
        for r in residents
    ]
    opened = run_requests(host, port, opens, connections)
    run.statuses["logins"] = sent.statuses() + opened.statuses()
    return {r: a.json()["token"] for r, a in zip(residents, opened.answers, strict=True) if a.status == 201}


def rush(
    run: Run, host: str, port: int, tier: str, attempts: list[int], sessions: dict[int, str], connections: int
) -> Outcome:
    """Claim attempts of `tier`, one per entry of `attempts` (a resident), in that order."""
    path = f"/api/v1/programs/{run.program_id}/claims"
    a, b = run.platforms

    def build(i: int) -> bytes:
        r = attempts[i]
        if r in sessions:
            return bearer_request(host, "POST", path, json.dumps({"tier": tier}).encode(), sessions[r])
        m = a if r % 2 == 0 else b
        body = json.dumps({"tier": tier, "holder_ref": f"user-{r}", "holder_phone": phone(r)}).encode()
        return signed_request(host, "POST", path, body, m["id"], m["api_secret"])

    out = run_signed_batches(host, port, len(attempts), build, connections=connections)
    for r, ans in zip(attempts, out.answers, strict=True):
        if ans.status == 201:
            v = ans.json()
            run.vouchers.append(Voucher(v["voucher_id"], v["token"], v["tier"], v["face_value_fen"], r))
    run.claim_statuses.update(out.statuses())
    return out


def basket(run: Run, tier: str, n: int) -> list[dict[str, Any]]:
    """Two certified lines meeting the tier's minimum spend and one uncertified line (index 2)."""
    g = run.gtins
    a, b = g[n % len(g)], g[(n * 7 + 3) % len(g)]
    price = 5990 if tier == "T50" else 2590  # 2 x price + 3,990 >= 15,000 / 6,000
    return [
        {"gtin": a, "name": "认证商品", "quantity": 2, "unit_price_fen": price},
        {"gtin": b, "name": "认证商品", "quantity": 1, "unit_price_fen": 3990},
        {"gtin": UNCERTIFIED_GTIN, "name": "普通商品", "quantity": 1, "unit_price_fen": 1200},
    ]


def order_total(items: list[dict[str, Any]]) -> int:
    return sum(i["quantity"] * i["unit_price_fen"] for i in items)


@dataclass
class Assignment:
    """Who spends which voucher where."""

    online: list[tuple[Voucher, int]]  # (voucher, merchant index into run.merchants)
    tills: list[list[Voucher]]  # per shop
    planned_double_spends: int
    till_and_online: set[str]  # the double spends of one till and one online sale


def assign(run: Run, rng: random.Random) -> Assignment:
    """Shuffle the claimed vouchers into online sales, till sales, double spends and unspent ones."""
    vs = list(run.vouchers)
    rng.shuffle(vs)
    n, shops = len(vs), run.plan.shops
    doubles = max(2, round(n * DOUBLE_SPEND_SHARE)) // 2 * 2
    offline = min(round(n * OFFLINE_SHARE), (TILL_VOUCHERS_MAX - 2) * shops)
    unspent = round(n * UNSPENT_SHARE)
    till_part, double_part = vs[:offline], vs[offline : offline + doubles]
    online_part = vs[offline + doubles : n - unspent]
    tills: list[list[Voucher]] = [[] for _ in range(shops)]
    for i, v in enumerate(till_part):
        tills[i % shops].append(v)
    merchants_n = len(run.merchants)
    online = [(v, i % merchants_n) for i, v in enumerate(online_part)]
    half = doubles // 2
    for i, v in enumerate(double_part[:half]):  # a till, and online at another merchant
        tills[i % shops].append(v)
        online.append((v, (i + 1) % merchants_n))
    for i, v in enumerate(double_part[half:]):  # two tills
        tills[i % shops].append(v)
        tills[(i + 1) % shops].append(v)
    rng.shuffle(online)
    return Assignment(online, tills, doubles, {v.voucher_id for v in double_part[:half]})


def open_tills(run: Run, base_url: str, tmp: Path) -> list[OfflineTerminal]:
    """Each shop's till: a journal file, its key registered, keys/revocations/products fetched."""
    tills = []
    for k, shop in enumerate(run.shops):
        client = VoucherClient(base_url, shop["id"], shop["api_secret"], max_retries=2, timeout=30.0)
        till = OfflineTerminal(client, f"till-{k:03d}", str(tmp / f"till-{k:03d}.sqlite3"))
        till.refresh()
        tills.append(till)
    return tills


def till_sales(run: Run, tills: list[OfflineTerminal], work: list[list[Voucher]]) -> int:
    """Redeem each till's share with no network; a till at its offline limit syncs first."""
    done = 0
    for k, (till, vouchers) in enumerate(zip(tills, work, strict=True)):
        for j, v in enumerate(vouchers):
            items = basket(run, v.tier, j)
            order_id = f"S{k:03d}-OFF-{j:05d}"
            for _ in range(2):
                try:
                    rec = till.redeem(v.token, items, order_id=order_id)
                except OfflineLimitExceeded:
                    run.mid_day_syncs += 1
                    _record_sync(run, till, k)
                    continue
                except VoucherError as exc:
                    run.offline_statuses[f"refused:{exc.code}"] += 1
                    break
                sale = Sale(
                    k,
                    order_id,
                    v.voucher_id,
                    v.tier,
                    rec.redeemed_at,
                    rec.discount_fen,
                    rec.order_total_fen,
                    "offline",
                    till.terminal_id,
                    offline_status="pending",
                )
                run.sales.append(sale)
                run.till_sales[(till.terminal_id, order_id)] = sale
                done += 1
                break
    return done


def _record_sync(run: Run, till: OfflineTerminal, k: int) -> None:
    report = till.sync()
    orders = {r.seq: r.payload.get("order_id") for r in till.records()}
    for res in report.results:
        run.offline_statuses[res.status] += 1
        sale = run.till_sales.get((till.terminal_id, orders.get(res.seq)))
        if sale is not None:
            sale.offline_status, sale.redemption_id = res.status, res.redemption_id


def sync_tills(run: Run, tills: list[OfflineTerminal]) -> int:
    before = sum(run.offline_statuses.values())
    for k, till in enumerate(tills):
        _record_sync(run, till, k)
    return sum(run.offline_statuses.values()) - before


def online_sales(
    run: Run, host: str, port: int, work: list[tuple[Voucher, int]], connections: int
) -> Outcome:
    """POST /redemptions for every online sale: shops at their tills (online), platforms online."""
    path = "/api/v1/redemptions"
    planned: list[Sale] = []
    items_of: list[list[dict[str, Any]]] = []
    for n, (v, m) in enumerate(work):
        items = basket(run, v.tier, n)
        shop = m < len(run.shops)
        planned.append(
            Sale(
                m,
                f"M{m:03d}-{n:07d}",
                v.voucher_id,
                v.tier,
                "",
                0,
                order_total(items),
                "offline" if shop else "online",
                f"till-{m:03d}" if shop else None,
            )
        )
        items_of.append(items)
    merchants_ = run.merchants
    tokens = {v.voucher_id: v.token for v, _ in work}

    def build(i: int) -> bytes:
        sale, mer = planned[i], merchants_[planned[i].merchant]
        body = json.dumps(
            {
                "token": tokens[sale.voucher_id],
                "order_id": sale.order_id,
                "channel": sale.channel,
                "terminal_id": sale.terminal_id,
                "items": items_of[i],
            }
        ).encode()
        return signed_request(
            host, "POST", path, body, mer["id"], mer["api_secret"], f"Idempotency-Key: {uuid.uuid4().hex}\r\n"
        )

    out = run_signed_batches(host, port, len(planned), build, connections=connections)
    for sale, ans in zip(planned, out.answers, strict=True):
        if ans.status == 201:
            r = ans.json()
            sale.redemption_id, sale.redeemed_at, sale.discount_fen = (
                r["redemption_id"],
                r["redeemed_at"],
                r["discount_fen"],
            )
            run.sales.append(sale)
    return out


def returns(run: Run, host: str, port: int, rng: random.Random, connections: int) -> Outcome:
    """Reverse 3 % of the online sales: two thirds in full, one third the uncertified line only."""
    online = [s for s in run.sales if not s.offline_status]
    chosen = rng.sample(online, round(len(online) * RETURN_SHARE))
    for i, s in enumerate(chosen):
        s.returned = "partial" if i % 3 == 2 else "full"
    merchants_ = run.merchants

    def build(i: int) -> bytes:
        s = chosen[i]
        body = json.dumps(
            {"lines": [{"index": 2, "quantity": 1}]} if s.returned == "partial" else {}
        ).encode()
        path = f"/api/v1/redemptions/{s.redemption_id}/reversals"
        m = merchants_[s.merchant]
        return signed_request(
            host, "POST", path, body, m["id"], m["api_secret"], f"Idempotency-Key: {uuid.uuid4().hex}\r\n"
        )

    out = run_signed_batches(host, port, len(chosen), build, connections=connections)
    for s, ans in zip(chosen, out.answers, strict=True):
        if ans.status != 201:
            s.returned = ""
        elif s.returned == "partial" and ans.json().get("clawback_fen"):
            s.returned = "full"  # should not happen: the basket still meets the minimum spend
    return out


# ----------------------------------------------------------------------------------------- main


def http_notes(out: Outcome) -> list[str]:
    return [
        f"answers {dict(out.statuses().most_common())}",
        f"latency {percentiles(out.latencies)}; client signing {out.sign_seconds:.1f} s",
    ]


def serve_phases(run: Run, settings: Settings, meters: Meters, args: argparse.Namespace, tmp: Path) -> None:
    """Everything that goes through the HTTP API, with gunicorn up."""
    rng = random.Random(12)
    plan = run.plan
    outbox = settings.var_dir / "sms-outbox.jsonl"
    env = settings_env(settings, VOUCHER_CLAIM_RATE_PER_MINUTE=str(10**9), VOUCHER_SMS_OUTBOX=str(outbox))
    port = port_in(GUNICORN_PORTS)
    with gunicorn_server(
        env,
        workers=args.workers,
        threads=args.threads,
        log_path=tmp / "gunicorn.log",
        port=port,
        startup_timeout_s=300.0,  # a loaded machine imports slowly
    ) as base_url:
        meters.gunicorn_port = port
        host = "127.0.0.1"  # the Host header and the address to connect to
        conns = args.connections
        run_requests("127.0.0.1", port, [b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"] * 200, conns)

        with meters.phase("logins", "requests") as row:
            sessions = wallet_logins(run, "127.0.0.1", port, outbox, conns)
            row["count"] = 2 * plan.wallet
            row["notes"] = [f"answers {dict(run.statuses['logins'])}; {len(sessions)} sessions"]

        residents = list(range(plan.residents))
        with meters.phase("rush T50", "attempts") as row:
            attempts = rng.sample(residents, len(residents))
            out = rush(run, host, port, "T50", attempts, sessions, conns)
            row["count"], row["notes"] = len(attempts), http_notes(out)
        winners = {v.resident for v in run.vouchers}
        with meters.phase("rush T20", "attempts") as row:
            attempts = residents + sorted(winners)  # T50 winners try twice
            rng.shuffle(attempts)
            out = rush(run, host, port, "T20", attempts, sessions, conns)
            row["count"], row["notes"] = len(attempts), http_notes(out)

        with meters.phase("sold out", "attempts") as row:
            # Both tiers are gone: a pure measure of the Redis gate's refusal (no database).
            probe = rng.sample(residents, max(50, len(residents) // 10))
            out = rush(run, host, port, "T50", probe, {}, conns)
            row["count"], row["notes"] = len(probe), http_notes(out)
            run.probe = len(probe)
        work = assign(run, rng)
        run.planned_double_spends = work.planned_double_spends
        run.till_and_online = work.till_and_online
        with meters.phase("tills", "till sales") as row:
            tills = open_tills(run, base_url, tmp)
            row["count"] = till_sales(run, tills, work.tills)
            row["notes"] = [
                f"{len(tills)} tills refreshed then offline; {run.mid_day_syncs} mid-day syncs; "
                f"refused {dict(run.offline_statuses)}"
            ]
        with meters.phase("redeem", "redemptions") as row:
            out = online_sales(run, host, port, work.online, conns)
            row["count"], row["notes"] = len(work.online), http_notes(out)
            run.statuses["redeem"] = out.statuses()
        with meters.phase("returns", "reversals") as row:
            out = returns(run, host, port, rng, conns)
            row["count"], row["notes"] = len(out.answers), http_notes(out)
            run.statuses["returns"] = out.statuses()
        with meters.phase("sync", "records") as row:
            row["count"] = sync_tills(run, tills)
            row["notes"] = [f"verdicts {dict(run.offline_statuses)}"]
        for till in tills:
            till.close()
            till.client.close()
        meters.gunicorn_port = None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scale", type=float, default=1.0, help="1 = the seed's programme; 0.01 = 1 %%")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers")
    parser.add_argument("--threads", type=int, default=8, help="threads per gunicorn worker")
    parser.add_argument("--connections", type=int, default=64, help="client keep-alive connections")
    parser.add_argument("--pg-admin-url", default=PG_ADMIN_URL)
    parser.add_argument(
        "--redis-url", help="use this Redis (a DB number / prefix of its own) instead of starting one"
    )
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args()
    plan = Plan.at(args.scale)
    run = Run(plan)
    started = time.monotonic()
    print(
        f"seed scale {plan.scale:g}: budget {plan.budget_fen:,} fen, T50 x {plan.t50:,}, T20 x {plan.t20:,}, "
        f"{plan.residents:,} residents ({plan.wallet:,} by wallet, the rest through 2 platforms), "
        f"{plan.shops} shops with a till each"
    )
    print(
        f"machine: {os.cpu_count()} CPUs, {host_platform.node()}, {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC, "
        f"load {' '.join(f'{x:.2f}' for x in os.getloadavg())}; gunicorn {args.workers} workers x "
        f"{args.threads} threads; {args.connections} client connections",
        flush=True,
    )
    with tempfile.TemporaryDirectory(prefix="seed-scale-") as tmp_name:
        tmp = Path(tmp_name)
        redis_cm = (
            contextlib.nullcontext((args.redis_url, redis_pid(args.redis_url)))
            if args.redis_url
            else own_redis(tmp)
        )
        with redis_cm as (redis_url, rpid), books.database(args.pg_admin_url, redis_url, tmp) as settings:
            db_name = settings.database_url.rsplit("/", 1)[1]
            meters = Meters(run, db_name, rpid)
            with meters.phase("setup", "pool vouchers") as row:
                ctx = setup(run, settings)
                row["count"] = plan.t50 + plan.t20
            try:
                serve_phases(run, settings, meters, args, tmp)
                books.admin_phases(run, ctx, settings, meters, tmp)
                books.check_invariants(run, ctx)
                sizes = books.table_sizes(ctx, plan.t50 + plan.t20)
            finally:
                ctx.close()
                meters.admin.dispose()
    total = time.monotonic() - started
    books.print_report(run, sizes, total)
    ok = all(passed for _, passed, _ in run.invariants)
    figures = books.figures(run, sizes, total, ok)
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    print(json.dumps(figures, separators=(",", ":")))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
