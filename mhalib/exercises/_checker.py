"""The machinery of the exercise checker: run a learner's function, compare, explain.

An :class:`Exercise` knows a reference function, a list of test :class:`Case` objects
(small and edge cases first) and a catalogue of known wrong variants (:class:`Mistake`).
``check(fn)`` runs ``fn`` on every case in a daemon thread with a timeout, compares its
answer with the reference's, and on the first failing case compares it with each wrong
variant on the same inputs to name the likely mistake.

Everything shown is deterministic (fixed seeds, rounded numbers, no paths, no timings),
because nbval compares a notebook's stored outputs with a fresh run.
"""

from __future__ import annotations

import html
import inspect
import queue
import re
import sys
import threading
import traceback
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch import Tensor

#: Seconds a learner's function may run on one case before the check gives up on it.
TIMEOUT = 5.0

#: Seed of the checker's own generator (the global RNG of the notebook is never touched).
SEED = 2024

STATUSES = ("passed", "failed", "not_attempted", "error")
_ICONS = {"passed": "✅", "failed": "❌", "not_attempted": "✏️", "error": "⚠️"}
_COLORS = {"passed": "#2e7d32", "failed": "#c62828", "not_attempted": "#1565c0", "error": "#ef6c00"}


@dataclass
class Case:
    """One set of inputs: ``args`` are passed positionally; ``about`` describes them in words."""

    name: str
    args: tuple
    about: str


@dataclass
class Mistake:
    """A known wrong answer: ``variants`` compute it (several ways of making the same slip).

    ``error_contains``: recognise the mistake from the text of the exception it raises
    instead (e.g. ``view`` on a transposed tensor).
    """

    key: str
    message: str
    variants: list[Callable] = field(default_factory=list)
    error_contains: str | None = None


class CheckResult:
    """What ``check`` returns: true only when passed; ``.status`` and ``.message`` (plain text)."""

    def __init__(self, exercise_id: str, status: str, message: str, mistakes: tuple[str, ...] = ()) -> None:
        assert status in STATUSES, status
        self.exercise_id = exercise_id
        self.status = status
        self.message = message
        self.mistakes = tuple(mistakes)  # keys of the recognised Mistakes (several when they tie)
        self.mistake = self.mistakes[0] if self.mistakes else None
        self._shown_in_this_cell = False  # check() displayed it in the running cell

    def __bool__(self) -> bool:
        return self.status == "passed"

    def __repr__(self) -> str:
        return f"<CheckResult {self.exercise_id}: {self.status}>"

    def __str__(self) -> str:
        return self.message

    def _repr_html_(self) -> str:
        title, _, body = self.message.partition("\n")
        color = _COLORS[self.status]
        parts = [f'<strong style="color: {color};">{_inline_html(title)}</strong>']
        pre: list[str] = []  # runs of lines that are not "Likely mistake" go into <pre> blocks

        def flush() -> None:
            if pre:
                text = html.escape("\n".join(pre))
                parts.append(f'<pre style="white-space: pre-wrap; margin: 0.4em 0 0 0;">{text}</pre>')
                pre.clear()

        for line in body.strip().splitlines():
            if line.startswith("Likely mistake") or line.startswith("  - "):
                flush()
                head, sep, rest = line.partition(":") if line.startswith("Likely") else ("", "", line[4:])
                label = f"<strong>{html.escape(head + sep)}</strong> " if sep else "&bull; "
                parts.append(f'<p style="margin: 0.4em 0 0 0;">{label}{_inline_html(rest.strip())}</p>')
            elif "`" in line:  # a sentence with code in it, not a tensor: inline <code>
                flush()
                parts.append(f'<p style="margin: 0.4em 0 0 0;">{_inline_html(line.strip())}</p>')
            else:
                pre.append(line)
        flush()
        return (
            f'<div class="mhalib-check mhalib-check-{self.status}" '
            f'style="border-left: 5px solid {color}; padding: 0.4em 0.8em; margin: 0.3em 0;">'
            + "".join(parts)
            + "</div>"
        )

    def _mimebundle(self) -> dict:
        return {"text/plain": self.message, "text/html": self._repr_html_()}

    def _ipython_display_(self) -> None:
        # check() already displayed the feedback in this cell: showing the returned result
        # again as the cell's value would print it twice. From the next cell on it shows.
        if self._shown_in_this_cell:
            return
        from IPython.display import display

        display(self._mimebundle(), raw=True)

    def show(self) -> None:
        """Display the feedback: rich HTML in IPython, plain text elsewhere."""
        shell = _ipython()
        if shell is None:
            print(self.message)
            return
        from IPython.display import display

        display(self._mimebundle(), raw=True)
        self._shown_in_this_cell = True
        _SHOWN_IN_THIS_CELL.append(self)
        if not getattr(shell, "_mhalib_exercises_hooked", False):
            # After every cell, the results it showed may be shown again.
            shell.events.register("post_run_cell", _end_of_cell)
            shell._mhalib_exercises_hooked = True


