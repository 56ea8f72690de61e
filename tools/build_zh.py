"""Write the sources of the Chinese edition from the English book and its catalogues.

    .venv/bin/python tools/build_zh.py                 # write _build/zh_src/, print coverage
    .venv/bin/python tools/build_zh.py --out DIR       # somewhere else
    .venv/bin/python tools/build_zh.py --locales DIR   # other catalogues (a draft, a test)

`make book` runs it, then builds `_build/zh_src/` like the English book and puts the
result in `_build/html/zh/`. Nothing it writes is committed: the Chinese prose lives only
in `locales/zh_CN/*.po` (tools/i18n.py).

What it writes:

- every page of `_toc.yml`: a notebook keeps its cells, their ids, types, code, outputs,
  execution counts and metadata; each Markdown block is replaced by its usable
  translation (`i18n.translations`), and so are the figure captions and alt texts in
  `mystnb` metadata. A `.md` page likewise.
- where a block has no usable translation (none yet, out of date, or breaking the block's
  structure) the English block stays, with a small marker (`<span class="zh-fallback">`,
  styled by `_ext/language_switch.py`) at the start of its first paragraph or list item
  where there is one (never inside a heading, a label, a directive's options or math),
  and the page gets one note after its title: how many passages are still in English or,
  on a page with no usable translation at all, that the page is not translated yet (then
  without markers).
- `_config.yml` (the English one with `language: zh_CN`, the translated title and footer,
  the language switch pointing back to the English edition, and `_locale/` for the theme
  strings), `_toc.yml` (translated part captions), both from `locales/zh_CN/_book.po`;
  `_locale/zh_CN/LC_MESSAGES/<catalogue>.mo`, the theme strings of `_book.po`; and what
  else the build reads (`references.bib`, `_ext/`).

A file is rewritten only when its content changes, so an incremental build stays
incremental.
"""

from __future__ import annotations

import argparse
import copy
import json
import re
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import i18n  # noqa: E402  (tools/ is not a package)

OUT = i18n.ROOT / "_build" / "zh_src"
# What the build reads besides the pages and the two configuration files.
COPIED = ("references.bib", "_ext")
# The language switch of the Chinese edition: back to the English one. The English
# edition's switch is configured in the English _config.yml.
SWITCH = {
    "label": "English",
    "title": "This page in English",
    "lang": "en",
    "root": "../",
    "toc": "../../_toc.yml",
}
# The class of the page note and of the per-block marker (styled by _ext/language_switch.py).
NOTE_CLASS = "zh-fallback-note"
MARKER_CLASS = "zh-fallback"

LIST_ITEM = re.compile(r"^(?P<bullet>(?:[-*+]|\d{1,9}[.)])[ \t]+)(?P<rest>\S.*)$", re.S)
TABLE_ROW = re.compile(r"^\|(?P<rest>\s*[^\s|-].*)$", re.S)
# A first line that is not prose the marker may start: a heading, a label, a fence, math,
# a quote, raw HTML, a rule, a MyST comment or block break, a footnote definition.
NOT_PROSE = re.compile(r"^(#{1,6}\s|\(|`{3,}|~{3,}|:{3,}|\$\$|>|<|---|\*\*\*|___|%|\+\+\+|\[\^)")


# ---------------------------------------------------------------------------------------
# The book-level strings
# ---------------------------------------------------------------------------------------


@dataclass
class BookStrings:
    """The usable translations of `_book.po`, with the English as fallback."""

    usable: dict[str, str]

    @classmethod
    def load(cls) -> BookStrings:
        return cls(i18n.translations(i18n.BOOK))

    def __call__(self, english: str) -> str:
        return self.usable.get(english, english)

    def formatted(self, english: str, **values: object) -> str:
        """A translation with `{name}` fields filled; the English if it lost a field."""
        for text in (self(english), english):
            if all("{" + name + "}" in text for name in values):
                return text.format(**values)
        raise ValueError(f"the English note {english!r} lacks one of the fields {sorted(values)}")

    def marker(self) -> str:
        title = self(i18n.NOTE_MARKER_TITLE).replace('"', "&quot;")
        return f'<span class="{MARKER_CLASS}" title="{title}">{self(i18n.NOTE_MARKER)}</span>'

    def note(self, fallbacks: int, translated: int) -> str:
        """The page note as a Markdown block ('' when nothing fell back)."""
        if not fallbacks:
            return ""
        if translated:
            text = self.formatted(i18n.NOTE_PARTIAL, count=fallbacks, marker=self.marker())
        else:
            text = self(i18n.NOTE_UNTRANSLATED)
        return f"```{{admonition}} {self(i18n.NOTE_TITLE)}\n:class: note {NOTE_CLASS}\n\n{text}\n```"


