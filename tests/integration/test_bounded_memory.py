"""Strangers cannot grow a worker's memory: every in-process cache and metrics label set is bounded."""

from __future__ import annotations

import secrets
import time
from typing import Any

from tests.helpers import merchant_headers, problem_code
from voucher_service.adapters.redis_store import MemoryStore
from voucher_service.api.metrics import Metrics
from voucher_service.services.credentials import MerchantCache


def _stranger_headers(merchant_id: str) -> dict[str, str]:
    headers = merchant_headers("mch_0000000000000000", "vsk_x", "GET", "/api/v1/redemptions", b"")
    headers["X-Voucher-Merchant"] = merchant_id
    return headers


def test_unknown_merchant_ids_do_not_grow_the_merchant_cache(app: Any, client: Any) -> None:
    cache = app.extensions["voucher_merchants"] = MerchantCache(max_size=40, max_unknown=20)
    for _ in range(100):
        resp = client.get("/api/v1/redemptions", headers=_stranger_headers("mch_" + secrets.token_hex(8)))
        assert resp.status_code == 401 and problem_code(resp) == "unauthorized"
    assert len(cache) <= cache.max_size


def test_a_malformed_merchant_id_is_refused_before_any_lookup(app: Any, client: Any) -> None:
    cache: MerchantCache = app.extensions["voucher_merchants"]
    for bad in [
        "x" * 41,
        "mch_../../etc",
        "mch_/0000000000000000",
        "mch_１２３４５６７８９０１２３４５６",
        "mch 1",
        "é",
    ]:
        resp = client.get("/api/v1/redemptions", headers=_stranger_headers(bad))
        assert resp.status_code == 401 and problem_code(resp) == "unauthorized"
    assert len(cache) == 0


def test_the_merchant_cache_evicts_the_least_recently_used(ctx: Any, admin: Any) -> None:
    cache = MerchantCache(max_size=2)
    ids = [admin.create_merchant().id for _ in range(3)]
    assert cache.get(ctx, ids[0]) is not None
    assert cache.get(ctx, ids[1]) is not None
    assert cache.get(ctx, ids[0]) is not None  # ids[0] is now the most recent
    assert cache.get(ctx, ids[2]) is not None
    assert len(cache) == 2 and cache.cached(ids[0]) and not cache.cached(ids[1])


def test_invented_http_methods_share_one_metrics_label(client: Any) -> None:
    for i in range(50):
        client.open("/healthz", method=f"BREW{i}")
    text = client.get("/metrics").get_data(as_text=True)
    assert "BREW" not in text
    assert 'method="other"' in text


def test_metrics_label_sets_are_bounded_even_for_known_routes() -> None:
    metrics = Metrics(max_series=10)
    for i in range(100):
        metrics.observe(f"/route/{i}", "GET", 200 + i, 0.01)
    assert len(metrics.requests) <= 10 and len(metrics.latency) <= 10


def test_the_in_process_store_is_bounded() -> None:
    store = MemoryStore(max_items=100)
    for i in range(1000):
        store.add_once(f"nonce:{i}", 600)
        store.set(f"k:{i}", b"v", 600)
        store.incr(f"c:{i}", 600)
    assert len(store) <= 100
    store.set("fresh", b"1", 600)
    assert store.get("fresh") == b"1"


def test_the_in_process_store_drops_expired_items_first() -> None:
    store = MemoryStore(max_items=10)
    for i in range(10):
        store.set(f"short:{i}", b"v", 1)
    store.set("long", b"v", 600)
    time.sleep(1.1)
    for i in range(9):
        store.set(f"new:{i}", b"v", 600)
    assert store.get("long") == b"v"
