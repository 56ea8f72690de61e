"""The exercises: test cases, hints and the catalogue of known wrong answers.

Each mistake is a small function computing what a learner who made that slip would get;
the checker compares the learner's answer with these on the failing inputs to name the
mistake. (The tests write their own learner-style wrong answers independently.)

Shapes: B batch, H heads, L query length, S key length, D model width, Dh = D // H.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .. import functional as mf
from . import solutions as sol
from ._checker import Case, Exercise, Mistake, describe_value

NEG_INF = float("-inf")
FILLS = (NEG_INF, -1e9)  # the two usual ways of masking a score


def _randn(gen: torch.Generator, *shape: int, dtype=torch.float64, scale: float = 1.0) -> Tensor:
    return torch.randn(*shape, generator=gen, dtype=dtype) * scale


def _arange(*shape: int, dtype=torch.float64) -> Tensor:
    return torch.arange(math.prod(shape), dtype=dtype).reshape(shape)


def _about(names: list[str], args: tuple) -> str:
    return ", ".join(f"{n} = {describe_value(a)}" for n, a in zip(names, args))


def _case(name: str, names: list[str], *args) -> Case:
    return Case(name, tuple(args), _about(names, args))


def _fill_variants(fn, fills=FILLS):
    """One variant per fill value (the same slip made with -inf or with -1e9)."""
    return [lambda *a, _f=f: fn(*a, fill=_f) for f in fills]


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
    solution=sol.solution_softmax_weights,
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
    ]


def _sl_variant(q, k, v, *, scale=1.0, dim=-1, pool="weights_v", scores="qkT", ret="both"):
    s = {"qkT": q @ k.transpose(-2, -1), "qk": q @ k}[scores] * scale
    w = torch.softmax(s, dim=dim) if dim is not None else s
    out = {
        "weights_v": lambda: w @ v,
        "v_weights": lambda: v @ w,
        "weightsT_v": lambda: w.transpose(-2, -1) @ v,
        "weights_k": lambda: w @ k,
    }[pool]()
    return {"both": (out, w), "swapped": (w, out), "weights": w, "out": out}[ret]


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
    solution=sol.solution_soft_lookup,
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
    ]


def _lens_per_query(valid_lens: Tensor, L: int, how: str = "interleave") -> Tensor:
    """(B,) or (B, L) lengths -> (B, L); `how="repeat"` is the classic tiling slip."""
    if valid_lens.dim() == 2:
        return valid_lens
    B = valid_lens.shape[0]
    if how == "repeat":
        return valid_lens.repeat(L).reshape(B, L)
    return valid_lens.repeat_interleave(L).reshape(B, L)


def _ms_variant(scores, valid_lens, *, fill=NEG_INF, dim=-1, compare="lt", zero_empty=False, lens="interleave"):
    if valid_lens is None:
        return torch.softmax(scores, dim=dim)
    B, L, S = scores.shape
    positions = torch.arange(S)
    per_query = _lens_per_query(valid_lens, L, lens)[:, :, None]  # (B, L, 1)
    allowed = {"lt": positions < per_query, "le": positions <= per_query, "ge": positions >= per_query}[compare]
    scores = scores.masked_fill(~allowed, fill)
    if zero_empty:
        empty = ~allowed.any(dim=-1, keepdim=True)
        return torch.softmax(scores.masked_fill(empty, 0.0), dim=dim).masked_fill(~allowed, 0.0)
    return torch.softmax(scores, dim=dim)


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
        "the mask is inverted: keys at positions < valid_len are the real ones (True = may attend), "
        "but you kept the padding and masked the real keys.",
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
        "a row with valid length 0 came out uniform (1/S for every key): a large negative fill such as "
        "-1e6 turns 'attend to nothing' into 'attend to everything equally'. Rows with nothing to attend "
        "to must be all zeros: find them (no key allowed) and zero their weights.",
        [lambda s, v, _f=f: _ms_variant(s, v, fill=_f) for f in (-1e9, -1e6, -1e4)],
    ),
    Mistake(
        "nan_empty_rows",
        "a row with valid length 0 came out NaN: the softmax of a row that is all -inf is 0/0. Find the "
        "rows with no key allowed, give them finite scores before the softmax (e.g. 0) and zero weights after.",
        [lambda s, v: _ms_variant(s, v, fill=NEG_INF)],
    ),
    Mistake(
        "zero_fill",
        "masked scores were set to 0, but exp(0) = 1, so padded keys still get weight. Fill masked scores "
        "with -inf (and give rows with nothing to attend to zeros).",
        [lambda s, v: _ms_variant(s, v, fill=0.0), lambda s, v: _ms_variant(s, v, fill=0.0, zero_empty=True)],
    ),
    Mistake(
        "masked_after_softmax",
        "you zeroed the padded keys after the softmax, so the rows no longer sum to 1. Mask the scores "
        "(fill with -inf) before the softmax.",
        [
            lambda s, v: torch.softmax(s, dim=-1) * _ms_variant(torch.zeros_like(s), v, fill=NEG_INF, zero_empty=True).ne(0)
        ],
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
    solution=sol.solution_masked_softmax,
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
    ]


def _sdpa_variant(q, k, v, mask, *, scale="sqrt_e", dim=-1, mask_mode="normal", fill=NEG_INF, ret="both"):
    E = q.shape[-1]
    divisor = {"sqrt_e": math.sqrt(E), "none": 1.0, "e": float(E), "times": 1 / math.sqrt(E), "sqrt_ev": math.sqrt(v.shape[-1])}[scale]
    scores = q @ k.transpose(-2, -1) / divisor
    if mask is not None:
        if mask_mode == "normal":
            scores = scores.masked_fill(~mask, fill)
        elif mask_mode == "inverted":
            scores = scores.masked_fill(mask, fill)
        elif mask_mode == "added":
            scores = scores + mask
        elif mask_mode == "zero":
            scores = scores.masked_fill(~mask, 0.0)
    weights = torch.softmax(scores, dim=dim)
    if mask is not None and mask_mode == "after":
        weights = weights * mask
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
        "masked scores were set to 0, but exp(0) = 1, so masked keys still get weight. Fill them with -inf.",
        [lambda q, k, v, m: _sdpa_variant(q, k, v, m, mask_mode="zero")],
    ),
    Mistake(
        "masked_after_softmax",
        "you zeroed the masked weights after the softmax, so the rows no longer sum to 1. Mask the scores "
        "before the softmax.",
        [lambda q, k, v, m: _sdpa_variant(q, k, v, m, mask_mode="after")],
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
    solution=sol.solution_scaled_dot_product_attention,
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
    solution=sol.solution_causal_mask,
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


# --- split_heads and merge_heads ----------------------------------------------------------------


def _split_cases(gen: torch.Generator) -> list[Case]:
    c = lambda name, *a: _case(name, ["x", "num_heads"], *a)  # noqa: E731
    return [
        c("two heads", _arange(1, 2, 4), 2),
        c("three heads", _randn(gen, 2, 3, 6), 3),
        c("one head", _randn(gen, 2, 2, 3), 1),
        c("Dh = 1", _randn(gen, 1, 3, 4), 4),
        c("float32 input", _randn(gen, 2, 3, 8, dtype=torch.float32), 2),
    ]


def _split(x, H, how):
    B, L, D = x.shape
    Dh = D // H
    if how == "no_transpose":
        return x.reshape(B, H, L, Dh)
    if how == "transpose_first":
        return x.transpose(1, 2).reshape(B, H, L, Dh)
    if how == "strided":
        return x.reshape(B, L, Dh, H).permute(0, 3, 1, 2)
    if how == "not_transposed":
        return x.reshape(B, L, H, Dh)
    if how == "wrong_axes":
        return x.reshape(B, L, H, Dh).transpose(2, 3)
    if how == "h_dh_swapped":
        return x.reshape(B, L, Dh, H).transpose(1, 2)
    raise ValueError(how)


INTERLEAVED = (
    "heads look interleaved: reshaping straight to {target} mixes the tokens of different heads. "
    "Reshape to (B, L, H, Dh) and then transpose(1, 2)"
)

SPLIT_MISTAKES = [
    Mistake("no_transpose", INTERLEAVED.format(target="(B, H, L, Dh)") + ".", [lambda x, H: _split(x, H, "no_transpose")]),
    Mistake(
        "transpose_first",
        "you transposed before reshaping, which mixes features of different tokens. Reshape (B, L, D) -> "
        "(B, L, H, Dh) first, then transpose(1, 2).",
        [lambda x, H: _split(x, H, "transpose_first")],
    ),
    Mistake(
        "strided_features",
        "each head got every H-th feature (a strided cut): head h must hold the contiguous block "
        "h*Dh:(h+1)*Dh. Reshape to (B, L, H, Dh), not (B, L, Dh, H).",
        [lambda x, H: _split(x, H, "strided")],
    ),
    Mistake(
        "not_transposed",
        "you returned (B, L, H, Dh): swap the L and H axes with transpose(1, 2) to get (B, H, L, Dh).",
        [lambda x, H: _split(x, H, "not_transposed")],
    ),
    Mistake(
        "wrong_axes",
        "you swapped the wrong pair of axes: after reshaping to (B, L, H, Dh), transpose(1, 2) swaps L and H.",
        [lambda x, H: _split(x, H, "wrong_axes")],
    ),
    Mistake(
        "h_dh_swapped",
        "you cut the features into Dh groups of H instead of H groups of Dh: reshape to "
        "(B, L, num_heads, D // num_heads).",
        [lambda x, H: _split(x, H, "h_dh_swapped")],
    ),
]

SPLIT_HEADS = Exercise(
    id="split_heads",
    title="Split the heads",
    signature="split_heads(x, num_heads) -> (B, H, L, Dh)",
    description="x (B, L, D) -> (B, H, L, Dh) with Dh = D // H; head h holds features h*Dh:(h+1)*Dh of every token.",
    reference=mf.split_heads,
    solution=sol.solution_split_heads,
    make_cases=_split_cases,
    arg_names=["x", "num_heads"],
    mistakes=SPLIT_MISTAKES,
    hints=[
        "First cut every token's D features into H pieces of Dh: x.reshape(B, L, H, Dh).",
        "Then bring the head axis before the token axis: .transpose(1, 2) gives (B, H, L, Dh).",
        "Reshaping straight to (B, H, L, Dh) has the right shape but mixes tokens: the order of the axes in "
        "memory is (B, L, D), so the reshape must keep L before H.",
    ],
)


def _merge_cases(gen: torch.Generator) -> list[Case]:
    c = lambda name, *a: _case(name, ["x"], *a)  # noqa: E731
    return [
        c("two heads", _arange(1, 2, 2, 3)),
        c("three heads", _randn(gen, 2, 3, 4, 2)),
        c("one head", _randn(gen, 2, 1, 3, 4)),
        c("Dh = 1", _randn(gen, 1, 4, 3, 1)),
        c("float32 input", _randn(gen, 2, 2, 3, 4, dtype=torch.float32)),
    ]


def _merge(x, how):
    B, H, L, Dh = x.shape
    if how == "no_transpose":
        return x.reshape(B, L, H * Dh)
    if how == "strided":
        return x.permute(0, 2, 3, 1).reshape(B, L, H * Dh)
    if how == "not_flattened":
        return x.transpose(1, 2)
    if how == "cat_tokens":
        return torch.cat([x[:, h] for h in range(H)], dim=1)
    if how == "wrong_axes":
        return x.transpose(2, 3).reshape(B, L, H * Dh)
    raise ValueError(how)


VIEW_ERROR = "view size is not compatible with input tensor's size and stride"
VIEW_MESSAGE = (
    "`view` cannot flatten a transposed tensor, because its memory is no longer in order (not contiguous). "
    "Use .reshape(...) (or .contiguous().view(...))."
)

MERGE_MISTAKES = [
    Mistake("view_error", VIEW_MESSAGE, error_contains=VIEW_ERROR),
    Mistake(
        "no_transpose",
        "heads look interleaved: reshaping (B, H, L, Dh) straight to (B, L, H*Dh) mixes tokens. First "
        "transpose(1, 2) to (B, L, H, Dh), then reshape.",
        [lambda x: _merge(x, "no_transpose")],
    ),
    Mistake(
        "strided_features",
        "the features are ordered (Dh, H) instead of (H, Dh): head h must fill the contiguous block "
        "h*Dh:(h+1)*Dh. Transpose to (B, L, H, Dh), not (B, L, Dh, H).",
        [lambda x: _merge(x, "strided")],
    ),
    Mistake(
        "not_flattened",
        "you returned a 4-D (B, L, H, Dh) tensor: finish with .reshape(B, L, H * Dh).",
        [lambda x: _merge(x, "not_flattened")],
    ),
    Mistake(
        "cat_tokens",
        "you concatenated the heads along the token axis: put them side by side along the feature axis "
        "(torch.cat(..., dim=-1)).",
        [lambda x: _merge(x, "cat_tokens")],
    ),
    Mistake(
        "wrong_axes",
        "you swapped the wrong pair of axes: transpose(1, 2) swaps H and L.",
        [lambda x: _merge(x, "wrong_axes")],
    ),
]

MERGE_HEADS = Exercise(
    id="merge_heads",
    title="Merge the heads",
    signature="merge_heads(x) -> (B, L, H*Dh)",
    description="x (B, H, L, Dh) -> (B, L, H*Dh), the inverse of split_heads.",
    reference=mf.merge_heads,
    solution=sol.solution_merge_heads,
    make_cases=_merge_cases,
    arg_names=["x"],
    mistakes=MERGE_MISTAKES,
    hints=[
        "Undo split_heads in reverse order: first swap H and L back, then join the heads.",
        "x.transpose(1, 2) gives (B, L, H, Dh); then reshape to (B, L, H * Dh).",
        "Use reshape, not view: after a transpose the tensor is not contiguous and view refuses it.",
    ],
)


# --- transpose_qkv and transpose_output (the folded (B*H, L, Dh) layout) ---------------------------------


def _tqkv_cases(gen: torch.Generator) -> list[Case]:
    c = lambda name, *a: _case(name, ["x", "num_heads"], *a)  # noqa: E731
    return [
        c("two sequences, two heads", _arange(2, 2, 4), 2),
        c("one sequence, three heads", _randn(gen, 1, 3, 6), 3),
        c("three sequences", _randn(gen, 3, 2, 4), 2),
        c("one head", _randn(gen, 2, 3, 2), 1),
        c("Dh = 1", _randn(gen, 2, 2, 3), 3),
        c("float32 input", _randn(gen, 2, 3, 8, dtype=torch.float32), 4),
    ]


def _tqkv(x, H, how):
    B, L, D = x.shape
    Dh = D // H
    if how == "no_transpose":
        return x.reshape(B * H, L, Dh)
    if how == "head_major":
        return x.reshape(B, L, H, Dh).permute(2, 0, 1, 3).reshape(H * B, L, Dh)
    if how == "strided":
        return x.reshape(B, L, Dh, H).permute(0, 3, 1, 2).reshape(B * H, L, Dh)
    if how == "not_folded":
        return x.reshape(B, L, H, Dh).transpose(1, 2)
    if how == "transpose_first":
        return x.transpose(1, 2).reshape(B * H, L, Dh)
    raise ValueError(how)


HEAD_MAJOR = (
    "rows are ordered head-major (row h*B + b): the course's layout keeps the heads of one sequence "
    "adjacent, row b*H + h, so that the batch axis is split as (B, H)."
)

TQKV_MISTAKES = [
    Mistake("view_error", VIEW_MESSAGE, error_contains=VIEW_ERROR),
    Mistake(
        "no_transpose",
        INTERLEAVED.format(target="(B*H, L, Dh)") + ", then reshape to (B*H, L, Dh).",
        [lambda x, H: _tqkv(x, H, "no_transpose")],
    ),
    Mistake("head_major", HEAD_MAJOR + " Transpose (B, L, H, Dh) to (B, H, L, Dh), then reshape.", [lambda x, H: _tqkv(x, H, "head_major")]),
    Mistake(
        "strided_features",
        "each head got every H-th feature (a strided cut): head h must hold the contiguous block "
        "h*Dh:(h+1)*Dh. Reshape to (B, L, H, Dh), not (B, L, Dh, H).",
        [lambda x, H: _tqkv(x, H, "strided")],
    ),
    Mistake(
        "not_folded",
        "you returned (B, H, L, Dh): fold the heads into the batch axis with .reshape(B * H, L, Dh).",
        [lambda x, H: _tqkv(x, H, "not_folded")],
    ),
    Mistake(
        "transpose_first",
        "you transposed before reshaping, which mixes features of different tokens. Reshape (B, L, D) -> "
        "(B, L, H, Dh) first, then transpose(1, 2), then reshape to (B*H, L, Dh).",
        [lambda x, H: _tqkv(x, H, "transpose_first")],
    ),
]

TRANSPOSE_QKV = Exercise(
    id="transpose_qkv",
    title="Fold the heads into the batch",
    signature="transpose_qkv(x, num_heads) -> (B*H, L, Dh)",
    description="x (B, L, D) -> (B*H, L, Dh); row b*H + h holds head h (features h*Dh:(h+1)*Dh) of sequence b.",
    reference=mf.transpose_qkv,
    solution=sol.solution_transpose_qkv,
    make_cases=_tqkv_cases,
    arg_names=["x", "num_heads"],
    mistakes=TQKV_MISTAKES,
    hints=[
        "It is split_heads followed by one more reshape: (B, L, D) -> (B, L, H, Dh) -> (B, H, L, Dh).",
        "Then fold the two leading axes: .reshape(B * H, L, Dh). Row b*H + h is then head h of sequence b.",
        "Use reshape, not view, after the transpose (the tensor is not contiguous).",
    ],
)


def _tout_cases(gen: torch.Generator) -> list[Case]:
    c = lambda name, *a: _case(name, ["x", "num_heads"], *a)  # noqa: E731
    return [
        c("two sequences, two heads", _arange(4, 2, 2), 2),
        c("one sequence, three heads", _randn(gen, 3, 3, 2), 3),
        c("three sequences", _randn(gen, 6, 2, 3), 2),
        c("one head", _randn(gen, 2, 3, 2), 1),
        c("Dh = 1", _randn(gen, 6, 2, 1), 3),
        c("float32 input", _randn(gen, 8, 3, 2, dtype=torch.float32), 4),
    ]


def _tout(x, H, how):
    BH, L, Dh = x.shape
    B = BH // H
    if how == "no_transpose":
        return x.reshape(B, L, H * Dh)
    if how == "head_major":
        return x.reshape(H, B, L, Dh).permute(1, 2, 0, 3).reshape(B, L, H * Dh)
    if how == "strided":
        return x.reshape(B, H, L, Dh).permute(0, 2, 3, 1).reshape(B, L, H * Dh)
    if how == "not_flattened":
        return x.reshape(B, H, L, Dh).transpose(1, 2)
    if how == "wrong_axes":
        return x.reshape(B, H, L, Dh).transpose(2, 3).reshape(B, L, H * Dh)
    raise ValueError(how)


TOUT_MISTAKES = [
    Mistake("view_error", VIEW_MESSAGE, error_contains=VIEW_ERROR),
    Mistake(
        "no_transpose",
        "heads look interleaved: reshaping (B*H, L, Dh) straight to (B, L, H*Dh) mixes tokens. Reshape to "
        "(B, H, L, Dh), transpose(1, 2) to (B, L, H, Dh), then reshape to (B, L, H*Dh).",
        [lambda x, H: _tout(x, H, "no_transpose")],
    ),
    Mistake(
        "head_major",
        "you unfolded the rows as h*B + b (head-major), but transpose_qkv puts row b*H + h: reshape to "
        "(B, H, L, Dh), not (H, B, L, Dh).",
        [lambda x, H: _tout(x, H, "head_major")],
    ),
    Mistake(
        "strided_features",
        "the features are ordered (Dh, H) instead of (H, Dh): head h must fill the contiguous block "
        "h*Dh:(h+1)*Dh. Transpose to (B, L, H, Dh), not (B, L, Dh, H).",
        [lambda x, H: _tout(x, H, "strided")],
    ),
    Mistake(
        "not_flattened",
        "you returned a 4-D (B, L, H, Dh) tensor: finish with .reshape(B, L, H * Dh).",
        [lambda x, H: _tout(x, H, "not_flattened")],
    ),
    Mistake(
        "wrong_axes",
        "you swapped the wrong pair of axes: from (B, H, L, Dh), transpose(1, 2) swaps H and L.",
        [lambda x, H: _tout(x, H, "wrong_axes")],
    ),
]

TRANSPOSE_OUTPUT = Exercise(
    id="transpose_output",
    title="Unfold the heads",
    signature="transpose_output(x, num_heads) -> (B, L, H*Dh)",
    description="x (B*H, L, Dh), row b*H + h = head h of sequence b -> (B, L, H*Dh); the inverse of transpose_qkv.",
    reference=mf.transpose_output,
    solution=sol.solution_transpose_output,
    make_cases=_tout_cases,
    arg_names=["x", "num_heads"],
    mistakes=TOUT_MISTAKES,
    hints=[
        "Undo transpose_qkv step by step, in reverse order.",
        "x.reshape(B, H, L, Dh) with B = x.shape[0] // num_heads, then .transpose(1, 2) -> (B, L, H, Dh).",
        "Finish with .reshape(B, L, H * Dh) (reshape, not view: the tensor is not contiguous after the transpose).",
    ],
)


# --- repeat_valid_lens --------------------------------------------------------------------------


def _rvl_cases(gen: torch.Generator) -> list[Case]:
    c = lambda name, *a: _case(name, ["valid_lens", "num_heads"], *a)  # noqa: E731
    return [
        c("(B,) lengths", torch.tensor([3, 1]), 2),
        c("one sequence", torch.tensor([2]), 3),
        c("(B, L) lengths", torch.tensor([[1, 2, 3], [2, 2, 1]]), 2),
        c("one head", torch.tensor([4, 0, 2]), 1),
        c("four heads", torch.randint(0, 6, (3,), generator=gen), 4),
        c("int32 lengths", torch.tensor([1, 3], dtype=torch.int32), 3),
    ]


RVL_MISTAKES = [
    Mistake(
        "repeat",
        "lengths repeated with `repeat` (tiling: l0, l1, l0, l1); the heads of one sequence are adjacent "
        "after transpose_qkv (row b*H + h), so use `repeat_interleave` (l0, l0, l1, l1).",
        [
            lambda v, H: v.repeat(H) if v.dim() == 1 else v.repeat(H, 1),
        ],
    ),
    Mistake(
        "flattened",
        "your (B, L) lengths were flattened: repeat_interleave without dim flattens its input first. "
        "Pass dim=0.",
        [lambda v, H: v.repeat_interleave(H)],
    ),
    Mistake(
        "wrong_dim",
        "you repeated along the wrong axis: repeat the rows (one per sequence), dim=0.",
        [lambda v, H: v.repeat_interleave(H, dim=-1)],
    ),
    Mistake(
        "multiplied",
        "you multiplied the lengths by num_heads: the lengths stay the same, it is the rows that must be "
        "repeated, one copy per head.",
        [lambda v, H: v * H],
    ),
    Mistake(
        "unchanged",
        "you returned the lengths unchanged: transpose_qkv made B*H rows, so each length must appear "
        "num_heads times.",
        [lambda v, H: v],
    ),
    Mistake(
        "not_integer",
        "the lengths must stay integers of the input's dtype (no .float()).",
        [lambda v, H, _d=d: torch.repeat_interleave(v, H, dim=0).to(_d) for d in (torch.float32, torch.float64)],
    ),
]

REPEAT_VALID_LENS = Exercise(
    id="repeat_valid_lens",
    title="Lengths for the folded heads",
    signature="repeat_valid_lens(valid_lens, num_heads) -> (B*H,) or (B*H, L)",
    description=(
        "valid_lens (B,) or (B, L) -> one row of lengths per row of transpose_qkv's output, i.e. "
        "row b*H + h gets the lengths of sequence b."
    ),
    reference=lambda valid_lens, num_heads: torch.repeat_interleave(valid_lens, num_heads, dim=0),
    solution=sol.solution_repeat_valid_lens,
    make_cases=_rvl_cases,
    arg_names=["valid_lens", "num_heads"],
    mistakes=RVL_MISTAKES,
    hints=[
        "After transpose_qkv, rows b*H, b*H + 1, ..., b*H + H - 1 all belong to sequence b.",
        "So each sequence's lengths appear H times in a row: [l0, l1] -> [l0, l0, l1, l1] for H = 2.",
        "torch.repeat_interleave(valid_lens, num_heads, dim=0) does exactly that (torch.repeat would tile instead).",
    ],
    output_name="lengths",
)


# --- multi_head_attention -------------------------------------------------------------------------

MHA_ARGS = ["query", "key", "value", "W_q", "W_k", "W_v", "W_o", "num_heads", "valid_lens"]


def _mha_case(gen, name, B, L, S, D, H, valid_lens, dtype=torch.float64) -> Case:
    r = lambda *s: _randn(gen, *s, dtype=dtype)  # noqa: E731
    weights = [r(D, D) * (1.5 / math.sqrt(D)) for _ in range(4)]
    args = (r(B, L, D), r(B, S, D), r(B, S, D), *weights, H, valid_lens)
    about = (
        f"B={B}, L={L}, S={S}, D={D}, num_heads={H}, {dtype}, "
        f"valid_lens = {describe_value(valid_lens)}"
    )
    return Case(name, args, about)


def _mha_cases(gen: torch.Generator) -> list[Case]:
    return [
        _mha_case(gen, "no lengths", 1, 2, 3, 4, 2, None),
        _mha_case(gen, "(B,) lengths", 2, 3, 4, 6, 3, torch.tensor([2, 4])),
        _mha_case(gen, "(B, L) lengths", 2, 3, 3, 4, 2, torch.tensor([[1, 3, 2], [3, 1, 1]])),
        _mha_case(gen, "one head", 2, 2, 3, 3, 1, torch.tensor([3, 1])),
        _mha_case(gen, "four heads", 2, 4, 5, 8, 4, torch.tensor([5, 2])),
        _mha_case(gen, "float32 input", 2, 3, 4, 4, 2, torch.tensor([4, 1]), dtype=torch.float32),
    ]


def _mha_reference(query, key, value, W_q, W_k, W_v, W_o, num_heads, valid_lens=None):
    S = key.shape[1]
    q = mf.split_heads(query @ W_q.T, num_heads)  # (B, H, L, Dh)
    k = mf.split_heads(key @ W_k.T, num_heads)  # (B, H, S, Dh)
    v = mf.split_heads(value @ W_v.T, num_heads)  # (B, H, S, Dh)
    mask = None if valid_lens is None else mf.padding_mask(valid_lens, S)  # (B, 1, 1|L, S)
    out, _ = mf.scaled_dot_product_attention(q, k, v, mask)  # (B, H, L, Dh)
    return mf.merge_heads(out) @ W_o.T  # (B, L, D)


def _mha_variant(
    query, key, value, W_q, W_k, W_v, W_o, H, valid_lens=None, *,
    w_t=False, use_wo=True, scale="dh", heads="split", lens="interleave", mask="normal", dim=-1, fill=NEG_INF,
):
    proj = (lambda x, W: x @ W) if w_t else (lambda x, W: x @ W.T)
    B, L, D = query.shape
    S = key.shape[1]
    Dh = D // H

    def split(x):
        n = x.shape[1]
        if heads == "interleaved":
            return x.reshape(B * H, n, Dh)
        return x.reshape(B, n, H, Dh).transpose(1, 2).reshape(B * H, n, Dh)  # row b*H + h

    q, k, v = split(proj(query, W_q)), split(proj(key, W_k)), split(proj(value, W_v))
    divisor = {"dh": math.sqrt(Dh), "d": math.sqrt(D), "none": 1.0}[scale]
    scores = q @ k.transpose(-2, -1) / divisor  # (B*H, L, S)
    if valid_lens is not None and mask != "ignored":
        per_query = _lens_per_query(valid_lens, L)  # (B, L)
        rows = per_query.repeat(H, 1) if lens == "repeat" else per_query.repeat_interleave(H, dim=0)  # (B*H, L)
        allowed = torch.arange(S) < rows[:, :, None]
        scores = scores.masked_fill(allowed if mask == "inverted" else ~allowed, fill)
    out = torch.softmax(scores, dim=dim) @ v  # (B*H, L, Dh)
    if heads == "interleaved":
        out = out.reshape(B, L, D)
    else:
        out = out.reshape(B, H, L, Dh).transpose(1, 2).reshape(B, L, D)
    return proj(out, W_o) if use_wo else out


def _mha_variants(**kw):
    return [lambda *a, _f=f: _mha_variant(*a, fill=_f, **kw) for f in FILLS]


MHA_MISTAKES = [
    Mistake(
        "weights_transposed",
        "you applied x @ W: nn.Linear stores its weight as (out, in), so the projection is x @ W.T.",
        _mha_variants(w_t=True),
    ),
    Mistake(
        "no_output_projection",
        "the output projection is missing: after merging the heads, multiply by W_o.T.",
        _mha_variants(use_wo=False),
    ),
    Mistake(
        "scaled_by_sqrt_D",
        "you scaled by sqrt(D), the model width; each head's scores are dot products of Dh-sized vectors, "
        "so scale by sqrt(Dh) = sqrt(D // num_heads).",
        _mha_variants(scale="d"),
    ),
    Mistake(
        "no_scale",
        "your weights are sharper than expected by a factor sqrt(Dh): did you forget the scale? Divide "
        "the scores by math.sqrt(Dh), Dh = D // num_heads.",
        _mha_variants(scale="none"),
    ),
    Mistake(
        "heads_interleaved",
        "heads look interleaved: reshaping straight to (B, H, L, Dh) or (B*H, L, Dh) mixes tokens across "
        "heads. Reshape to (B, L, H, Dh) and then transpose(1, 2) (and the reverse when merging).",
        _mha_variants(heads="interleaved"),
    ),
    Mistake(
        "lengths_tiled",
        "lengths repeated with `repeat`; heads of one sequence are adjacent after transpose_qkv "
        "(row b*H + h), so use `repeat_interleave`.",
        _mha_variants(lens="repeat"),
    ),
    Mistake(
        "lengths_ignored",
        "your output ignores valid_lens: keys at positions >= valid_len must not be attended to.",
        [lambda *a: _mha_variant(*a, mask="ignored")],
    ),
    Mistake(
        "inverted_mask",
        "the mask is inverted: keys at positions < valid_len are the real ones, you masked them and kept the padding.",
        _mha_variants(mask="inverted"),
    ),
    Mistake(
        "wrong_axis",
        "softmax over the wrong axis: each query's weights over the keys (the last axis, dim=-1) must sum to 1.",
        _mha_variants(dim=-2),
    ),
]

MULTI_HEAD_ATTENTION = Exercise(
    id="multi_head_attention",
    title="Multi-head attention from its parts",
    signature="multi_head_attention(query, key, value, W_q, W_k, W_v, W_o, num_heads, valid_lens=None) -> out",
    description=(
        "query (B, L, D), key and value (B, S, D); each W is (D, D), shaped like nn.Linear.weight (out, in) "
        "and applied as x @ W.T, no biases; valid_lens None, (B,) or (B, L), keys at positions >= length "
        "are padding (the test lengths are all >= 1). Returns out (B, L, D)."
    ),
    reference=_mha_reference,
    solution=sol.solution_multi_head_attention,
    make_cases=_mha_cases,
    arg_names=MHA_ARGS,
    mistakes=MHA_MISTAKES,
    hints=[
        "Project first: q = query @ W_q.T (W is (out, in) like nn.Linear.weight), same for k and v.",
        "Split each of q, k, v into heads: (B, L, D) -> (B, L, H, Dh) -> transpose(1, 2) -> (B, H, L, Dh).",
        "Scores per head: q @ k.transpose(-2, -1) / math.sqrt(Dh), shape (B, H, L, S). Mask the padded "
        "keys (positions >= valid length) with -inf, softmax over the last axis, multiply by v.",
        "Merge the heads back to (B, L, D) (transpose(1, 2), then reshape) and finish with @ W_o.T.",
        "Lengths against (B, H, L, S) scores: (B,) lengths mask keys as valid_lens[:, None, None, None]; "
        "(B, L) lengths (one per query) as valid_lens[:, None, :, None]; compare with torch.arange(S).",
    ],
    output_name="out",
)


# --- padding_mask and torch_key_padding_mask (chapter 4) ------------------------------------------

PM_ARGS = ["valid_lens", "S"]


def _pm_cases(gen: torch.Generator) -> list[Case]:
    c = lambda name, *a: _case(name, PM_ARGS, *a)  # noqa: E731
    return [
        c("two sequences", torch.tensor([3, 1]), 4),
        c("one sequence", torch.tensor([2]), 3),
        c("a sequence of length 0", torch.tensor([0, 2, 3]), 3),
        c("random lengths", torch.randint(0, 7, (4,), generator=gen), 6),
        c("int32 lengths", torch.tensor([2, 5], dtype=torch.int32), 5),
    ]


def _pm_allowed(valid_lens: Tensor, S: int, compare: str = "lt") -> Tensor:
    """(B, S) bool: key j compared with the length of its sequence."""
    positions = torch.arange(S)[None, :]  # (1, S)
    lens = valid_lens[:, None]  # (B, 1)
    return {"lt": positions < lens, "le": positions <= lens, "ge": positions >= lens, "gt": positions > lens}[compare]


def _heads_queries(mask: Tensor) -> Tensor:
    """(B, S) -> (B, 1, 1, S)."""
    return mask[:, None, None, :]


NOT_BOOL = "your mask holds the right pattern but as {what}; "
BROADCAST_ERROR = "must match the size of tensor"

PM_MISTAKES = [
    Mistake(
        "torch_convention",
        "you built PyTorch's `key_padding_mask`: shape (B, S) with True = padding. This course's mask is "
        "the opposite, True = may attend (key j < valid_len), and has shape (B, 1, 1, S) so that it "
        "broadcasts against the scores (B, H, L, S).",
        [lambda v, S: _pm_allowed(v, S, "ge")],
    ),
    Mistake(
        "inverted",
        "the polarity is inverted: True marks the padding here (the convention of nn.MultiheadAttention's "
        "key_padding_mask). In this course True = may attend: positions < valid_len.",
        [lambda v, S: _heads_queries(_pm_allowed(v, S, "ge"))],
    ),
    Mistake(
        "off_by_one",
        "off by one: keys 0 .. valid_len - 1 are real and position valid_len is already padding. "
        "Compare positions < valid_len, not <=.",
        [lambda v, S: _heads_queries(_pm_allowed(v, S, "le"))],
    ),
    Mistake(
        "missing_axes",
        "your mask lacks the head and query axes. Broadcasting lines up the LAST axes, so against the "
        "scores (B, H, L, S) a (B, S) mask acts as (1, 1, B, S), the batch on the query axis: an error "
        "when B != L, and worse, no error when B == L, with query b of every sequence getting sequence "
        "b's length (a (B, 1, S) mask puts the batch on the head axis). "
        "Return (B, 1, 1, S): mask[:, None, None, :].",
        [
            lambda v, S: _pm_allowed(v, S),
            lambda v, S: _pm_allowed(v, S)[:, None, :],
        ],
    ),
    Mistake(
        "keys_not_last",
        "the key axis is not last: the scores are (B, H, L, S), so the mask must be (B, 1, 1, S) with the "
        "positions j along the last axis (you have them on the head or query axis).",
        [
            lambda v, S: _pm_allowed(v, S)[:, :, None, None],
            lambda v, S: _pm_allowed(v, S)[:, None, :, None],
        ],
    ),
    Mistake(
        "float_mask",
        NOT_BOOL.format(what="float numbers 1.0/0.0")
        + "a float mask is *added* to the scores, so it would block nothing. Return a bool mask: the "
        "comparison itself (positions < valid_len), or .bool() at the end.",
        [lambda v, S, _d=d: _heads_queries(_pm_allowed(v, S)).to(_d) for d in (torch.float32, torch.float64)],
    ),
    Mistake(
        "int_mask",
        NOT_BOOL.format(what="integers") + "return a bool mask (dtype=torch.bool or .bool()).",
        [
            lambda v, S, _d=d: _heads_queries(_pm_allowed(v, S)).to(_d)
            for d in (torch.int64, torch.int32, torch.uint8)
        ],
    ),
    Mistake(
        "additive_mask",
        "you built an additive float mask (0 for real keys, -inf at the padding). This exercise asks for "
        "the boolean form: True where key j may be attended to (j < valid_len).",
        [
            lambda v, S, _f=f, _d=d: torch.zeros(len(v), 1, 1, S, dtype=_d).masked_fill(
                ~_heads_queries(_pm_allowed(v, S)), _f
            )
            for f in FILLS
            for d in (torch.float32, torch.float64)
        ],
    ),
    Mistake(
        "compared_directly",
        "a broadcasting error: torch.arange(S) has shape (S,) and valid_lens (B,), and comparing them "
        "directly lines up those two axes. Give each its own axis so that every length meets every "
        "position: torch.arange(S)[None, :] < valid_lens[:, None] is (B, S).",
        error_contains=BROADCAST_ERROR,
    ),
]

PADDING_MASK = Exercise(
    id="padding_mask",
    title="Padding mask for the heads",
    signature="padding_mask(valid_lens, S) -> mask (B, 1, 1, S)",
    description=(
        "valid_lens (B,) integer lengths, S the number of keys -> a bool mask of shape (B, 1, 1, S), "
        "True where key j may be attended to (j < valid_len), which broadcasts against the multi-head "
        "scores (B, H, L, S)."
    ),
    reference=lambda valid_lens, S: mf.padding_mask(valid_lens, S),
    solution=sol.solution_padding_mask,
    make_cases=_pm_cases,
    arg_names=PM_ARGS,
    mistakes=PM_MISTAKES,
    hints=[
        "Compare the key positions torch.arange(S) with each sequence's length: key j of sequence b is real "
        "when j < valid_lens[b].",
        "Put the positions and the lengths on different axes so that they broadcast to (B, S): "
        "torch.arange(S)[None, :] < valid_lens[:, None].",
        "The scores are (B, H, L, S) and broadcasting lines up the last axes: insert the head and query "
        "axes, mask[:, None, None, :] -> (B, 1, 1, S). The comparison is already bool.",
    ],
    output_name="mask",
)


TKPM_MISTAKES = [
    Mistake(
        "our_convention",
        "you returned this course's convention (True = may attend). nn.MultiheadAttention's "
        "key_padding_mask means the opposite: True = padding, may NOT attend. Negate it with ~, "
        "or compare positions >= valid_len.",
        [lambda v, S: _pm_allowed(v, S)],
    ),
    Mistake(
        "course_mask_unchanged",
        "you returned the course's padding mask unchanged: (B, 1, 1, S) with True = may attend. PyTorch's "
        "key_padding_mask differs in both: shape (B, S) and True = padding. Use "
        "~mask[:, 0, 0, :] (or compare positions >= valid_len directly).",
        [lambda v, S: _heads_queries(_pm_allowed(v, S))],
    ),
    Mistake(
        "off_by_one",
        "off by one: the first padded key is at position valid_len itself. Compare positions >= valid_len, "
        "not > (the negation of < is >=).",
        [lambda v, S: _pm_allowed(v, S, "gt")],
    ),
    Mistake(
        "extra_axes",
        "key_padding_mask has shape (B, S), one row per sequence: nn.MultiheadAttention adds the head and "
        "query axes itself (and raises an error for other shapes). Drop the extra axes.",
        [
            lambda v, S: _heads_queries(_pm_allowed(v, S, "ge")),
            lambda v, S: _pm_allowed(v, S, "ge")[:, None, :],
        ],
    ),
    Mistake(
        "float_mask",
        NOT_BOOL.format(what="float numbers 1.0/0.0")
        + "nn.MultiheadAttention *adds* a float key_padding_mask to the scores, so 1.0 at the padding "
        "would raise those scores by 1 instead of blocking them. Return bool (the comparison itself).",
        [lambda v, S, _d=d: _pm_allowed(v, S, "ge").to(_d) for d in (torch.float32, torch.float64)],
    ),
    Mistake(
        "int_mask",
        NOT_BOOL.format(what="integers") + "return a bool mask (dtype=torch.bool or .bool()).",
        [lambda v, S, _d=d: _pm_allowed(v, S, "ge").to(_d) for d in (torch.int64, torch.int32, torch.uint8)],
    ),
    Mistake(
        "additive_mask",
        "you built the additive float form (0 for real keys, -inf at the padding). nn.MultiheadAttention "
        "accepts it too, but this exercise asks for the boolean form: True at the padding.",
        [
            lambda v, S, _f=f, _d=d: torch.zeros(len(v), S, dtype=_d).masked_fill(_pm_allowed(v, S, "ge"), _f)
            for f in FILLS
            for d in (torch.float32, torch.float64)
        ],
    ),
    Mistake(
        "repeated_over_heads",
        "your mask has more rows than there are sequences: key_padding_mask is (B, S), one row per "
        "sequence, and nn.MultiheadAttention repeats it over the heads itself (it rejects B*H rows). Only a per-head "
        "attn_mask of shape (B*H, L, S) would need repeat_interleave.",
        [
            lambda v, S, _h=h: _pm_allowed(v, S, "ge").repeat_interleave(_h, dim=0)
            for h in range(2, 9)
        ]
        + [lambda v, S, _h=h: _pm_allowed(v, S, "ge").repeat(_h, 1) for h in range(2, 9)],
    ),
    Mistake(
        "compared_directly",
        "a broadcasting error: torch.arange(S) has shape (S,) and valid_lens (B,), and comparing them "
        "directly lines up those two axes. Give each its own axis so that every length meets every "
        "position: torch.arange(S)[None, :] >= valid_lens[:, None] is (B, S).",
        error_contains=BROADCAST_ERROR,
    ),
]

TORCH_KEY_PADDING_MASK = Exercise(
    id="torch_key_padding_mask",
    title="A key_padding_mask for nn.MultiheadAttention",
    signature="torch_key_padding_mask(valid_lens, S) -> mask (B, S)",
    description=(
        "valid_lens (B,) integer lengths, S the number of keys -> the bool (B, S) mask that "
        "nn.MultiheadAttention takes as key_padding_mask: True where key j is padding (j >= valid_len), "
        "i.e. may NOT be attended to; the opposite of this course's convention."
    ),
    reference=lambda valid_lens, S: ~mf.padding_mask(valid_lens, S)[:, 0, 0, :],
    solution=sol.solution_torch_key_padding_mask,
    make_cases=_pm_cases,
    arg_names=PM_ARGS,
    mistakes=TKPM_MISTAKES,
    hints=[
        "nn.MultiheadAttention's boolean masks say where attention is blocked: True = padding. Key j of "
        "sequence b is padding when j >= valid_lens[b].",
        "Compare positions and lengths on different axes: torch.arange(S)[None, :] >= valid_lens[:, None] "
        "is already (B, S) and bool.",
        "No head or query axes and no repetition over heads: the module broadcasts a (B, S) "
        "key_padding_mask over them itself. (Equivalently: ~mhalib.padding_mask(valid_lens, S)[:, 0, 0, :].)",
    ],
    output_name="key_padding_mask",
)


ALL = [
    SOFTMAX_WEIGHTS,
    SOFT_LOOKUP,
    MASKED_SOFTMAX,
    SCALED_DOT_PRODUCT_ATTENTION,
    CAUSAL_MASK,
    SPLIT_HEADS,
    MERGE_HEADS,
    TRANSPOSE_QKV,
    TRANSPOSE_OUTPUT,
    REPEAT_VALID_LENS,
    MULTI_HEAD_ATTENTION,
    PADDING_MASK,
    TORCH_KEY_PADDING_MASK,
]
