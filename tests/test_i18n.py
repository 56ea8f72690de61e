"""The Chinese edition runs the same code as the English one, by construction.

tools/build_zh.py writes the Chinese book from the English sources and the catalogues of
tools/i18n.py. The parity tests here generate it and compare it with the English, page by
page: the same cells, ids, types, code, outputs, execution counts and metadata (the
figure caption and alt text excepted), and Markdown with the same directives, labels,
references, citations and math. The unit tests below show that each piece catches what it
is written to catch: the block splitter, the structure check on wrong translations, the
fuzzy and obsolete entries of `update`, the fallback note and markers.
"""

from __future__ import annotations

import copy
import gettext
import json
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))
import build_zh  # noqa: E402
import i18n  # noqa: E402

PAGES = i18n.book_pages()
NOTEBOOK_PAGES = [p for p in PAGES if i18n.page_source(p).suffix == ".ipynb"]
MD_PAGES = [p for p in PAGES if i18n.page_source(p).suffix == ".md"]


@pytest.fixture(scope="module")
def zh_book(tmp_path_factory) -> Path:
    """The Chinese edition's sources, generated from the committed catalogues."""
    out = tmp_path_factory.mktemp("zh_src")
    build_zh.build(out)
    return out


def english(page: str) -> str | dict:
    path = i18n.page_source(page)
    text = path.read_text(encoding="utf-8")
    return json.loads(text) if path.suffix == ".ipynb" else text


def generated(zh_book: Path, page: str) -> str | dict:
    path = zh_book / i18n.page_source(page).relative_to(ROOT)
    text = path.read_text(encoding="utf-8")
    return json.loads(text) if path.suffix == ".ipynb" else text


def source(cell: dict) -> str:
    return "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]


MARKER = re.compile(r'<span class="zh-fallback"[^>]*>[^<]*</span> ')


def without_fallback(text: str) -> str:
    """A generated Markdown text without the page note and the markers."""
    return MARKER.sub("", build_zh.remove_note(text))


# --- parity: the editions run the same code ---------------------------------------------


def figure_free(metadata: dict) -> dict:
    """Cell metadata without the two translated fields."""
    metadata = copy.deepcopy(metadata)
    mystnb = metadata.get("mystnb", {})
    mystnb.get("figure", {}).pop("caption", None)
    mystnb.get("image", {}).pop("alt", None)
    return metadata


@pytest.mark.parametrize("page", NOTEBOOK_PAGES)
def test_notebook_parity(page: str, zh_book: Path) -> None:
    en, zh = english(page), generated(zh_book, page)
    assert {k: v for k, v in zh.items() if k != "cells"} == {k: v for k, v in en.items() if k != "cells"}
    assert [c["cell_type"] for c in zh["cells"]] == [c["cell_type"] for c in en["cells"]]
    assert [c.get("id") for c in zh["cells"]] == [c.get("id") for c in en["cells"]]
    for en_cell, zh_cell in zip(en["cells"], zh["cells"]):
        where = f"{page} cell {en_cell.get('id')}"
        assert set(zh_cell) == set(en_cell), where
        assert figure_free(zh_cell["metadata"]) == figure_free(en_cell["metadata"]), where
        if en_cell["cell_type"] == "code":
            assert zh_cell["source"] == en_cell["source"], where
            assert zh_cell["outputs"] == en_cell["outputs"], where
            assert zh_cell["execution_count"] == en_cell["execution_count"], where
            # A figure's caption and alt text: translated or English, never lost.
            assert bool(i18n.figure_texts(zh_cell)) == bool(i18n.figure_texts(en_cell)), where
        else:
            assert zh_cell.get("attachments") == en_cell.get("attachments"), where
            en_text, zh_text = source(en_cell), source(zh_cell)
            assert i18n.structure(build_zh.remove_note(zh_text)) == i18n.structure(en_text), where


@pytest.mark.parametrize("page", MD_PAGES)
def test_markdown_page_parity(page: str, zh_book: Path) -> None:
    en, zh = english(page), generated(zh_book, page)
    assert i18n.structure(build_zh.remove_note(zh)) == i18n.structure(en)


