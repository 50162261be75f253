"""Fixtures of the SDK tests: a fake service for what the real app cannot show (failures, retries),
and the real app served on a free port for everything else."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from werkzeug.serving import make_server

from merchant_sdk import VoucherClient
from tests.conftest import copy_sqlite_template, make_settings
from tests.helpers import Admin
from tests.sdk.support import FakeService, TokenMaker
from voucher_service import create_app
from voucher_service.services.context import ServiceContext
from voucher_service.services.credentials import create_admin_token

MERCHANT_ID = "m-test-1"
SECRET = "s3cret-of-the-merchant"


@pytest.fixture
def fake() -> Iterator[FakeService]:
    service = FakeService()
    yield service
    service.stop()


@pytest.fixture
def maker() -> TokenMaker:
    return TokenMaker()


class SleepLog(list[float]):
    """Records the pauses a client would have slept, without sleeping."""

    def __call__(self, seconds: float) -> None:
        self.append(seconds)


@pytest.fixture
def sleeps() -> SleepLog:
    return SleepLog()


@pytest.fixture
def client(fake: FakeService, sleeps: SleepLog) -> Iterator[VoucherClient]:
    c = VoucherClient(fake.base_url, MERCHANT_ID, SECRET, max_retries=2, timeout=5.0)
    c._sleep = sleeps
    yield c
    c.close()


@dataclass
class LiveApp:
    """The real app answering HTTP on 127.0.0.1."""

    app: Any
    base_url: str
    ctx: ServiceContext
    admin: Admin

    def client(self, merchant_id: str, secret: str, **kw: Any) -> VoucherClient:
        return VoucherClient(self.base_url, merchant_id, secret, **kw)


@pytest.fixture
def live_app(tmp_path: Path, sqlite_template: Path) -> Iterator[LiveApp]:
    """The real app (SQLite, in-process store) served by werkzeug on a free port in a thread."""
    settings = make_settings(tmp_path, copy_sqlite_template(sqlite_template, tmp_path / "voucher.sqlite3"))
    app = create_app(settings)
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), name="live-app", daemon=True)
    thread.start()
    ctx: ServiceContext = app.extensions["voucher"]
    admin = Admin(app.test_client(), create_admin_token(ctx, "sdk-tests"))
    try:
        yield LiveApp(app, f"http://127.0.0.1:{server.server_port}", ctx, admin)
    finally:
        server.shutdown()
        thread.join()
        server.server_close()
        ctx.engine.dispose()
