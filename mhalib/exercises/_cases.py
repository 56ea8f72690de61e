"""Helpers shared by the chapters' exercise modules: building cases, masking slips.

Shapes: B batch, H heads, L query length, S key length, D model width, Dh = D // H.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ._checker import Case, describe_value

NEG_INF = float("-inf")
FILLS = (NEG_INF, -1e9)  # the two usual ways of masking a score


def randn(gen: torch.Generator, *shape: int, dtype=torch.float64, scale: float = 1.0) -> Tensor:
    return torch.randn(*shape, generator=gen, dtype=dtype) * scale


def arange(*shape: int, dtype=torch.float64) -> Tensor:
    return torch.arange(math.prod(shape), dtype=dtype).reshape(shape)


def about(names: list[str], args: tuple) -> str:
    return ", ".join(f"{n} = {describe_value(a)}" for n, a in zip(names, args))


def case(name: str, names: list[str], *args) -> Case:
    return Case(name, tuple(args), about(names, args))


def lens_per_query(valid_lens: Tensor, L: int, how: str = "interleave") -> Tensor:
    """(B,) or (B, L) lengths -> (B, L); `how="repeat"` is the classic tiling slip."""
    if valid_lens.dim() == 2:
        return valid_lens
    B = valid_lens.shape[0]
    if how == "repeat":
        return valid_lens.repeat(L).reshape(B, L)
    return valid_lens.repeat_interleave(L).reshape(B, L)


# --- masking slips, shared by masked_softmax, scaled_dot_product_attention and multi-head attention


def masked_weights(scores: Tensor, allowed: Tensor | None, *, mode: str = "fill", fill: float = NEG_INF,
                   zero_empty: bool = False, dim: int = -1) -> Tensor:
    """Softmax of ``scores`` (..., L, S) where ``allowed`` (bool, True = may attend), with one slip.

    ``mode``: "fill" (fill the blocked scores with ``fill`` before the softmax: right with -inf and
    ``zero_empty``), "inverted" (fill the allowed ones), "zero" (fill with 0), "added" (add the bool
    mask), "after" (softmax of everything, then times the mask), "max_all" / "max_all_eps" (exp of
    the scores minus the max over ALL keys, times the mask, normalised; "_eps" divides by at least
    1e-12, so that 0/0 gives 0 instead of NaN), "ignored".
    """
    if allowed is None or mode == "ignored":
        return torch.softmax(scores, dim=dim)
    if mode in ("max_all", "max_all_eps"):
        exps = torch.exp(scores - scores.amax(dim=dim, keepdim=True)) * allowed
        total = exps.sum(dim=dim, keepdim=True)
        return exps / (total.clamp_min(1e-12) if mode == "max_all_eps" else total)
    if mode == "after":
        return torch.softmax(scores, dim=dim) * allowed
    if mode == "added":
        return torch.softmax(scores + allowed, dim=dim)
    blocked = {"fill": ~allowed, "inverted": allowed, "zero": ~allowed}[mode]
    scores = scores.masked_fill(blocked, 0.0 if mode == "zero" else fill)
    if zero_empty:
        empty = ~allowed.any(dim=-1, keepdim=True)
        return torch.softmax(scores.masked_fill(empty, 0.0), dim=dim).masked_fill(~allowed, 0.0)
    return torch.softmax(scores, dim=dim)


def max_over_all_message(what: str, kept: str = "real", fill: str = "masked_fill(~allowed, float('-inf'))") -> str:
    """The slip of ``mode="max_all"``: ``what`` names the blocked keys, ``kept`` the others."""
    return (
        f"you subtracted the largest score over ALL keys, {what} ones included, and multiplied by the "
        f"mask afterwards (or renormalised a softmax taken over all keys): when a {what} key has a much "
        f"larger score than the {kept} ones (here about 200 above them, in float32), exp(score - max) "
        f"underflows to 0 for every {kept} key and the row comes out 0/0 = NaN (or all zeros). Mask the "
        f"scores before the softmax, {fill}, so that the max is taken over the {kept} keys only."
    )


ZERO_FILL = "masked scores were set to 0, but exp(0) = 1, so {what} keys still get weight. Fill them with -inf"
MASKED_AFTER_SOFTMAX = (
    "you zeroed the {what} weights after the softmax, so the rows no longer sum to 1. Mask the scores "
    "(fill with -inf) before the softmax"
)
UNIFORM_EMPTY_ROWS = (
    "a row with valid length 0 came out uniform (1/S for every key): a large negative fill such as "
    "-1e6 turns 'attend to nothing' into 'attend to everything equally'. Rows with nothing to attend "
    "to must be all zeros: find them (no key allowed) and zero their weights"
)
NAN_EMPTY_ROWS = (
    "a row with valid length 0 came out NaN: the softmax of a row that is all -inf is 0/0. Find the "
    "rows with no key allowed, give them finite scores before the softmax (e.g. 0) and zero weights after"
)
INVERTED_LENGTHS = (
    "the mask is inverted: keys at positions < valid_len are the real ones (True = may attend), "
    "but you kept the padding and masked the real keys."
)


def scale_by_length_message(width: str, fix: str) -> str:
    return (
        f"you divided the scores by sqrt(L), the query length, instead of sqrt({width}): the scale "
        f"depends on the width of the vectors in each dot product ({width} numbers), not on how many "
        f"queries there are. {fix}"
    )