_SHOWN_IN_THIS_CELL: list[CheckResult] = []


def _end_of_cell(*args, **kwargs) -> None:
    while _SHOWN_IN_THIS_CELL:
        _SHOWN_IN_THIS_CELL.pop()._shown_in_this_cell = False


def _inline_html(text: str) -> str:
    """Escape for HTML; `code` in backticks becomes <code>code</code>."""
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", html.escape(text))


def _ipython():
    """The running IPython shell, or None (IPython is imported only if already loaded)."""
    if "IPython" not in sys.modules:
        return None
    try:
        from IPython import get_ipython
    except ImportError:  # pragma: no cover
        return None
    return get_ipython()


# --- running the learner's code ---------------------------------------------------------


class _Timeout:
    pass


class _Raised:
    """Marks a case on which the learner's function raised (a variant that raises agrees)."""


class _Worker:
    """One daemon thread that runs the learner's calls, one at a time.

    A single long-lived thread (rather than one per call) keeps torch's OpenMP thread pools
    from multiplying. A call that does not return in time leaves its worker stuck; the
    next call starts a fresh worker.
    """

    def __init__(self) -> None:
        self.tasks: queue.Queue = queue.Queue()
        self.stuck = False
        threading.Thread(target=self._run, name="mhalib-exercise-check", daemon=True).start()

    def _run(self) -> None:
        while True:
            fn, args, box, done = self.tasks.get()
            try:
                box["value"] = fn(*args)
            except BaseException as exc:  # noqa: BLE001 - everything the learner raises is reported
                box["error"] = exc
            done.set()


_worker: _Worker | None = None
_worker_lock = threading.Lock()


def _call(fn: Callable, args: tuple, timeout: float) -> tuple[Any, BaseException | None]:
    """Run ``fn(*args)`` in the worker thread; return (value, exception) or (_Timeout, None)."""
    global _worker
    with _worker_lock:
        if _worker is None or _worker.stuck:
            _worker = _Worker()
        worker = _worker
    box: dict = {}
    done = threading.Event()
    worker.tasks.put((fn, args, box, done))
    if not done.wait(timeout):
        worker.stuck = True
        return _Timeout, None
    return box.get("value"), box.get("error")


def _clone(args: tuple) -> tuple:
    return tuple(a.clone() if isinstance(a, Tensor) else a for a in args)


def _changed_inputs(before: tuple, after: tuple, names: list[str]) -> list[str]:
    changed = []
    for name, a, b in zip(names, before, after):
        if isinstance(a, Tensor) and (a.shape != b.shape or a.dtype != b.dtype or not torch.equal(a, b)):
            changed.append(name)
    return changed


def _where_in_learner_code(fn: Callable, exc: BaseException) -> str:
    """'line 3 of your function: ...' for the deepest frame in the learner's own file (no path).

    Lines are counted from the function's ``def`` line (decorators aside), which is what a
    learner sees in a notebook cell.
    """
    code = getattr(fn, "__code__", None)
    filename = getattr(code, "co_filename", None)
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename == filename and f.name == code.co_name]
    if not frames:
        return ""
    frame = frames[-1]
    line = (frame.line or "").strip()
    number = frame.lineno - code.co_firstlineno + 1  # counted from the `def` line, as in the cell
    if number < 1:  # the frame is elsewhere in the learner's file (a helper above the function)
        return ""
    return f"line {number} of your function: {line}" if line else f"line {number} of your function"


