"""tools/lab_compat.py rewrites exactly what JupyterLab shows differently from the book."""

from __future__ import annotations

import copy
import importlib.util
import json
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
spec = importlib.util.spec_from_file_location("lab_compat", ROOT / "tools" / "lab_compat.py")
lab_compat = importlib.util.module_from_spec(spec)
spec.loader.exec_module(lab_compat)

MACROS = {"softmax": "\\operatorname{softmax}", "Concat": "\\operatorname{Concat}", "norm": ["\\lVert #1 \\rVert", 1]}


def md(text: str) -> dict:
    return {"cell_type": "markdown", "metadata": {}, "source": text}


def code(text: str, metadata: dict | None = None) -> dict:
    return {"cell_type": "code", "execution_count": 1, "metadata": metadata or {}, "outputs": [], "source": text}


def rewritten(*cells: dict) -> tuple[dict, list[str]]:
    nb = {"cells": copy.deepcopy(list(cells)), "metadata": {}}
    return nb, lab_compat.rewrite(nb, MACROS)


def test_the_book_config_defines_the_macros_the_script_writes_out() -> None:
    macros = lab_compat.book_macros()
    assert macros["softmax"] == "\\operatorname{softmax}"
    for name, definition in macros.items():
        nargs = 0 if isinstance(definition, str) else int(definition[1])
        nb = {"cells": [md(f"$\\{name}" + "{x}" * nargs + "$")]}
        assert lab_compat.rewrite(nb, macros) != []
        assert lab_compat.unknown_tex(nb) == [], name


def test_macros_are_written_out_in_math_and_directives() -> None:
    nb, changes = rewritten(md("$\\softmax(QK^\\top)$ and\n```{exercise} E\n$\\Concat(O_1)\\,W_o$\n```\n"))
    assert nb["cells"][0]["source"] == "$\\operatorname{softmax}(QK^\\top)$ and\n```{exercise} E\n$\\operatorname{Concat}(O_1)\\,W_o$\n```\n"
    assert changes == ["cell 0: macros written out: Concat, softmax"]


def test_a_solution_after_an_exercise_in_one_cell_is_prose_too() -> None:
    text = "```{exercise} E\nWhy?\n```\n\n```{solution} ex\n:class: dropdown\n$\\softmax(s)$\n```\n```\n\\softmax\n```"
    nb, _ = rewritten(md(text))
    assert nb["cells"][0]["source"] == text.replace("$\\softmax(s)$", "$\\operatorname{softmax}(s)$")


def test_a_macro_with_an_argument_takes_its_braced_group() -> None:
    nb, _ = rewritten(md("$\\norm{q} \\norm k$"))
    assert nb["cells"][0]["source"] == "$\\lVert q \\rVert \\lVert k \\rVert$"


def test_longer_names_and_code_are_left_alone() -> None:
    text = "$\\softmaxed$, `\\softmax` in code,\n```latex\n\\softmax\n```\nand in a code cell:"
    nb, changes = rewritten(md(text), code("s = '\\\\softmax'"))
    assert changes == []
    assert nb["cells"][0]["source"] == text and nb["cells"][1]["source"] == "s = '\\\\softmax'"


@pytest.mark.parametrize(
    ("before", "after"),
    [
        ("```{solution} ex-1\nText.\n```", "```{solution} ex-1\n:class: dropdown\nText.\n```"),
        ("```{solution-start} ex-1\n:label: s1\n```", "```{solution-start} ex-1\n:class: dropdown\n:label: s1\n```"),
        ("```{solution} ex-1\n:class: wide\n\nText.\n```", "```{solution} ex-1\n:class: wide dropdown\n\nText.\n```"),
        (":::{solution} ex-1\nText.\n:::", ":::{solution} ex-1\n:class: dropdown\nText.\n:::"),
    ],
)
def test_solutions_are_folded(before: str, after: str) -> None:
    nb, changes = rewritten(md(before))
    assert nb["cells"][0]["source"] == after
    assert changes == ["cell 0: solution folded (:class: dropdown)"]


def test_an_exercise_or_a_folded_solution_is_not_changed() -> None:
    text = "```{exercise} E\n:label: ex-1\n```\n\n```{solution} ex-1\n:class: dropdown\nText.\n```"
    assert rewritten(md(text))[1] == []


def test_cells_of_a_gated_solution_are_collapsed_and_nothing_else() -> None:
    cells = [
        code("before = 1"),
        md("```{solution-start} ex-1\n:class: dropdown\n```"),
        md("Explanation."),
        code("def solution(): ...", {"jupyter": {"source_hidden": True}}),
        md("```{solution-end}\n```"),
        code("after = 1"),
    ]
    nb, changes = rewritten(*cells)
    assert [c["metadata"] for c in nb["cells"]] == [
        {},
        {},
        {"jupyter": {"source_hidden": True}},
        {"jupyter": {"source_hidden": True, "outputs_hidden": True}},
        {},
        {},
    ]
    assert changes == [
        "cell 2: collapsed in JupyterLab (inside a gated solution)",
        "cell 3: collapsed in JupyterLab (inside a gated solution)",
    ]


def test_a_second_run_changes_nothing_on_every_chapter() -> None:
    for path in sorted((ROOT / "chapters").glob("*.ipynb")):
        nb = json.loads(path.read_text(encoding="utf-8"))
        lab_compat.rewrite(nb, lab_compat.book_macros())
        again = copy.deepcopy(nb)
        assert lab_compat.rewrite(again, lab_compat.book_macros()) == [], path.name
        assert again == nb
        assert lab_compat.unknown_tex(nb) == [], path.name


def test_unknown_tex_names_commands_outside_the_known_list() -> None:
    nb = {"cells": [md("$\\mathscr{L} + \\alpha$ and `\\weird` in code")]}
    assert lab_compat.unknown_tex(nb) == [
        "cell 0: \\mathscr is not a TeX command known to both KaTeX (JupyterLab) and MathJax (the book)"
    ]


def test_command_line_check_then_rewrite_then_check(tmp_path: Path, capsys) -> None:
    """--check reports and changes nothing; a run rewrites only the cells it names."""
    path = Path(shutil.copy(ROOT / "chapters" / "01_soft_lookup.ipynb", tmp_path / "ch.ipynb"))
    nb = json.loads(path.read_text(encoding="utf-8"))
    nb["cells"][0]["source"] = ["$\\softmax(x)$ and $\\Concat(a, b)$\n"]
    path.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    before = path.read_text(encoding="utf-8")
    assert lab_compat.main(["--check", str(path)]) == 1
    assert path.read_text(encoding="utf-8") == before
    assert "cell 0: macros written out: Concat, softmax" in capsys.readouterr().out
    assert lab_compat.main([str(path)]) == 0
    assert json.loads(path.read_text(encoding="utf-8"))["cells"][0]["source"] == [
        "$\\operatorname{softmax}(x)$ and $\\operatorname{Concat}(a, b)$\n"
    ]
    assert lab_compat.main(["--check", str(path)]) == 0
