"""Languages of the pages: Simplified Chinese by default, English on request (Flask-Babel catalogs).

The language is `?lang=` (remembered in the `lang` cookie), else the `lang` cookie, else the best
match of Accept-Language, else Chinese. Each area has its own catalog directory
(web/translations/<area>/zh/LC_MESSAGES/messages.po); Flask-Babel merges them all.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

from flask import Flask, Response, g, request
from flask_babel import Babel

from voucher_service.domain.money import format_yuan

LANGUAGES = {"zh": "zh_CN", "en": "en"}  # page language -> Babel locale
HTML_LANG = {"zh": "zh-CN", "en": "en"}
DEFAULT_LANGUAGE = "zh"
LANG_COOKIE = "lang"
TRANSLATIONS = Path(__file__).parent / "translations"
DISPLAY_TZ = ZoneInfo("Asia/Shanghai")


def page_language() -> str:
    """'zh' or 'en' for this request."""
    lang = g.get("page_lang")
    if lang is None:
        lang = _choose()
        g.page_lang = lang
    return str(lang)


def _choose() -> str:
    asked = request.args.get("lang", "")
    if asked in LANGUAGES:
        g.page_lang_chosen = asked
        return asked
    cookie = request.cookies.get(LANG_COOKIE, "")
    if cookie in LANGUAGES:
        return cookie
    best = request.accept_languages.best_match(["zh", "zh-CN", "zh-Hans", "en", "en-US", "en-GB"])
    if best:
        return best.split("-")[0].lower()
    return DEFAULT_LANGUAGE


def lang_url(lang: str) -> str:
    """The current page's URL in another language."""
    args = {k: v for k, v in request.args.items() if k != "lang"}
    args["lang"] = lang
    return request.path + "?" + urlencode(args)


def money(fen: int | None) -> str:
    """Integer fen as '¥50.00' (never through a float)."""
    if fen is None:
        return ""
    if isinstance(fen, bool) or not isinstance(fen, int):
        raise TypeError(f"money() takes integer fen, not {type(fen).__name__}")
    return "¥" + format_yuan(fen)


def local_time(value: str | dt.datetime | None, fmt: str = "%Y-%m-%d %H:%M") -> str:
    """An RFC 3339 string or aware datetime shown in China Standard Time."""
    if value is None or value == "":
        return ""
    when = dt.datetime.fromisoformat(value.replace("Z", "+00:00")) if isinstance(value, str) else value
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return when.astimezone(DISPLAY_TZ).strftime(fmt)


def install(app: Flask) -> None:
    """Configure Flask-Babel with every area's catalog directory and the page helpers."""
    dirs = sorted(str(p) for p in TRANSLATIONS.iterdir() if p.is_dir()) if TRANSLATIONS.is_dir() else []
    app.config["BABEL_TRANSLATION_DIRECTORIES"] = ";".join(dirs) or str(TRANSLATIONS)
    app.config["BABEL_DEFAULT_LOCALE"] = LANGUAGES[DEFAULT_LANGUAGE]
    Babel(app, locale_selector=lambda: LANGUAGES[page_language()])
    app.jinja_env.filters["money"] = money
    app.jinja_env.filters["local_time"] = local_time
    app.jinja_env.globals["lang_url"] = lang_url
    app.jinja_env.globals["page_language"] = page_language
    app.jinja_env.globals["html_lang"] = lambda: HTML_LANG[page_language()]
    app.jinja_env.policies["ext.i18n.trimmed"] = True


def remember_choice(resp: Response) -> Response:
    """Keep a language asked for with ?lang= in the `lang` cookie."""
    chosen = g.get("page_lang_chosen")
    if chosen and request.cookies.get(LANG_COOKIE) != chosen:
        resp.set_cookie(LANG_COOKIE, chosen, max_age=365 * 86_400, samesite="Lax", path="/")
    return resp