# ---------------------------------------------------------------------------------------
# Pages
# ---------------------------------------------------------------------------------------


@dataclass
class PageStats:
    """What one page of the Chinese edition shows: translated and English-fallback texts."""

    translated: int = 0
    fallbacks: list[str] = field(default_factory=list)  # where, as in the catalogue


def mark_fallback(block: str, marker: str) -> str:
    """`block` with `marker` at the start of its first paragraph, list item or table cell.

    Directive fences and their options are stepped over into the directive's body.
    A block that starts with a heading, a label, math, code or anything else that is not
    prose is returned unchanged: a marker there would change what the block is.
    """
    lines = block.split("\n")
    i = 0
    while i < len(lines):
        line = lines[i]
        opened = i18n.FENCE_OPEN.match(line)
        if opened and i18n.DIRECTIVE.match(opened["info"].strip()) and not opened["indent"]:
            i += 1
            while i < len(lines) and (i18n.OPTION.match(lines[i]) or not lines[i].strip()):
                i += 1
            continue
        break
    if i >= len(lines):
        return block
    line = lines[i]
    if not line.strip() or line[0].isspace() or NOT_PROSE.match(line):
        return block
    if TABLE_ROW.match(line):
        lines[i] = "| " + marker + " " + line[1:].lstrip()
    elif LIST_ITEM.match(line):
        item = LIST_ITEM.match(line)
        lines[i] = item["bullet"] + marker + " " + item["rest"]
    else:
        lines[i] = marker + " " + line
    return "\n".join(lines)


def translate_markdown(text: str, usable: dict[str, str], where: str, marker: str, stats: PageStats) -> str:
    """A Markdown text with each translatable block replaced by its translation.

    Blocks without a usable translation stay in English with `marker` (if `marker`).
    The blocks are those of `i18n.split_blocks`, so the messages are the catalogue's.
    """
    out = []
    number = 0
    for segment, is_block in i18n.split_blocks(text):
        if not is_block:
            out.append(segment)
            continue
        number += 1
        if not i18n.is_translatable(segment):
            out.append(segment)
            continue
        msgid = segment.rstrip("\n")
        ending = segment[len(msgid) :]
        if msgid in usable:
            stats.translated += 1
            out.append(usable[msgid] + ending)
        else:
            stats.fallbacks.append(f"{where} block {number}")
            out.append((mark_fallback(msgid, marker) if marker else msgid) + ending)
    return "".join(out)


def insert_note(text: str, note: str) -> str:
    """`text` with the block `note` after its first `# ` title block (at the top if none)."""
    if not note:
        return text
    segments = i18n.split_blocks(text)
    for index, (segment, is_block) in enumerate(segments):
        if is_block and re.search(r"^# \S", segment, re.M) and not i18n.FENCE_OPEN.match(segment):
            head = "".join(s for s, _ in segments[: index + 1])
            rest = "".join(s for s, _ in segments[index + 1 :])
            head = head if head.endswith("\n") else head + "\n"
            rest = rest if rest.startswith("\n") or not rest else "\n" + rest
            return head + "\n" + note + "\n" + rest
    return note + "\n\n" + text


def is_note(segment: str) -> bool:
    """Whether a block is the page note that `insert_note` adds."""
    return segment.startswith("```{admonition}") and f":class: note {NOTE_CLASS}\n" in segment


def note_of(text: str) -> str | None:
    """The page note of a generated page (None if it has none)."""
    return next((s for s, is_block in i18n.split_blocks(text) if is_block and is_note(s)), None)


def remove_note(text: str) -> str:
    """`text` without the page note and the blank line before it (undoes `insert_note`)."""
    segments = i18n.split_blocks(text)
    for index, (segment, is_block) in enumerate(segments):
        if is_block and is_note(segment):
            start, end = index, index + 1
            if index and not segments[index - 1][1]:
                start -= 1  # the blank line before the note
            elif end < len(segments) and not segments[end][1]:
                end += 1  # a note at the top: the blank line after it
            return "".join(s for s, _ in segments[:start] + segments[end:])
    return text


