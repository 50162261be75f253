"""The environment that makes a gunicorn-served app use a test's settings (see benchmarks/_server.py)."""

from __future__ import annotations

from voucher_service.config import Settings


def settings_env(settings: Settings, **extra: str) -> dict[str, str]:
    """The VOUCHER_* variables that make a server process use these settings."""
    env = {
        "VOUCHER_DATABASE_URL": settings.database_url,
        "VOUCHER_ENV": settings.env,
        "VOUCHER_SECRET_KEY": settings.secret_key,
        "VOUCHER_SIGNING_KEY_PASSPHRASE": settings.signing_key_passphrase,
        "VOUCHER_VAR_DIR": str(settings.var_dir),
        "VOUCHER_REDIS_PREFIX": settings.redis_prefix,
    }
    if settings.redis_url:
        env["VOUCHER_REDIS_URL"] = settings.redis_url
    env.update(extra)
    return env
