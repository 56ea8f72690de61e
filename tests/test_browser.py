"""Open every page of the built book in headless Chromium, served from 127.0.0.1.

Run after `make book` (`make test` builds the book first). The test asserts, page by page:
every request stays on 127.0.0.1 and succeeds (a missing favicon excepted), no JavaScript
error, every equation typeset by the MathJax copy inside the build, every image loaded
with alt text that describes it, and (across the whole site) every internal link resolves
to a page and anchor that exist. A screenshot of each page goes to
`_build/screenshots/`, printed at the end: look at them.

Locally a missing browser skips the test; in CI (CI=true) it fails.
"""

from __future__ import annotations

import functools
import http.server
import os
import re
import shutil
import threading
import time
from pathlib import Path
from urllib.parse import unquote, urldefrag, urljoin, urlparse

import pytest
from bs4 import BeautifulSoup

ROOT = Path(__file__).resolve().parent.parent
SITE = ROOT / "_build" / "html"
SHOTS = ROOT / "_build" / "screenshots"
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SKIP_DIRS = {"_static", "_sources", "_images", "_sphinx_design_static"}

pytestmark = pytest.mark.browser


def unavailable(reason: str):
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (in CI the browser test must run)")
    pytest.skip(reason)


def site_pages() -> list[Path]:
    if not (SITE / "index.html").exists():
        return []
    return sorted(p for p in SITE.rglob("*.html") if not SKIP_DIRS & set(p.relative_to(SITE).parts))


@pytest.fixture(scope="module")
def server():
    if not (SITE / "index.html").exists():
        unavailable(f"no built book at {SITE}: run `make book` first")
    handler = functools.partial(QuietHandler, directory=str(SITE))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/"
    httpd.shutdown()


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


@pytest.fixture(scope="module")
def browser_context(tmp_path_factory):
    if not Path(CHROMIUM).exists():
        unavailable(f"Chromium not found at {CHROMIUM} (apt-get install -y chromium)")
    from playwright.sync_api import sync_playwright

    if SHOTS.exists():
        shutil.rmtree(SHOTS)
    SHOTS.mkdir(parents=True)
    with sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            str(tmp_path_factory.mktemp("chromium-profile")),
            executable_path=CHROMIUM,
            args=CHROMIUM_ARGS,
            headless=True,
            viewport={"width": 1280, "height": 900},
        )
        yield context
        context.close()
    print(f"\nScreenshots of every page: {SHOTS}")


PAGES = site_pages()


def test_book_has_pages() -> None:
    if not PAGES:
        unavailable(f"no built book at {SITE}: run `make book` first")
    names = {p.relative_to(SITE).as_posix() for p in PAGES}
    assert {"intro.html", "notation.html", "references.html"} <= names


