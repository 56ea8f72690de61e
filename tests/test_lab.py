"""Chapter 1 in the real JupyterLab client, started by `make lab`, driven by Chromium.

The server is started exactly as a reader starts it (`make lab`, so also as root, as here in
CI), on 127.0.0.1 with a free port and a token, on a temporary copy of the notebook (the
chapter in the repository is never touched), with a temporary Jupyter config folder (the
reader's ~/.jupyter plays no part). The tests assert:

- the notebook renders its MyST: exercises as exercise boxes, solutions folded, citations
  as citations; no raw directive text, no TeX error (a macro KaTeX does not know);
- a wrong answer typed into a checked exercise cell and run gets the checker's feedback,
  naming the mistake, in the cell's output;
- no request leaves 127.0.0.1, the news and update checks are never asked for, and no
  prompt asks the reader to allow one;
- the Chinese edition's chapter 1 (written from the catalogues by tools/build_zh.py, as a
  reader downloads it) renders the same way: no raw directive, no TeX error, the same
  exercise boxes and folded solutions, its Chinese headings in view.

Screenshots go to `_build/screenshots/lab-*.png`: look at them. Every wait is bounded,
and the server (and its kernel) is stopped on every way out. Locally a missing browser
skips the tests; in CI (CI=true) it fails.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from urllib.parse import urlparse

import pytest

from test_browser import CHROMIUM, CHROMIUM_ARGS, SHOTS, unavailable

ROOT = Path(__file__).resolve().parent.parent
CHAPTER = ROOT / "chapters" / "01_soft_lookup.ipynb"
ZH_NAME = "01_soft_lookup.zh_CN.ipynb"  # the Chinese edition's chapter 1, in the same lab
START_TIMEOUT = 90  # s, for `make lab` to answer on its port (2 shared cores)
RENDER_TIMEOUT = 90_000  # ms, for the notebook to render in the browser
RUN_TIMEOUT = 90_000  # ms, for a kernel to start and run two cells

# A learner's softmax that forgets to subtract the largest score: NaN for scores near 1000.
WRONG_ANSWER = """def my_softmax_weights(scores):
    exps = torch.exp(scores)
    return exps / exps.sum(dim=-1, keepdim=True)