def expected_chinese(text: str, usable: dict[str, str]) -> str:
    """A Markdown text with exactly its usable translations put in."""
    out = []
    for segment, is_block in i18n.split_blocks(text):
        msgid = segment.rstrip("\n")
        out.append(usable[msgid] + segment[len(msgid) :] if is_block and msgid in usable else segment)
    return "".join(out)


@pytest.mark.parametrize("page", PAGES)
def test_untranslated_blocks_stay_english_byte_for_byte(page: str, zh_book: Path) -> None:
    """Without its note and markers, a Chinese page differs only in translated blocks."""
    usable = i18n.translations(page)
    en, zh = english(page), generated(zh_book, page)
    if isinstance(en, str):
        assert without_fallback(zh) == expected_chinese(en, usable)
        return
    for en_cell, zh_cell in zip(en["cells"], zh["cells"]):
        if en_cell["cell_type"] == "markdown":
            assert without_fallback(source(zh_cell)) == expected_chinese(source(en_cell), usable), en_cell.get("id")


@pytest.mark.parametrize("page", PAGES)
def test_page_note_counts_what_is_shown_in_english(page: str, zh_book: Path) -> None:
    zh = generated(zh_book, page)
    texts = [source(c) for c in zh["cells"] if c["cell_type"] == "markdown"] if isinstance(zh, dict) else [zh]
    notes = [n for n in map(build_zh.note_of, texts) if n]
    usable = i18n.translations(page)
    messages = i18n.page_messages(page)
    shown_english = [m for m in messages if m.msgid not in usable and m.kind != "alt"]
    if not shown_english:
        assert notes == []
    else:
        assert len(notes) == 1, notes
        if not any(m.msgid in usable for m in messages):
            assert build_zh.BookStrings.load()(i18n.NOTE_UNTRANSLATED) in notes[0]
        else:
            assert f" {len(shown_english)} " in notes[0] or f"{len(shown_english)} passage" in notes[0]


def test_committed_catalogues_have_no_broken_translation(capsys) -> None:
    assert i18n.check(i18n.catalogues()) == 0, capsys.readouterr().out


def test_generated_config_and_toc(zh_book: Path) -> None:
    import yaml

    book = build_zh.BookStrings.load()
    config = yaml.safe_load((zh_book / "_config.yml").read_text(encoding="utf-8"))
    toc = yaml.safe_load((zh_book / "_toc.yml").read_text(encoding="utf-8"))
    en_config, en_toc = i18n.book_config()
    assert config["sphinx"]["config"]["language"] == "zh_CN"
    assert config["title"] == book(en_config["title"]) != en_config["title"]
    assert config["html"]["extra_footer"] == book(en_config["html"]["extra_footer"])
    assert config["sphinx"]["config"]["language_switch"]["root"] == "../"
    assert config["sphinx"]["config"]["language_switch"]["lang"] == "en"
    # The English edition's switch points at the Chinese edition's table of contents.
    assert (ROOT / en_config["sphinx"]["config"]["language_switch"]["toc"]).resolve().parent.name == "zh_src"
    assert build_zh.toc_pages(toc) == build_zh.toc_pages(en_toc)
    assert [p.get("caption") for p in toc["parts"]] == [book(p.get("caption")) for p in en_toc["parts"]]
    assert all(re.search("[\u4e00-\u9fff]", p["caption"]) for p in toc["parts"]), "part captions untranslated"
    for name in build_zh.COPIED:
        assert (zh_book / name).exists(), name


def test_theme_strings_compile_into_readable_catalogues() -> None:
    usable = i18n.translations(i18n.BOOK)
    catalogues = build_zh.theme_catalogues()
    assert set(catalogues) == {domain for domain, _ in i18n.THEME_STRINGS}
    for domain, english in i18n.THEME_STRINGS:
        import io

        translator = gettext.GNUTranslations(io.BytesIO(catalogues[domain]))
        assert translator.gettext(english) == usable[english] != english


# --- split_blocks -------------------------------------------------------------------------


def every_markdown_text() -> list[tuple[str, str]]:
    texts = []
    for page in PAGES:
        content = english(page)
        if isinstance(content, dict):
            texts += [(f"{page} cell {c.get('id')}", source(c)) for c in content["cells"] if c["cell_type"] == "markdown"]
        else:
            texts.append((page, content))
    return texts


