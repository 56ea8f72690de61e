"""Translation catalogues for the Chinese edition: one message per Markdown block.

The Chinese book is generated from the English sources at build time. Its prose lives in
gettext catalogues only, `locales/zh_CN/<page>.po` (for example
`locales/zh_CN/chapters/01_soft_lookup.po`), one message per Markdown block of the page,
plus each figure's caption and alt text. Code cells, outputs and metadata are never
translated, so the Chinese code cannot drift from the English.

    .venv/bin/python tools/i18n.py update     # refresh every catalogue, print coverage
    .venv/bin/python tools/i18n.py coverage   # print coverage per page, change nothing
    .venv/bin/python tools/i18n.py check      # exit 1 if a translation breaks structure

`tools/build_zh.py` writes the Chinese book from these catalogues (`make book` runs it).

A *block* is a run of lines between blank lines; a fenced block (```, ~~~, :::, and
display math between `$$` lines) is one block with its blank lines, so an exercise
directive is one message with its title and body. Blocks with nothing to translate (only
math, code, a label, directive options) are not messages.

A translation is used only if it keeps the block's *structure* (see `structure`): the same
directives and their options, labels, cross-references and citations, display and inline
math, code spans, fenced code, link targets and heading levels. `update` keeps every
translation whose English is unchanged; a translation whose English changed is kept as
*fuzzy* (out of date: the build shows the English until someone re-checks it) next to the
previous English (`#| msgid`), and one whose English disappeared is kept as obsolete (`#~`).
"""

from __future__ import annotations

import argparse
import difflib
import json
import re
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LOCALE_DIR = ROOT / "locales" / "zh_CN"
LANGUAGE = "zh_CN"

# The pages of the book that have prose, in reading order (the _toc.yml's files).
MARKDOWN_PAGES = ("intro", "notation", "references")

# The book-level catalogue (`locales/zh_CN/_book.po`): the book's title and footer
# (`_config.yml`), the part captions (`_toc.yml`), the notes the Chinese edition shows
# where it falls back to English, and the theme's strings that its own catalogues leave in
# English. Its "page" name starts with `_` so it can never clash with a page of the book.
BOOK = "_book"
# The notes of the Chinese edition (tools/build_zh.py): `{count}` is a number, `{marker}`
# the marker that build_zh.py puts on a passage shown in English.
NOTE_TITLE = "Translation in progress"
NOTE_UNTRANSLATED = "This page has not been translated yet; it is shown in English."
NOTE_PARTIAL = (
    "{count} passage(s) of this page are not translated yet, or their translation is out of"
    " date: they are shown in English and marked {marker}."
)
NOTE_MARKER = "English"
NOTE_MARKER_TITLE = "Not translated yet, or the translation is out of date: shown in English"
NOTES = (NOTE_TITLE, NOTE_UNTRANSLATED, NOTE_PARTIAL, NOTE_MARKER, NOTE_MARKER_TITLE)
# Strings of the HTML theme that the zh_CN catalogues of Sphinx, pydata-sphinx-theme and
# sphinx-book-theme leave in English (or word oddly), as (message catalogue, English
# string). build_zh.py compiles their translations into the Chinese edition's
# `_locale/zh_CN/LC_MESSAGES/<catalogue>.mo`, read before the theme's own
# (_ext/language_switch.py). The two sidebar toggles are templates of _ext/templates/ that
# wrap the theme's fixed English in `_()`; "Search this book..." is Jupyter Book's search
# box text (a theme option), translated by _ext/language_switch.py, which also translates
# the two fixed English aria-labels ("Main", "Page") in the pages it writes.
THEME_STRINGS = (
    ("sphinx", "Search this book..."),
    ("sphinx", "Color mode"),
    ("sphinx", "System Settings"),
    ("sphinx", "previous"),
    ("sphinx", "next"),
    ("sphinx", "\u00a9 Copyright %(copyright)s."),
    ("sphinx", "Toggle primary sidebar"),
    ("sphinx", "Toggle secondary sidebar"),
    ("booktheme", "Print to PDF"),
    ("booktheme", "Main"),  # aria-label of the book's navigation (_ext/language_switch.py)
    ("booktheme", "Page"),  # aria-label of the printed page's contents
)
# Sphinx settings that hold English text shown on the pages, as (setting, English default):
# build_zh.py sets each to its translation in the Chinese edition's _config.yml.
CONFIG_STRINGS = (
    ("nb_code_prompt_show", "Show code cell {type}"),
    ("nb_code_prompt_hide", "Hide code cell {type}"),
    ("togglebutton_hint", "Click to show"),
    ("togglebutton_hint_hide", "Click to hide"),
)

