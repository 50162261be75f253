"""End-to-end tests hold real connections (PostgreSQL, Redis, servers of their own): each must close what
it opened. A connection left open is only noticed when the garbage collector reaches it, which may be
tests later, in a test that has nothing to do with it; collecting after every test pins it on its owner
(psycopg's "connection was deleted while still open" is an error under the suite's filterwarnings)."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest


@pytest.fixture(autouse=True)
def _collect_what_the_test_left() -> Iterator[None]:
    yield
    gc.collect()