def test_split_blocks_round_trips_every_page() -> None:
    texts = every_markdown_text()
    assert len(texts) > 100
    for where, text in texts:
        segments = i18n.split_blocks(text)
        assert "".join(s for s, _ in segments) == text, where
        # Blocks and separators alternate; separators are blank lines only.
        assert all(not s.strip() for s, is_block in segments if not is_block), where
        assert all(s.strip() for s, is_block in segments if is_block), where


def test_split_blocks_keeps_fences_and_display_math_whole() -> None:
    text = (
        "Intro line.\n\n"
        "````{exercise} Title\n:label: ex-a\n\nFirst paragraph.\n\n```python\nx = 1\n\ny = 2\n```\n\nMore.\n````\n\n"
        "$$\na = b\n\nc = d\n$$ (eq-1)\n\n"
        "::::{note}\nOne.\n\nTwo.\n::::\n\nEnd."
    )
    blocks = [s for s, b in i18n.split_blocks(text) if b]
    assert [b.splitlines()[0] for b in blocks] == ["Intro line.", "````{exercise} Title", "$$", "::::{note}", "End."]
    assert blocks[1].rstrip().endswith("More.\n````")


# --- structure: a wrong translation is caught ----------------------------------------------

GOOD_ENGLISH = (
    "```{exercise} Scaled attention\n:label: ex-ch2-sdpa\n\n"
    "(sec-sdpa)=\n"
    "Write `sdpa(q, k, v)` as in {cite:p}`vaswani2017attention`, with $A = QK^\\top/\\sqrt{d}$,\n"
    "see {ref}`the masks <sec-masks>` and [the notation](../notation.md).\n\n"
    "$$\nO = AV\n$$ (eq-sdpa)\n```"
)
GOOD_CHINESE = (
    "```{exercise} 缩放点积注意力\n:label: ex-ch2-sdpa\n\n"
    "(sec-sdpa)=\n"
    "按 {cite:p}`vaswani2017attention` 写出 `sdpa(q, k, v)`，其中 $A = QK^\\top/\\sqrt{d}$，"
    "参见{ref}`掩码一节 <sec-masks>`和[记号](../notation.md)。\n\n"
    "$$\nO = AV\n$$ (eq-sdpa)\n```"
)


def test_a_good_translation_keeps_the_structure() -> None:
    assert i18n.structure_differences(GOOD_ENGLISH, GOOD_CHINESE) == []


@pytest.mark.parametrize(
    ("kind", "wrong"),
    [
        ("labels", GOOD_CHINESE.replace("(sec-sdpa)=\n", "")),
        ("display math", GOOD_CHINESE.replace("O = AV", "O = A V^\\top")),
        ("inline math", GOOD_CHINESE.replace("$A = QK^\\top/\\sqrt{d}$", "$A = QK^T/\\sqrt{d}$")),
        ("code spans", GOOD_CHINESE.replace("`sdpa(q, k, v)`", "`sdpa(查询, 键, 值)`")),
        ("directives", GOOD_CHINESE.replace(":label: ex-ch2-sdpa", ":label: 练习-缩放点积")),
        ("roles", GOOD_CHINESE.replace("{cite:p}`vaswani2017attention`", "Vaswani 等人")),
        ("roles", GOOD_CHINESE.replace("<sec-masks>", "<sec-mask>")),
        ("link targets", GOOD_CHINESE.replace("../notation.md", "../notation_zh.md")),
        ("directives", GOOD_CHINESE.replace("```{exercise}", "```{admonition}", 1)),
        ("headings", "## 小结"),
    ],
)
def test_a_wrong_translation_is_caught(kind: str, wrong: str) -> None:
    english = GOOD_ENGLISH if kind != "headings" else "# Summary"
    problems = i18n.structure_differences(english, wrong)
    assert any(p.startswith(kind + ":") for p in problems), problems


