"""The SDK stands alone: it imports without the service, Flask or SQLAlchemy, and exports a typed API."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import merchant_sdk

ROOT = Path(__file__).resolve().parents[2]
BLOCKED = ["flask", "sqlalchemy", "voucher_service", "werkzeug", "pydantic", "alembic", "psycopg", "redis"]

CHILD = f"""
import sys
for name in {BLOCKED!r}:
    sys.modules[name] = None  # any import of these now raises ImportError
import merchant_sdk
from merchant_sdk import VoucherClient, OfflineTerminal, VoucherError
import merchant_sdk.cli
import merchant_sdk._client, merchant_sdk._offline, merchant_sdk._journal, merchant_sdk._cose
loaded = sorted(m for m in sys.modules if m.split(".")[0] in {BLOCKED!r} and sys.modules[m] is not None)
print("LOADED", loaded)
"""


def test_the_sdk_imports_with_the_service_flask_and_sqlalchemy_blocked() -> None:
    out = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "LOADED []"


def test_no_sdk_source_mentions_the_server_packages() -> None:
    for path in (ROOT / "merchant_sdk").glob("*.py"):
        text = path.read_text()
        for name in ("voucher_service", "flask", "sqlalchemy"):
            assert f"import {name}" not in text and f"from {name}" not in text, (path, name)


def test_the_public_api_is_exactly_all_and_modules_are_private() -> None:
    public = {n for n in dir(merchant_sdk) if not n.startswith("_")}
    assert set(merchant_sdk.__all__) - {"__version__"} <= public
    for name in merchant_sdk.__all__:
        assert getattr(merchant_sdk, name) is not None
    modules = {p.stem for p in (ROOT / "merchant_sdk").glob("*.py")} - {"__init__", "cli"}
    assert modules and all(m.startswith("_") for m in modules)
    assert (ROOT / "merchant_sdk" / "py.typed").exists()