# Directives whose argument is a title (translatable); other arguments are labels or paths.
TITLE_DIRECTIVES = frozenset({"exercise", "exercise-start", "admonition", "dropdown", "topic"})
# Directive options whose values are prose (translatable); other option values are kept.
PROSE_OPTIONS = frozenset({"alt", "caption", "title"})

FENCE_OPEN = re.compile(r"^(?P<indent>\s*)(?P<mark>`{3,}|~{3,}|:{3,})(?P<info>.*)$")
DIRECTIVE = re.compile(r"^\{(?P<name>[\w:-]+)\}\s*(?P<arg>.*)$")
OPTION = re.compile(r"^\s*:(?P<key>[\w-]+):\s*(?P<value>.*)$")
LABEL = re.compile(r"^\s*\((?P<label>[^()\s]+)\)=\s*$", re.M)
ROLE = re.compile(r"(?<!`)\{(?P<role>[\w:-]+)\}`(?P<content>[^`]*)`")
CODE_SPAN = re.compile(r"(?<!`)(`+)(?!`)(?P<code>.+?)(?<!`)\1(?!`)", re.S)
INLINE_MATH = re.compile(r"(?<![\\$])\$(?!\$)(?P<math>(?:\\.|[^$\\])+?)\$(?!\$)")
# Display math, with MyST's optional label after the closing `$$`: `$$ (eq-label)`.
DISPLAY_MATH = re.compile(r"\$\$(?P<math>.*?)\$\$(?:[ \t]*\((?P<label>[^()\s]+)\))?", re.S)
DISPLAY_MATH_END = re.compile(r"\$\$(?:[ \t]*\([^()\s]+\))?$")
LINK = re.compile(r"!?\[[^\]]*\]\((?P<target>[^)\s]+)[^)]*\)")
HEADING = re.compile(r"^(?P<level>#{1,6})\s", re.M)
LETTER = re.compile(r"[A-Za-z\u4e00-\u9fff]")


# ---------------------------------------------------------------------------------------
# Splitting a Markdown text into blocks
# ---------------------------------------------------------------------------------------


def split_blocks(text: str) -> list[tuple[str, bool]]:
    """Split `text` into segments, each `(segment, is_block)`; joined, they give `text`.

    Separators (runs of blank lines) have `is_block=False`. A fence opened by ```, ~~~ or
    ::: closes at a line with the same character repeated at least as often and nothing
    else; display math opened by a line starting with `$$` closes at the next line that
    ends with `$$` (or with `$$ (label)`). Blank lines inside a fence do not split it.
    """
    segments: list[tuple[str, bool]] = []
    block: list[str] = []
    blank: list[str] = []
    fence: str | None = None  # the closing mark of the open fence
    for line in text.splitlines(keepends=True):
        stripped = line.strip()
        if fence is not None:
            block.append(line)
            if fence == "$$":
                if DISPLAY_MATH_END.search(stripped):
                    fence = None
            elif stripped and set(stripped) == {fence[0]} and len(stripped) >= len(fence):
                fence = None
            continue
        if not stripped:
            if block:
                segments.append(("".join(block), True))
                block = []
            blank.append(line)
            continue
        if blank:
            segments.append(("".join(blank), False))
            blank = []
        block.append(line)
        opened = FENCE_OPEN.match(line)
        if opened:
            fence = opened["mark"]
        elif stripped.startswith("$$") and not (len(stripped) > 2 and DISPLAY_MATH_END.search(stripped[2:])):
            fence = "$$"
    if block:
        segments.append(("".join(block), True))
    if blank:
        segments.append(("".join(blank), False))
    return segments


