"""Write the chapters without their solutions, for graded work: the student edition.

    .venv/bin/python tools/student_edition.py                  # -> _build/student/chapters/
    .venv/bin/python tools/student_edition.py --out DIR chapters/02_*.ipynb
    make student                                               # the same, every chapter

Every chapter ships with its solutions: folded under each exercise in the book, in a
collapsed cell in the notebook. A teacher who grades the exercises can hand out this
edition instead. From each notebook it removes

- every gated solution: the cells from a ```` ```{solution-start} ```` Markdown cell to its
  ```` ```{solution-end} ```` cell, both included (the reference code and its output);
- every ```` ```{solution} ```` block inside a Markdown cell (a written answer), keeping
  the rest of the cell (the exercise above it); a cell left empty is removed;

and keeps everything else as it is, exercises and checker cells included, so a student's
function is still checked when the cell runs. The outputs of the kept cells stay, so the
notebook reads as the book does; the execution counts of the removed cells leave gaps,
which Jupyter does not mind.

What it cannot remove: ``EXERCISES[...].solution()`` prints the checker's reference code
and ``.hint()`` its hints, from the installed ``mhalib``; a student who calls them sees the
answer. The checker is there to teach by naming mistakes, so it keeps them.

It refuses to write a notebook where a kept code cell uses a name that only a removed cell
defines (the notebook would stop with a NameError there), and says which.
"""

from __future__ import annotations

import argparse
import ast
import builtins
import copy
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import i18n  # noqa: E402  (tools/ is not a package)
from lab_compat import SOLUTION, SOLUTION_END, SOLUTION_START, cell_source  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "_build" / "student"


def split_solutions(text: str, inside: bool) -> tuple[str, bool, dict[str, int]]:
    """The Markdown `text` of one cell without its solutions.

    `inside` says whether the cell starts inside a gated solution (a solution-start in an
    earlier cell); returned with the kept text and what was removed, for the next cell.
    Blocks (as `tools/i18n.py` splits them) between a solution-start and its solution-end
    go, both markers included, and so does every ```{solution} block.
    """
    kept: list[str] = []
    counts = {"gated solutions": 0, "written solutions": 0}
    dropped_last = False
    for segment, is_block in i18n.split_blocks(text):
        if not is_block:  # blank lines: keep one run between kept blocks
            if not dropped_last and kept:
                kept.append(segment)
            continue
        dropped_last = True
        if SOLUTION_START.match(segment):
            if inside:
                raise ValueError("a solution-start inside another solution")
            inside = True
            counts["gated solutions"] += 1
        elif SOLUTION_END.match(segment):
            if not inside:
                raise ValueError("a solution-end without its solution-start")
            inside = False
        elif SOLUTION.match(segment):  # {solution} (a {solution-start} was caught above)
            counts["written solutions"] += 1
        elif not inside:
            kept.append(segment)
            dropped_last = False
    return "".join(kept).rstrip() + ("\n" if kept and text.endswith("\n") else ""), inside, counts


def _names(code: str, what: str) -> set[str]:
    """Names that `code` binds (what='defined') or reads (what='used'), anywhere in it.

    Bindings inside functions count as defined too: the check errs towards letting a
    notebook through rather than refusing one that would run.
    """
    code = "\n".join(line for line in code.splitlines() if not line.lstrip().startswith(("%", "!")))
    try:
        tree = ast.parse(code)
    except SyntaxError:
        return set()
    if what == "used":
        return {node.id for node in ast.walk(tree) if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load)}
    bound: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            bound.add(node.name)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            bound.add(node.id)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            bound.update((alias.asname or alias.name).split(".")[0] for alias in node.names)
        elif isinstance(node, ast.arg):
            bound.add(node.arg)
    return bound


def student_notebook(notebook: dict) -> tuple[dict, dict[str, int]]:
    """The notebook without its solutions, and counts of what was removed.

    Raises ValueError if a kept code cell reads a name that only removed cells define.
    """
    kept, removed = [], []
    counts = {"gated solutions": 0, "written solutions": 0, "cells removed": 0}
    inside = False
    for cell in notebook["cells"]:
        if cell["cell_type"] != "markdown":
            (removed if inside else kept).append(cell)
            continue
        original = cell_source(cell)
        try:
            text, inside, found = split_solutions(original, inside)
        except ValueError as error:
            raise ValueError(f"cell {cell.get('id')}: {error}") from None
        for key, value in found.items():
            counts[key] += value
        if not text.strip():
            removed.append(cell)
        elif text == original:
            kept.append(cell)
        else:
            kept.append({**copy.deepcopy(cell), "source": text.splitlines(keepends=True)})
    if inside:
        raise ValueError("a solution-start without its solution-end")
    counts["cells removed"] = len(removed)
    code = lambda cells: [cell_source(c) for c in cells if c["cell_type"] == "code"]  # noqa: E731
    defined_kept = set().union(*(_names(c, "defined") for c in code(kept)), set(dir(builtins)))
    only_removed = set().union(*(_names(c, "defined") for c in code(removed))) - defined_kept
    missing = sorted(set().union(*(_names(c, "used") for c in code(kept))) & only_removed)
    if missing:
        raise ValueError(f"kept cells use {missing}, which only the removed solution cells define")
    return {**notebook, "cells": kept}, counts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("notebooks", nargs="*", type=Path, help="default: chapters/*.ipynb")
    parser.add_argument("--out", type=Path, default=OUT, help=f"default: {OUT.relative_to(ROOT)}")
    args = parser.parse_args(argv)
    notebooks = args.notebooks or sorted((ROOT / "chapters").glob("*.ipynb"))
    for path in notebooks:
        path = path.resolve()
        student, counts = student_notebook(json.loads(path.read_text(encoding="utf-8")))
        target = args.out / path.relative_to(ROOT)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(json.dumps(student, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
        print(
            f"{target.relative_to(args.out)}: {counts['gated solutions']} gated and "
            f"{counts['written solutions']} written solutions removed ({counts['cells removed']} cells)"
        )
    print(f"wrote {len(notebooks)} notebooks into {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