# --- comparing and showing tensors ------------------------------------------------------


def _kind(x: Any) -> str:
    if isinstance(x, Tensor):
        return f"a tensor of shape {tuple(x.shape)} and dtype {x.dtype}"
    if isinstance(x, (tuple, list)):
        inner = ", ".join(_kind(v).split(" of ")[0].replace("a tensor", "tensor") for v in x)
        return f"a {type(x).__name__} of {len(x)} ({inner})"
    if x is None:
        return "None"
    return f"a {type(x).__name__}"


def _tolerances(t: Tensor) -> tuple[float, float]:
    if t.dtype == torch.float64:
        return 1e-5, 1e-7
    return 1e-4, 1e-5


def _same_kind_of_dtype(expected: torch.dtype, got: torch.dtype) -> bool:
    """Equal dtypes; or both integer (int32 lengths returned as int64 are still lengths)."""
    if expected == got:
        return True
    integer = (torch.int8, torch.int16, torch.int32, torch.int64, torch.uint8)
    return expected in integer and got in integer


def same(a: Any, b: Any) -> bool:
    """Same structure, shapes, dtypes and (within float32-friendly tolerances) values; NaN == NaN."""
    if isinstance(a, Tensor) or isinstance(b, Tensor):
        if not (isinstance(a, Tensor) and isinstance(b, Tensor)):
            return False
        if a.shape != b.shape or not _same_kind_of_dtype(a.dtype, b.dtype):
            return False
        if not a.is_floating_point():
            return torch.equal(a, b)
        rtol, atol = _tolerances(a)
        return torch.allclose(a.double(), b.double(), rtol=rtol, atol=atol, equal_nan=True)
    if isinstance(a, (tuple, list)) or isinstance(b, (tuple, list)):
        if not (isinstance(a, (tuple, list)) and isinstance(b, (tuple, list))) or len(a) != len(b):
            return False
        return all(same(x, y) for x, y in zip(a, b))
    return a == b


def fmt(t: Tensor, indent: str = "  ") -> str:
    """A short deterministic text of a small tensor: 4 decimals, one row per line."""
    t = t.detach().cpu()

    def scalar(x) -> str:
        if t.dtype == torch.bool:
            return "True " if x else "False"
        if not t.is_floating_point():
            return f"{x:d}"
        if x != x:
            return "    nan"
        return f"{x + 0.0: .4f}"  # + 0.0 turns -0.0 into 0.0

    def rows(x, depth: int) -> list[str]:
        if x.dim() == 0:
            return [scalar(x.item())]
        if x.dim() == 1:
            return ["[" + ", ".join(scalar(v) for v in x.tolist()) + "]"]
        lines: list[str] = []
        for i, sub in enumerate(x):
            sub_lines = rows(sub, depth + 1)
            prefix = "[" if i == 0 else " "
            sub_lines = [(prefix if j == 0 else " ") + s for j, s in enumerate(sub_lines)]
            if i == len(x) - 1:
                sub_lines[-1] += "]"
            lines.extend(sub_lines)
        if len(x) == 0:
            lines = ["[]"]
        return lines

    return "\n".join(indent + line for line in rows(t, 0))


def describe_value(x: Any) -> str:
    if isinstance(x, Tensor):
        if x.numel() <= 12 and not x.is_floating_point():
            return f"tensor({x.tolist()})" + ("" if x.dtype == torch.int64 else f" ({x.dtype})")
        return f"shape {tuple(x.shape)}, {x.dtype}"
    return repr(x)


_SHOW_MAX = 48  # tensors with more elements are summarised by their first difference
_INPUTS_MAX = 32  # float inputs are written out when they have at most this many elements in all