def _without_markup(block: str) -> str:
    """The block's prose: math, code, labels, roles' targets and directive syntax removed."""
    lines = []
    for line in _drop_fenced_code(block, keep_directive_lines=True).splitlines():
        opened = FENCE_OPEN.match(line)
        if opened:
            directive = DIRECTIVE.match(opened["info"].strip())
            if directive and directive["name"] in TITLE_DIRECTIVES:
                lines.append(directive["arg"])
            continue
        option = OPTION.match(line)
        if option:
            if option["key"] in PROSE_OPTIONS:
                lines.append(option["value"])
            continue
        lines.append(line)
    text = "\n".join(lines)
    text = DISPLAY_MATH.sub(" ", text)
    text = LABEL.sub(" ", text)
    text = ROLE.sub(lambda m: _role_text(m["content"]), text)
    text = CODE_SPAN.sub(" ", text)
    text = INLINE_MATH.sub(" ", text)
    return text


def _role_text(content: str) -> str:
    """The visible title of a role such as {doc}`notation page </notation>` (or '')."""
    titled = re.match(r"^(?P<title>.*?)\s*<[^<>]+>$", content, re.S)
    return titled["title"] if titled else ""


CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
CJK_PUNCTUATION = re.compile(r"[\u3000-\u303f\uff00-\uffef]")


def word_count(text: str) -> float:
    """How many words a text has, for rules written for English ("alt text of 4 words").

    A Latin word counts 1. Chinese has no spaces between words: each CJK character counts a
    third of a word (a Chinese word is one to three characters), so 12 characters count as
    4 words. Full-width punctuation separates words and counts nothing.
    """
    cjk = len(CJK.findall(text))
    latin = CJK_PUNCTUATION.sub(" ", CJK.sub(" ", text)).split()
    return len([w for w in latin if re.search(r"\w", w)]) + cjk / 3


def is_translatable(block: str) -> bool:
    """Whether a block has any prose to translate."""
    return bool(LETTER.search(_without_markup(block)))


# ---------------------------------------------------------------------------------------
# Structure: what a translation must keep
# ---------------------------------------------------------------------------------------


def structure(block: str) -> dict[str, object]:
    """Everything in a block that must survive translation unchanged.

    Directives (name, non-title argument, options except prose ones), labels, roles with
    their targets (the title of a titled reference may be translated), display math,
    inline math, code spans, fenced code, link and image targets, heading levels.
    """
    directives: list[tuple[str, ...]] = []
    fenced_code: list[str] = []
    in_code: list[str] | None = None
    code_mark = ""
    open_directives: list[str] = []  # the marks of the directive fences still open
    for line in block.splitlines():
        stripped = line.strip()
        if in_code is not None:
            if _closes(stripped, code_mark):
                fenced_code.append("\n".join(in_code))
                in_code = None
            else:
                in_code.append(line)
            continue
        if open_directives and _closes(stripped, open_directives[-1]):
            open_directives.pop()
            continue
        opened = FENCE_OPEN.match(line)
        if opened:
            info = opened["info"].strip()
            directive = DIRECTIVE.match(info)
            if directive:
                arg = "" if directive["name"] in TITLE_DIRECTIVES else directive["arg"]
                directives.append(("directive", directive["name"], arg))
                open_directives.append(opened["mark"])
            else:
                # A fenced code block (``` or ```python): its text is kept verbatim.
                in_code, code_mark = [], opened["mark"]
                directives.append(("code", info))
            continue
        option = OPTION.match(line)
        if option:
            value = "" if option["key"] in PROSE_OPTIONS else option["value"].strip()
            directives.append(("option", option["key"], value))
    outside_code = _drop_fenced_code(block)
    roles = []
    for match in ROLE.finditer(outside_code):
        content = match["content"]
        titled = re.match(r"^.*?<(?P<target>[^<>]+)>$", content, re.S)
        roles.append((match["role"], _squash(titled["target"] if titled else content)))
    no_roles = ROLE.sub(" ", outside_code)
    display = [_squash(m["math"]) + (f" ({m['label']})" if m["label"] else "") for m in DISPLAY_MATH.finditer(no_roles)]
    no_display = DISPLAY_MATH.sub(" ", no_roles)
    spans = [_squash(m["code"]) for m in CODE_SPAN.finditer(no_display)]
    no_spans = CODE_SPAN.sub(" ", no_display)
    return {
        "directives": directives,
        "fenced code": fenced_code,
        "labels": LABEL.findall(outside_code),
        "roles": sorted(roles),
        "display math": display,
        "inline math": sorted(_squash(m["math"]) for m in INLINE_MATH.finditer(no_spans)),
        "code spans": sorted(spans),
        "link targets": sorted(LINK.findall(no_spans)),
        "headings": [m["level"] for m in HEADING.finditer(outside_code)],  # `#` in code is a comment
    }