def wait_until_requests_settle(page, pending: set, quiet: float = 0.5, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    quiet_since = None
    while True:
        now = time.monotonic()
        quiet_since = None if pending else (quiet_since or now)
        if quiet_since is not None and now - quiet_since >= quiet:
            return
        if now > deadline:
            raise AssertionError(f"requests still pending after {timeout:.0f} s: {[r.url for r in pending]}")
        page.wait_for_timeout(100)


@pytest.mark.parametrize("page_path", PAGES, ids=[p.relative_to(SITE).as_posix() for p in PAGES])
def test_page(page_path: Path, server: str, browser_context) -> None:
    url = urljoin(server, page_path.relative_to(SITE).as_posix())
    page = browser_context.new_page()
    requests, failures, js_errors = [], [], []
    pending: set = set()
    page.on("request", lambda r: (requests.append(r.url), pending.add(r)))
    page.on("requestfinished", lambda r: pending.discard(r))
    page.on("requestfailed", lambda r: pending.discard(r))
    page.on("requestfailed", lambda r: failures.append(f"{r.url} ({r.failure})"))
    page.on("response", lambda r: failures.append(f"{r.url} (HTTP {r.status})") if r.status >= 400 else None)
    page.on("pageerror", lambda e: js_errors.append(str(e)))
    page.on("console", lambda m: js_errors.append(m.text) if m.type == "error" else None)
    try:
        page.goto(url, wait_until="load")
        # Wait for MathJax to finish typesetting where the page loads it.
        page.wait_for_function("() => !window.MathJax || (MathJax.startup && MathJax.startup.promise)")
        page.evaluate("() => window.MathJax ? MathJax.startup.promise : null")
        # Every request answered and none new for 0.5 s. (Playwright's "networkidle" never
        # fires for the second page of a context that has cached the first page's files,
        # although every request has finished: measured, it timed out after 30 s.)
        wait_until_requests_settle(page, pending)

        outside = [u for u in requests if urlparse(u).scheme not in ("data", "blob", "about") and urlparse(u).hostname != "127.0.0.1"]
        assert outside == [], f"requests that leave the site: {outside}"
        failed = [f for f in failures if "favicon" not in f]
        assert failed == [], f"failed requests: {failed}"
        # Chromium also logs each failed request as a console error without its URL;
        # those are checked (with their URLs) just above.
        js_errors = [e for e in js_errors if not e.startswith("Failed to load resource")]
        assert js_errors == [], f"JavaScript errors: {js_errors}"

        math = page.evaluate(
            """() => ({
                expected: document.querySelectorAll('.math').length,
                typeset: document.querySelectorAll('.math mjx-container, mjx-container').length,
                raw: [...document.querySelectorAll('.math')].filter(e => !e.querySelector('mjx-container')).map(e => e.textContent.slice(0, 60)),
            })"""
        )
        assert math["raw"] == [], f"math left as raw TeX: {math['raw']}"
        assert math["typeset"] >= math["expected"], math

        images = page.evaluate(
            """() => [...document.querySelectorAll('main img, article img, .bd-article img')].map(i => ({
                src: i.getAttribute('src'), alt: i.getAttribute('alt') || '', ok: i.complete && i.naturalWidth > 0}))"""
        )
        for image in images:
            assert image["ok"], f"image did not load: {image['src']}"
            alt = image["alt"]
            assert len(alt.split()) >= 4 and not re.search(r"\.(png|svg|jpe?g)\b|/", alt), (
                f"image {image['src']} has alt text {alt!r}, which does not describe it"
            )

        shot = SHOTS / (page_path.relative_to(SITE).as_posix().replace("/", "__").removesuffix(".html") + ".png")
        page.screenshot(path=str(shot), full_page=True)
    finally:
        page.close()


@functools.lru_cache(maxsize=None)
def ids_in(path: Path) -> frozenset[str]:
    soup = BeautifulSoup(path.read_text(encoding="utf-8"), "html.parser")
    return frozenset(tag["id"] for tag in soup.find_all(id=True))


def test_internal_links_resolve() -> None:
    if not PAGES:
        unavailable(f"no built book at {SITE}: run `make book` first")
    broken = []
    checked = 0
    for page in PAGES:
        soup = BeautifulSoup(page.read_text(encoding="utf-8"), "html.parser")
        for a in soup.find_all("a", href=True):
            href = a["href"]
            parsed = urlparse(href)
            if parsed.scheme or href.startswith(("mailto:", "//")):
                continue
            target, anchor = urldefrag(href)
            target_path = (page.parent / unquote(target)).resolve() if target else page
            if target_path.is_dir():
                target_path = target_path / "index.html"
            checked += 1
            if not target_path.exists():
                broken.append(f"{page.relative_to(SITE)}: {href} (no such file)")
            elif anchor and target_path.suffix == ".html" and unquote(anchor) not in ids_in(target_path):
                broken.append(f"{page.relative_to(SITE)}: {href} (no anchor #{anchor})")
    assert checked > 20
    assert broken == [], "broken internal links:\n" + "\n".join(broken)


def test_links_that_leave_the_site_are_only_plain_links() -> None:
    """Nothing in the pages loads from elsewhere: scripts, styles, images, frames."""
    loaded = []
    for page in PAGES:
        soup = BeautifulSoup(page.read_text(encoding="utf-8"), "html.parser")
        for tag, attr in (("script", "src"), ("link", "href"), ("img", "src"), ("iframe", "src")):
            for el in soup.find_all(tag):
                value = el.get(attr, "")
                if tag == "link" and "stylesheet" not in el.get("rel", []) and "preload" not in el.get("rel", []):
                    continue
                if urlparse(value).scheme in ("http", "https") or value.startswith("//"):
                    loaded.append(f"{page.relative_to(SITE)}: <{tag} {attr}={value}>")
    assert loaded == [], "pages load from outside the site:\n" + "\n".join(loaded)
