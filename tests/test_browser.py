"""The built website in headless Chromium: no page shows an error, and widgets work with no kernel running.

Run after `make book` (it builds the book itself when `_build/html` is missing): `make browser-test`.
Needs Debian's `chromium` (`apt-get install chromium`) and the `playwright` Python package (no browser download).
"""

from __future__ import annotations

import functools
import http.server
import re
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
# The allow-list of console messages, each with its reason (anything else fails a page):
# - "Got invalid theme mode": pydata-sphinx-theme's notice on a first visit (empty localStorage, as in every fresh
#   headless browser); it then falls back to "auto".
# - a 404 for /favicon.ico: the browser asks for one by itself; the book has none.
# - a 404 for the widget manager's icon fonts (.woff/.woff2/.ttf next to embed-amd.js): tools/vendor_js.sh vendors the
#   JavaScript only; widgets render without those glyphs.
# Thebe's "THEBE_JS_URL already declared" is no longer allowed: tools/sphinx_book_fixes.py removes the script.
BENIGN_TEXT = ("Got invalid theme mode",)
BENIGN_404 = ("/favicon.ico", ".woff", ".woff2", ".ttf")
SHRINK_TOLERANCE = 0.95  # an image shown narrower than this fraction of its natural width fails (9-pt text
# shown below 8.5 pt); a few figures are up to 723 px wide (legends outside the axes, bbox_inches="tight")
# a Markdown table rule left as text (the table did not render): "|---|", "| --- | :---: |"
RAW_TABLE = re.compile(r"\|\s*:?-{3,}:?\s*\|")
# math that MathJax did not typeset: a $...$ span, or TeX sub/superscripts and commands outside math
RAW_MATH = re.compile(r"\$[^$\n]+\$|[_^]\{|\\(?:frac|sum|hat|lambda|sigma|mathrm|text|sqrt|top|cdot)\b")


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


def _benign(message: str, url: str) -> bool:
    if any(b in message for b in BENIGN_TEXT):
        return True
    return "Failed to load resource" in message and url.split("?")[0].endswith(BENIGN_404)


def open_page(browser, url: str, width: int = 1280):
    page = browser.new_page(viewport={"width": width, "height": 900})
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("console", lambda m: m.type == "error" and not _benign(m.text, m.location.get("url", ""))
            and errors.append(f"{m.text} ({m.location.get('url', '')})"))
    page.goto(url, wait_until="load")
    page.wait_for_timeout(1500)  # let the widget manager and MathJax render
    return page, errors


def visible_prose(page) -> str:
    """The article's visible text without typeset math, code and scripts (what a reader sees as plain text)."""
    return page.evaluate("""() => {
        const article = document.querySelector('article').cloneNode(true);
        article.querySelectorAll('mjx-container, .MathJax, script, style, pre, code, .highlight')
            .forEach(e => e.remove());
        return article.innerText; }""")


@pytest.mark.parametrize("document", pages())
def test_page_has_no_error_output(site, browser, document):
    assert (HTML / f"{document}.html").is_file(), f"{document} was not built"
    page, errors = open_page(browser, f"{site}/{document}.html")
    text = page.inner_text("article")
    assert "Traceback (most recent call last)" not in text
    assert page.locator(".output.traceback, .output.error, .cell_output .stderr").count() == 0
    assert not errors, f"JavaScript errors on {document}: {errors}"
    prose = visible_prose(page)
    raw_tables = [line for line in prose.splitlines() if RAW_TABLE.search(line)]
    assert not raw_tables, f"{document} shows Markdown tables as raw text: {raw_tables[:3]}"
    raw_math = [line[:160] for line in prose.splitlines() if RAW_MATH.search(line)]
    assert not raw_math, f"{document} shows math that was not typeset: {raw_math[:3]}"
    assert page.locator("mjx-merror").count() == 0, f"MathJax reports an error on {document}"
    page.close()


@pytest.mark.parametrize("document", pages())
def test_figures_are_legible_and_captioned(site, browser, document):
    """At a 1280 px window no figure or widget frame is shrunk (lib.plotting makes them at most the column's width at
    100 dpi with text ≥ 9 pt, so a shrunk image would mean smaller text), and every provenance line under a figure is
    page text (an HTML caption), not only pixels."""
    page, _ = open_page(browser, f"{site}/{document}.html")
    images = page.evaluate("""() => [...document.querySelectorAll('article img')]
        .filter(img => img.offsetParent !== null && img.naturalWidth > 0)
        .map(img => [img.getAttribute('src').slice(-40), img.naturalWidth, img.getBoundingClientRect().width])""")
    shrunk = [(src, natural, round(shown)) for src, natural, shown in images if shown < SHRINK_TOLERANCE * natural]
    assert not shrunk, f"{document}: images shrunk below their natural width (text < 9 pt): {shrunk[:5]}"
    html = (HTML / f"{document}.html").read_text(errors="ignore")
    if "Provenance:" in html:
        # numbered figures carry it in their figcaption, the others in a p.book-provenance under the image
        captions = page.locator("p.book-provenance, figure figcaption")
        assert captions.count() > 0 and all(len(t) > 20 for t in captions.all_inner_texts())
        sizes = page.evaluate("""() => [...document.querySelectorAll('p.book-provenance, figure figcaption')]
            .map(e => parseFloat(getComputedStyle(e).fontSize))""")
        assert min(sizes) >= 12, f"provenance caption at {min(sizes)} px on {document}"
    page.close()


