"""Re-execute the course notebooks in place: one fresh kernel, top to bottom.

    python tools/execute_notebooks.py                 # every notebook in chapters/
    python tools/execute_notebooks.py chapters/02_*.ipynb

The stored outputs are what nbval compares against and what the book shows, so they must
come from exactly this kind of run. Prints each notebook's wall-clock time. No timing
metadata is written into the notebooks, so an unchanged notebook stays byte-identical.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parent.parent


def merge_streams(cell: nbformat.NotebookNode) -> None:
    """Join consecutive stdout (or stderr) outputs into one, as nbval and the book show them.

    How a kernel splits its prints into messages depends on timing; merging keeps the stored
    notebook the same from one run to the next.
    """
    merged: list = []
    for out in cell.get("outputs", []):
        last = merged[-1] if merged else None
        if out.output_type == "stream" and last is not None and last.output_type == "stream" and last.name == out.name:
            last.text += out.text
        else:
            merged.append(out)
    cell.outputs = merged


def execute(path: Path, timeout: int) -> float:
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(
        nb,
        timeout=timeout,
        kernel_name="python3",
        resources={"metadata": {"path": str(path.parent)}},
        record_timing=False,
    )
    start = time.perf_counter()
    client.execute()
    seconds = time.perf_counter() - start
    for cell in nb.cells:
        if cell.cell_type == "code":
            merge_streams(cell)
    # The kernel's language_info carries the exact Python patch version; keep only what
    # a reader's kernel will match.
    nb.metadata.kernelspec = {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"}
    nbformat.write(nb, path)
    return seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("notebooks", nargs="*", type=Path)
    parser.add_argument("--timeout", type=int, default=300, help="seconds allowed per cell")
    args = parser.parse_args()
    notebooks = args.notebooks or sorted((ROOT / "chapters").glob("*.ipynb"))
    os.environ["MPLBACKEND"] = "module://matplotlib_inline.backend_inline"  # figures inline
    total = 0.0
    for path in notebooks:
        seconds = execute(path, args.timeout)
        total += seconds
        print(f"{seconds:6.1f} s  {path.relative_to(ROOT) if path.is_absolute() else path}", flush=True)
    print(f"{total:6.1f} s  total")
    return 0


if __name__ == "__main__":
    sys.exit(main())