def test_a_broken_translation_is_not_used(tmp_path: Path, monkeypatch) -> None:
    import polib

    monkeypatch.setattr(i18n, "LOCALE_DIR", tmp_path)
    catalogue = polib.POFile(wrapwidth=0)
    catalogue.append(polib.POEntry(msgid=GOOD_ENGLISH, msgstr=GOOD_CHINESE))
    catalogue.append(polib.POEntry(msgid="Use `x`.", msgstr="使用 `y`。"))
    catalogue.append(polib.POEntry(msgid="Out of date.", msgstr="过期。", flags=["fuzzy"]))
    catalogue.save(str(tmp_path / "page.po"))
    assert i18n.translations("page") == {GOOD_ENGLISH: GOOD_CHINESE}
    assert i18n.check(["page"]) == 1


# --- update: fuzzy and obsolete entries --------------------------------------------------


@pytest.fixture
def tiny_book(tmp_path: Path, monkeypatch) -> Path:
    """A book of one Markdown page, `page.md`, with its own catalogue directory."""
    monkeypatch.setattr(i18n, "ROOT", tmp_path)
    monkeypatch.setattr(i18n, "LOCALE_DIR", tmp_path / "locales" / "zh_CN")
    monkeypatch.setattr(i18n, "MARKDOWN_PAGES", ("page",))
    (tmp_path / "chapters").mkdir()
    (tmp_path / "page.md").write_text(
        "# A page\n\nThe first paragraph, about queries and keys.\n\n"
        "A second paragraph that will be removed later on.\n\n$$\nx = 1\n$$\n",
        encoding="utf-8",
    )
    return tmp_path


def translate_all(page: str, mapping: dict[str, str]) -> None:
    import polib

    path = i18n.catalogue_path(page)
    catalogue = polib.pofile(str(path), wrapwidth=0)
    for entry in catalogue:
        entry.msgstr = mapping[entry.msgid]
    catalogue.save(str(path))


def test_update_marks_changed_english_fuzzy_and_keeps_removed_as_obsolete(tiny_book: Path) -> None:
    counts = i18n.update_catalogue("page")
    assert counts == {"translated": 0, "fuzzy": 0, "untranslated": 3, "broken": 0, "total": 3}
    translate_all(
        "page",
        {
            "# A page": "# 一页",
            "The first paragraph, about queries and keys.": "第一段，讲查询和键。",
            "A second paragraph that will be removed later on.": "第二段，稍后会删掉。",
        },
    )
    assert i18n.coverage("page")["translated"] == 3
    # The English changes: one paragraph edited, one removed, one added.
    (tiny_book / "page.md").write_text(
        "# A page\n\nThe first paragraph, about queries, keys and values.\n\nA new paragraph.\n\n$$\nx = 1\n$$\n",
        encoding="utf-8",
    )
    counts = i18n.update_catalogue("page")
    assert counts == {"translated": 1, "fuzzy": 1, "untranslated": 1, "broken": 0, "total": 3}
    entries = {e.msgid: e for e in i18n.load_catalogue("page")}
    edited = entries["The first paragraph, about queries, keys and values."]
    assert "fuzzy" in edited.flags and edited.msgstr == "第一段，讲查询和键。"
    assert edited.previous_msgid == "The first paragraph, about queries and keys."
    removed = entries["A second paragraph that will be removed later on."]
    assert removed.obsolete and removed.msgstr == "第二段，稍后会删掉。"
    # Out of date is never used: the build shows the English.
    assert i18n.translations("page") == {"# A page": "# 一页"}
    # A second update changes nothing.
    before = i18n.catalogue_path("page").read_text(encoding="utf-8")
    i18n.update_catalogue("page")
    assert i18n.catalogue_path("page").read_text(encoding="utf-8") == before


def test_the_command_line_reports_coverage_and_breakage(tiny_book: Path, capsys) -> None:
    assert i18n.main(["update", "page"]) == 0
    assert "page" in capsys.readouterr().out
    translate_all("page", {m.msgid: "" for m in i18n.page_messages("page")} | {"# A page": "## 一页"})
    assert i18n.main(["check", "page"]) == 1
    assert "headings" in capsys.readouterr().out


# --- the fallback: English with a note and markers -----------------------------------------

BOOK = build_zh.BookStrings({})  # the English notes (no _book.po translations)
ZH_BOOK = build_zh.BookStrings.load()


