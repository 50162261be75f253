"""Run the service under a real gunicorn for benchmarks and end-to-end tests.

    with gunicorn_server({"VOUCHER_DATABASE_URL": url, ...}, workers=2, threads=8) as base_url:
        requests.get(base_url + "/healthz")

The server binds 127.0.0.1 on a free port, is ready when /readyz answers 200, and is always stopped
(SIGTERM, then SIGKILL of its own process group) when the block ends.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
# The local servers the benchmarks use, as `make test` exports them for the tests.
PG_ADMIN_URL = os.environ.get(
    "VOUCHER_TEST_PG_ADMIN_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
REDIS_URL = os.environ.get("VOUCHER_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


def free_port() -> int:
    """A TCP port nobody listens on right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _ready(base_url: str) -> bool:
    try:
        with urllib.request.urlopen(base_url + "/readyz", timeout=2) as resp:
            return bool(resp.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def _stop(proc: subprocess.Popen[bytes], grace_s: float = 15.0) -> None:
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)  # gunicorn's master stops its workers gracefully
    try:
        proc.wait(grace_s)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # the group we started, and only it
        proc.wait(5)


@contextlib.contextmanager
def gunicorn_server(
    env: Mapping[str, str],
    *,
    workers: int = 2,
    threads: int = 8,
    startup_timeout_s: float = 60.0,
    log_path: Path | None = None,
    extra_args: tuple[str, ...] = (),
    port: int | None = None,
) -> Iterator[str]:
    """Start `gunicorn 'voucher_service:create_app()'` with `env` added; yield its base URL.

    `port`: a port to bind (e.g. from a range a run was given); a free one by default."""
    port = port or free_port()
    base_url = f"http://127.0.0.1:{port}"
    # Only the given VOUCHER_* variables: a developer's own configuration must not leak into the server.
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("VOUCHER_")} | dict(env)
    full_env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), full_env.get("PYTHONPATH")]))
    log = open(log_path, "w+b") if log_path else tempfile.TemporaryFile()  # noqa: SIM115
    cmd = [
        sys.executable,
        "-m",
        "gunicorn",
        "--workers",
        str(workers),
        "--threads",
        str(threads),
        "--worker-class",
        "gthread",
        "--bind",
        f"127.0.0.1:{port}",
        "--graceful-timeout",
        "10",
        "--timeout",
        "60",
        "--keep-alive",
        "30",
        *extra_args,
        "voucher_service:create_app()",
    ]
    proc = subprocess.Popen(
        cmd, env=full_env, cwd=str(ROOT), stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    try:
        deadline = time.monotonic() + startup_timeout_s
        while not _ready(base_url):
            if proc.poll() is not None or time.monotonic() > deadline:
                log.seek(0)
                tail = log.read()[-4000:].decode(errors="replace")
                raise RuntimeError(f"gunicorn did not become ready (exit {proc.poll()}):\n{tail}")
            time.sleep(0.2)
        yield base_url
    finally:
        _stop(proc)
        log.close()


def settings_env(settings: Any, **extra: str) -> dict[str, str]:
    """The VOUCHER_* variables that make a server process use these Settings."""
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


def server_log(path: Path) -> str:
    """The tail of a server log written with log_path, for failure messages."""
    return path.read_text(errors="replace")[-4000:] if path.exists() else ""


@contextlib.contextmanager
def throwaway_settings(pg_admin_url: str, redis_url: str, name: str) -> Iterator[Any]:
    """Production-like Settings on a fresh PostgreSQL database that is dropped afterwards."""
    from sqlalchemy import create_engine, text

    from voucher_service.config import Settings

    admin = create_engine(pg_admin_url, isolation_level="AUTOCOMMIT")
    db = f"vbench_{name}_{secrets.token_hex(4)}"
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{db}"'))
    try:
        with tempfile.TemporaryDirectory() as tmp:
            yield Settings(
                database_url=pg_admin_url.rsplit("/", 1)[0] + "/" + db,
                redis_url=redis_url,
                env="production",
                secret_key=secrets.token_urlsafe(48),
                signing_key_passphrase=secrets.token_urlsafe(24),
                sms_outbox=None,
                var_dir=Path(tmp),
                redis_prefix=f"vbench:{secrets.token_hex(4)}:",
            )
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)'))
        admin.dispose()
