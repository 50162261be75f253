"""Browser tests of the pages: the real app on a free 127.0.0.1 port, Playwright driving Debian's
Chromium with no network, pages that fail the test on any console error, axe, screenshots.

Fixtures (for every area's tests/browser/test_<area>.py):
- `live` -> LiveServer: base_url, app, ctx, admin (tests.helpers.Admin), admin_token, sms_outbox,
  sms_code(phone), url(path).
- `browser`: one Chromium for the session; `launch_chromium(*extra_args)` another one with extra flags,
  e.g. `launch_chromium(*support.fake_camera_args(support.y4m_of(image, path)))` for a fake camera.
- `new_page(width="phone"|"desktop", lang="zh"|"en")`: a fresh context and page (Accept-Language
  set); requests that leave 127.0.0.1 are aborted and fail the test, as does any console error or
  uncaught exception, checked when the test ends. `phone_page` / `desktop_page` are Chinese ones.
- helpers in tests/browser/support.py: `check_axe(page)` (no serious or critical violation), `screenshot(page, name)`
  (docs/screenshots/NAME.png), `assert_translated(page)` (a Chinese page shows no English msgid).
"""

from __future__ import annotations

import re
import shutil
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from werkzeug.serving import make_server

from tests.conftest import copy_sqlite_template, make_settings
from tests.helpers import Admin, sms_code
from voucher_service import create_app
from voucher_service.services.context import ServiceContext
from voucher_service.services.credentials import create_admin_token

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or "/usr/bin/chromium"
FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
VIEWPORTS = {"phone": {"width": 390, "height": 844}, "desktop": {"width": 1280, "height": 800}}
LOCALES = {"zh": ("zh-CN", "zh-CN,zh;q=0.9"), "en": ("en-US", "en-US,en;q=0.9")}

playwright_api = pytest.importorskip("playwright.sync_api")


@dataclass
class LiveServer:
    """The real app answering HTTP on 127.0.0.1 (SQLite, in-process store, SMS outbox file)."""

    app: Any
    base_url: str
    ctx: ServiceContext
    admin: Admin
    admin_token: str
    sms_outbox: str

    def url(self, path: str) -> str:
        return self.base_url + path

    def sms_code(self, phone: str) -> str:
        """The last one-time code the outbox holds for this phone."""
        return sms_code(self.sms_outbox, phone)


@pytest.fixture
def live(tmp_path: Path, sqlite_template: Path) -> Iterator[LiveServer]:
    settings = make_settings(tmp_path, copy_sqlite_template(sqlite_template, tmp_path / "voucher.sqlite3"))
    app = create_app(settings)
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), name="live-pages", daemon=True)
    thread.start()
    ctx: ServiceContext = app.extensions["voucher"]
    token = create_admin_token(ctx, "browser-tests")
    try:
        yield LiveServer(
            app,
            f"http://127.0.0.1:{server.server_port}",
            ctx,
            Admin(app.test_client(), token),
            token,
            str(settings.sms_outbox),
        )
    finally:
        server.shutdown()
        thread.join()
        server.server_close()
        ctx.engine.dispose()


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    if not Path(CHROMIUM).exists():
        pytest.skip("make test installs chromium (scripts/ensure_browser.sh)")
    with playwright_api.sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
        yield b
        b.close()


@pytest.fixture
def launch_chromium(browser: Any) -> Iterator[Callable[..., Any]]:
    """Another Chromium with extra flags (e.g. a fake camera), closed when the test ends."""
    launched: list[Any] = []

    def launch(*extra_args: str) -> Any:
        b = browser.browser_type.launch(executable_path=CHROMIUM, headless=True, args=[*FLAGS, *extra_args])
        launched.append(b)
        return b

    yield launch
    for b in launched:
        b.close()


@dataclass
class PageProblems:
    """What went wrong in the pages of one test (checked when it ends)."""

    console_errors: list[tuple[str, str]] = field(default_factory=list)  # (resource url, message)
    off_site: list[str] = field(default_factory=list)
    failed_documents: set[str] = field(default_factory=set)

    def unexpected(self) -> list[str]:
        """Console errors, less Chromium's note on a page whose own status the test looked at (a 404)."""
        return [
            f"{url}: {text}"
            for url, text in self.console_errors
            if not (url in self.failed_documents and text.startswith("Failed to load resource"))
        ]


@pytest.fixture
def new_page(browser: Any, live: LiveServer) -> Iterator[Callable[..., Any]]:
    problems = PageProblems()
    contexts: list[Any] = []
    local = re.compile(r"^(https?://127\.0\.0\.1(:\d+)?/|data:|blob:|about:)")

    def make(width: str = "phone", lang: str = "zh", **context_options: Any) -> Any:
        locale, accept = LOCALES[lang]
        context = browser.new_context(
            viewport=VIEWPORTS[width],
            locale=locale,
            extra_http_headers={"Accept-Language": accept},
            **context_options,
        )
        context.set_default_timeout(15_000)

        def route(r: Any) -> None:
            if local.match(r.request.url):
                r.continue_()
            else:  # nothing may come from the internet
                problems.off_site.append(r.request.url)
                r.abort()

        context.route("**/*", route)
        contexts.append(context)
        page = context.new_page()
        page.on(
            "console",
            lambda msg: (
                problems.console_errors.append(((msg.location or {}).get("url") or page.url, msg.text))
                if msg.type == "error"
                else None
            ),
        )
        page.on("pageerror", lambda exc: problems.console_errors.append((page.url, f"uncaught {exc}")))
        page.on(
            "response",
            lambda resp: (
                problems.failed_documents.add(resp.url)
                if resp.status >= 400 and resp.request.is_navigation_request()
                else None
            ),
        )
        return page

    yield make
    for context in contexts:
        context.close()
    assert not problems.off_site, f"requests left the machine: {problems.off_site}"
    errors = problems.unexpected()
    assert not errors, "console errors:\n" + "\n".join(errors)


@pytest.fixture
def phone_page(new_page: Callable[..., Any]) -> Any:
    return new_page("phone", "zh")


@pytest.fixture
def desktop_page(new_page: Callable[..., Any]) -> Any:
    return new_page("desktop", "zh")