def page_marker(page: str, usable: dict[str, str], book: BookStrings) -> str:
    """The fallback marker for a page: none on a page with nothing translated (its note says so)."""
    return book.marker() if any(m.msgid in usable for m in i18n.page_messages(page)) else ""


def translate_notebook(nb: dict, page: str, book: BookStrings) -> tuple[dict, PageStats]:
    """The Chinese notebook: only Markdown sources and figure texts differ."""
    usable = i18n.translations(page)
    marker = page_marker(page, usable, book)
    stats = PageStats()
    zh = copy.deepcopy(nb)
    for index, cell in enumerate(zh["cells"]):
        where = f"cell {cell.get('id', index)}"
        if cell["cell_type"] == "markdown":
            source = "".join(cell["source"])
            cell["source"] = _as_lines(translate_markdown(source, usable, where, marker, stats), cell["source"])
        for kind, text in i18n.figure_texts(cell):
            mystnb = cell["metadata"]["mystnb"]
            if text in usable:
                stats.translated += 1
                mystnb["figure" if kind == "caption" else "image"][kind] = usable[text]
            elif kind == "caption":
                stats.fallbacks.append(f"{where} figure caption")
                if marker:
                    mystnb["figure"]["caption"] = f"{marker} {text}"
    note = book.note(len(stats.fallbacks), stats.translated)
    if note:
        first = next(c for c in zh["cells"] if c["cell_type"] == "markdown")
        first["source"] = _as_lines(insert_note("".join(first["source"]), note), first["source"])
    return zh, stats


def _as_lines(text: str, like: list[str] | str) -> list[str] | str:
    """`text` in the form of the original source (a list of lines, or one string)."""
    return text.splitlines(keepends=True) if isinstance(like, list) else text


def translate_md_page(text: str, page: str, book: BookStrings) -> tuple[str, PageStats]:
    """A Chinese `.md` page and its stats."""
    usable = i18n.translations(page)
    stats = PageStats()
    zh = translate_markdown(text, usable, "page", page_marker(page, usable, book), stats)
    return insert_note(zh, book.note(len(stats.fallbacks), stats.translated)), stats


def notebook_text(nb: dict) -> str:
    """A notebook as nbformat writes it (one-space indent, sorted keys, UTF-8)."""
    return json.dumps(nb, indent=1, sort_keys=True, ensure_ascii=False) + "\n"


# ---------------------------------------------------------------------------------------
# Configuration and table of contents
# ---------------------------------------------------------------------------------------


def zh_config(book: BookStrings) -> dict:
    """The English `_config.yml`, for the Chinese edition."""
    config, _ = i18n.book_config()
    config = copy.deepcopy(config)
    config["title"] = book(config["title"])
    if config.get("author"):
        config["author"] = book(config["author"])
    html = config.setdefault("html", {})
    if html.get("extra_footer"):
        html["extra_footer"] = book(html["extra_footer"])
    sphinx_config = config.setdefault("sphinx", {}).setdefault("config", {})
    sphinx_config["language"] = i18n.LANGUAGE
    sphinx_config["locale_dirs"] = ["_locale"]
    sphinx_config["language_switch"] = dict(SWITCH)
    for setting, english in i18n.CONFIG_STRINGS:
        if book(english) != english:
            sphinx_config[setting] = book(english)
    return config


def zh_toc(book: BookStrings) -> dict:
    _, toc = i18n.book_config()
    toc = copy.deepcopy(toc)
    for part in toc.get("parts", []):
        if part.get("caption"):
            part["caption"] = book(part["caption"])
    return toc


def toc_pages(toc: dict) -> list[str]:
    """Every file a table of contents lists (root first)."""
    pages = [toc["root"]]

    def walk(entries: list[dict]) -> None:
        for entry in entries:
            if "file" in entry:
                pages.append(entry["file"])
            for key in ("chapters", "sections"):
                walk(entry.get(key, []))

    walk(toc.get("parts", []))
    walk(toc.get("chapters", []))
    return pages


