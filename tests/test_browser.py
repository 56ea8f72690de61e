"""Open every page of the built book in headless Chromium, served from 127.0.0.1.

Run after `make book` (`make test` builds the book first). The test asserts, page by page:
every request stays on 127.0.0.1 and succeeds (a missing favicon excepted), no JavaScript
error, every equation typeset by the MathJax copy inside the build, every image loaded
with alt text that describes it, and (across the whole site) every internal link resolves
to a page and anchor that exist. A screenshot of each page goes to
`_build/screenshots/`, printed at the end: look at them.

The Chinese edition (`_build/html/zh/`, tools/build_zh.py) gets the same assertions on
every page, plus: its text is drawn with a CJK font (the font Chromium really used for a
Chinese text node, asked through the DevTools protocol, and distinct glyphs rather than
identical .notdef boxes), every page's language switch leads to its twin in the other
edition and back (on disk, over HTTP and from file://), and the Chinese search index holds
Chinese words (segmented by jieba) that a search finds.

Locally a missing browser skips the test; in CI (CI=true) it fails.
"""

from __future__ import annotations

import functools
import http.server
import json
import os
import re
import shutil
import sys
import threading
import time
from pathlib import Path
from urllib.parse import unquote, urldefrag, urljoin, urlparse

import pytest
from bs4 import BeautifulSoup

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))
import i18n  # noqa: E402  (tools/ is not a package)

SITE = ROOT / "_build" / "html"
ZH = SITE / "zh"
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
    # The Chinese edition has exactly the English edition's pages.
    english = {n for n in names if not n.startswith("zh/")}
    assert {n.removeprefix("zh/") for n in names if n.startswith("zh/")} == english


def is_chinese(path: Path) -> bool:
    return path.is_relative_to(ZH)


def switch_target(page: Path) -> Path:
    """The file a page's language switch links to (it must have one)."""
    links = page_soup(page.resolve()).select("a.language-switch")
    assert len(links) == 1, f"{page.relative_to(SITE)}: {len(links)} language switches"
    return (page.parent / unquote(links[0]["href"])).resolve()


# Families of fonts with Chinese glyphs (Noto/Source Han, and those of macOS and Windows).
CJK_FONT = re.compile(r"CJK|Source Han|PingFang|Hiragino|YaHei|SimSun|SimHei|WenQuanYi|Heiti|Songti|Droid Sans Fallback", re.I)


def cjk_fonts_used(page) -> dict:
    """The fonts Chromium used for the first Chinese text in the article (DevTools protocol)."""
    text = page.evaluate(
        """() => {
            const root = document.querySelector('article') || document.body;
            const walker = document.createTreeWalker(root, NodeFilter.SHOW_TEXT);
            while (walker.nextNode()) {
                const node = walker.currentNode;
                if (/[\u4e00-\u9fff]/.test(node.textContent) && !node.parentElement.closest('mjx-container, pre, code, .zh-fallback')) {
                    node.parentElement.setAttribute('data-cjk-probe', '');
                    return node.textContent.trim().slice(0, 30);
                }
            }
            return null;
        }"""
    )
    assert text, "no Chinese text in the article"
    cdp = page.context.new_cdp_session(page)
    try:
        cdp.send("DOM.enable")
        cdp.send("CSS.enable")
        root = cdp.send("DOM.getDocument", {"depth": 1})["root"]["nodeId"]
        node = cdp.send("DOM.querySelector", {"nodeId": root, "selector": "[data-cjk-probe]"})["nodeId"]
        fonts = cdp.send("CSS.getPlatformFontsForNode", {"nodeId": node})["fonts"]
    finally:
        cdp.detach()
    # Tofu is one .notdef box for every character: distinct characters must draw distinctly.
    distinct = page.evaluate(
        r"""() => {
            const font = getComputedStyle(document.querySelector('[data-cjk-probe]')).font;
            const draw = (ch) => {
                const c = document.createElement('canvas'); c.width = 40; c.height = 40;
                const g = c.getContext('2d'); g.font = font.replace(/\d+(\.\d+)?px/, '32px');
                g.fillText(ch, 2, 34); return Array.from(g.getImageData(0, 0, 40, 40).data).join(',');
            };
            return new Set(['注', '意', '力', '头'].map(draw)).size;
        }"""
    )
    return {"text": text, "fonts": fonts, "distinct glyphs": distinct}


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
            # Words counted in English or Chinese (12 Chinese characters count as 4 words).
            assert i18n.word_count(alt) >= 4 and not re.search(r"\.(png|svg|jpe?g)\b|/", alt), (
                f"image {image['src']} has alt text {alt!r}, which does not describe it"
            )

        # The language switch: visible, and its target is served.
        switch = page.locator("a.language-switch")
        assert switch.count() == 1 and switch.is_visible(), "no visible language switch"
        target = urljoin(url, switch.get_attribute("href"))
        assert page.request.get(target).status == 200, f"the language switch leads to {target}"

        if is_chinese(page_path):
            assert page.evaluate("document.documentElement.lang") == "zh-CN"
            used = cjk_fonts_used(page)
            assert any(CJK_FONT.search(f["familyName"]) and f["glyphCount"] > 0 for f in used["fonts"]), (
                f"Chinese text {used['text']!r} drawn without a CJK font: {used['fonts']}"
            )
            assert used["distinct glyphs"] == 4, f"Chinese characters drawn as identical boxes (tofu): {used}"

        shot = SHOTS / (page_path.relative_to(SITE).as_posix().replace("/", "__").removesuffix(".html") + ".png")
        page.screenshot(path=str(shot), full_page=True)
    finally:
        page.close()