EXERCISES["softmax_weights"].check(my_softmax_weights)"""

# jupyterlab-myst (KaTeX) marks a formula it cannot typeset with the error as its title,
# in yellow inline and red for display math; an unknown citation is yellow too.
TEX_ERRORS_JS = """() => [...document.querySelectorAll('.jp-Notebook .myst [title]')]
    .map(e => e.title)
    .filter(t => /control sequence|ParseError|KaTeX|Expected|Unknown|Undefined/.test(t))"""

pytestmark = pytest.mark.browser


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """`make lab` on a copy of chapter 1; yields (base URL, token); always stopped."""
    if not Path(CHROMIUM).exists():
        unavailable(f"Chromium not found at {CHROMIUM} (apt-get install -y chromium)")
    tmp = tmp_path_factory.mktemp("lab")
    notebooks = tmp / "notebooks"
    notebooks.mkdir()
    shutil.copy(CHAPTER, notebooks / CHAPTER.name)
    # The Chinese edition's chapter 1, as `make book` writes it (from the catalogues).
    subprocess.run([sys.executable, str(ROOT / "tools" / "build_zh.py"), "--quiet", "--out", str(tmp / "zh_src")], check=True)
    shutil.copy(tmp / "zh_src" / "chapters" / CHAPTER.name, notebooks / ZH_NAME)
    # Attach every cell to the page (JupyterLab attaches only those in view by default), so
    # that the whole notebook can be checked without scrolling through it.
    settings = tmp / "config" / "lab" / "user-settings" / "@jupyterlab" / "notebook-extension"
    settings.mkdir(parents=True)
    (settings / "tracker.jupyterlab-settings").write_text('{"windowingMode": "none"}')
    port, token = free_port(), secrets.token_hex(16)
    env = dict(
        os.environ,
        JUPYTER_CONFIG_DIR=str(tmp / "config"),
        JUPYTER_RUNTIME_DIR=str(tmp / "runtime"),
        JUPYTERLAB_WORKSPACES_DIR=str(tmp / "workspaces"),
    )
    flags = f"--no-browser --port={port} --ServerApp.port_retries=0 --IdentityProvider.token={token}"
    log_path = tmp / "lab.log"
    with open(log_path, "w") as log:
        server = subprocess.Popen(
            ["make", "--no-print-directory", "-C", str(ROOT), "lab", f"LAB_DIR={notebooks}", f"LABFLAGS={flags}"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # its own process group: make, jupyter and what they start
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if server.poll() is not None:
                pytest.fail(f"`make lab` exited with {server.returncode}:\n{log_path.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=2):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail(f"JupyterLab did not answer within {START_TIMEOUT} s:\n{log_path.read_text()[-3000:]}")
                time.sleep(0.5)
        yield base, token, log_path
    finally:
        stop(server, base, token)


def stop(server: subprocess.Popen, base: str, token: str) -> None:
    """Shut the kernels down through the API, then the server's process group."""
    try:
        with urllib.request.urlopen(f"{base}/api/kernels?token={token}", timeout=5) as r:
            for kernel in json.load(r):
                request = urllib.request.Request(f"{base}/api/kernels/{kernel['id']}?token={token}", method="DELETE")
                urllib.request.urlopen(request, timeout=10).close()
    except OSError:
        pass
    for sig, wait in ((signal.SIGTERM, 20), (signal.SIGKILL, 10)):
        try:
            os.killpg(server.pid, sig)
        except ProcessLookupError:
            break
        try:
            server.wait(timeout=wait)
            break
        except subprocess.TimeoutExpired:
            continue


@pytest.fixture(scope="module")
def browser(lab):
    """One Chromium for the module's pages."""
    from playwright.sync_api import sync_playwright

    SHOTS.mkdir(parents=True, exist_ok=True)
    for old in SHOTS.glob("lab-*.png"):
        old.unlink()
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            yield browser
        finally:
            browser.close()


def open_notebook(browser, lab, name: str, markdown_cells: int, shot: str, workspace: str = ""):
    """A notebook of the lab open in a new context, fully rendered; records every request.

    With ``workspace``, in a workspace of that name, which starts empty (the default one
    would reopen the notebooks an earlier test left open).
    """
    base, token, _ = lab
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.set_default_timeout(30_000)
    tab = context.new_page()
    tab.requests = []  # every URL the page asked for, websockets included
    tab.on("request", lambda r: tab.requests.append(r.url))
    tab.on("websocket", lambda ws: tab.requests.append(ws.url))
    where = f"lab/workspaces/{workspace}/tree" if workspace else "lab/tree"
    tab.goto(f"{base}/{where}/{name}?token={token}", wait_until="load")
    tab.wait_for_function(
        """(n) => [...document.querySelectorAll('.jp-MarkdownCell.jp-mod-rendered .myst')]
            .filter(e => e.children.length > 0).length >= n""",
        arg=markdown_cells,
        timeout=RENDER_TIMEOUT,
    )
    # jupyterlab-myst typesets cell by cell: wait until the formulas stop changing.
    wait_until_stable(tab, "() => document.querySelectorAll('.jp-Notebook .katex').length")
    tab.screenshot(path=str(SHOTS / shot))
    return tab


def markdown_count(path: Path) -> int:
    return sum(c["cell_type"] == "markdown" for c in json.loads(path.read_text())["cells"])


@pytest.fixture(scope="module")
def page(lab, browser):
    """Chapter 1 open in Chromium, fully rendered; records every request the page makes."""
    before = digest(CHAPTER)
    tab = open_notebook(browser, lab, CHAPTER.name, markdown_count(CHAPTER), "lab-chapter1-top.png")
    yield tab
    tab.context.close()
    assert digest(CHAPTER) == before, "the chapter in the repository was modified"