def _closes(stripped: str, mark: str) -> bool:
    """Whether a (stripped) line closes a fence opened with `mark`."""
    return bool(stripped) and set(stripped) == {mark[0]} and len(stripped) >= len(mark)


def _squash(text: str) -> str:
    """Whitespace-insensitive form of math and code: a line break may become a space."""
    return " ".join(text.split())


def _drop_fenced_code(block: str, keep_directive_lines: bool = False) -> str:
    """The block without fenced code (directive bodies are kept, their fences if asked)."""
    kept: list[str] = []
    code_mark: str | None = None
    open_directives: list[str] = []
    for line in block.splitlines():
        stripped = line.strip()
        if code_mark is not None:
            if _closes(stripped, code_mark):
                code_mark = None
            continue
        if open_directives and _closes(stripped, open_directives[-1]):
            open_directives.pop()
            if keep_directive_lines:
                kept.append(line)
            continue
        opened = FENCE_OPEN.match(line)
        if opened:
            if DIRECTIVE.match(opened["info"].strip()):
                open_directives.append(opened["mark"])
                if keep_directive_lines:
                    kept.append(line)
            else:
                code_mark = opened["mark"]
            continue
        kept.append(line)
    return "\n".join(kept)


def structure_differences(english: str, translation: str) -> list[str]:
    """What a translation changed that it must keep, one line per kind ([] if nothing)."""
    want, got = structure(english), structure(translation)
    problems = []
    for kind in want:
        if want[kind] != got[kind]:
            missing = _multiset_minus(want[kind], got[kind])
            extra = _multiset_minus(got[kind], want[kind])
            detail = []
            if missing:
                detail.append(f"missing {missing}")
            if extra:
                detail.append(f"unexpected {extra}")
            problems.append(f"{kind}: " + ("; ".join(detail) or "same items, different order"))
    return problems


def _multiset_minus(a: list, b: list) -> list:
    left = Counter(map(repr, a))
    left.subtract(Counter(map(repr, b)))
    return [item for item, count in left.items() for _ in range(max(count, 0))]


# ---------------------------------------------------------------------------------------
# The messages of a page
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Message:
    """One translatable string of a page and where it comes from."""

    msgid: str
    where: str  # e.g. "cell afecd7ea block 2", "cell ch8-07 figure caption"
    kind: str  # "markdown", "caption", "alt"


def page_source(page: str) -> Path:
    """The English source file of a page (`chapters/01_soft_lookup` or `intro`)."""
    for suffix in (".ipynb", ".md"):
        path = ROOT / f"{page}{suffix}"
        if path.exists():
            return path
    raise FileNotFoundError(f"no English source for page {page!r}: expected {page}.ipynb or {page}.md")


def book_pages() -> list[str]:
    """Every page with prose: the Markdown pages, then the chapters in file order."""
    chapters = sorted(p.relative_to(ROOT).with_suffix("").as_posix() for p in (ROOT / "chapters").glob("*.ipynb"))
    return [*MARKDOWN_PAGES, *chapters]


def catalogues() -> list[str]:
    """Every catalogue: the book-level one, then one per page."""
    return [BOOK, *book_pages()]


def book_config() -> tuple[dict, dict]:
    """The English `_config.yml` and `_toc.yml`, parsed."""
    import yaml

    config = yaml.safe_load((ROOT / "_config.yml").read_text(encoding="utf-8"))
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text(encoding="utf-8"))
    return config, toc