@functools.lru_cache(maxsize=None)
def page_soup(path: Path) -> BeautifulSoup:
    """A built page, parsed once for all the tests below (do not change it)."""
    return BeautifulSoup(path.read_text(encoding="utf-8"), "html.parser")


@functools.lru_cache(maxsize=None)
def ids_in(path: Path) -> frozenset[str]:
    return frozenset(tag["id"] for tag in page_soup(path).find_all(id=True))


def test_internal_links_resolve() -> None:
    if not PAGES:
        unavailable(f"no built book at {SITE}: run `make book` first")
    broken = []
    checked = 0
    for page in PAGES:
        for a in page_soup(page).find_all("a", href=True):
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
        soup = page_soup(page)
        for tag, attr in (("script", "src"), ("link", "href"), ("img", "src"), ("iframe", "src")):
            for el in soup.find_all(tag):
                value = el.get(attr, "")
                if tag == "link" and "stylesheet" not in el.get("rel", []) and "preload" not in el.get("rel", []):
                    continue
                if urlparse(value).scheme in ("http", "https") or value.startswith("//"):
                    loaded.append(f"{page.relative_to(SITE)}: <{tag} {attr}={value}>")
    assert loaded == [], "pages load from outside the site:\n" + "\n".join(loaded)


def is_redirect(page: Path) -> bool:
    """Jupyter Book's index.html, which only sends the reader on to the root page."""
    return 'http-equiv="Refresh"' in page.read_text(encoding="utf-8")[:2000]


def test_language_switch_leads_to_the_twin_and_back() -> None:
    """On disk: each page's switch names an existing page, whose switch names the first."""
    if not PAGES:
        unavailable(f"no built book at {SITE}: run `make book` first")
    pages = [p for p in PAGES if not is_redirect(p)]
    checked = 0
    for page in pages:
        twin = switch_target(page)
        assert twin.exists(), f"{page.relative_to(SITE)}: the switch leads to a missing {twin}"
        assert is_chinese(twin) != is_chinese(page), f"{page.relative_to(SITE)}: the switch stays in its edition"
        assert twin.relative_to(ZH if is_chinese(twin) else SITE) == page.relative_to(ZH if is_chinese(page) else SITE)
        assert switch_target(twin) == page.resolve()
        checked += 1
    assert checked == len(pages) >= 2 * 13


def test_language_switch_works_from_file_urls(browser_context) -> None:
    """Opened from the disk (file://), the switch still leads there and back."""
    english = SITE / "chapters" / "01_soft_lookup.html"
    if not english.exists():
        unavailable(f"no built book at {SITE}: run `make book` first")
    page = browser_context.new_page()
    try:
        page.goto(english.as_uri(), wait_until="load")
        page.locator("a.language-switch").click()
        page.wait_for_load_state("load")
        assert page.url == (ZH / "chapters" / "01_soft_lookup.html").as_uri()
        assert page.evaluate("document.documentElement.lang") == "zh-CN"
        page.screenshot(path=str(SHOTS / "switch-file-url-zh.png"))
        page.locator("a.language-switch").click()
        page.wait_for_load_state("load")
        assert page.url == english.as_uri()
        assert page.evaluate("document.documentElement.lang") == "en"
    finally:
        page.close()


