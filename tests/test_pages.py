"""The book's own pages quote the library truthfully."""

from __future__ import annotations

import re
from pathlib import Path

import torch

from mhalib.exercises import EXERCISES

ROOT = Path(__file__).resolve().parent.parent


def forgot_the_scale(q, k, v, mask=None):
    scores = q @ k.transpose(-2, -1)  # no division by sqrt(E)
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    weights = torch.softmax(scores, dim=-1)
    return weights @ v, weights


def test_intro_quotes_the_checkers_real_feedback() -> None:
    intro = (ROOT / "intro.md").read_text(encoding="utf-8")
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
