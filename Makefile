# Quickstart: `make run` serves the demo on :8000; `make test` runs the whole suite.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
ASSETS_STAMP := voucher_service/web/static/vendor/.installed
# Two pytest-xdist workers: the end-to-end tests on one, the browser tests on one, the rest spread.
TEST_WORKERS ?= 2
PGURL ?= postgresql+psycopg://postgres@127.0.0.1:5432/postgres
export VOUCHER_TEST_PG_ADMIN_URL ?= $(PGURL)
export VOUCHER_TEST_REDIS_URL ?= redis://127.0.0.1:6379/0

.PHONY: run test install services lint bench demo-db regen-migration clean

$(STAMP): pyproject.toml merchant_sdk/pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]' -e ./merchant_sdk
	touch $(STAMP)

# The pages' browser files (npm ci from the lock file) and their compiled message catalogs.
$(ASSETS_STAMP): voucher_service/web/assets/package-lock.json scripts/web_assets.sh
	bash scripts/web_assets.sh
	touch $(ASSETS_STAMP)

install: $(STAMP) $(ASSETS_STAMP)
	@bash scripts/translations.sh compile

# Start the local PostgreSQL and Redis when they are not already answering (CI machines have them
# installed), and install headless Chromium for the browser tests when it is missing.
services:
	@bash scripts/ensure_services.sh
	@bash scripts/ensure_browser.sh

demo-db: install
	$(VENV)/bin/voucher-admin init-db
	$(VENV)/bin/voucher-admin demo --if-empty

# The development SMS gateway: one-time codes for the demo consumers land in this file.
run: export VOUCHER_SMS_OUTBOX ?= var/sms-outbox.jsonl
# Without Redis (VOUCHER_REDIS_URL) one-time codes and rate limits live in one process: one worker then.
run: WORKERS ?= $(if $(VOUCHER_REDIS_URL),2,1)
run: demo-db
	@$(VENV)/bin/voucher-admin pages --base-url http://localhost:8000
	$(VENV)/bin/gunicorn --workers $(WORKERS) --threads 8 --bind 0.0.0.0:8000 --access-logfile - 'voucher_service:create_app()'

test: install services lint
	$(PY) -m pytest -q -p no:cacheprovider -n $(TEST_WORKERS) --dist loadgroup

lint: install
	$(VENV)/bin/ruff check voucher_service merchant_sdk scripts tests benchmarks
	$(VENV)/bin/mypy voucher_service merchant_sdk
	$(VENV)/bin/lint-imports

bench: install services
	bash scripts/ensure_bench_tools.sh
	$(PY) benchmarks/claims.py
	$(PY) benchmarks/redemptions.py
	$(PY) benchmarks/offline_verify.py
	$(PY) benchmarks/offline_sync.py
	$(PY) benchmarks/reconcile.py

# Before the first release only: rebuild the initial migration from the models.
regen-migration: install
	rm -f voucher_service/migrations/versions/0001_initial_schema.py /tmp/voucher-autogen.sqlite3
	$(PY) -c "from alembic import command; from voucher_service.adapters.db.migrate import alembic_config; command.revision(alembic_config('sqlite:////tmp/voucher-autogen.sqlite3'), message='initial schema', autogenerate=True, rev_id='0001')"
	sed -i 's/[[:space:]]*$$//' voucher_service/migrations/versions/0001_initial_schema.py  # Alembic leaves 'Revises: '
	$(VENV)/bin/ruff check --fix -q voucher_service/migrations/versions/0001_initial_schema.py
	$(VENV)/bin/ruff format voucher_service/migrations/versions/0001_initial_schema.py

clean:
	rm -rf $(VENV) var .pytest_cache