def _first_difference(exp: Tensor, got: Tensor) -> tuple[int, ...] | None:
    if exp.is_floating_point():
        rtol, atol = _tolerances(exp)
        e, g = exp.double(), got.double()
        bad = ~torch.isclose(e, g, rtol=rtol, atol=atol, equal_nan=True)
    else:
        bad = exp != got
    idx = bad.nonzero()
    return tuple(idx[0].tolist()) if len(idx) else None


def show_difference(name: str, exp: Tensor, got: Tensor) -> str:
    """Expected and got (whole tensors if small, else the first differing row)."""
    where = _first_difference(exp, got)
    if exp.numel() <= _SHOW_MAX:
        text = f"Expected {name}:\n{fmt(exp)}\nGot:\n{fmt(got)}"
    elif where is not None and exp.dim() >= 1:
        row = where[:-1]
        text = (
            f"First difference at index {where}. Row {name}[{', '.join(map(str, row))}]:\n"
            f"expected\n{fmt(exp[row])}\ngot\n{fmt(got[row])}"
        )
    else:
        text = f"Expected {name}:\n{fmt(exp)}\nGot:\n{fmt(got)}"
    if where is not None and exp.numel() <= _SHOW_MAX and exp.dim() >= 1:
        text = f"First difference at index {where}.\n" + text
    return text


def diagnose(expected: Any, got: Any, name: str = "output") -> str | None:
    """None if ``got`` matches ``expected``, else a plain-text explanation of the first problem."""
    if isinstance(expected, tuple):
        if not isinstance(got, (tuple, list)):
            return f"Expected a tuple of {len(expected)} values, got {_kind(got)}."
        if len(got) != len(expected):
            return f"Expected a tuple of {len(expected)} values, got {_kind(got)}."
        names = name.split(",") if "," in name else [f"{name}[{i}]" for i in range(len(expected))]
        for n, e, g in zip(names, expected, got):
            problem = diagnose(e, g, n.strip())
            if problem:
                return problem
        return None
    if got is None:
        return f"Your function returned None for {name}: did you forget the `return` statement?"
    if not isinstance(got, Tensor):
        extra = " Build tensors with torch operations (or torch.stack a list of tensors)." if isinstance(got, (list, tuple)) else ""
        return f"Expected {name} to be a torch.Tensor, got {_kind(got)}.{extra}"
    if got.shape != expected.shape:
        return f"Expected {name} of shape {tuple(expected.shape)}, got shape {tuple(got.shape)}."
    if not _same_kind_of_dtype(expected.dtype, got.dtype):
        advice = ""
        if expected.is_floating_point() and got.is_floating_point():
            advice = (" Keep the input's dtype: a float32 input must give a float32 result"
                      " (compute in the input's dtype, or cast back with `.to(x.dtype)`).")
        elif expected.dtype == torch.bool:
            advice = " Return a boolean tensor, from a comparison such as `j < n`, not numbers."
        return f"Expected {name} of dtype {expected.dtype}, got dtype {got.dtype}.{advice}"
    if got.is_floating_point():
        nan = torch.isnan(got) & ~torch.isnan(expected)
        if bool(nan.any()):
            where = tuple(nan.nonzero()[0].tolist())
            return f"`{name}` contains NaN (first at index {where}).\n" + show_difference(name, expected, got)
    if not same(expected, got):
        return f"`{name}` has the right shape and dtype but different values.\n" + show_difference(name, expected, got)
    return None


# --- the exercise ---------------------------------------------------------------------------