def theme_catalogues() -> dict[str, bytes]:
    """The theme strings of `_book.po` as compiled catalogues: domain -> .mo bytes."""
    import polib

    usable = i18n.translations(i18n.BOOK)
    by_domain: dict[str, polib.POFile] = {}
    for domain, english in i18n.THEME_STRINGS:
        if english not in usable:
            continue
        catalogue = by_domain.setdefault(domain, polib.POFile())
        if not catalogue.metadata:
            catalogue.metadata = {"Content-Type": "text/plain; charset=UTF-8", "Language": i18n.LANGUAGE}
        catalogue.append(polib.POEntry(msgid=english, msgstr=usable[english]))
    compiled = {}
    for domain, catalogue in by_domain.items():
        mo = polib.MOFile()
        mo.metadata = catalogue.metadata
        mo.extend(catalogue)
        # polib writes .mo files to paths only: go through a temporary one.
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "catalogue.mo"
            mo.save(str(path))
            compiled[domain] = path.read_bytes()
    return compiled


# ---------------------------------------------------------------------------------------
# Writing the tree
# ---------------------------------------------------------------------------------------


def write_if_changed(path: Path, content: str | bytes, written: set[Path]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = content.encode("utf-8") if isinstance(content, str) else content
    if not path.exists() or path.read_bytes() != data:
        path.write_bytes(data)
    written.add(path)


def build(out: Path = OUT) -> dict[str, PageStats]:
    """Write the Chinese edition's sources into `out`; return each page's stats."""
    import yaml

    book = BookStrings.load()
    written: set[Path] = set()
    dump = lambda data: yaml.safe_dump(data, allow_unicode=True, sort_keys=False, width=1000)  # noqa: E731
    header = "# Generated by tools/build_zh.py from the English file and locales/zh_CN/_book.po: do not edit.\n"
    write_if_changed(out / "_config.yml", header + dump(zh_config(book)), written)
    toc = zh_toc(book)
    write_if_changed(out / "_toc.yml", header + dump(toc), written)
    for domain, data in theme_catalogues().items():
        write_if_changed(out / "_locale" / i18n.LANGUAGE / "LC_MESSAGES" / f"{domain}.mo", data, written)
    stats = {}
    for page in toc_pages(toc):
        source = i18n.page_source(page)
        target = out / source.relative_to(i18n.ROOT)
        if source.suffix == ".ipynb":
            nb = json.loads(source.read_text(encoding="utf-8"))
            zh, stats[page] = translate_notebook(nb, page, book)
            write_if_changed(target, notebook_text(zh), written)
        else:
            zh, stats[page] = translate_md_page(source.read_text(encoding="utf-8"), page, book)
            write_if_changed(target, zh, written)
    for name in COPIED:
        source = i18n.ROOT / name
        files = [source] if source.is_file() else sorted(p for p in source.rglob("*") if p.is_file() and "__pycache__" not in p.parts)
        for path in files:
            write_if_changed(out / path.relative_to(i18n.ROOT), path.read_bytes(), written)
    # Remove what an earlier run wrote and this one did not (a page taken out of the book).
    for path in sorted(out.rglob("*"), reverse=True):
        if path.is_file() and path not in written and "_build" not in path.relative_to(out).parts:
            path.unlink()
        elif path.is_dir() and not any(path.iterdir()):
            path.rmdir()
    return stats


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=OUT, help=f"where to write (default {OUT.relative_to(i18n.ROOT)})")
    parser.add_argument("--quiet", action="store_true", help="print only the total")
    parser.add_argument("--locales", type=Path, help=f"catalogues to read (default {i18n.LOCALE_DIR.relative_to(i18n.ROOT)})")
    args = parser.parse_args(argv)
    if args.locales:
        i18n.LOCALE_DIR = args.locales.resolve()
    stats = build(args.out)
    shown = sum(s.translated for s in stats.values())
    english = sum(len(s.fallbacks) for s in stats.values())
    if not args.quiet:
        for page, s in stats.items():
            state = "translated" if not s.fallbacks else ("English" if not s.translated else f"{len(s.fallbacks)} in English")
            print(f"  {page:<48} {s.translated:>4} translated  {state}")
    print(f"Chinese edition sources in {args.out}: {shown} texts translated, {english} shown in English")
    return 0


if __name__ == "__main__":
    sys.exit(main())