@pytest.mark.parametrize(
    ("block", "marked"),
    [
        ("A paragraph.", "{m} A paragraph."),
        ("- an item\n- another", "- {m} an item\n- another"),
        ("1. first\n2. second", "1. {m} first\n2. second"),
        ("| a | b |\n|---|---|\n| 1 | 2 |", "| {m} a | b |\n|---|---|\n| 1 | 2 |"),
        ("```{exercise} T\n:label: ex-t\n\nBody text.\n```", "```{exercise} T\n:label: ex-t\n\n{m} Body text.\n```"),
        ("## A heading", "## A heading"),
        ("(sec-x)=\n## A heading", "(sec-x)=\n## A heading"),
        ("$$\nx\n$$ (eq-x)", "$$\nx\n$$ (eq-x)"),
        ("```python\nx = 1\n```", "```python\nx = 1\n```"),
        ("    indented code", "    indented code"),
        ("> a quote", "> a quote"),
    ],
)
def test_marker_goes_where_it_breaks_nothing(block: str, marked: str) -> None:
    marker = BOOK.marker()
    assert build_zh.mark_fallback(block, marker) == marked.replace("{m}", marker)
    assert i18n.structure(build_zh.mark_fallback(block, marker)) == i18n.structure(block)


def partial_page(tmp_path: Path, monkeypatch, translated: dict[str, str]) -> tuple[str, build_zh.PageStats]:
    import polib

    monkeypatch.setattr(i18n, "LOCALE_DIR", tmp_path)
    catalogue = polib.POFile(wrapwidth=0)
    for english_text, chinese in translated.items():
        catalogue.append(polib.POEntry(msgid=english_text, msgstr=chinese))
    (tmp_path / "notation.po").parent.mkdir(parents=True, exist_ok=True)
    catalogue.save(str(tmp_path / "notation.po"))
    return build_zh.translate_md_page(english("notation"), "notation", ZH_BOOK)


def test_an_untranslated_page_gets_one_note_and_no_markers(tmp_path: Path, monkeypatch) -> None:
    zh, stats = partial_page(tmp_path, monkeypatch, {})
    assert stats.translated == 0 and len(stats.fallbacks) == len(i18n.page_messages("notation"))
    note = build_zh.note_of(zh)
    assert note is not None and ZH_BOOK(i18n.NOTE_UNTRANSLATED) in note
    assert "zh-fallback\"" not in zh and build_zh.remove_note(zh) == english("notation")
    # The note comes right after the title, which stays the first heading.
    assert zh.startswith("# Notation\n\n```{admonition}")


def test_a_partly_translated_page_counts_and_marks_its_english(tmp_path: Path, monkeypatch) -> None:
    messages = i18n.page_messages("notation")
    done = {"# Notation": "# 记号", "## Shapes": "## 形状"}
    zh, stats = partial_page(tmp_path, monkeypatch, done)
    assert stats.translated == 2 and len(stats.fallbacks) == len(messages) - 2
    note = build_zh.note_of(zh)
    assert f"本页有 {len(messages) - 2} 段" in note
    assert zh.startswith("# 记号\n\n```{admonition}")
    assert zh.count('class="zh-fallback"') >= len(messages) // 2
    assert i18n.structure(build_zh.remove_note(zh)) == i18n.structure(english("notation"))


def test_a_fully_translated_text_has_no_note_or_marker() -> None:
    stats = build_zh.PageStats()
    usable = {"# Title": "# 标题", "One paragraph.": "一段。"}
    zh = build_zh.translate_markdown("# Title\n\nOne paragraph.\n\n$$\nx\n$$\n", usable, "page", BOOK.marker(), stats)
    assert zh == "# 标题\n\n一段。\n\n$$\nx\n$$\n"
    assert stats.translated == 2 and stats.fallbacks == []
    assert BOOK.note(len(stats.fallbacks), stats.translated) == ""


def test_insert_and_remove_note_are_inverse() -> None:
    note = BOOK.note(3, 1)
    for text in ["# T\n\nPara.\n", "# T\n\n\nPara.", "(lab)=\n# T\nPara on the next line.\n\nMore.\n", "No title.\n"]:
        with_note = build_zh.insert_note(text, note)
        assert build_zh.note_of(with_note) == note + "\n"
        assert build_zh.remove_note(with_note) == text