def book_messages() -> list[Message]:
    """The book-level messages: title, footer, part captions, notes, theme strings."""
    config, toc = book_config()
    messages = [Message(config["title"], "_config.yml title", "title")]
    if config.get("author"):
        messages.append(Message(config["author"], "_config.yml author", "author"))
    footer = config.get("html", {}).get("extra_footer")
    if footer:
        messages.append(Message(footer, "_config.yml html.extra_footer", "footer"))
    for number, part in enumerate(toc.get("parts", []), start=1):
        if part.get("caption"):
            messages.append(Message(part["caption"], f"_toc.yml part {number} caption", "part caption"))
    messages += [Message(note, "tools/build_zh.py note", "note") for note in NOTES]
    messages += [Message(text, f"theme catalogue {domain}", "theme") for domain, text in THEME_STRINGS]
    messages += [Message(text, f"Sphinx setting {setting}", "setting") for setting, text in CONFIG_STRINGS]
    return messages


def markdown_messages(text: str, where: str) -> list[Message]:
    """The translatable blocks of a Markdown text, in order."""
    messages = []
    number = 0
    for segment, is_block in split_blocks(text):
        if not is_block:
            continue
        number += 1
        if is_translatable(segment):
            messages.append(Message(segment.rstrip("\n"), f"{where} block {number}", "markdown"))
    return messages


def page_messages(page: str) -> list[Message]:
    """Every translatable string of a page, in reading order."""
    if page == BOOK:
        return book_messages()
    path = page_source(page)
    if path.suffix == ".md":
        return markdown_messages(path.read_text(encoding="utf-8"), "page")
    notebook = json.loads(path.read_text(encoding="utf-8"))
    messages: list[Message] = []
    for index, cell in enumerate(notebook["cells"]):
        name = f"cell {cell.get('id', index)}"
        if cell["cell_type"] == "markdown":
            messages += markdown_messages("".join(cell["source"]), name)
        for kind, text in figure_texts(cell):
            messages.append(Message(text, f"{name} figure {kind}", kind))
    return messages


def figure_texts(cell: dict) -> list[tuple[str, str]]:
    """A code cell's figure caption and alt text from its `mystnb` metadata."""
    mystnb = cell.get("metadata", {}).get("mystnb", {})
    found = []
    caption = mystnb.get("figure", {}).get("caption")
    if caption:
        found.append(("caption", caption))
    alt = mystnb.get("image", {}).get("alt")
    if alt:
        found.append(("alt", alt))
    return found


# ---------------------------------------------------------------------------------------
# Catalogues
# ---------------------------------------------------------------------------------------


def catalogue_path(page: str) -> Path:
    return LOCALE_DIR / f"{page}.po"


def load_catalogue(page: str):
    """The page's catalogue (polib.POFile); an empty one if it does not exist yet."""
    import polib

    path = catalogue_path(page)
    if path.exists():
        return polib.pofile(str(path), wrapwidth=0)
    catalogue = polib.POFile(wrapwidth=0)
    catalogue.metadata = {
        "Project-Id-Version": "Multi-Head Attention, Hands On",
        "Language": LANGUAGE,
        "MIME-Version": "1.0",
        "Content-Type": "text/plain; charset=UTF-8",
        "Content-Transfer-Encoding": "8bit",
    }
    return catalogue


def translations(page: str) -> dict[str, str]:
    """English block -> Chinese block, for every usable translation of a page.

    Usable: translated, not fuzzy (out of date), not obsolete, and keeping the structure.
    """
    catalogue = load_catalogue(page)
    usable = {}
    for entry in catalogue:
        if entry.obsolete or "fuzzy" in entry.flags or not entry.msgstr.strip():
            continue
        if structure_differences(entry.msgid, entry.msgstr):
            continue
        usable[entry.msgid] = entry.msgstr
    return usable


