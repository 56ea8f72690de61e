"""Make a chapter read in JupyterLab (with jupyterlab-myst) as it reads in the book.

    .venv/bin/python tools/lab_compat.py chapters/*.ipynb          # rewrite, say what changed
    .venv/bin/python tools/lab_compat.py --check chapters/*.ipynb  # exit 1 if one needs it

It rewrites only what JupyterLab shows differently, and is idempotent (a second run
changes nothing):

1. TeX macros that exist only in the book's MathJax configuration (`_config.yml`,
   `sphinx.config.mathjax3_config.tex.macros`, e.g. `\\softmax`) are written out in the
   markdown cells (`\\operatorname{softmax}`). jupyterlab-myst typesets with KaTeX, which
   knows no macro from the book's configuration and shows each one as an error.
2. A `{solution}` or `{solution-start}` directive without `:class: dropdown` gets it:
   the solution is then folded under its exercise in the book and in JupyterLab alike.
3. The cells between `{solution-start}` and `{solution-end}` are collapsed in JupyterLab
   (cell metadata `jupyter.source_hidden`, and `jupyter.outputs_hidden` on code cells).
   jupyterlab-myst renders each cell on its own, so its dropdown cannot hold the cells
   that follow it; the book ignores this metadata and folds them in its dropdown.

It also reports (and cannot fix) TeX commands that plain KaTeX or MathJax may not know:
see `KNOWN_TEX` and `unknown_tex`, which tests/test_notebooks.py runs on every chapter.
Code cells' sources, code spans and fenced code blocks are never touched.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# TeX commands that both KaTeX (JupyterLab, through jupyterlab-myst) and MathJax 3 (the book)
# typeset without any configuration. A command outside this list may still be fine: check
# it in both (KaTeX's "Supported Functions" page, MathJax's TeX command list), then add it.
KNOWN_TEX = frozenset(
    """
    alpha beta gamma delta epsilon varepsilon zeta eta theta vartheta iota kappa lambda mu
    nu xi pi varpi rho varrho sigma varsigma tau upsilon phi varphi chi psi omega
    Gamma Delta Theta Lambda Xi Pi Sigma Upsilon Phi Psi Omega
    frac dfrac tfrac sqrt sum prod int lim max min argmax argmin sup inf exp log ln sin cos
    tan tanh det dim ker Pr operatorname text textbf textit texttt mathrm mathbf mathit
    mathcal mathbb mathsf mathtt boldsymbol bm left right big Big bigg Bigg middle
    cdot cdots ldots dots vdots ddots times div pm mp ast star circ bullet oplus otimes odot
    le leq ge geq neq ne approx sim simeq equiv cong propto ll gg in notin subset subseteq
    supset supseteq cup cap setminus emptyset varnothing forall exists neg land lor
    to rightarrow leftarrow leftrightarrow Rightarrow Leftarrow Leftrightarrow mapsto
    implies iff uparrow downarrow infty partial nabla top bot perp mid parallel prime
    lVert rVert lvert rvert Vert vert langle rangle lceil rceil lfloor rfloor lbrace rbrace
    quad qquad hat tilde bar overline underline vec dot ddot widehat widetilde overbrace
    underbrace underset overset stackrel substack begin end tag label nonumber notag
    displaystyle textstyle scriptstyle color boxed phantom hphantom vphantom
    mathop limits nolimits binom tbinom dbinom pmod bmod mod cases
    ell hbar Re Im aleph imath jmath
    """.split()
)

MACRO = re.compile(r"\\([A-Za-z]+)")
FENCE = re.compile(r"^\s*(`{3,}|~{3,}|:{3,})\s*(\S*)")
CODE_SPAN = re.compile(r"(`+).+?\1")
SOLUTION = re.compile(r"^\s*(`{3,}|:{3,})\{(solution|solution-start)\}")
# The markers of a gated solution (the cells between them are its code and output).
SOLUTION_START = re.compile(r"^\s*(`{3,}|:{3,})\{solution-start\}", re.M)
SOLUTION_END = re.compile(r"^\s*(`{3,}|:{3,})\{solution-end\}", re.M)
OPTION = re.compile(r"^\s*:([\w-]+):\s*(.*)$")


def book_macros(config: Path = ROOT / "_config.yml") -> dict[str, str | list]:
    """The TeX macros of the book's MathJax configuration: name -> body or [body, nargs]."""
    import yaml

    data = yaml.safe_load(config.read_text(encoding="utf-8"))
    mathjax = (data.get("sphinx", {}).get("config", {}) or {}).get("mathjax3_config", {}) or {}
    return dict((mathjax.get("tex", {}) or {}).get("macros", {}) or {})


