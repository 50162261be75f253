"""The key ring reloads without deadlocking against a write transaction of the same thread (SQLite)."""

from __future__ import annotations

import threading

from sqlalchemy import text


def test_reload_inside_a_sqlite_write_transaction_does_not_wait_for_the_lock(ctx):
    done = threading.Event()

    def reload_while_holding_the_write_lock() -> None:
        with ctx.sessions.begin() as s:
            s.execute(text("UPDATE signing_keys SET status = status"))
            ctx.keys.reload()
            done.set()

    worker = threading.Thread(target=reload_while_holding_the_write_lock, daemon=True)
    worker.start()
    worker.join(timeout=10)
    assert done.is_set(), "key reload waited for the write lock its own thread holds"
    assert ctx.keys.active().private_key is not None
