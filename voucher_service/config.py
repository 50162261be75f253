"""Settings from the environment; read only by create_app and the CLI."""

from __future__ import annotations

import dataclasses
import os
import re
import secrets
from dataclasses import dataclass
from pathlib import Path

DEV_PASSPHRASE = "development-only-signing-passphrase"
MIN_PRODUCTION_PASSPHRASE = 16
ENVIRONMENTS = ("development", "test", "production")
# What sits between the service and PostgreSQL: nothing, or a pooler (PgBouncer) in session or
# transaction mode. Transaction mode hands each transaction to any server connection, so no state may
# outlive a transaction: no server-side prepared statements (PgBouncer < 1.21 cannot carry them).
POOLERS = ("none", "session", "transaction")
# Hashing costs the test suite runs with (VOUCHER_ENV=test and VOUCHER_TEST_CHEAP_HASHING=1, or
# tests/conftest.py's settings); production refuses anything below the defaults.
TEST_HASHING: dict[str, int] = {
    "signing_key_scrypt_n": 2**10,
    "staff_password_time_cost": 1,
    "staff_password_memory_kib": 8,
    "staff_password_parallelism": 1,
}


class ConfigurationError(RuntimeError):
    """The environment does not describe a service that may start."""


@dataclass(frozen=True)
class Settings:
    """Everything the service is configured with; built once from VOUCHER_* variables."""

    database_url: str
    redis_url: str | None
    env: str
    secret_key: str
    signing_key_passphrase: str
    sms_outbox: str | None
    var_dir: Path
    redis_prefix: str = "voucher:"
    database_pooler: str = "none"
    # A streaming replica for reports, dashboards and listings, used while it is at most
    # replica_max_lag_s behind the primary (see adapters.db.replica); None: everything on the primary.
    database_replica_url: str | None = None
    replica_max_lag_s: float = 5.0
    # Tuning knobs with safe defaults; tests shorten some of them.
    otp_ttl_s: int = 300
    otp_max_attempts: int = 5
    otp_sends_per_hour: int = 5
    session_ttl_s: int = 86_400
    claim_rate_per_minute: int = 600
    signature_window_s: int = 300
    # After Redis lost its data, requests signed up to this many seconds after the loss was noticed
    # are answered 503 (sign again): covers merchant clocks running a little fast.
    nonce_epoch_margin_s: int = 2
    idempotency_lease_s: int = 6  # renewed while the request runs; a dead request's lapses
    # Staff (cashier) logins: attempts per username and per client address in a fixed window.
    staff_login_attempts: int = 10
    staff_login_attempts_per_client: int = 100
    staff_login_window_s: int = 900
    # argon2id cost of staff passwords: RFC 9106's second recommended setting (t=3, 64 MiB, 4 lanes).
    # Only tests lower it (production refuses that); the cost travels in each hash string.
    staff_password_time_cost: int = 3
    staff_password_memory_kib: int = 64 * 1024
    staff_password_parallelism: int = 4
    audit_seal_interval_s: float = 1.0
    # scrypt cost (n, with r=8, p=1) of newly encrypted signing keys; only tests lower it.
    signing_key_scrypt_n: int = 2**15
    # End-to-end tests only: a worker exits right after a redemption commits, before it replies.
    crash_after_commit: bool = False

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None, **overrides: object) -> Settings:
        """Read the VOUCHER_* variables, filling development defaults, refusing unsafe production."""
        env_vars = dict(os.environ if environ is None else environ)
        env = env_vars.get("VOUCHER_ENV", "development")
        if env not in ENVIRONMENTS:
            raise ConfigurationError(f"VOUCHER_ENV must be one of {', '.join(ENVIRONMENTS)}, not {env!r}")
        var_dir = Path(env_vars.get("VOUCHER_VAR_DIR", "var")).resolve()
        database_url = env_vars.get("VOUCHER_DATABASE_URL") or f"sqlite:///{var_dir / 'voucher.sqlite3'}"
        redis_url = env_vars.get("VOUCHER_REDIS_URL") or None
        secret_key = env_vars.get("VOUCHER_SECRET_KEY") or ""
        passphrase = env_vars.get("VOUCHER_SIGNING_KEY_PASSPHRASE") or ""
        if env == "production":
            missing = [
                name
                for name, value in (
                    ("VOUCHER_REDIS_URL", redis_url),
                    ("VOUCHER_SECRET_KEY", secret_key),
                    ("VOUCHER_SIGNING_KEY_PASSPHRASE", passphrase),
                )
                if not value
            ]
            if missing:
                raise ConfigurationError("production requires " + ", ".join(missing))
            if passphrase == DEV_PASSPHRASE:
                raise ConfigurationError("the development signing-key passphrase is refused in production")
            if len(passphrase) < MIN_PRODUCTION_PASSPHRASE:
                raise ConfigurationError(
                    f"VOUCHER_SIGNING_KEY_PASSPHRASE must be at least {MIN_PRODUCTION_PASSPHRASE} characters "
                    "in production"
                )
            if len(secret_key) < 32:
                raise ConfigurationError("VOUCHER_SECRET_KEY must be at least 32 characters in production")
        if not secret_key:
            secret_key = _development_secret(var_dir)
        if not passphrase:
            passphrase = DEV_PASSPHRASE
        values: dict[str, object] = dict(
            database_url=database_url,
            redis_url=redis_url,
            env=env,
            secret_key=secret_key,
            signing_key_passphrase=passphrase,
            sms_outbox=env_vars.get("VOUCHER_SMS_OUTBOX") or None,
            var_dir=var_dir,
            redis_prefix=env_vars.get("VOUCHER_REDIS_PREFIX", "voucher:"),
            crash_after_commit=env == "test" and env_vars.get("VOUCHER_TEST_CRASH_AFTER_COMMIT") == "1",
        )
        pooler = env_vars.get("VOUCHER_DATABASE_POOLER") or "none"
        if pooler not in POOLERS:
            raise ConfigurationError(f"VOUCHER_DATABASE_POOLER must be one of {', '.join(POOLERS)}, not {pooler!r}")
        values["database_pooler"] = pooler
        replica_url = env_vars.get("VOUCHER_DATABASE_REPLICA_URL") or None
        if replica_url:
            if not all(u.startswith(("postgresql", "postgres:")) for u in (database_url, replica_url)):
                raise ConfigurationError(
                    "VOUCHER_DATABASE_REPLICA_URL needs PostgreSQL for both it and VOUCHER_DATABASE_URL"
                )
            values["database_replica_url"] = replica_url
        if env_vars.get("VOUCHER_DATABASE_REPLICA_MAX_LAG_S"):
            raw = env_vars["VOUCHER_DATABASE_REPLICA_MAX_LAG_S"].strip()
            # ASCII digits only: float() would also take '２' or 'nan'.
            max_lag = float(raw) if re.fullmatch(r"[0-9]{1,4}(\.[0-9]{1,3})?", raw) else -1.0
            if not 0 <= max_lag <= 3600:
                raise ConfigurationError("VOUCHER_DATABASE_REPLICA_MAX_LAG_S must be a number of seconds, 0-3600")
            values["replica_max_lag_s"] = max_lag
        if env == "test" and env_vars.get("VOUCHER_TEST_CHEAP_HASHING") == "1":
            values.update(TEST_HASHING)  # the test suite's CLI runs: speed, not strength
        if env_vars.get("VOUCHER_CLAIM_RATE_PER_MINUTE"):
            # Load tests and benchmarks claim far faster than any one holder or platform should.
            values["claim_rate_per_minute"] = int(env_vars["VOUCHER_CLAIM_RATE_PER_MINUTE"])
        values.update(overrides)
        settings = cls(**values)  # type: ignore[arg-type]
        if env == "production":
            _refuse_weak_hashing(settings)
        return settings


_DEFAULTS = {f.name: f.default for f in dataclasses.fields(Settings)}


def _refuse_weak_hashing(settings: Settings) -> None:
    """Production keeps at least the default costs; only tests may lower them, to run quickly."""
    weaker = [
        name
        for name in (
            "staff_password_time_cost",
            "staff_password_memory_kib",
            "staff_password_parallelism",
            "signing_key_scrypt_n",
        )
        if getattr(settings, name) < _DEFAULTS[name]
    ]
    if weaker:
        raise ConfigurationError("production refuses hashing cheaper than the defaults: " + ", ".join(weaker))


def _development_secret(var_dir: Path) -> str:
    """Generate the development secret once and keep it under var/ so restarts keep sessions valid."""
    var_dir.mkdir(parents=True, exist_ok=True)
    path = var_dir / "secret_key"
    if path.exists():
        return path.read_text().strip()
    value = secrets.token_urlsafe(48)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(value)
    return value