def wait_until_stable(tab, expression: str, timeout: float = 30.0) -> int:
    deadline, last = time.monotonic() + timeout, None
    while time.monotonic() < deadline:
        value = tab.evaluate(expression)
        if value == last and value:
            return value
        last = value
        time.sleep(1.0)
    raise AssertionError(f"{expression} did not settle within {timeout} s (last: {last})")


def visible_text(tab) -> str:
    return tab.inner_text(".jp-Notebook")


def test_myst_renders_without_raw_directives_or_tex_errors(page) -> None:
    text = visible_text(page)
    raw = [d for d in ("{exercise}", "{solution", "{cite:p}", "{cite:t}", "{doc}", "```{") if d in text]
    assert raw == [], f"directives shown as raw text in JupyterLab: {raw}"
    assert page.evaluate(TEX_ERRORS_JS) == [], "formulas KaTeX could not typeset"
    assert page.locator(".jp-Notebook .katex").count() > 20
    assert "\\operatorname" not in text and "\\softmax" not in text, "TeX shown as text"

    source = "".join("".join(c["source"]) for c in json.loads(CHAPTER.read_text())["cells"] if c["cell_type"] == "markdown")
    exercises = page.locator(".jp-Notebook aside.myst-exercise, .jp-Notebook div.myst-exercise").count()
    assert exercises >= source.count("```{exercise}"), "an {exercise} is not rendered as an exercise box"
    solutions = page.locator(".jp-Notebook details.myst-exercise")
    assert solutions.count() == source.count("{solution}") + source.count("{solution-start}")
    assert [s for s in solutions.evaluate_all("ds => ds.map(d => d.open)") if s] == [], "a solution is open"
    # The cells inside a gated solution (the code of the reference solution) stay collapsed.
    hidden = page.locator(".jp-CodeCell", has_text="def solution_softmax_weights")
    assert hidden.locator(".jp-InputPlaceholder").count() == 1
    assert "passed all" not in hidden.inner_text(), "the solution's output is in view"
    # Citations render as citations. jupyterlab-myst 2.7.0 cannot read references.bib, so it
    # shows each key, flagged as not found (the book resolves them).
    assert page.locator(".jp-Notebook .cite-group").count() == source.count("{cite:p}") + source.count("{cite:t}")

    page.locator(".jp-Cell", has_text="Two extreme lookups").first.scroll_into_view_if_needed()
    page.screenshot(path=str(SHOTS / "lab-chapter1-exercises.png"))
    page.locator(".jp-Cell", has_text="Where do queries, keys and values come from").first.scroll_into_view_if_needed()
    page.screenshot(path=str(SHOTS / "lab-chapter1-citations.png"))


def expected_feedback() -> tuple[str, str]:
    """The checker's verdict and mistake for this wrong answer, computed here (not copied)."""
    import torch

    from mhalib.exercises import EXERCISES

    namespace = {"torch": torch, "EXERCISES": EXERCISES}
    exec(WRONG_ANSWER.split("\n\nEXERCISES")[0], namespace)
    result = EXERCISES["softmax_weights"].check(namespace["my_softmax_weights"], show=False)
    assert result.status == "failed" and result.mistake, result.message
    line = next(x for x in result.message.splitlines() if x.startswith("Likely mistake"))
    return normalise(result.message.splitlines()[0]), normalise(line.partition(":")[2])[:60]


def normalise(text: str) -> str:
    return re.sub(r"\s+", " ", text.replace("`", "")).strip()


def run_cell(page, cell) -> None:
    cell.locator(".cm-content").first.click()
    page.keyboard.press("Shift+Enter")


