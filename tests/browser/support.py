"""Helpers of the browser tests: axe, screenshots, the untranslated-text check."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
SCREENSHOTS = ROOT / "docs" / "screenshots"
TRANSLATIONS = ROOT / "voucher_service" / "web" / "translations"


def check_axe(page: Any) -> None:
    """Fail on any serious or critical axe-core violation of the page as it is now."""
    from axe_playwright_python.sync_playwright import Axe

    results = Axe().run(page)
    bad = [v for v in results.response["violations"] if v.get("impact") in ("serious", "critical")]
    details = [
        f"{v['id']} ({v['impact']}): {v['help']} at {[n['target'] for n in v['nodes'][:3]]}" for v in bad
    ]
    assert not bad, f"axe on {page.url}:\n" + "\n".join(details)


def screenshot(page: Any, name: str, full_page: bool = True) -> Path:
    """Save docs/screenshots/NAME.png (the README shows them)."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=full_page)
    return path


def english_msgids() -> list[str]:
    """Every msgid of every area's catalog, as text fragments a reader would see (placeholders cut)."""
    from babel.messages.pofile import read_po

    fragments: set[str] = set()
    for po in TRANSLATIONS.glob("*/zh/LC_MESSAGES/messages.po"):
        with po.open("rb") as fh:
            for message in read_po(fh):
                if not message.id:
                    continue
                ids = message.id if isinstance(message.id, tuple) else (message.id,)
                for msgid in ids:
                    for part in re.split(r"%\(\w+\)[sd]|%[sd]", msgid):
                        part = part.strip(" .,:;·()")
                        if len(re.findall(r"[A-Za-z]", part)) >= 4 and re.search(r"[a-z]{3}", part):
                            fragments.add(part)
    return sorted(fragments, key=len, reverse=True)


def assert_translated(page: Any) -> None:
    """In Chinese, the visible text (and labels a screen reader reads) holds no English msgid."""
    text = page.evaluate("""() => {
        const parts = [document.body.innerText, document.title];
        for (const el of document.querySelectorAll('[aria-label],[placeholder],[title],[alt]')) {
            for (const a of ['aria-label', 'placeholder', 'title', 'alt']) {
                if (el.getAttribute(a)) parts.push(el.getAttribute(a));
            }
        }
        for (const el of document.querySelectorAll('input[type=submit],input[type=button]')) parts.push(el.value);
        return parts.join('\\n');
    }""")
    words = set(re.findall(r"[A-Za-z][A-Za-z'-]*", text))
    left = []
    for fragment in english_msgids():
        if fragment in text and all(w in words for w in re.findall(r"[A-Za-z][A-Za-z'-]*", fragment)):
            left.append(fragment)
    assert not left, f"untranslated on {page.url}: {json.dumps(left, ensure_ascii=False)}"


def y4m_of(image: Any, path: Path, width: int = 640, height: int = 480, frames: int = 10) -> Path:
    """A Y4M video (for Chromium's --use-file-for-fake-video-capture) showing `image` centred on white."""
    from PIL import Image

    canvas = Image.new("RGB", (width, height), "white")
    img = image.convert("RGB")
    img.thumbnail((width - 40, height - 40))
    canvas.paste(img, ((width - img.width) // 2, (height - img.height) // 2))
    y, u, v = canvas.convert("YCbCr").split()
    u = u.resize((width // 2, height // 2))
    v = v.resize((width // 2, height // 2))
    frame = b"FRAME\n" + y.tobytes() + u.tobytes() + v.tobytes()
    path.write_bytes(f"YUV4MPEG2 W{width} H{height} F10:1 Ip A1:1 C420jpeg\n".encode() + frame * frames)
    return path


def fake_camera_args(video: Path) -> list[str]:
    """Chromium flags for a camera that shows a Y4M file (see support.y4m_of), permission granted."""
    return [
        "--use-fake-device-for-media-stream",
        "--use-fake-ui-for-media-stream",
        f"--use-file-for-fake-video-capture={video}",
    ]
