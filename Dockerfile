# syntax=docker/dockerfile:1
# Build stage: wheels for the service (and its dependencies) in a throw-away image.
FROM python:3.11-slim AS build
WORKDIR /src
RUN pip install --no-cache-dir --upgrade pip build
COPY pyproject.toml README.md ./
COPY voucher_service ./voucher_service
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
