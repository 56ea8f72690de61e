"""Chapter 2's exercises: ``masked_softmax``, ``scaled_dot_product_attention``, ``causal_mask``.

Each mistake is a small function computing what a learner who made that slip would get;
the checker compares the learner's answer with these on the failing inputs to name the
mistake. The reference solutions (``EXERCISES[id].solution()``) are written to be read and
use plain torch only. (The tests write their own learner-style wrong answers independently.)

Shapes: B batch, H heads, L query length, S key length, D model width, Dh = D // H.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .. import functional as mf
from ._cases import (
    FILLS,
    INVERTED_LENGTHS,
    MASKED_AFTER_SOFTMAX,
    NAN_EMPTY_ROWS,
    NEG_INF,
    UNIFORM_EMPTY_ROWS,
    ZERO_FILL,
    masked_weights,
    max_over_all_message,
    scale_by_length_message,
)
from ._cases import case as _case
from ._cases import lens_per_query as _lens_per_query
from ._cases import randn as _randn
from ._checker import Case, Exercise, Mistake


# --- reference solutions (shown to learners) -------------------------------------------


def solution_masked_softmax(scores: Tensor, valid_lens: Tensor | None) -> Tensor:
    """Softmax over the keys (last axis) of scores (B, L, S), ignoring keys >= valid length."""
    if valid_lens is None:
        return torch.softmax(scores, dim=-1)
    S = scores.shape[-1]
    if valid_lens.dim() == 1:
        valid_lens = valid_lens[:, None]  # (B,) -> (B, 1): one length for all queries
    positions = torch.arange(S, device=scores.device)  # (S,)
    allowed = positions < valid_lens[:, :, None]  # (B, 1|L, 1) vs (S,) -> (B, 1|L, S)
    scores = scores.masked_fill(~allowed, float("-inf"))
    # A row with valid length 0 is all -inf, and softmax of it is 0/0 = NaN.
    # Give such rows scores of 0 (any finite value) and zero their weights afterwards.
    empty = ~allowed.any(dim=-1, keepdim=True)  # (B, 1|L, 1)
    weights = torch.softmax(scores.masked_fill(empty, 0.0), dim=-1)
    return weights.masked_fill(~allowed, 0.0)  # padded keys and empty rows -> exactly 0


def solution_scaled_dot_product_attention(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None = None):
    """out, weights of attention; mask is bool, True = may attend (every query may attend somewhere)."""
    E = q.shape[-1]
    scores = q @ k.transpose(-2, -1) / math.sqrt(E)  # (B, L, E) @ (B, E, S) -> (B, L, S)
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))  # True = may attend
    weights = torch.softmax(scores, dim=-1)  # each query's weights over the keys sum to 1
    out = weights @ v  # (B, L, S) @ (B, S, Ev) -> (B, L, Ev)
    return out, weights


def solution_causal_mask(L: int) -> Tensor:
    """(L, L) bool, True on and below the diagonal: query i may attend to keys 0..i."""
    # Only L is given, so the mask is built on the CPU; on a GPU, move it next to the
    # scores where it is used: mask.to(scores.device).
    return torch.ones(L, L, dtype=torch.bool).tril()


# --- masked_softmax -----------------------------------------------------------------------

MS_ARGS = ["scores", "valid_lens"]


def _ms_cases(gen: torch.Generator) -> list[Case]:
    c = lambda name, *a: _case(name, MS_ARGS, *a)  # noqa: E731
    return [
        c("no mask", _randn(gen, 1, 2, 3, scale=2.0), None),
        c("one length per sequence", _randn(gen, 2, 2, 4, scale=2.0), torch.tensor([2, 3])),
        c("one length per query", _randn(gen, 2, 3, 4, scale=2.0), torch.tensor([[1, 2, 4], [3, 1, 2]])),
        c("a sequence of length 0", _randn(gen, 2, 2, 3, scale=2.0), torch.tensor([0, 2])),
        c("a query of length 0", _randn(gen, 2, 3, 3, scale=2.0), torch.tensor([[0, 1, 3], [2, 0, 1]])),
        c("random batch", _randn(gen, 3, 4, 6, scale=2.0), torch.randint(0, 7, (3, 4), generator=gen)),
        c("float32 input", _randn(gen, 2, 3, 5, dtype=torch.float32, scale=2.0), torch.tensor([3, 5])),
        # Padded keys 100-300 above the real ones in float32: taking the max over all keys
        # (padding included) and masking afterwards underflows every real key to exp(...) = 0.
        c("float32, padded keys with much larger scores",
          torch.tensor([[[0.0, 0.0, 200.0], [3.0, -2.0, 150.0]], [[-100.0, 0.0, 100.0], [1.0, 2.0, 300.0]]]),
          torch.tensor([2, 1])),
    ]



def _ms_variant(scores, valid_lens, *, compare="lt", lens="interleave", **slip):
    """``slip``: the keywords of ``masked_weights`` (mode, fill, zero_empty, dim)."""
    if valid_lens is None:
        return masked_weights(scores, None, dim=slip.get("dim", -1))
    B, L, S = scores.shape
    positions = torch.arange(S)
    per_query = _lens_per_query(valid_lens, L, lens)[:, :, None]  # (B, L, 1)
    allowed = {"lt": positions < per_query, "le": positions <= per_query, "ge": positions >= per_query}[compare]
    return masked_weights(scores, allowed, **slip)


def _ms_broadcast_slip(scores, valid_lens, fill):
    """(B,) lengths turned into a (B, S) mask and broadcast against (B, L, S) (needs B == L)."""
    if valid_lens is None or valid_lens.dim() != 1:
        return _ms_variant(scores, valid_lens, fill=fill)
    allowed = torch.arange(scores.shape[-1]) < valid_lens[:, None]  # (B, S), broadcast as (1, B, S)
    return torch.softmax(scores.masked_fill(~allowed, fill), dim=-1)


def _ms_mistake_variants(**kw):
    """The slip made with an -inf fill, a -1e9 fill, or with empty rows handled properly."""
    return [lambda s, v, _f=f: _ms_variant(s, v, fill=_f, **kw) for f in FILLS] + [
        lambda s, v: _ms_variant(s, v, zero_empty=True, **kw)
    ]


MS_MISTAKES = [
    Mistake(
        "wrong_axis",
        "softmax over the wrong axis: each query's weights over the keys (the last axis, dim=-1) must "
        "sum to 1. Use torch.softmax(scores, dim=-1).",
        _ms_mistake_variants(dim=1),
    ),
    Mistake(
        "inverted_mask",
        INVERTED_LENGTHS,
        _ms_mistake_variants(compare="ge"),
    ),
    Mistake(
        "off_by_one",
        "off by one: keys 0 .. valid_len - 1 are valid and position valid_len is already padding. "
        "Compare positions < valid_len, not <=.",
        _ms_mistake_variants(compare="le"),
    ),
    Mistake(
        "lengths_tiled",
        "the lengths went to the wrong rows: `repeat` tiles the vector (l0, l1, l0, l1, ...), but the L "
        "query rows of one sequence are adjacent, so each length must be repeated in place with "
        "`repeat_interleave` (l0, l0, l1, l1, ...).",
        _ms_mistake_variants(lens="repeat"),
    ),
    Mistake(
        "lengths_per_query_axis",
        "the (B,) lengths were applied along the query axis: a mask of shape (B, S) broadcasts against "
        "(B, L, S) as (1, B, S), so query i got the length of sequence i. Give the mask a query axis: "
        "valid_lens[:, None, None] (or mask[:, None, :]).",
        [lambda s, v, _f=f: _ms_broadcast_slip(s, v, _f) for f in (NEG_INF, -1e9, -1e6)],
    ),
    Mistake(
        "uniform_empty_rows",
        UNIFORM_EMPTY_ROWS + ".",
        [lambda s, v, _f=f: _ms_variant(s, v, fill=_f) for f in (-1e9, -1e6, -1e4)],
    ),
    Mistake("nan_empty_rows", NAN_EMPTY_ROWS + ".", [lambda s, v: _ms_variant(s, v, fill=NEG_INF)]),
    Mistake(
        "max_over_padding",
        max_over_all_message("padded"),
        [lambda s, v, _m=m: _ms_variant(s, v, mode=_m) for m in ("max_all", "max_all_eps")],
    ),
    Mistake(
        "zero_fill",
        ZERO_FILL.format(what="padded") + " (and give rows with nothing to attend to zeros).",
        [lambda s, v: _ms_variant(s, v, mode="zero"), lambda s, v: _ms_variant(s, v, mode="zero", zero_empty=True)],
    ),
    Mistake(
        "masked_after_softmax",
        MASKED_AFTER_SOFTMAX.format(what="padded keys'") + ".",
        [lambda s, v: _ms_variant(s, v, mode="after")],
    ),
    Mistake(
        "lengths_ignored",
        "your weights ignore valid_lens: keys at positions >= valid_len must get weight exactly 0.",
        [lambda s, v: torch.softmax(s, dim=-1)],
    ),
]

MASKED_SOFTMAX = Exercise(
    id="masked_softmax",
    title="Masked softmax",
    signature="masked_softmax(scores, valid_lens) -> weights",
    description=(
        "scores (B, L, S); valid_lens None, (B,) one length per sequence, or (B, L) one per query. "
        "Softmax over the keys; keys at positions >= valid length get exactly 0, and a valid length "
        "of 0 gives a row of zeros (never NaN, never uniform)."
    ),
    reference=mf.masked_softmax,
    solution=solution_masked_softmax,
    make_cases=_ms_cases,
    arg_names=MS_ARGS,
    mistakes=MS_MISTAKES,
    hints=[
        "Build a boolean mask `allowed` of shape (B, 1 or L, S) that is True where position < valid length: "
        "torch.arange(S) compared with the lengths, using broadcasting (valid_lens[:, None, None] for (B,)).",
        "Fill the scores where `allowed` is False with -inf (scores.masked_fill(~allowed, float('-inf'))), "
        "then take torch.softmax over the last axis.",
        "A row with valid length 0 is all -inf and its softmax is NaN. Find such rows "
        "(~allowed.any(dim=-1, keepdim=True)), give them scores of 0 before the softmax and "
        "set their weights to 0 afterwards.",
    ],
    output_name="weights",
)


# --- scaled_dot_product_attention -----------------------------------------------------------

SDPA_ARGS = ["q", "k", "v", "mask"]


def _some_allowed(gen: torch.Generator, *shape: int) -> Tensor:
    """Random bool mask of shape (..., L, S) in which every query may attend to at least one key."""
    mask = torch.rand(*shape, generator=gen) < 0.5
    first = torch.randint(0, shape[-1], shape[:-1], generator=gen)
    return mask | torch.nn.functional.one_hot(first, shape[-1]).bool()


def _sdpa_cases(gen: torch.Generator) -> list[Case]:
    c = lambda name, *a: _case(name, SDPA_ARGS, *a)  # noqa: E731
    r = lambda *s, **kw: _randn(gen, *s, scale=1.5, **kw)  # noqa: E731
    return [
        c("one query, no mask", r(1, 1, 4), r(1, 3, 4), r(1, 3, 2), None),
        c("no mask", r(2, 3, 4), r(2, 4, 4), r(2, 4, 3), None),
        c("causal (L, S) mask", r(1, 4, 4), r(1, 4, 4), r(1, 4, 2), mf.causal_mask(4)),
        c("(B, L, S) mask", r(2, 3, 4), r(2, 5, 4), r(2, 5, 2), _some_allowed(gen, 2, 3, 5)),
        c("E != Ev, (L, S) mask", r(3, 2, 9), r(3, 4, 9), r(3, 4, 4), _some_allowed(gen, 2, 4)),
        c("float32 input", r(2, 3, 4, dtype=torch.float32), r(2, 3, 4, dtype=torch.float32),
          r(2, 3, 2, dtype=torch.float32), _some_allowed(gen, 2, 3, 3)),
        # A masked key whose score is about 200 above the allowed ones, in float32: a softmax over
        # all keys renormalised after masking underflows every allowed key to 0 here.
        c("float32, a masked key with a much larger score", torch.tensor([[[10.0, 0.0], [0.0, 10.0]]]),
          torch.tensor([[[1.0, 1.0], [-1.0, 2.0], [30.0, 30.0]]]), torch.tensor([[[1.0, 0.0], [0.0, 1.0], [5.0, 5.0]]]),
          torch.tensor([[True, True, False], [True, True, False]])),
    ]


def _sdpa_variant(q, k, v, mask, *, scale="sqrt_e", dim=-1, mask_mode="fill", fill=NEG_INF, ret="both"):
    E, L, S = q.shape[-1], q.shape[-2], k.shape[-2]
    divisor = {
        "sqrt_e": math.sqrt(E), "none": 1.0, "e": float(E), "times": 1 / math.sqrt(E),
        "sqrt_ev": math.sqrt(v.shape[-1]), "sqrt_l": math.sqrt(L), "sqrt_s": math.sqrt(S),
    }[scale]
    scores = q @ k.transpose(-2, -1) / divisor
    weights = masked_weights(scores, mask, mode=mask_mode, fill=fill, dim=dim)
    out = weights @ v
    return {"both": (out, weights), "swapped": (weights, out), "out": out}[ret]


def _sdpa_variants(**kw):
    return [lambda q, k, v, m, _f=f: _sdpa_variant(q, k, v, m, fill=_f, **kw) for f in FILLS]


SDPA_MISTAKES = [
    Mistake(
        "no_scale",
        "your weights are sharper (larger scores) than expected by a factor sqrt(E): did you forget the "
        "scale? Divide the scores by math.sqrt(E), E = q.shape[-1].",
        _sdpa_variants(scale="none"),
    ),
    Mistake(
        "scaled_by_sqrt_L",
        scale_by_length_message("E", "Divide by math.sqrt(E), E = q.shape[-1]."),
        _sdpa_variants(scale="sqrt_l"),
    ),
    Mistake(
        "scaled_by_sqrt_S",
        "you divided the scores by sqrt(S), the number of keys, instead of sqrt(E), the width of the "
        "vectors in each dot product. Divide by math.sqrt(E), E = q.shape[-1].",
        _sdpa_variants(scale="sqrt_s"),
    ),
    Mistake(
        "scaled_by_E",
        "your weights are flatter than expected: you divided the scores by E instead of sqrt(E).",
        _sdpa_variants(scale="e"),
    ),
    Mistake(
        "scale_multiplied",
        "your scores were multiplied by sqrt(E) instead of divided by it.",
        _sdpa_variants(scale="times"),
    ),
    Mistake(
        "scaled_by_Ev",
        "you scaled by the value size sqrt(Ev); the scale uses the query/key size E = q.shape[-1].",
        _sdpa_variants(scale="sqrt_ev"),
    ),
    Mistake(
        "wrong_axis",
        "softmax over the wrong axis: each query's weights over the keys (the last axis, dim=-1) must sum to 1.",
        _sdpa_variants(dim=-2),
    ),
    Mistake(
        "inverted_mask",
        "the mask polarity is inverted: in this course True = may attend, so fill the scores where the mask "
        "is False: scores.masked_fill(~mask, float('-inf')). (nn.MultiheadAttention uses the opposite convention.)",
        _sdpa_variants(mask_mode="inverted"),
    ),
    Mistake(
        "bool_mask_added",
        "you added the boolean mask to the scores (True counts as +1): a boolean mask is applied with "
        "masked_fill(~mask, float('-inf')); only a float mask is added.",
        [lambda q, k, v, m: _sdpa_variant(q, k, v, m, mask_mode="added")],
    ),
    Mistake(
        "zero_fill",
        ZERO_FILL.format(what="masked") + ".",
        [lambda q, k, v, m: _sdpa_variant(q, k, v, m, mask_mode="zero")],
    ),
    Mistake(
        "masked_after_softmax",
        MASKED_AFTER_SOFTMAX.format(what="masked") + ".",
        [lambda q, k, v, m: _sdpa_variant(q, k, v, m, mask_mode="after")],
    ),
    Mistake(
        "max_over_masked",
        max_over_all_message("masked", "allowed", "scores.masked_fill(~mask, float('-inf'))"),
        [lambda q, k, v, m, _m=mm: _sdpa_variant(q, k, v, m, mask_mode=_m) for mm in ("max_all", "max_all_eps")],
    ),
    Mistake(
        "swapped_outputs",
        "you returned (weights, out): return (out, weights), in that order.",
        _sdpa_variants(ret="swapped"),
    ),
    Mistake(
        "only_out",
        "you returned only `out`: return both, as a tuple `return out, weights`.",
        _sdpa_variants(ret="out"),
    ),
]

SCALED_DOT_PRODUCT_ATTENTION = Exercise(
    id="scaled_dot_product_attention",
    title="Scaled dot-product attention",
    signature="scaled_dot_product_attention(q, k, v, mask=None) -> (out, weights)",
    description=(
        "q (B, L, E), k (B, S, E), v (B, S, Ev); mask None or bool, True = may attend, broadcastable "
        "to (B, L, S), e.g. (L, S) or (B, L, S). The test masks always leave every query at least one key, "
        "so filling with -inf or with a large negative number like -1e9 both work."
    ),
    reference=lambda q, k, v, mask=None: mf.scaled_dot_product_attention(q, k, v, mask),
    solution=solution_scaled_dot_product_attention,
    make_cases=_sdpa_cases,
    arg_names=SDPA_ARGS,
    mistakes=SDPA_MISTAKES,
    hints=[
        "scores = q @ k.transpose(-2, -1) has shape (B, L, S): one score per (query, key) pair.",
        "Divide the scores by math.sqrt(E) with E = q.shape[-1], so that their size does not grow with E.",
        "Where the mask is False, fill the scores with -inf (scores.masked_fill(~mask, float('-inf'))); then "
        "weights = torch.softmax(scores, dim=-1), out = weights @ v, and return out, weights.",
    ],
    output_name="out, weights",
)


# --- causal_mask ----------------------------------------------------------------------------


def _causal_cases(gen: torch.Generator) -> list[Case]:
    return [_case(f"L = {L}", ["L"], L) for L in (1, 2, 3, 5)]


CAUSAL_MISTAKES = [
    Mistake(
        "diagonal_excluded",
        "the diagonal is False: query i may attend to key i itself. torch.tril keeps the diagonal; "
        "diagonal=-1 removes it.",
        [lambda L: torch.ones(L, L, dtype=torch.bool).tril(diagonal=-1)],
    ),
    Mistake(
        "future_allowed",
        "you allowed the future and blocked the past: True must be on and below the diagonal (torch.tril), "
        "not above it (torch.triu).",
        [lambda L: torch.ones(L, L, dtype=torch.bool).triu()],
    ),
    Mistake(
        "inverted",
        "True marks the future here, i.e. what may NOT be attended to (the convention of "
        "nn.MultiheadAttention). In this course True = may attend: keys 0..i for query i.",
        [lambda L: torch.ones(L, L, dtype=torch.bool).triu(diagonal=1)],
    ),
    Mistake(
        "float_mask",
        "your mask holds the right pattern but as float numbers 1.0/0.0; a float mask would be *added* to "
        "the scores. Return a bool mask: dtype=torch.bool, or .bool() at the end.",
        [lambda L, _d=d: torch.ones(L, L, dtype=_d).tril() for d in (torch.float32, torch.float64)],
    ),
    Mistake(
        "int_mask",
        "your mask holds the right pattern but as integers; return a bool mask: dtype=torch.bool or .bool().",
        [lambda L, _d=d: torch.ones(L, L, dtype=_d).tril() for d in (torch.int64, torch.int32, torch.uint8)],
    ),
    Mistake(
        "additive_mask",
        "you built an additive float mask (0 where allowed, -inf above the diagonal). This exercise asks for "
        "the boolean form: True where query i may attend to key j (j <= i).",
        [
            lambda L, _f=f, _d=d: torch.full((L, L), _f, dtype=_d).triu(diagonal=1)
            for f in (NEG_INF, -1e9)
            for d in (torch.float32, torch.float64)
        ],
    ),
]

CAUSAL_MASK = Exercise(
    id="causal_mask",
    title="Causal mask",
    signature="causal_mask(L) -> mask",
    description="A bool (L, L) mask, True where query i may attend to key j, i.e. j <= i.",
    reference=lambda L: mf.causal_mask(L),
    solution=solution_causal_mask,
    make_cases=_causal_cases,
    arg_names=["L"],
    mistakes=CAUSAL_MISTAKES,
    hints=[
        "Row i is query i, column j is key j; query i may look at keys 0, 1, ..., i (the past and itself).",
        "That is the lower triangle including the diagonal: torch.tril of a matrix of ones.",
        "Make it boolean: torch.ones(L, L, dtype=torch.bool).tril().",
    ],
    output_name="mask",
)


ALL: list[Exercise] = [MASKED_SOFTMAX, SCALED_DOT_PRODUCT_ATTENTION, CAUSAL_MASK]