def test_a_wrong_answer_gets_the_checkers_feedback(page) -> None:
    verdict, expected = expected_feedback()
    run_cell(page, page.locator(".jp-CodeCell", has_text="from mhalib.exercises import EXERCISES").first)
    cell = page.locator(".jp-CodeCell", has_text="def my_softmax_weights").first
    cell.scroll_into_view_if_needed()
    cell.locator(".cm-content").first.click()
    page.keyboard.press("Control+a")
    page.keyboard.insert_text(WRONG_ANSWER)  # as pasted: no auto-indent on top of ours
    page.keyboard.press("Shift+Enter")
    output = cell.locator(".jp-OutputArea-output")
    page.wait_for_function(
        "([el, want]) => el.innerText.replace(/\\s+/g, ' ').includes(want)",
        arg=[cell.element_handle(), expected],
        timeout=RUN_TIMEOUT,
    )
    text = normalise(output.inner_text())
    assert text.startswith(verdict), text  # e.g. "softmax_weights: not right yet."
    assert expected in text, text  # the mistake, named
    cell.scroll_into_view_if_needed()
    page.screenshot(path=str(SHOTS / "lab-chapter1-wrong-answer.png"))


def test_no_request_leaves_127_0_0_1(page, lab) -> None:
    page.wait_for_timeout(2000)  # let late requests (news, update check) come in
    outside = [u for u in page.requests if urlparse(u).scheme not in ("data", "blob", "about") and urlparse(u).hostname != "127.0.0.1"]
    assert outside == [], f"requests that leave 127.0.0.1: {outside}"
    assert len(page.requests) > 20
    asked = [u for u in page.requests if re.search(r"/lab/api/(news|update)", u)]
    assert asked == [], f"JupyterLab asked for news or updates: {asked}"
    config = json.loads(page.locator("#jupyter-config-data").text_content())
    assert config["news"] == {"disabled": True}, config.get("news")
    toasts = page.locator(".Toastify").all_inner_texts()
    assert not any("news" in t.lower() for t in toasts), toasts
    log = lab[2].read_text()
    assert "Extension Manager is 'readonly'" in log, "the extension manager would query PyPI"


def test_the_chinese_chapter_renders_like_the_english_one(lab, browser) -> None:
    """The Chinese edition's notebook, as a reader downloads it, renders in JupyterLab too."""
    notebooks = Path(lab[2]).parent / "notebooks"
    zh, en = notebooks / ZH_NAME, notebooks / CHAPTER.name
    tab = open_notebook(browser, lab, ZH_NAME, markdown_count(zh), "lab-chapter1-zh.png", "zh")
    try:
        text = visible_text(tab)
        raw = [d for d in ("{exercise}", "{solution", "{cite:p}", "{cite:t}", "{doc}", "```{") if d in text]
        assert raw == [], f"directives shown as raw text in JupyterLab: {raw}"
        assert tab.evaluate(TEX_ERRORS_JS) == [], "formulas KaTeX could not typeset"
        for heading in ("你将学到", "小结", "练习"):
            assert heading in text, heading
        assert len(re.findall(r"[\u4e00-\u9fff]", text)) > 2000, "little Chinese text in view"
        # The same math and the same exercise boxes as the English chapter: its code is the same.
        source = "".join("".join(c["source"]) for c in json.loads(en.read_text())["cells"] if c["cell_type"] == "markdown")
        assert tab.locator(".jp-Notebook .katex").count() > 20
        exercises = tab.locator(".jp-Notebook aside.myst-exercise, .jp-Notebook div.myst-exercise").count()
        assert exercises >= source.count("```{exercise}")
        solutions = tab.locator(".jp-Notebook details.myst-exercise")
        assert solutions.count() == source.count("{solution}") + source.count("{solution-start}")
        assert [s for s in solutions.evaluate_all("ds => ds.map(d => d.open)") if s] == [], "a solution is open"
        outside = [u for u in tab.requests if urlparse(u).scheme not in ("data", "blob", "about") and urlparse(u).hostname != "127.0.0.1"]
        assert outside == [], f"requests that leave 127.0.0.1: {outside}"
    finally:
        tab.context.close()
