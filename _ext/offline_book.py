"""Make the built book work with no network at all.

Jupyter Book 1.x loads MathJax from a CDN, so offline every equation would show as raw
TeX. This extension serves MathJax 3.2.2 from the build itself: the ``es5`` tree that
the ``django-static-mathjax`` package ships (import name ``mathjax``) is copied into
``_build/html/_static/mathjax`` when the build finishes, and ``mathjax_path`` points at it.

The tree is copied at ``build-finished`` instead of being added to ``html_static_path``:
Jupyter Book adds every ``.js`` file found in the static paths as a ``<script>`` tag,
which would put dozens of MathJax components on every page.

"""

from __future__ import annotations

import shutil
from pathlib import Path

from sphinx.application import Sphinx
from sphinx.config import Config

MATHJAX_ENTRY = "mathjax/tex-chtml.js"
# Only what the CHTML page bundle loads on demand: the input/output components, their
# fonts, the menu and the accessibility extensions (speech needs sre).
MATHJAX_PARTS = ["tex-chtml.js", "input", "output", "ui", "a11y", "adaptors", "sre"]


def _mathjax_tree() -> Path:
    import mathjax  # provided by the django-static-mathjax package

    tree = Path(mathjax.__file__).parent / "static" / "mathjax" / "es5"
    if not (tree / "tex-chtml.js").is_file():
        raise RuntimeError(f"MathJax tree not found at {tree}; is django-static-mathjax installed?")
    return tree


def _set_mathjax_path(app: Sphinx, config: Config) -> None:
    config.mathjax_path = MATHJAX_ENTRY


def _copy_mathjax(app: Sphinx, exception: Exception | None) -> None:
    if exception is not None or app.builder.format != "html":
        return
    source = _mathjax_tree()
    target = Path(app.outdir) / "_static" / "mathjax"
    for part in MATHJAX_PARTS:
        src = source / part
        dst = target / part
        if src.is_dir():
            shutil.copytree(src, dst, dirs_exist_ok=True)
        else:
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst)


def setup(app: Sphinx) -> dict:
    # Jupyter Book always passes `comments_config`, which only sphinx_comments declares;
    # the book leaves sphinx_comments out (it loads scripts from the network).
    app.add_config_value("comments_config", {}, "html")
    app.connect("config-inited", _set_mathjax_path)
    app.connect("build-finished", _copy_mathjax)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
