"""The migrations build exactly the schema the models describe, on both databases, idempotently."""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from voucher_service.adapters.db.engine import make_engine
from voucher_service.adapters.db.migrate import upgrade
from voucher_service.adapters.db.models import Base


def _diff(engine):
    with engine.connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"compare_type": False})
        return compare_metadata(ctx, Base.metadata)


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_migrations_match_models_and_rerun_changes_nothing(backend, tmp_path, pg_database_factory):
    url = f"sqlite:///{tmp_path / 's.sqlite3'}" if backend == "sqlite" else pg_database_factory()
    engine = make_engine(url)
    upgrade(engine)
    upgrade(engine)  # init-db is idempotent
    assert _diff(engine) == []
    engine.dispose()