def prose_lines(text: str):
    """Yield (index, line, is_prose): False for lines inside fenced code blocks.

    A fence whose info string is a directive (```{exercise}, :::{note}) holds prose, and a
    bare fence closes the innermost open directive; any other fence (```python, ```text,
    or a bare ``` outside a directive) holds code."""
    directives: list[str] = []  # the fences of the directives open here, innermost last
    code_fence = None
    for i, line in enumerate(text.split("\n")):
        match = FENCE.match(line)
        if code_fence is not None:
            if match and match.group(1)[0] == code_fence[0] and len(match.group(1)) >= len(code_fence) and not match.group(2):
                code_fence = None
            yield i, line, False
            continue
        if match:
            fence, info = match.groups()
            if info.startswith("{"):
                directives.append(fence)
            elif not info and directives and fence[0] == directives[-1][0] and len(fence) >= len(directives[-1]):
                directives.pop()
            elif fence[0] != ":":
                code_fence = fence
                yield i, line, False
                continue
        yield i, line, True


def outside_code_spans(line: str, change) -> str:
    """Apply `change` to the parts of a line that are not `code spans`."""
    parts, last = [], 0
    for span in CODE_SPAN.finditer(line):
        parts += [change(line[last : span.start()]), span.group(0)]
        last = span.end()
    return "".join(parts + [change(line[last:])])


def expand_once(text: str, macros: dict[str, str | list]) -> str:
    """Replace each use of a macro by its body, with #1.. filled from {braced} arguments."""
    names = sorted(macros, key=len, reverse=True)
    if not names:
        return text
    pattern = re.compile(r"\\(" + "|".join(map(re.escape, names)) + r")(?![A-Za-z])")
    out, pos = [], 0
    for match in pattern.finditer(text):
        if match.start() < pos:
            continue
        definition = macros[match.group(1)]
        body, nargs = (definition, 0) if isinstance(definition, str) else (definition[0], int(definition[1]))
        end, args = match.end(), []
        for _ in range(nargs):
            arg, end = read_argument(text, end)
            args.append(arg)
        for k, arg in enumerate(args, start=1):
            body = body.replace(f"#{k}", arg)
        out += [text[pos : match.start()], body]
        pos = end
    return "".join(out + [text[pos:]])


def read_argument(text: str, start: int) -> tuple[str, int]:
    """One TeX argument from `start`: a {braced group} (returned without braces) or a token."""
    i = start
    while i < len(text) and text[i] == " ":
        i += 1
    if i < len(text) and text[i] == "{":
        depth = 0
        for j in range(i, len(text)):
            depth += {"{": 1, "}": -1}.get(text[j], 0)
            if depth == 0:
                return text[i + 1 : j], j + 1
        raise ValueError(f"unbalanced braces in a macro argument: {text[i:i + 40]!r}")
    match = re.match(r"\\[A-Za-z]+|.", text[i:], re.S)
    if match is None:
        raise ValueError(f"a macro is missing its argument at the end of {text[-40:]!r}")
    return match.group(0), i + len(match.group(0))


def expand_macros(source: str, macros: dict[str, str | list]) -> str:
    """Write out the book's macros in a markdown cell's prose and math, not in its code."""
    lines = source.split("\n")
    for i, line, is_prose in prose_lines(source):
        if not is_prose:
            continue
        for _ in range(10):  # a macro's body may use another macro
            new = outside_code_spans(lines[i], lambda part: expand_once(part, macros))
            if new == lines[i]:
                break
            lines[i] = new
    return "\n".join(lines)