def test_a_note_translation_that_lost_its_field_falls_back_to_english() -> None:
    book = build_zh.BookStrings({i18n.NOTE_PARTIAL: "本页有若干段尚未翻译。"})
    assert "3 passage(s)" in book.note(3, 1)


def test_generated_tree_is_rewritten_only_where_it_changed(tmp_path: Path) -> None:
    build_zh.build(tmp_path)
    stamps = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*") if p.is_file()}
    (tmp_path / "stale.md").write_text("left over\n", encoding="utf-8")
    build_zh.build(tmp_path)
    assert not (tmp_path / "stale.md").exists()
    assert {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*") if p.is_file()} == stamps


# --- Chinese search ---------------------------------------------------------------------


def test_sphinx_chinese_search_segments_with_jieba() -> None:
    """Without jieba, Sphinx's zh splitter drops every Chinese word from the index."""
    from sphinx.search import zh

    assert zh.JIEBA, "jieba is not importable: the Chinese search index would hold no Chinese words"
    words = zh.SearchChinese({}).split("多头注意力的每个头都有自己的查询")
    assert "注意力" in words and "查询" in words


# --- the language switch and the theme strings (_ext/language_switch.py) -----------------


def language_switch_extension():
    import importlib.util

    spec = importlib.util.spec_from_file_location("language_switch", ROOT / "_ext" / "language_switch.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def fake_app(srcdir: Path, toc: str = "_toc.yml", language: str | None = None, locale_dirs: tuple = ()):
    from types import SimpleNamespace

    switch = {"label": "中文", "title": "本页的中文版", "lang": "zh-CN", "root": "zh/", "toc": toc}
    config = SimpleNamespace(language_switch=switch, language=language, locale_dirs=list(locale_dirs))
    builder = SimpleNamespace(get_target_uri=lambda docname: docname + ".html")
    return SimpleNamespace(srcdir=str(srcdir), config=config, builder=builder)


def test_switch_links_each_page_to_its_twin_or_the_other_home_page(tmp_path: Path) -> None:
    ext = language_switch_extension()
    (tmp_path / "_toc.yml").write_text(
        "root: intro\nparts:\n- caption: A\n  chapters:\n  - file: notation.md\n  - file: chapters/01_x\n", encoding="utf-8"
    )
    app = fake_app(tmp_path)
    ext._load_twins(app)

    def url(pagename: str) -> str | None:
        context: dict = {}
        ext._add_switch(app, pagename, "page.html", context, None)
        return context["language_switch"] and context["language_switch"]["url"]

    assert url("chapters/01_x") == "../zh/chapters/01_x.html"
    assert url("notation") == "zh/notation.html"
    assert url("search") == "zh/search.html"
    # A page the other edition lacks: its home page, never a missing file.
    assert url("chapters/02_only_here") == "../zh/intro.html"
    # No table of contents of the other edition (never generated): no switch at all.
    app = fake_app(tmp_path, toc="missing/_toc.yml")
    ext._load_twins(app)
    assert url("intro") is None


def test_edition_theme_strings_go_in_front_of_the_themes(tmp_path: Path, monkeypatch) -> None:
    import polib
    from sphinx import locale

    ext = language_switch_extension()
    theirs = gettext.NullTranslations()
    theirs.gettext = lambda message: {"Print to PDF": "列印成 PDF", "Contents": "目录"}.get(message, message)
    monkeypatch.setitem(locale.translators, ("general", "testtheme"), theirs)
    mo = polib.MOFile()
    mo.metadata = {"Content-Type": "text/plain; charset=UTF-8"}
    mo.append(polib.MOEntry(msgid="Print to PDF", msgstr="打印为 PDF"))
    (tmp_path / "_locale" / "zh_CN" / "LC_MESSAGES").mkdir(parents=True)
    mo.save(str(tmp_path / "_locale" / "zh_CN" / "LC_MESSAGES" / "testtheme.mo"))
    ext._load_twins(fake_app(tmp_path, language="zh_CN", locale_dirs=("_locale",)))
    translate = locale.get_translation("testtheme")
    assert translate("Print to PDF") == "打印为 PDF"
    assert translate("Contents") == "目录"  # the theme's own translation, where ours has none