@pytest.mark.parametrize("document", pages())
def test_figures_have_alt_text_and_numbers(site, browser, document):
    """Every figure image has alternative text that describes it (lib.plotting.describe), not its file name, and the
    chapters' figures are numbered figures (a caption with a number and the provenance) that the prose links to."""
    page, _ = open_page(browser, f"{site}/{document}.html")
    alts = page.evaluate("""() => [...document.querySelectorAll('article img')]
        .filter(img => !img.closest('.widget-stack, .jupyter-widgets'))
        .map(img => img.getAttribute('alt') || '')""")
    bad = [a[:60] for a in alts if len(a) < 15 or re.search(r"\.(png|jpe?g|svg)$", a)]
    assert not bad, f"{document}: images without real alt text: {bad[:5]}"
    if document.startswith("chapters/"):
        numbers = page.locator("figure figcaption .caption-number")
        assert numbers.count() > 0, f"{document} has no numbered figure"
        captions = page.locator("figure figcaption").all_inner_texts()
        assert all("Provenance:" in c or "Drawn when this page was built" in c for c in captions), captions[:3]
        links = page.locator("a.reference.internal span.std-numref")
        assert links.count() >= numbers.count(), f"{document}: a numbered figure is never referenced"
    page.close()


@pytest.mark.parametrize("document", pages())
def test_verdicts_are_coloured_and_phones_do_not_scroll_sideways(site, browser, document):
    """Each verdict cell of a claims table (and of the legend) carries its word's colour class (_assets/verdicts.js),
    and at a 390 px phone width the page itself never scrolls sideways (wide tables and outputs scroll in their own
    box: _assets/book.css)."""
    page, _ = open_page(browser, f"{site}/{document}.html")
    cells = page.evaluate("""() => {
        const out = [];
        document.querySelectorAll('article table').forEach(t => {
            const heads = [...t.querySelectorAll('thead th')].map(th => th.textContent.trim().toLowerCase());
            const col = heads.findIndex(h => h.startsWith('verdict'));
            if (col < 0) return;
            t.querySelectorAll('tbody tr').forEach(r => { const c = r.children[col];
                if (c) out.push([c.textContent.trim(), c.className]); });
        });
        return out; }""")
    uncoloured = [text for text, cls in cells if text and "verdict-" not in cls]
    assert not uncoloured, f"{document}: verdict cells without a colour class: {uncoloured[:5]}"
    if document in ("chapters/00_how_to_read", "chapters/02_anti_aliasing"):
        assert cells, f"{document} shows no verdict column"
    page.close()
    phone = browser.new_page(viewport={"width": 390, "height": 844})
    phone.goto(f"{site}/{document}.html", wait_until="load")
    phone.wait_for_timeout(1500)
    overflow = phone.evaluate("() => document.documentElement.scrollWidth - document.documentElement.clientWidth")
    assert overflow <= 1, f"{document} scrolls sideways by {overflow} px at 390 px"
    phone.close()


@pytest.mark.parametrize("document", [d for d in pages() if d.startswith("chapters/")])
def test_executed_notebook_is_offered_with_its_figures(site, document):
    """Each chapter links its executed notebook (tools/sphinx_book_fixes.py), which holds the page's outputs with the
    glued (numbered) figures visible to Jupyter, not hidden behind myst-nb's mime prefix."""
    import json
    page = (HTML / f"{document}.html").read_text(errors="ignore")
    found = re.search(r'<p class="book-download">Download <a href="([^"]+)"', page)
    assert found, f"{document} offers no executed notebook"
    notebook = json.loads(((HTML / document).parent / found[1]).resolve().read_text())
    outputs = [o for c in notebook["cells"] if c["cell_type"] == "code" for o in c.get("outputs", [])]
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    hidden = [o for o in outputs if any(k.startswith("application/papermill.record/") for k in o.get("data", {}))]
    assert images and not hidden, f"{document}: {len(images)} visible images, {len(hidden)} hidden glue outputs"


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
