"""tools/student_edition.py: the chapters without their solutions, for graded work."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))
import student_edition  # noqa: E402  (tools/ is not a package)

CHAPTERS = sorted((ROOT / "chapters").glob("*.ipynb"))
EXERCISE_LABEL = re.compile(r"^`{3,}\{exercise(?:-start)?\}.*\n:label: (\S+)", re.M)


def source(cell: dict) -> str:
    return "".join(cell["source"])


def markdown(text: str, cell_id: str) -> dict:
    return {"cell_type": "markdown", "id": cell_id, "metadata": {}, "source": text}


def code(text: str, cell_id: str) -> dict:
    return {"cell_type": "code", "id": cell_id, "metadata": {}, "source": text, "outputs": [], "execution_count": None}


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.stem)
def test_a_chapter_keeps_its_exercises_and_loses_its_solutions(path: Path) -> None:
    notebook = json.loads(path.read_text(encoding="utf-8"))
    student, counts = student_edition.student_notebook(notebook)
    text = "\n".join(source(c) for c in student["cells"])
    original = "\n".join(source(c) for c in notebook["cells"])
    assert "{solution" not in text
    assert counts["gated solutions"] + counts["written solutions"] == original.count("{solution-start}") + original.count("{solution}")
    assert counts["gated solutions"] >= 1
    # Every exercise, with its label, and every checker call stay; no reference solution does.
    assert EXERCISE_LABEL.findall(text) == EXERCISE_LABEL.findall(original) != []
    checks = lambda cells: [source(c) for c in cells if c["cell_type"] == "code" and ".check(" in source(c)]  # noqa: E731
    kept_checks = checks(student["cells"])
    assert kept_checks and all(c in checks(notebook["cells"]) for c in kept_checks)
    assert not [c for c in kept_checks if re.search(r"^def solution", c, re.M)]
    # Kept cells are the original cells (the same ids, in order), some with less prose.
    ids = [c["id"] for c in notebook["cells"]]
    kept_ids = [c["id"] for c in student["cells"]]
    assert kept_ids == [i for i in ids if i in set(kept_ids)]


def test_a_written_solution_goes_and_the_exercise_above_it_stays() -> None:
    text = "```{exercise} Two lookups\n:label: ex-a\n\nSay why.\n```\n\n```{solution} ex-a\n:class: dropdown\n\nBecause.\n```\n"
    kept, inside, counts = student_edition.split_solutions(text, inside=False)
    assert kept == "```{exercise} Two lookups\n:label: ex-a\n\nSay why.\n```\n"
    assert (inside, counts) == (False, {"gated solutions": 0, "written solutions": 1})


def test_a_gated_solution_goes_with_its_code_and_the_prose_after_it_stays() -> None:
    notebook = {
        "cells": [
            markdown("```{exercise-start} Write it\n:label: ex-b\n```", "a"),
            code("EXERCISES['x'].check(mine)", "b"),
            markdown("```{exercise-end}\n```\n\n```{solution-start} ex-b\n:class: dropdown\n```", "c"),
            code("def solution_x():\n    return 1\nEXERCISES['x'].check(solution_x)", "d"),
            markdown("Why it works.\n\n```{solution-end}\n```\n\nThe next section.", "e"),
        ],
    }
    student, counts = student_edition.student_notebook(notebook)
    assert [c["id"] for c in student["cells"]] == ["a", "b", "c", "e"]
    assert source(student["cells"][2]) == "```{exercise-end}\n```"
    assert source(student["cells"][3]) == "The next section."
    assert counts == {"gated solutions": 1, "written solutions": 0, "cells removed": 1}


def test_a_name_only_a_solution_defines_is_refused() -> None:
    notebook = {
        "cells": [
            markdown("```{solution-start} ex-c\n```", "a"),
            code("helper = 3", "b"),
            markdown("```{solution-end}\n```", "c"),
            code("print(helper + 1)", "d"),
        ],
    }
    with pytest.raises(ValueError, match=r"\['helper'\]"):
        student_edition.student_notebook(notebook)
    notebook["cells"].insert(0, code("helper = 2", "z"))  # defined where it is kept: fine
    student_edition.student_notebook(notebook)


@pytest.mark.parametrize(
    "cells, message",
    [
        ([markdown("```{solution-start} ex-d\n```", "a"), code("x = 1", "b")], "without its solution-end"),
        ([markdown("```{solution-end}\n```", "a")], "without its solution-start"),
        ([markdown("```{solution-start} ex-d\n```", "a"), markdown("```{solution-start} ex-e\n```", "b")], "inside another"),
    ],
)
def test_unbalanced_solution_markers_are_refused(cells: list[dict], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        student_edition.student_notebook({"cells": cells})


def test_the_student_edition_of_chapter_1_runs_top_to_bottom(tmp_path: Path) -> None:
    student_edition.main(["--out", str(tmp_path), str(CHAPTERS[0])])
    path = tmp_path / "chapters" / CHAPTERS[0].name
    notebook = nbformat.read(path, as_version=4)
    NotebookClient(notebook, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}).execute()
    errors = [o for c in notebook.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert errors == []
    # The learner's stub is still checked, and says so.
    shown = "\n".join(o.get("text", "") + json.dumps(o.get("data", {})) for c in notebook.cells if c.cell_type == "code" for o in c.outputs)
    assert "not attempted" in shown.lower()
