"""`import mhalib` stays light: no matplotlib, and little time on top of `import torch`."""

from __future__ import annotations

import subprocess
import sys


def _python(code: str) -> str:
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_import_does_not_import_matplotlib():
    _python(
        "import mhalib, sys; assert 'matplotlib' not in sys.modules, 'import mhalib imported matplotlib'\n"
        "mhalib.plot; assert 'matplotlib' in sys.modules, 'mhalib.plot should load matplotlib on demand'"
    )


IMPORT_TIMES = """
import time
start = time.perf_counter()
import torch
after_torch = time.perf_counter()
import mhalib
print(after_torch - start, time.perf_counter() - after_torch)
"""


def test_import_adds_little_to_import_torch():
    # Three fresh interpreters; in each, `import torch` is timed and then `import mhalib` on top
    # of it. Timing both inside one process (rather than subtracting the wall times of two
    # processes of 1-4 s each) keeps the noise of a loaded 2-core machine out of the difference.
    runs = [tuple(map(float, _python(IMPORT_TIMES).split())) for _ in range(3)]
    torch_time = min(t for t, _ in runs)
    extra = min(m for _, m in runs)
    assert extra < 0.2, f"import mhalib adds {extra:.3f} s to import torch ({torch_time:.3f} s), best of 3"