class Exercise:
    """One exercise: ``check(fn)``, ``hint()``, ``solution()``."""

    def __init__(
        self,
        id: str,
        title: str,
        signature: str,
        description: str,
        reference: Callable,
        solution: Callable,
        make_cases: Callable[[torch.Generator], list[Case]],
        arg_names: list[str],
        mistakes: list[Mistake],
        hints: list[str],
        output_name: str = "output",
    ) -> None:
        self.id = id
        self.title = title
        self.signature = signature
        self.description = description
        self.reference = reference
        self.solution_function = solution
        self.make_cases = make_cases
        self.arg_names = arg_names
        self.mistakes = mistakes
        self.hints = hints
        self.output_name = output_name
        self._hints_given = 0

    def __repr__(self) -> str:
        return f"<Exercise {self.id}: {self.signature}>"

    def cases(self) -> list[Case]:
        """The test cases, from the checker's own fixed-seed generator (deterministic)."""
        return self.make_cases(torch.Generator().manual_seed(SEED))

    # --- check --------------------------------------------------------------------------

    def check(self, fn: Callable, *, timeout: float | None = None, show: bool = True) -> CheckResult:
        """Run ``fn`` on every case, compare with the reference, show and return the feedback."""
        if timeout is None:  # the package's TIMEOUT, read now so that `mhalib.exercises.TIMEOUT = 2` works
            timeout = getattr(sys.modules.get(__package__), "TIMEOUT", TIMEOUT)
        try:
            result = self._check(fn, timeout)
        except Exception as exc:  # never crash the notebook, whatever the answer looks like
            result = self._result(
                "error",
                [
                    f"{_ICONS['error']} `{self.id}`: the checker could not compare your answer "
                    f"({type(exc).__name__}: {_short(str(exc))}).",
                    "Return plain torch tensors, as the exercise asks.",
                ],
            )
        if show:
            result.show()
        return result

    def _result(self, status: str, lines: list[str], mistakes: tuple[str, ...] = ()) -> CheckResult:
        return CheckResult(self.id, status, "\n".join(lines).rstrip(), mistakes)

    def _check(self, fn: Callable, timeout: float) -> CheckResult:
        name = f"`{self.id}`"
        hint_line = f'Run `EXERCISES["{self.id}"].hint()` for a hint.'
        if not callable(fn):
            return self._result(
                "error",
                [
                    f"{_ICONS['error']} check() expects your function itself, got {_kind(fn)}.",
                    f"Pass the function without calling it: EXERCISES[\"{self.id}\"].check(my_function).",
                ],
            )
        cases = self.cases()
        outputs: dict[int, Any] = {}  # case index -> the learner's answer, for recognising mistakes
        for number, case in enumerate(cases, start=1):
            where = f'Case {number} of {len(cases)}, "{case.name}": {case.about}'
            args = _clone(case.args)
            got, exc = _call(fn, args, timeout)
            if got is _Timeout:
                return self._result(
                    "error",
                    [
                        f"{_ICONS['error']} {name}: your function did not return within {timeout:g} s.",
                        where,
                        "Is there a loop that never ends? It may still be running in the background;",
                        "if the notebook gets slow, restart the kernel.",
                    ],
                )
            if exc is not None:
                if isinstance(exc, NotImplementedError):
                    first = (
                        f"{_ICONS['not_attempted']} {name}: not attempted yet."
                        if number == 1
                        else f"{_ICONS['not_attempted']} {name}: not finished: your function raised "
                        f"NotImplementedError on case {number} of {len(cases)}."
                    )
                    lines = [first, "Replace the line `raise NotImplementedError(...)` with your code and run the cell again."]
                    if number > 1:
                        lines.insert(1, where)
                    return self._result("not_attempted", lines + [hint_line])
                lines = [f"{_ICONS['error']} {name}: your function raised {type(exc).__name__}: {_short(str(exc))}"]
                at = _where_in_learner_code(fn, exc)
                if at:
                    lines.append(f"At {at}")
                elif isinstance(exc, TypeError):
                    lines.append(f"The checker calls your function as {self.signature}.")
                lines.append(where)
                mistake = self._recognise_error(exc)
                if mistake:
                    lines.append(f"Likely mistake: {mistake.message}")
                else:
                    lines.append(hint_line)
                return self._result("error", lines, (mistake.key,) if mistake else ())
            changed = _changed_inputs(case.args, args, self.arg_names)
            if changed:
                names = ", ".join(f"`{c}`" for c in changed)
                return self._result(
                    "failed",
                    [
                        f"{_ICONS['failed']} {name}: your function changed its input {names} in place.",
                        where,
                        "The caller still needs its tensors: avoid in-place operations on the inputs "
                        "(masked_fill_, +=, x[...] = ...); use out-of-place ones (masked_fill, +) or work on a .clone().",
                    ],
                )
            outputs[number - 1] = got
            expected = self.reference(*_clone(case.args))
            problem = diagnose(expected, got, self.output_name)
            if problem is None:
                continue
            lines = [f"{_ICONS['failed']} {name}: not right yet.", where]
            lines.extend(self._small_inputs(case))
            self._collect_more(fn, cases, number, outputs, timeout)
            mistakes = self._recognise(cases, number - 1, outputs)
            if len(mistakes) == 1:
                lines.append(f"Likely mistake: {mistakes[0].message}")
            elif mistakes:
                lines.append("Likely mistake, one of these (they give the same answers on these inputs):")
                lines.extend(f"  - {m.message}" for m in mistakes)
            lines.append(problem)
            if not mistakes:
                lines.append(hint_line)
            return self._result("failed", lines, tuple(m.key for m in mistakes))
        return self._result(
            "passed",
            [f"{_ICONS['passed']} {name}: passed all {len(cases)} cases ({'; '.join(c.name for c in cases)})."],
        )

    def _small_inputs(self, case: Case) -> list[str]:
        """The float inputs of a small case, written out (nothing when they are large)."""
        tensors = [(n, a) for n, a in zip(self.arg_names, case.args) if isinstance(a, Tensor) and a.is_floating_point()]
        if not tensors or sum(a.numel() for _, a in tensors) > _INPUTS_MAX:
            return []
        return [f"{n} =\n{fmt(a)}" for n, a in tensors]

    def _collect_more(self, fn: Callable, cases: list[Case], start: int, outputs: dict, timeout: float) -> None:
        """The learner's answers on the cases after the first failing one (to tell mistakes apart)."""
        for index in range(start, len(cases)):
            got, exc = _call(fn, _clone(cases[index].args), timeout)
            if got is _Timeout:
                return
            outputs[index] = _Raised if exc is not None else got

    def _recognise(self, cases: list[Case], failing: int, outputs: dict) -> list[Mistake]:
        """The known mistakes whose answers agree with the learner's on the failing case and on
        the most other cases (several only when they tie), in catalogue order."""
        scores: dict[str, int] = {}
        for mistake in self.mistakes:
            for variant in mistake.variants:
                if _agrees(variant, cases[failing], outputs[failing]):
                    score = sum(_agrees(variant, cases[i], got) for i, got in outputs.items())
                    scores[mistake.key] = max(score, scores.get(mistake.key, 0))
        if not scores:
            return []
        best = max(scores.values())
        return [m for m in self.mistakes if scores.get(m.key) == best]

    def _recognise_error(self, exc: BaseException) -> Mistake | None:
        text = str(exc)
        for mistake in self.mistakes:
            if mistake.error_contains and mistake.error_contains in text:
                return mistake
        return None

    # --- hints and solution ----------------------------------------------------------------

    def hint(self) -> None:
        """Print the next hint (one more on every call)."""
        if self._hints_given >= len(self.hints):
            print(
                f"No more hints for `{self.id}` (all {len(self.hints)} shown). "
                f'EXERCISES["{self.id}"].solution() shows a reference solution.'
            )
            return
        self._hints_given += 1
        print(f"Hint {self._hints_given} of {len(self.hints)}: {self.hints[self._hints_given - 1]}")

    def reset_hints(self) -> None:
        self._hints_given = 0

    def solution_source(self) -> str:
        return inspect.getsource(self.solution_function)

    def solution(self) -> None:
        """Print a reference solution, written to be read."""
        print(f"A reference solution of `{self.id}`:\n")
        print(self.solution_source().rstrip())


def _agrees(variant: Callable, case: Case, got: Any) -> bool:
    try:
        wrong = variant(*_clone(case.args))
    except Exception:  # a variant that cannot run on these inputs agrees only with a raise
        return got is _Raised
    return got is not _Raised and same(wrong, got)


def _short(text: str, limit: int = 300) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."