def search_terms(site: Path) -> set[str]:
    """The words of a built search index: those of the text and those of the titles."""
    text = (site / "searchindex.js").read_text(encoding="utf-8")
    index = json.loads(text[text.index("(") + 1 : text.rindex(")")])
    return set(index["terms"]) | set(index["titleterms"])


def chinese_words_on_pages() -> set[str]:
    """Words of two or more characters that jieba finds in the Chinese pages' prose.

    Prose is what Sphinx indexes: the paragraphs, headings and list items of the article,
    not the theme's buttons, the table of contents, raw HTML (the fallback markers) or the
    labels the HTML writer adds (an admonition's "警告")."""
    import jieba

    words = set()
    for page in PAGES:
        if not is_chinese(page) or page.name == "search.html" or is_redirect(page):
            continue
        article = BeautifulSoup(page.read_text(encoding="utf-8"), "html.parser").find("article")
        for skipped in article.select(".toctree-wrapper, summary, .zh-fallback, button, .headerlink, .admonition-title"):
            skipped.decompose()
        for element in article.find_all(["p", "h1", "h2", "h3", "h4", "li", "td", "th"]):
            for run in re.findall(r"[\u4e00-\u9fff]+", element.get_text(" ")):
                words.update(w for w in jieba.cut_for_search(run) if len(w) > 1)
    return words


def test_theme_aria_labels_are_in_the_page_language() -> None:
    """Screen readers read aria-labels aloud: the theme's fixed English ones are translated
    in the Chinese edition (_ext/language_switch.py), and kept in the English one."""
    if not PAGES:
        unavailable(f"no built book at {SITE}: run `make book` first")
    english = {"Main", "Page"}
    checked = {"en": 0, "zh": 0}
    for path in PAGES:
        soup = page_soup(path)
        navigation = soup.select_one("nav.bd-docs-nav")
        if navigation is None:
            continue  # a redirect (index.html), not a page of the theme
        labels = {tag["aria-label"] for tag in soup.find_all(attrs={"aria-label": True})}
        if is_chinese(path):
            assert not labels & english, f"{path.relative_to(SITE)} has English aria-labels {sorted(labels & english)}"
            assert navigation.get("aria-label") == "全书目录", f"{path.relative_to(SITE)}: {navigation.get('aria-label')!r}"
        else:
            assert navigation.get("aria-label") == "Main", f"{path.relative_to(SITE)}: {navigation.get('aria-label')!r}"
        checked["zh" if is_chinese(path) else "en"] += 1
    assert checked["en"] >= 13 and checked["zh"] >= 13, checked


def test_chinese_search_index_holds_chinese_words() -> None:
    if not (ZH / "searchindex.js").exists():
        unavailable(f"no Chinese edition at {ZH}: run `make book` first")
    terms = search_terms(ZH)
    words = chinese_words_on_pages()
    assert words, "no Chinese text in the Chinese edition"
    missing = sorted(words - terms)
    assert not missing, f"{len(missing)} of {len(words)} Chinese words are not in the search index, e.g. {missing[:10]}"


def test_chinese_search_finds_a_chinese_word(server: str, browser_context) -> None:
    if not (ZH / "searchindex.js").exists():
        unavailable(f"no Chinese edition at {ZH}: run `make book` first")
    word = "注意力" if "注意力" in search_terms(ZH) else "翻译"
    page = browser_context.new_page()
    try:
        page.goto(urljoin(server, f"zh/search.html?q={word}"), wait_until="load")
        page.wait_for_selector("#search-results ul.search li", timeout=30_000)
        found = page.locator("#search-results ul.search li").count()
        assert found >= 1, f"searching {word!r} found nothing"
        page.screenshot(path=str(SHOTS / "zh-search.png"))
    finally:
        page.close()
