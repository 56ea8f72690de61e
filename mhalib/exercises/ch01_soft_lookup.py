"""Chapter 1's exercises: ``softmax_weights`` and ``soft_lookup``.

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
from ._cases import case as _case
from ._cases import randn as _randn
from ._checker import Case, Exercise, Mistake


# --- reference solutions (shown to learners) -------------------------------------------


def solution_softmax_weights(scores: Tensor) -> Tensor:
    """Softmax over the last axis (the keys): positive weights that sum to 1 along it."""
    # Only differences between scores matter, so subtract each row's largest score first:
    # the exponentials are then at most exp(0) = 1 and cannot overflow to inf.
    shifted = scores - scores.max(dim=-1, keepdim=True).values
    exps = torch.exp(shifted)
    return exps / exps.sum(dim=-1, keepdim=True)  # keepdim: (..., 1) divides each row


def solution_soft_lookup(q: Tensor, k: Tensor, v: Tensor):
    """out, weights of the plain soft lookup of chapter 1 (dot products, no scale, no mask)."""
    scores = q @ k.transpose(-2, -1)  # (B, L, E) @ (B, E, S) -> (B, L, S)
    weights = torch.softmax(scores, dim=-1)  # each query's weights over the keys sum to 1
    out = weights @ v  # (B, L, S) @ (B, S, Ev) -> (B, L, Ev)
    return out, weights


# --- softmax_weights (chapter 1) ----------------------------------------------------------

SW_ARGS = ["scores"]


def _sw_cases(gen: torch.Generator) -> list[Case]:
    c = lambda name, *a: _case(name, SW_ARGS, *a)  # noqa: E731
    return [
        c("one query, scores [2, 1, 3]", torch.tensor([2.0, 1.0, 3.0], dtype=torch.float64)),
        c("three queries, three keys", _randn(gen, 3, 3, scale=2.0)),
        c("four queries, three keys", _randn(gen, 4, 3, scale=2.0)),
        c("a batch (B, L, S)", _randn(gen, 2, 3, 4, scale=2.0)),
        c("large scores, around +-1000", torch.tensor([[1000.0, 1002.0, 999.0], [-1000.0, -1003.0, -999.0]],
                                                      dtype=torch.float64)),
        c("float32 input", _randn(gen, 3, 5, dtype=torch.float32, scale=2.0)),
        # Rows spanning 100-300 in float32, where exp overflows from 89 on: only a shift by each
        # row's maximum is safe (the +-1000 rows above span only 3-4, so shifting by the minimum
        # or the mean passes them).
        c("float32, scores 100-300 apart", torch.tensor([[0.0, 100.0], [-150.0, 150.0], [100.0, 90.0]])),
    ]


def _sw_exp_normalised(scores, *, dim=-1, keepdim=True):
    """exp, then divide by the sum, without subtracting the largest score first."""
    exps = torch.exp(scores)
    return exps / exps.sum(dim=dim, keepdim=keepdim)


SW_MISTAKES = [
    Mistake(
        "wrong_axis",
        "softmax over the wrong axis: each row (one query) must sum to 1 over the keys, the last axis. "
        "Use dim=-1, which is the right axis whatever the number of axes.",
        [lambda s, _d=d: torch.softmax(s, dim=_d) for d in (0, 1, -2)]
        + [lambda s, _d=d: _sw_exp_normalised(s - s.max(dim=_d, keepdim=True).values, dim=_d) for d in (0, -2)],
        error_contains="Dimension out of range",  # dim=1 or dim=-2 on the (S,) scores of one query
    ),
    Mistake(
        "overflow",
        "large scores gave NaN: exp(1000) overflows to inf (and exp(-1000) underflows to 0), so the "
        "division computes inf/inf or 0/0. Softmax only sees differences between scores: subtract each "
        "row's largest score first (scores - scores.max(dim=-1, keepdim=True).values), or use torch.softmax.",
        [_sw_exp_normalised],
    ),
    Mistake(
        "min_shift",
        "you subtracted each row's smallest score instead of its largest: the shifted scores are then "
        ">= 0, and exp overflows to inf for large ones (in float32 from exp(89) on), so a row such as "
        "[0, 100] gives inf/inf = NaN. Subtract each row's largest score, "
        "scores.max(dim=-1, keepdim=True).values: every exponent is then <= 0 and exp stays in [0, 1].",
        [lambda s: _sw_exp_normalised(s - s.min(dim=-1, keepdim=True).values),
         lambda s: _sw_exp_normalised(s - s.min())],
    ),
    Mistake(
        "mean_shift",
        "you subtracted each row's mean score: a score far above the mean still overflows (in float32 "
        "exp is inf from exp(89) on, so the row [-150, 150] gives inf/inf = NaN). Subtract each row's "
        "largest score, scores.max(dim=-1, keepdim=True).values: every exponent is then <= 0.",
        [lambda s: _sw_exp_normalised(s - s.mean(dim=-1, keepdim=True))],
    ),
    Mistake(
        "global_max",
        "you subtracted the largest score of the whole tensor, not of each row: a row whose scores all lie "
        "far below it underflows to exp(...) = 0 everywhere, and 0/0 gives NaN. Subtract each row's own "
        "largest score: scores.max(dim=-1, keepdim=True).values.",
        [lambda s: _sw_exp_normalised(s - s.max())],
    ),
    Mistake(
        "no_exp",
        "you divided the scores by their sum without exponentiating them: weights can then be negative, "
        "lose the order of the scores, or blow up when the scores sum to 0. Take exp of the scores first.",
        [lambda s: s / s.sum(dim=-1, keepdim=True), lambda s: s / s.sum()],
    ),
    Mistake(
        "not_normalised",
        "your weights do not sum to 1: after exp, divide each row by its sum "
        "(exps / exps.sum(dim=-1, keepdim=True)).",
        [torch.exp, lambda s: torch.exp(s - s.max(dim=-1, keepdim=True).values)],
    ),
    Mistake(
        "summed_everything",
        "you divided by the sum of the whole tensor: every row (one query) must sum to 1 on its own. "
        "Sum over the last axis only, keeping it: .sum(dim=-1, keepdim=True).",
        [lambda s: torch.exp(s) / torch.exp(s).sum(),
         lambda s: torch.exp(s - s.max()) / torch.exp(s - s.max()).sum()],
    ),
    Mistake(
        "keepdim_missing",
        "the row sums lost their axis: s.sum(dim=-1) has shape (L,), which broadcasts against (L, S) "
        "along the wrong axis. Keep it with .sum(dim=-1, keepdim=True), shape (L, 1).",
        [lambda s: _sw_exp_normalised(s - s.max(dim=-1, keepdim=True).values, keepdim=False),
         lambda s: _sw_exp_normalised(s, keepdim=False)],
        error_contains="must match the size of tensor",
    ),
    Mistake(
        "log_softmax",
        "you returned log-probabilities (log_softmax): they are negative and sum to something other than 1. "
        "The weights are torch.softmax(scores, dim=-1).",
        [lambda s: torch.log_softmax(s, dim=-1)],
    ),
]

SOFTMAX_WEIGHTS = Exercise(
    id="softmax_weights",
    title="Scores to weights: softmax",
    signature="softmax_weights(scores) -> weights",
    description=(
        "scores (..., S), e.g. (S,) for one query, (L, S) or (B, L, S): softmax over the last axis, so that "
        "each query's weights are positive and sum to 1. Must not give NaN for large scores (around 1000)."
    ),
    reference=lambda scores: torch.softmax(scores, dim=-1),
    solution=solution_softmax_weights,
    make_cases=_sw_cases,
    arg_names=SW_ARGS,
    mistakes=SW_MISTAKES,
    hints=[
        "Softmax of a row s is exp(s) / sum(exp(s)): exponentiate, then divide by the row's sum.",
        "The keys are on the last axis: sum with .sum(dim=-1, keepdim=True) so that the (..., 1) sums "
        "divide each row.",
        "exp(1000) is inf. Since only differences matter, subtract each row's largest score first: "
        "scores - scores.max(dim=-1, keepdim=True).values (or use torch.softmax(scores, dim=-1)).",
    ],
    output_name="weights",
)


# --- soft_lookup (chapter 1) --------------------------------------------------------------

SL_ARGS = ["q", "k", "v"]


def _sl_cases(gen: torch.Generator) -> list[Case]:
    c = lambda name, *a: _case(name, SL_ARGS, *a)  # noqa: E731
    r = lambda *s, **kw: _randn(gen, *s, **kw)  # noqa: E731
    f64 = lambda rows: torch.tensor(rows, dtype=torch.float64)[None]  # noqa: E731
    return [
        c("three queries, three keys (L = S = E = Ev)", r(1, 3, 3), r(1, 3, 3), r(1, 3, 3)),
        c("chapter 1's dictionary", f64([[2, 1], [0, 2], [1, 1], [-1, -1]]), f64([[1, 0], [0, 1], [1, 1]]),
          f64([[10, 0], [20, 1], [30, -1]])),
        c("one query", r(1, 1, 4), r(1, 3, 4), r(1, 3, 2)),
        c("a batch, L != S, E != Ev", r(2, 3, 4), r(2, 5, 4), r(2, 5, 3)),
        c("float32 input", r(2, 4, 8, dtype=torch.float32), r(2, 3, 8, dtype=torch.float32),
          r(2, 3, 2, dtype=torch.float32)),
        # Dot products of 100 and more in float32: a softmax that does not shift by each row's
        # maximum overflows here (exp is inf from exp(89) on).
        c("float32, large dot products", torch.tensor([[[10.0, 9.0], [-10.0, 5.0]]]),
          torch.tensor([[[10.0, 0.0], [0.0, 10.0], [-10.0, -10.0]]]),
          torch.tensor([[[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]])),
    ]


def _sl_variant(q, k, v, *, scale=1.0, dim=-1, pool="weights_v", scores="qkT", ret="both", shift="max"):
    s = (q @ k.transpose(-2, -1) if scores == "qkT" else q @ k) * scale
    if dim is None:
        w = s
    elif shift == "max":
        w = torch.softmax(s, dim=dim)
    else:  # a hand-written softmax shifted by something other than each row's maximum
        by = s.min(dim=-1, keepdim=True).values if shift == "min" else 0.0
        w = torch.exp(s - by) / torch.exp(s - by).sum(dim=-1, keepdim=True)
    out = {
        "weights_v": lambda: w @ v,
        "v_weights": lambda: v @ w,
        "weightsT_v": lambda: w.transpose(-2, -1) @ v,
        "weights_k": lambda: w @ k,
    }[pool]()
    return {"both": (out, w), "swapped": (w, out), "weights": w, "out": out,
            "weights_transposed": (out, w.transpose(-2, -1))}[ret]


def _sl_scaled(q, k, v):
    return _sl_variant(q, k, v, scale=1 / math.sqrt(q.shape[-1]))


SL_MISTAKES = [
    Mistake(
        "scaled",
        "you divided the scores by sqrt(E): that scale belongs to the next chapter. The soft lookup of "
        "chapter 1 uses the plain dot products, weights = softmax(q @ k^T).",
        [_sl_scaled],
    ),
    Mistake(
        "overflow",
        "large scores gave NaN: your softmax takes exp of the raw scores (or of the scores minus each "
        "row's minimum), which overflows to inf in float32 from exp(89) on, and inf/inf = NaN. Use "
        "torch.softmax(scores, dim=-1), or subtract each row's largest score before exp as in "
        "softmax_weights.",
        [lambda q, k, v, _s=s: _sl_variant(q, k, v, shift=_s) for s in ("none", "min")],
    ),
    Mistake(
        "wrong_axis",
        "softmax over the wrong axis: each query's weights over the keys must sum to 1, and the keys are the "
        "last axis of the (B, L, S) scores. Use dim=-1 (not the queries' axis).",
        [lambda q, k, v, _d=d: _sl_variant(q, k, v, dim=_d) for d in (-2, 1, 0)],
    ),
    Mistake(
        "pooling_transposed",
        "the weighted average multiplies the wrong way round: out = weights @ v, (B, L, S) @ (B, S, Ev) "
        "-> (B, L, Ev), one weighted average of the values per query.",
        [lambda q, k, v, _p=p: _sl_variant(q, k, v, pool=_p) for p in ("v_weights", "weightsT_v")],
    ),
    Mistake(
        "averaged_keys",
        "you averaged the keys instead of the values: the keys only decide the weights; the answer is "
        "weights @ v.",
        [lambda q, k, v: _sl_variant(q, k, v, pool="weights_k")],
    ),
    Mistake(
        "keys_not_transposed",
        "q @ k multiplies the wrong axes: to pair every query with every key, transpose the keys' last two "
        "axes, q @ k.transpose(-2, -1), (B, L, E) @ (B, E, S) -> (B, L, S).",
        [lambda q, k, v: _sl_variant(q, k, v, scores="qk")],
    ),
    Mistake(
        "no_softmax",
        "you averaged with the raw scores: they are not weights (they can be negative and do not sum to 1). "
        "Turn them into weights with torch.softmax(scores, dim=-1) first.",
        [lambda q, k, v: _sl_variant(q, k, v, dim=None)],
    ),
    Mistake(
        "only_weights",
        "you returned only the weights: return both, as a tuple `return out, weights`.",
        [lambda q, k, v: _sl_variant(q, k, v, ret="weights")],
    ),
    Mistake(
        "only_out",
        "you returned only `out`: return both, as a tuple `return out, weights`.",
        [lambda q, k, v: _sl_variant(q, k, v, ret="out")],
    ),
    Mistake(
        "weights_transposed",
        "`out` is right but the weights you returned are transposed, (B, S, L): row i of the weights must be "
        "query i's weights over the keys, shape (B, L, S), each row summing to 1. Return the softmax of "
        "q @ k.transpose(-2, -1) over dim=-1 as it is.",
        [lambda q, k, v: _sl_variant(q, k, v, ret="weights_transposed")],
    ),
    Mistake(
        "swapped_outputs",
        "you returned (weights, out): return (out, weights), in that order.",
        [lambda q, k, v: _sl_variant(q, k, v, ret="swapped")],
    ),
]

SOFT_LOOKUP = Exercise(
    id="soft_lookup",
    title="The soft lookup",
    signature="soft_lookup(q, k, v) -> (out, weights)",
    description=(
        "q (B, L, E), k (B, S, E), v (B, S, Ev): scores are the plain dot products q @ k^T (no scale), "
        "weights the softmax over the keys, out the weighted average of the values."
    ),
    reference=lambda q, k, v: mf.scaled_dot_product_attention(q, k, v, scale=1.0),
    solution=solution_soft_lookup,
    make_cases=_sl_cases,
    arg_names=SL_ARGS,
    mistakes=SL_MISTAKES,
    hints=[
        "scores = q @ k.transpose(-2, -1) has shape (B, L, S): the dot product of every query with every key.",
        "weights = torch.softmax(scores, dim=-1): each query's weights over the keys sum to 1.",
        "out = weights @ v, (B, L, S) @ (B, S, Ev) -> (B, L, Ev); return out, weights.",
    ],
    output_name="out, weights",
)


ALL: list[Exercise] = [SOFTMAX_WEIGHTS, SOFT_LOOKUP]
