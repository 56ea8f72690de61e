"""The book's own pages quote the library truthfully."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest
import torch

from mhalib.exercises import EXERCISES

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))
import build_zh  # noqa: E402  (tools/ is not a package)


def forgot_the_scale(q, k, v, mask=None):
    scores = q @ k.transpose(-2, -1)  # no division by sqrt(E)
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    weights = torch.softmax(scores, dim=-1)
    return weights @ v, weights


@pytest.fixture(scope="module")
def zh_intro(tmp_path_factory) -> str:
    """The Chinese edition's intro (tools/build_zh.py): the quote is code, never translated."""
    out = tmp_path_factory.mktemp("zh_src")
    build_zh.build(out)
    return (out / "intro.md").read_text(encoding="utf-8")


@pytest.mark.parametrize("edition", ["en", "zh"])
def test_intro_quotes_the_checkers_real_feedback(edition: str, request) -> None:
    intro = (ROOT / "intro.md").read_text(encoding="utf-8") if edition == "en" else request.getfixturevalue("zh_intro")
    block = re.search(r"```text\n(❌.*?)```", intro, re.S).group(1)
    quoted = [line.strip() for line in block.splitlines() if not line.rstrip().endswith("...")]
    message = " ".join(EXERCISES["scaled_dot_product_attention"].check(forgot_the_scale, show=False).message.split())
    # The quote is wrapped to fit the page: compare with whitespace collapsed.
    likely = " ".join(quoted[quoted.index(next(l for l in quoted if l.startswith("Likely mistake"))):])
    assert quoted[0] in message
    assert likely in message
    # A line cut short with "..." must still start as the real line does (the case count).
    for line in block.splitlines():
        if line.rstrip().endswith("..."):
            assert " ".join(line.rstrip()[:-3].split()) in message, line
