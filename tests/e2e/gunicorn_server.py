"""Run the real app under gunicorn on a free loopback port for end-to-end tests, and always stop it."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import requests

from voucher_service.config import Settings


def free_port() -> int:
    """A port the kernel just handed out on 127.0.0.1."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


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


@contextmanager
def gunicorn(env: dict[str, str], log_path: Path, workers: int = 2, threads: int = 4) -> Iterator[str]:
    """Serve 'voucher_service:create_app()' with these variables; yield the base URL."""
    port = free_port()
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("VOUCHER_")}
    full_env.update(env)
    cmd = [
        sys.executable,
        "-m",
        "gunicorn",
        "--workers",
        str(workers),
        "--threads",
        str(threads),
        "--bind",
        f"127.0.0.1:{port}",
        "--graceful-timeout",
        "5",
        "voucher_service:create_app()",
    ]
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(cmd, env=full_env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"gunicorn exited: {log_path.read_text()[-2000:]}")
            try:
                if requests.get(base + "/healthz", timeout=1).status_code == 200:
                    break
            except requests.RequestException:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"gunicorn did not answer: {log_path.read_text()[-2000:]}")
            time.sleep(0.1)
        yield base
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
