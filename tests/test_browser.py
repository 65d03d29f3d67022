"""The built website in headless Chromium: no page shows an error, and widgets work with no kernel running.

Run after `make book` (it builds the book itself when `_build/html` is missing): `make browser-test`.
Needs Debian's `chromium` (`apt-get install chromium`) and the `playwright` Python package (no browser download).
"""

from __future__ import annotations

import functools
import http.server
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parent.parent
HTML = ROOT / "_build" / "html"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", "--no-first-run", "--disable-quic"]
# known noise: the theme's first-visit mode message, thebe's double declaration, missing widget fonts (404)
BENIGN = ("THEBE_JS_URL", "Got invalid theme mode", "favicon", "Failed to load resource", "woff", "net::ERR")


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def pages() -> list[str]:
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    return [toc["root"]] + [entry["file"] for entry in toc.get("chapters", [])]


@pytest.fixture(scope="module")
def site():
    if not (HTML / "index.html").is_file():
        subprocess.run([sys.executable, "-m", "jupyter_book", "build", str(ROOT), "-W", "--keep-going"], check=True)
    handler = functools.partial(QuietHandler, directory=str(HTML))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


@pytest.fixture(scope="module")
def browser():
    playwright = pytest.importorskip("playwright.sync_api")
    if not Path(CHROMIUM).exists():
        pytest.fail("Chromium is not installed: apt-get install chromium")
    with playwright.sync_playwright() as p:
        instance = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS, headless=True)
        yield instance
        instance.close()


def open_page(browser, url: str):
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("console", lambda m: m.type == "error" and errors.append(m.text))
    page.goto(url, wait_until="load")
    page.wait_for_timeout(1500)  # let the widget manager render
    return page, [e for e in errors if not any(b in e for b in BENIGN)]


@pytest.mark.parametrize("document", pages())
def test_page_has_no_error_output(site, browser, document):
    assert (HTML / f"{document}.html").is_file(), f"{document} was not built"
    page, errors = open_page(browser, f"{site}/{document}.html")
    text = page.inner_text("article")
    assert "Traceback (most recent call last)" not in text
    assert page.locator(".output.traceback, .output.error, .cell_output .stderr").count() == 0
    assert not errors, f"JavaScript errors on {document}: {errors}"
    page.close()


def visible_frame(page) -> str | None:
    """The data URL of the widget image currently shown (Stack children that are not hidden)."""
    return page.evaluate("""() => {
        const imgs = [...document.querySelectorAll('.widget-stack img, .widget-image')]
            .filter(img => img.tagName === 'IMG' && img.offsetParent !== null && img.getBoundingClientRect().width > 0);
        return imgs.length ? imgs[0].src.slice(-200) : null;
    }""")


def widget_pages() -> list[str]:
    """Pages whose built HTML embeds widget state (they must have at least one working slider)."""
    found = []
    for document in pages():
        path = HTML / f"{document}.html"
        if path.is_file() and "application/vnd.jupyter.widget-state+json" in path.read_text(errors="ignore"):
            found.append(document)
    return found


def test_some_page_has_widgets(site):
    assert "chapters/00_how_to_read" in widget_pages()


@pytest.mark.parametrize("document", ["chapters/00_how_to_read"])
def test_slider_changes_frame_without_kernel(site, browser, document):
    page, errors = open_page(browser, f"{site}/{document}.html")
    handle = page.locator(".widget-slider .noUi-handle").first
    handle.wait_for(state="visible", timeout=20000)
    before = visible_frame(page)
    assert before is not None, "no widget image is displayed"
    handle.focus()
    for _ in range(3):
        page.keyboard.press("ArrowRight")
    page.wait_for_timeout(500)
    after = visible_frame(page)
    assert after is not None and after != before, "moving the slider did not change the displayed frame"
    assert not errors, f"JavaScript errors: {errors}"
    page.close()


def test_every_widget_page_reacts(site, browser):
    for document in widget_pages():
        page, _ = open_page(browser, f"{site}/{document}.html")
        handles = page.locator(".widget-slider .noUi-handle")
        assert handles.count() > 0, f"{document} embeds widgets but shows no slider"
        before = visible_frame(page)
        handles.first.focus()
        page.keyboard.press("End")
        page.wait_for_timeout(500)
        assert visible_frame(page) != before, f"the first slider of {document} does not change its frame"
        page.close()