def add_dropdown(source: str) -> str:
    """`:class: dropdown` on every {solution} and {solution-start} directive."""
    lines = source.split("\n")
    out = []
    i = 0
    while i < len(lines):
        out.append(lines[i])
        if SOLUTION.match(lines[i]):
            j = i + 1
            options = []
            while j < len(lines) and OPTION.match(lines[j]):
                options.append(j)
                j += 1
            classes = [k for k in options if OPTION.match(lines[k]).group(1) == "class"]
            if not classes:
                out.append(":class: dropdown")
            out += lines[i + 1 : j]
            for k in classes:
                value = OPTION.match(lines[k]).group(2).split()
                if "dropdown" not in value:
                    out[len(out) - (j - k)] = ":class: " + " ".join(value + ["dropdown"])
            i = j
            continue
        i += 1
    return "\n".join(out)


def collapse_gated_solutions(nb: dict) -> list[str]:
    """Collapse every cell between {solution-start} and {solution-end}; say which changed."""
    changed, inside = [], False
    for index, cell in enumerate(nb["cells"]):
        source = cell_source(cell)
        if cell["cell_type"] == "markdown" and SOLUTION_START.search(source):
            inside = True
            continue
        if cell["cell_type"] == "markdown" and SOLUTION_END.search(source):
            inside = False
            continue
        if not inside:
            continue
        jupyter = cell.setdefault("metadata", {}).setdefault("jupyter", {})
        wanted = {"source_hidden": True}
        if cell["cell_type"] == "code":
            wanted["outputs_hidden"] = True
        if any(jupyter.get(k) is not v for k, v in wanted.items()):
            jupyter.update(wanted)
            changed.append(f"cell {index}: collapsed in JupyterLab (inside a gated solution)")
    return changed


def cell_source(cell: dict) -> str:
    source = cell.get("source", "")
    return "".join(source) if isinstance(source, list) else source


def rewrite(nb: dict, macros: dict[str, str | list]) -> list[str]:
    """Make `nb` (a notebook as a dict, changed in place) JupyterLab-ready; list the changes."""
    changes = []
    for index, cell in enumerate(nb["cells"]):
        if cell["cell_type"] != "markdown":
            continue
        old = cell_source(cell)
        new = add_dropdown(expand_macros(old, macros))
        if new != old:
            cell["source"] = new
            changes.append(f"cell {index}: {describe(old, new)}")
    return changes + collapse_gated_solutions(nb)


def describe(old: str, new: str) -> str:
    gone = sorted({m for m in MACRO.findall(old)} - {m for m in MACRO.findall(new)})
    what = [f"macros written out: {', '.join(gone)}"] if gone else []
    if new.count("dropdown") > old.count("dropdown"):
        what.append("solution folded (:class: dropdown)")
    return "; ".join(what) or "rewritten"


def unknown_tex(nb: dict) -> list[str]:
    """TeX commands in markdown cells that are not in KNOWN_TEX (outside code)."""
    problems = []
    for index, cell in enumerate(nb["cells"]):
        if cell["cell_type"] != "markdown":
            continue
        source = cell_source(cell)
        found: set[str] = set()
        for _, line, is_prose in prose_lines(source):
            if is_prose:
                outside_code_spans(line, lambda part: found.update(MACRO.findall(part)) or part)
        for name in sorted(found - KNOWN_TEX):
            problems.append(f"cell {index}: \\{name} is not a TeX command known to both KaTeX (JupyterLab) and MathJax (the book)")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("notebooks", nargs="+", type=Path)
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 if a notebook needs a rewrite")
    args = parser.parse_args(argv)

    import nbformat

    macros = book_macros()
    needed = False
    for path in args.notebooks:
        nb = nbformat.read(path, as_version=4)
        changes = rewrite(nb, macros)
        for line in changes:
            print(f"{path}: {line}")
        for line in unknown_tex(nb):
            print(f"{path}: {line} (not fixed: write it out, or add it to KNOWN_TEX once checked)")
        if changes:
            needed = True
            if not args.check:
                nbformat.write(nb, path)
        elif not args.check:
            print(f"{path}: nothing to change")
    return 1 if args.check and needed else 0


if __name__ == "__main__":
    sys.exit(main())