def update_catalogue(page: str) -> dict[str, int]:
    """Refresh a page's catalogue from its English source; return its coverage counts."""
    import polib

    old = load_catalogue(page)
    by_msgid = {entry.msgid: entry for entry in old if not entry.obsolete}
    previous = {entry.msgid: entry for entry in old if entry.msgstr.strip()}
    new = polib.POFile(wrapwidth=0)
    new.metadata = old.metadata
    messages = page_messages(page)
    current = {message.msgid for message in messages}
    used: set[str] = set()
    seen: dict[str, polib.POEntry] = {}
    for message in messages:
        if message.msgid in seen:
            seen[message.msgid].occurrences.append((message.where, ""))
            continue
        entry = by_msgid.get(message.msgid)
        if entry is not None:
            entry = polib.POEntry(
                msgid=message.msgid,
                msgstr=entry.msgstr,
                flags=list(entry.flags),
                previous_msgid=entry.previous_msgid,
                tcomment=entry.tcomment,
            )
            used.add(message.msgid)
        else:
            entry = polib.POEntry(msgid=message.msgid, msgstr="")
            match = _closest(message.msgid, [m for m in previous if m not in used and m not in current])
            if match is not None:
                # The English changed: keep the old translation, marked out of date.
                entry.msgstr = previous[match].msgstr
                entry.flags = ["fuzzy"]
                entry.previous_msgid = match
                used.add(match)
        entry.occurrences = [(message.where, "")]
        entry.comment = message.kind
        seen[message.msgid] = entry
        new.append(entry)
    for msgid, entry in previous.items():
        if msgid not in used and msgid not in seen and entry.msgstr != msgid:
            new.append(polib.POEntry(msgid=msgid, msgstr=entry.msgstr, obsolete=True))
    path = catalogue_path(page)
    path.parent.mkdir(parents=True, exist_ok=True)
    new.save(str(path))
    return coverage(page)


def _closest(text: str, candidates: list[str]) -> str | None:
    """The candidate most like `text` (ratio >= 0.6), or None."""
    best, best_ratio = None, 0.6
    for candidate in candidates:
        matcher = difflib.SequenceMatcher(None, text, candidate, autojunk=False)
        if matcher.real_quick_ratio() < best_ratio or matcher.quick_ratio() < best_ratio:
            continue
        ratio = matcher.ratio()
        if ratio >= best_ratio:
            best, best_ratio = candidate, ratio
    return best


def coverage(page: str) -> dict[str, int]:
    """Counts of a page's messages: translated, fuzzy, untranslated, broken, total."""
    catalogue = load_catalogue(page)
    counts = Counter()
    by_msgid = {entry.msgid: entry for entry in catalogue if not entry.obsolete}
    for msgid in dict.fromkeys(m.msgid for m in page_messages(page)):
        counts["total"] += 1
        entry = by_msgid.get(msgid)
        if entry is None or not entry.msgstr.strip():
            counts["untranslated"] += 1
        elif "fuzzy" in entry.flags:
            counts["fuzzy"] += 1
        elif structure_differences(msgid, entry.msgstr):
            counts["broken"] += 1
        else:
            counts["translated"] += 1
    return {key: counts[key] for key in ("translated", "fuzzy", "untranslated", "broken", "total")}


def print_coverage(rows: dict[str, dict[str, int]]) -> None:
    print(f"{'page':<48} {'done':>5} {'fuzzy':>5} {'new':>5} {'broken':>6} {'total':>5}")
    for page, c in rows.items():
        share = c["translated"] / c["total"] if c["total"] else 1.0
        print(
            f"{page:<48} {c['translated']:>5} {c['fuzzy']:>5} {c['untranslated']:>5}"
            f" {c['broken']:>6} {c['total']:>5}  {share:6.1%}"
        )


def check(pages: list[str]) -> int:
    """Print every translation that breaks its block's structure; return how many."""
    broken = 0
    for page in pages:
        for entry in load_catalogue(page):
            if entry.obsolete or not entry.msgstr.strip():
                continue
            problems = structure_differences(entry.msgid, entry.msgstr)
            if problems:
                broken += 1
                where = entry.occurrences[0][0] if entry.occurrences else "?"
                print(f"{_shown(catalogue_path(page))} ({where}):")
                for problem in problems:
                    print(f"    {problem}")
    return broken


def _shown(path: Path) -> str:
    """A path relative to the repository where it is inside it."""
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["update", "coverage", "check"])
    parser.add_argument("pages", nargs="*", help="pages such as chapters/01_soft_lookup, or _book (default: all)")
    args = parser.parse_args(argv)
    pages = args.pages or catalogues()
    if args.command == "update":
        print_coverage({page: update_catalogue(page) for page in pages})
        return 0
    if args.command == "coverage":
        print_coverage({page: coverage(page) for page in pages})
        return 0
    broken = check(pages)
    print(f"{broken} translation(s) break their block's structure")
    return 1 if broken else 0


if __name__ == "__main__":
    sys.exit(main())
