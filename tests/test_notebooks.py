"""Notebook hygiene: what nbval, the book and a reader rely on.

The stored outputs are what the book shows and what nbval compares a fresh run against,
so they must come from one fresh top-to-bottom run (`make execute`). Each rule is a small
function returning the problems it finds; the tests below run them on every chapter and
also show that each rule catches the mistake it is written for.
"""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
CHAPTERS = sorted((ROOT / "chapters").glob("*.ipynb"))
KERNEL_NAME = "python3"
MACHINE_PATH = re.compile(r"(/root/|/home/\w|/tmp/|/work/|/Users/\w|[A-Z]:\\\\Users)")
IMAGE_TYPES = ("image/png", "image/jpeg", "image/svg+xml")


def _tool(name: str):
    """A module of tools/, imported from its path (tools/ is not a package)."""
    import importlib.util
    import sys

    if str(ROOT / "tools") not in sys.path:
        sys.path.insert(0, str(ROOT / "tools"))
    spec = importlib.util.spec_from_file_location(name, ROOT / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault(name, module)
    spec.loader.exec_module(module)
    return sys.modules[name]


i18n = _tool("i18n")
build_zh = _tool("build_zh")

# The headings every chapter has, in English or in the Chinese edition's words.
REQUIRED_HEADINGS = {
    "What you will learn": ("What you will learn", "你将学到"),
    "## Summary": ("## Summary", "## 小结"),
    "## Exercises": ("## Exercises", "## 练习"),
}


def code_cells(nb: dict) -> list[dict]:
    return [c for c in nb["cells"] if c["cell_type"] == "code" and "".join(c["source"]).strip()]


def tags(cell: dict) -> list[str]:
    return cell.get("metadata", {}).get("tags", [])


def execution_order_problems(nb: dict) -> list[str]:
    counts = [c.get("execution_count") for c in code_cells(nb)]
    expected = list(range(1, len(counts) + 1))
    if counts != expected:
        return [f"execution counts are {counts}, expected {expected}: re-run with `make execute`"]
    return []


def error_output_problems(nb: dict) -> list[str]:
    problems = []
    for i, cell in enumerate(nb["cells"]):
        for out in cell.get("outputs", []):
            if out.get("output_type") == "error" and "raises-exception" not in tags(cell):
                problems.append(f"cell {i}: stored error {out.get('ename')} (tag it raises-exception if meant)")
            if out.get("name") == "stderr" and "Traceback" in "".join(out.get("text", "")):
                problems.append(f"cell {i}: a traceback printed to stderr")
    return problems


def machine_path_problems(nb: dict) -> list[str]:
    problems = []
    for i, cell in enumerate(nb["cells"]):
        for out in cell.get("outputs", []):
            text = json.dumps({k: v for k, v in out.get("data", {}).items() if k not in IMAGE_TYPES})
            text += "".join(out.get("text", "")) + "".join(out.get("traceback", []))
            match = MACHINE_PATH.search(text)
            if match:
                problems.append(f"cell {i}: an output shows a path of the author's machine ({match.group(0)}...)")
    return problems


def kernel_problems(nb: dict) -> list[str]:
    name = nb.get("metadata", {}).get("kernelspec", {}).get("name")
    if name != KERNEL_NAME:
        return [f"kernelspec name is {name!r}, expected {KERNEL_NAME!r}"]
    return []


def figure_problems(nb: dict) -> list[str]:
    """Every figure has a caption and real alt text (myst-nb's default alt is a file path)."""
    problems = []
    for i, cell in enumerate(nb["cells"]):
        if not any(t in out.get("data", {}) for out in cell.get("outputs", []) for t in IMAGE_TYPES):
            continue
        meta = cell.get("metadata", {}).get("mystnb", {})
        alt = str(meta.get("image", {}).get("alt", ""))
        caption = str(meta.get("figure", {}).get("caption", ""))
        # Words counted in English or Chinese (i18n.word_count: 12 Chinese characters = 4 words).
        if i18n.word_count(alt) < 4 or re.search(r"\.(png|svg|jpe?g)\b|/", alt):
            problems.append(f"cell {i}: figure alt text {alt!r} does not describe the figure")
        if i18n.word_count(caption) < 3:
            problems.append(f"cell {i}: figure has no caption (metadata mystnb.figure.caption)")
    return problems


def structure_problems(nb: dict) -> list[str]:
    problems = []
    markdown = ["".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "markdown"]
    if not markdown or not re.match(r"# \S", markdown[0]):
        problems.append("the first cell is not the chapter title ('# Title')")
    text = "\n".join(markdown)
    for heading, spellings in REQUIRED_HEADINGS.items():
        if not any(spelling in text for spelling in spellings):
            problems.append(f"missing {heading!r} (Chinese edition: {spellings[1]!r})")
    sources = ["".join(c["source"]) for c in code_cells(nb)]
    if not any("manual_seed" in s for s in sources[:3]):
        problems.append("no torch.manual_seed in the first code cells")
    if any("sys.path" in s for s in sources):
        problems.append("a code cell edits sys.path (mhalib is installed in editable mode)")
    return problems


MAX_LINE = 78  # what a page of the book shows without scrolling a code box


def line_length_problems(nb: dict) -> list[str]:
    """Code lines, and printed lines, that the book would cut at the right edge."""
    problems = []
    for i, cell in enumerate(nb["cells"]):
        if cell["cell_type"] != "code":
            continue
        lines = "".join(cell["source"]).splitlines()
        for out in cell.get("outputs", []):
            if out.get("output_type") == "stream":
                lines += "".join(out.get("text", "")).splitlines()
        long = [line for line in lines if len(line) > MAX_LINE]
        if long:
            problems.append(f"cell {i}: {len(long)} line(s) over {MAX_LINE} characters, e.g. {long[0][:40]!r}...")
    return problems


def nested_fence_problems(nb: dict) -> list[str]:
    """A fenced block inside a directive fenced with as many backticks closes the directive
    early: the rest of a solution then shows outside its dropdown."""
    problems = []
    for i, cell in enumerate(nb["cells"]):
        if cell["cell_type"] != "markdown":
            continue
        outer = None
        for line in "".join(cell["source"]).splitlines():
            match = re.match(r"^(`{3,}|~{3,})\s*(\S*)", line.strip())
            if not match:
                continue
            fence, info = match.groups()
            if outer is None:
                outer = fence
            elif info and fence == outer:
                problems.append(f"cell {i}: a {fence}{info} block inside a block fenced with {outer}: fence the outer one with more backticks")
            elif not info and fence[0] == outer[0] and len(fence) >= len(outer):
                outer = None
    return problems


lab_compat = _tool("lab_compat")
BOOK_MACROS = lab_compat.book_macros()


def lab_compat_problems(nb: dict) -> list[str]:
    """What JupyterLab would show differently from the book: the book's own TeX macros, a
    solution that is not folded, a gated solution's cells left open. The fix is a script."""
    changes = lab_compat.rewrite(copy.deepcopy(nb), BOOK_MACROS)
    return [f"{c}: run `.venv/bin/python tools/lab_compat.py` on this notebook" for c in changes]


def unknown_tex_problems(nb: dict) -> list[str]:
    """TeX commands that KaTeX (JupyterLab) or MathJax (the book) may not know."""
    return lab_compat.unknown_tex(nb)


RULES = [
    execution_order_problems,
    error_output_problems,
    machine_path_problems,
    kernel_problems,
    figure_problems,
    structure_problems,
    nested_fence_problems,
    line_length_problems,
    lab_compat_problems,
    unknown_tex_problems,
]


def load(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


@pytest.mark.parametrize("path", CHAPTERS, ids=[p.name for p in CHAPTERS])
@pytest.mark.parametrize("rule", RULES, ids=[r.__name__ for r in RULES])
def test_chapter_notebook(path: Path, rule) -> None:
    assert rule(load(path)) == []


# --- the same rules on the Chinese edition ----------------------------------------------
# tools/build_zh.py writes it from these notebooks and locales/zh_CN/*.po; a translation
# must not break what the rules check (a figure's alt text, the standard headings, folded
# solutions for JupyterLab, line lengths of code: code is never translated).


@pytest.fixture(scope="module")
def zh_chapters(tmp_path_factory) -> dict[str, dict]:
    out = tmp_path_factory.mktemp("zh_src")
    build_zh.build(out)
    return {p.name: load(out / "chapters" / p.name) for p in CHAPTERS}


@pytest.mark.parametrize("path", CHAPTERS, ids=[p.name for p in CHAPTERS])
@pytest.mark.parametrize("rule", RULES, ids=[r.__name__ for r in RULES])
def test_chinese_chapter_notebook(path: Path, rule, zh_chapters) -> None:
    assert rule(zh_chapters[path.name]) == []


def test_chinese_notebooks_pass_lab_compat_check(tmp_path: Path, capsys) -> None:
    """`tools/lab_compat.py --check`, as a contributor runs it, on the generated notebooks."""
    build_zh.build(tmp_path)
    paths = sorted((tmp_path / "chapters").glob("*.ipynb"))
    assert len(paths) == len(CHAPTERS)
    assert lab_compat.main(["--check", *map(str, paths)]) == 0, capsys.readouterr().out


def toc_files() -> list[str]:
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    files = [toc["root"]]
    for part in toc.get("parts", []):
        files += [chapter["file"] for chapter in part.get("chapters", [])]
    return files


def test_toc_lists_exactly_the_pages_that_exist() -> None:
    listed = toc_files()
    missing = [f for f in listed if not any((ROOT / f"{f}{ext}").exists() for ext in (".md", ".ipynb"))]
    assert missing == [], f"_toc.yml lists pages that do not exist: {missing}"
    unlisted = [p.relative_to(ROOT).with_suffix("").as_posix() for p in CHAPTERS]
    unlisted = [f for f in unlisted if f not in listed]
    assert unlisted == [], f"notebooks in chapters/ missing from _toc.yml: {unlisted}"


# --- each rule catches the mistake it is written for -----------------------------------

GOOD = {
    "cells": [
        {"cell_type": "markdown", "metadata": {}, "source": ["# A chapter\n\nWhat you will learn\n"]},
        {"cell_type": "code", "execution_count": 1, "metadata": {}, "outputs": [], "source": ["torch.manual_seed(0)"]},
        {
            "cell_type": "code",
            "execution_count": 2,
            "metadata": {
                "mystnb": {
                    "figure": {"caption": "Weights of one head."},
                    "image": {"alt": "Heatmap of a 4 by 4 matrix, brightest on the diagonal."},
                }
            },
            "outputs": [{"output_type": "display_data", "data": {"image/png": "iVBOR", "text/plain": ["<Figure>"]}, "metadata": {}}],
            "source": ["plot()"],
        },
        {"cell_type": "markdown", "metadata": {}, "source": ["## Summary\n\n## Exercises\n"]},
    ],
    "metadata": {"kernelspec": {"name": "python3"}},
}


# A gated solution whose code cell would stay open in JupyterLab (no jupyter.source_hidden).
GATED_OPEN = [
    {"cell_type": "markdown", "metadata": {}, "source": ["```{solution-start} ex\n:class: dropdown\n```\n"]},
    {"cell_type": "code", "execution_count": 1, "metadata": {}, "outputs": [], "source": ["torch.manual_seed(0)"]},
    {"cell_type": "markdown", "metadata": {}, "source": ["```{solution-end}\n```\n"]},
]


def broken(change) -> dict:
    nb = copy.deepcopy(GOOD)
    change(nb)
    return nb


def test_rules_pass_a_good_notebook() -> None:
    assert [p for rule in RULES for p in rule(GOOD)] == []


CHINESE_GOOD = broken(
    lambda nb: (
        nb["cells"][0].update(source=["# 一章\n\n**你将学到**\n"]),
        nb["cells"][2]["metadata"]["mystnb"].update(
            figure={"caption": "一个头的注意力权重。"}, image={"alt": "一个 4 行 4 列的热图，对角线上的格子最亮。"}
        ),
        nb["cells"][3].update(source=["## 小结\n\n## 练习\n"]),
    )
)


def test_rules_pass_a_good_chinese_notebook() -> None:
    assert [p for rule in RULES for p in rule(CHINESE_GOOD)] == []


@pytest.mark.parametrize(
    "change",
    [
        lambda nb: nb["cells"][2]["metadata"]["mystnb"]["image"].update(alt="一个热图。"),
        lambda nb: nb["cells"][2]["metadata"]["mystnb"]["figure"].update(caption="权重"),
        lambda nb: nb["cells"][3].update(source=["## 总结\n\n## 练习\n"]),
        lambda nb: nb["cells"][0].update(source=["# 一章\n\n**学习目标**\n"]),
    ],
)
def test_rules_catch_bad_chinese(change) -> None:
    nb = copy.deepcopy(CHINESE_GOOD)
    change(nb)
    assert [p for rule in RULES for p in rule(nb)] != []


def test_word_count_counts_chinese_characters() -> None:
    assert i18n.word_count("Heatmap of a 4 by 4 matrix.") == 7
    assert i18n.word_count("热图，对角线最亮。") == 7 / 3
    assert i18n.word_count("the, cat, sat 三个词元的权重") == 3 + 7 / 3


@pytest.mark.parametrize(
    ("rule", "change"),
    [
        (execution_order_problems, lambda nb: nb["cells"][2].update(execution_count=5)),
        (execution_order_problems, lambda nb: nb["cells"][1].update(execution_count=None)),
        (error_output_problems, lambda nb: nb["cells"][1]["outputs"].append({"output_type": "error", "ename": "ValueError"})),
        (machine_path_problems, lambda nb: nb["cells"][1]["outputs"].append({"output_type": "stream", "name": "stdout", "text": ["/home/ada/x.py"]})),
        (kernel_problems, lambda nb: nb["metadata"]["kernelspec"].update(name="conda-env-old-py")),
        (figure_problems, lambda nb: nb["cells"][2]["metadata"]["mystnb"]["image"].update(alt="../_images/abc.png")),
        (figure_problems, lambda nb: nb["cells"][2]["metadata"].clear()),
        (structure_problems, lambda nb: nb["cells"][3].update(source=["## Summary\n"])),
        (structure_problems, lambda nb: nb["cells"][1].update(source=["import sys; sys.path.insert(0, '..')"])),
        (line_length_problems, lambda nb: nb["cells"][1].update(source=["x = 1  # " + "a comment that runs on " * 4])),
        (line_length_problems, lambda nb: nb["cells"][1]["outputs"].append({"output_type": "stream", "name": "stdout", "text": ["-" * 79]})),
        (nested_fence_problems, lambda nb: nb["cells"][3].update(source=["```{solution} ex\n:class: dropdown\n\n```python\nx = 1\n```\nmore\n```\n"])),
        (lab_compat_problems, lambda nb: nb["cells"][3].update(source=["## Summary\n\n$\\softmax(QK^\\top)V$\n\n## Exercises\n"])),
        (lab_compat_problems, lambda nb: nb["cells"][3]["source"].append("```{solution} ex\nFolded in neither place.\n```\n")),
        (lab_compat_problems, lambda nb: nb["cells"].extend(copy.deepcopy(GATED_OPEN))),
        (unknown_tex_problems, lambda nb: nb["cells"][3]["source"].append("$\\Concat(O_1, O_2)$\n")),
        (unknown_tex_problems, lambda nb: nb["cells"][3]["source"].append("$\\mathscr{L}$\n")),
    ],
)
def test_rule_catches_its_mistake(rule, change) -> None:
    assert rule(broken(change)) != []


def test_fence_rule_allows_a_longer_outer_fence() -> None:
    source = ["````{solution} ex\n:class: dropdown\n\n```python\nx = 1\n```\n````\n\n```{exercise} Next\n```\n"]
    assert nested_fence_problems(broken(lambda nb: nb["cells"][3].update(source=source))) == []


def test_error_rule_allows_tagged_cells() -> None:
    def tagged_error(nb):
        nb["cells"][1]["metadata"]["tags"] = ["raises-exception"]
        nb["cells"][1]["outputs"].append({"output_type": "error", "ename": "ValueError"})

    assert error_output_problems(broken(tagged_error)) == []
