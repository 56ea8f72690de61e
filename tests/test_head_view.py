"""The interactive head view: self-contained HTML, and (in the built book) it reacts to the reader.

The browser test opens chapter 7's built page in headless Chromium, as tests/test_browser.py
does for every page, and checks that the view rendered, that picking another head or
layer redraws it with other weights, that pointing at a token shows only that query's
lines, and that nothing was requested from outside the site. Screenshots go to
`_build/screenshots/head_view_*.png`.
"""

from __future__ import annotations

import functools
import http.server
import os
import re
import threading
from pathlib import Path
from urllib.parse import urlparse

import pytest
import torch

from mhalib.head_view import HeadView, head_view_html

ROOT = Path(__file__).resolve().parent.parent
PAGE = ROOT / "_build" / "html" / "chapters" / "07_a_pretrained_encoder.html"
SHOTS = ROOT / "_build" / "screenshots"
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")


def _weights(n: int, layers: int = 2, heads: int = 3, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.softmax(torch.randn(layers, heads, n, n, generator=g), dim=-1)


def test_html_is_self_contained_and_deterministic() -> None:
    tokens = [["[CLS]", "a", "</script>", "[SEP]"], ["[CLS]", "b", "[SEP]"]]
    weights = [_weights(4), _weights(3, seed=1)]
    text = head_view_html(tokens, weights, {(1, 2): "a note"}, element_id="hv-test")
    assert text == head_view_html(tokens, weights, {(1, 2): "a note"}, element_id="hv-test")
    # loads nothing (the SVG namespace is a name, never fetched)
    assert not re.search(r"https?://|src=|href=|@import", text.replace("http://www.w3.org/2000/svg", ""))
    assert text.count("<script") == 2 and "<\\/script>" in text  # a token cannot end the data
    assert 'id="hv-test"' in text and "a note" in text
    view = HeadView(tokens, weights)
    assert repr(view) == "<HeadView: 2 sentences, 2 layers, 3 heads>"
    assert view._repr_html_() == view.html


def test_bad_inputs_are_refused() -> None:
    with pytest.raises(ValueError, match="weights\\[0\\] must have shape"):
        head_view_html([["a", "b"]], [_weights(3)])
    with pytest.raises(ValueError, match="element_id"):
        head_view_html([["a", "b"]], [_weights(2)], element_id="no spaces")
    with pytest.raises(ValueError, match="one length"):
        head_view_html([["a"]], [])


@pytest.fixture(scope="module")
def page():
    if not PAGE.exists():
        _unavailable(f"no built chapter 7 at {PAGE}: run `make book` first")
    if not Path(CHROMIUM).exists():
        _unavailable(f"Chromium not found at {CHROMIUM}")
    from playwright.sync_api import sync_playwright

    handler = functools.partial(_Quiet, directory=str(ROOT / "_build" / "html"))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    SHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        tab = browser.new_page(viewport={"width": 1280, "height": 900})
        tab.requests, tab.errors = [], []
        tab.on("request", lambda r: tab.requests.append(r.url))
        tab.on("pageerror", lambda e: tab.errors.append(str(e)))
        tab.on("console", lambda m: tab.errors.append(m.text) if m.type == "error" else None)
        tab.goto(f"http://127.0.0.1:{httpd.server_address[1]}/chapters/07_a_pretrained_encoder.html")
        tab.wait_for_load_state("networkidle")
        yield tab
        browser.close()
    httpd.shutdown()


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


def _unavailable(reason: str):
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (in CI the browser test must run)")
    pytest.skip(reason)


def _state(tab) -> dict:
    return tab.evaluate(
        """() => {
            const root = document.getElementById('ch7-head-view');
            const lines = [...root.querySelectorAll('svg line')];
            return {shown: root.getAttribute('data-shown'),
                    title: root.querySelector('.hv-title').textContent,
                    lines: lines.map(l => [l.dataset.q, l.dataset.k, l.getAttribute('stroke-opacity')].join(':')),
                    queries: [...new Set(lines.filter(l => l.style.display !== 'none').map(l => l.dataset.q))].length,
                    tokens: [...root.querySelectorAll('svg .hv-q')].map(t => t.textContent)};
        }"""
    )


def _shot(tab, name: str) -> None:
    tab.locator("#ch7-head-view").screenshot(path=str(SHOTS / f"head_view_{name}.png"))


@pytest.mark.browser
def test_head_view_renders_and_switching_heads_changes_it(page) -> None:
    view = page.locator("#ch7-head-view")
    view.scroll_into_view_if_needed()
    first = _state(page)
    assert first["shown"] == "0/0/2" and first["title"].startswith("layer 0, head 2: previous-token head")
    assert len(first["tokens"]) == 13 and len(first["lines"]) >= 12
    assert first["tokens"][:3] == ["[CLS]", "the", "keys"]
    _shot(page, "layer0_head2")

    page.select_option("#ch7-head-view select[data-pick='head']", "9")
    page.select_option("#ch7-head-view select[data-pick='layer']", "2")
    sink = _state(page)
    assert sink["shown"] == "0/2/9" and "sink on [CLS]" in sink["title"]
    assert sink["lines"] != first["lines"]
    _shot(page, "layer2_head9")

    page.select_option("#ch7-head-view select[data-pick='sentence']", "1")
    other = _state(page)
    assert other["shown"] == "1/2/9" and other["tokens"] != first["tokens"]

    page.hover("#ch7-head-view svg .hv-q >> nth=3")  # one query's lines only
    hovered = _state(page)
    assert hovered["queries"] == 1 and "(query" in hovered["title"]
    _shot(page, "hover")

    outside = [u for u in page.requests if urlparse(u).scheme in ("http", "https") and urlparse(u).hostname != "127.0.0.1"]
    assert outside == []
    assert [e for e in page.errors if not e.startswith("Failed to load resource")] == []
