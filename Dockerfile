# syntax=docker/dockerfile:1
# The pages' browser files, from the npm registry through the lock file (as scripts/web_assets.sh).
FROM node:20-slim AS assets
WORKDIR /assets
COPY voucher_service/web/assets/package.json voucher_service/web/assets/package-lock.json ./
RUN npm ci --no-audit --no-fund --loglevel=error

# Build stage: wheels for the service (and its dependencies) in a throw-away image.
FROM python:3.11-slim AS build
WORKDIR /src
RUN pip install --no-cache-dir --upgrade pip build babel
COPY pyproject.toml README.md ./
COPY voucher_service ./voucher_service
COPY --from=assets /assets/node_modules/barcode-detector/dist/iife/ponyfill.js /assets/node_modules/barcode-detector/LICENSE \
     voucher_service/web/static/vendor/barcode-detector/
COPY --from=assets /assets/node_modules/zxing-wasm/dist/reader/zxing_reader.wasm /assets/node_modules/zxing-wasm/LICENSE \
     voucher_service/web/static/vendor/zxing-wasm/
# The message catalogs are compiled here, never committed.
RUN for d in voucher_service/web/translations/*/; do pybabel compile -d "$d" -l zh; done
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

# Runtime stage: only the installed wheels, run as an unprivileged user.
FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 VOUCHER_ENV=production VOUCHER_VAR_DIR=/var/lib/voucher
RUN useradd --system --uid 10001 --home-dir /var/lib/voucher --create-home voucher
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/* && rm -rf /wheels
USER voucher
WORKDIR /var/lib/voucher
EXPOSE 8000
# Run `voucher-admin init-db` once per release (e.g. as a job) before starting new workers.
CMD ["gunicorn", "--workers", "4", "--threads", "4", "--bind", "0.0.0.0:8000", "--access-logfile", "-", "voucher_service:create_app()"]
