"""Chapter 4's exercises: ``padding_mask``, ``torch_key_padding_mask``, ``multi_head_attention``.

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
from ._checker import Case, Exercise, Mistake, describe_value


# --- reference solutions (shown to learners) -------------------------------------------


def solution_padding_mask(valid_lens: Tensor, S: int) -> Tensor:
    """(B,) lengths -> (B, 1, 1, S) bool, True where key j may be attended to (j < valid_len)."""
    positions = torch.arange(S, device=valid_lens.device)  # (S,)
    allowed = positions[None, :] < valid_lens[:, None]  # (1, S) vs (B, 1) -> (B, S)
    # Broadcasting lines up the last axes: add the head and query axes so that the mask
    # broadcasts against the scores (B, H, L, S) as (B, 1, 1, S).
    return allowed[:, None, None, :]  # (B, S) -> (B, 1, 1, S)


def solution_torch_key_padding_mask(valid_lens: Tensor, S: int) -> Tensor:
    """(B,) lengths -> (B, S) bool for nn.MultiheadAttention: True at padding (j >= valid_len)."""
    positions = torch.arange(S, device=valid_lens.device)  # (S,)
    # PyTorch's module: True = may NOT attend, the negation of the course's mask (< becomes >=).
    # One row per sequence; the module broadcasts it over the heads and queries itself.
    return positions[None, :] >= valid_lens[:, None]  # (B, S)


def solution_multi_head_attention(query, key, value, W_q, W_k, W_v, W_o, num_heads, valid_lens=None):
    """Multi-head attention without biases; each W is (out, in) like nn.Linear.weight."""
    B, L, D = query.shape
    S = key.shape[1]
    Dh = D // num_heads
    q = (query @ W_q.T).reshape(B, L, num_heads, Dh).transpose(1, 2)  # (B, L, D) -> (B, H, L, Dh)
    k = (key @ W_k.T).reshape(B, S, num_heads, Dh).transpose(1, 2)  # (B, S, D) -> (B, H, S, Dh)
    v = (value @ W_v.T).reshape(B, S, num_heads, Dh).transpose(1, 2)  # (B, S, D) -> (B, H, S, Dh)
    scores = q @ k.transpose(-2, -1) / math.sqrt(Dh)  # (B, H, L, S): each head scales by its own width
    if valid_lens is None:
        weights = torch.softmax(scores, dim=-1)  # (B, H, L, S)
    else:
        lens = valid_lens[:, None] if valid_lens.dim() == 1 else valid_lens  # (B, 1) or (B, L)
        allowed = torch.arange(S, device=query.device) < lens[:, None, :, None]  # (B, 1, 1|L, S)
        scores = scores.masked_fill(~allowed, float("-inf"))
        # A query with length 0 has only -inf scores (softmax: 0/0 = NaN): give it finite
        # scores, then zero weights, so that it attends to nothing and its output is 0.
        empty = ~allowed.any(dim=-1, keepdim=True)  # (B, 1, 1|L, 1)
        weights = torch.softmax(scores.masked_fill(empty, 0.0), dim=-1).masked_fill(~allowed, 0.0)
    out = (weights @ v).transpose(1, 2).reshape(B, L, D)  # (B, H, L, Dh) -> (B, L, H, Dh) -> (B, L, D)
    return out @ W_o.T  # (B, L, D)


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
    solution=solution_padding_mask,
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
    solution=solution_torch_key_padding_mask,
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

# --- multi_head_attention -------------------------------------------------------------------------

MHA_ARGS = ["query", "key", "value", "W_q", "W_k", "W_v", "W_o", "num_heads", "valid_lens"]


def _mha_case(gen, name, B, L, S, D, H, valid_lens, dtype=torch.float64) -> Case:
    r = lambda *s: _randn(gen, *s, dtype=dtype)  # noqa: E731
    weights = [r(D, D) * (1.5 / math.sqrt(D)) for _ in range(4)]
    args = (r(B, L, D), r(B, S, D), r(B, S, D), *weights, H, valid_lens)
    return Case(name, args, _mha_about(B, L, S, D, H, dtype, valid_lens))


def _mha_about(B, L, S, D, H, dtype, valid_lens) -> str:
    return f"B={B}, L={L}, S={S}, D={D}, num_heads={H}, {dtype}, valid_lens = {describe_value(valid_lens)}"


def _mha_large_padded_score_case() -> Case:
    """Identity projections, two heads, float32: the padded key scores about 200 above the real ones."""
    eye = torch.eye(4)
    query = torch.tensor([[[10.0, 10.0, 10.0, 10.0], [10.0, 5.0, 5.0, 10.0]]])
    key = torch.tensor([[[1.0, 0.0, 0.0, 1.0], [0.0, 1.0, 1.0, 0.0], [15.0, 15.0, 15.0, 15.0]]])
    value = torch.tensor([[[1.0, 0.0, 1.0, 0.0], [0.0, 1.0, 0.0, 1.0], [5.0, 5.0, 5.0, 5.0]]])
    valid_lens = torch.tensor([2])
    args = (query, key, value, eye, eye.clone(), eye.clone(), eye.clone(), 2, valid_lens)
    return Case("float32, a padded key with a much larger score", args,
                _mha_about(1, 2, 3, 4, 2, torch.float32, valid_lens) + ", identity W")


def _mha_cases(gen: torch.Generator) -> list[Case]:
    return [
        _mha_case(gen, "no lengths", 1, 2, 3, 4, 2, None),
        _mha_case(gen, "(B,) lengths", 2, 3, 4, 6, 3, torch.tensor([2, 4])),
        _mha_case(gen, "(B, L) lengths", 2, 3, 3, 4, 2, torch.tensor([[1, 3, 2], [3, 1, 1]])),
        _mha_case(gen, "one head", 2, 2, 3, 3, 1, torch.tensor([3, 1])),
        _mha_case(gen, "four heads", 2, 4, 5, 8, 4, torch.tensor([5, 2])),
        _mha_case(gen, "float32 input", 2, 3, 4, 4, 2, torch.tensor([4, 1]), dtype=torch.float32),
        _mha_case(gen, "a sequence of length 0", 2, 2, 3, 4, 2, torch.tensor([0, 2])),
        _mha_case(gen, "(B, L) lengths, a query of length 0", 2, 3, 4, 4, 2, torch.tensor([[2, 0, 4], [1, 3, 0]])),
        _mha_large_padded_score_case(),
    ]


def _mha_reference(query, key, value, W_q, W_k, W_v, W_o, num_heads, valid_lens=None):
    S = key.shape[1]
    q = mf.split_heads(query @ W_q.T, num_heads)  # (B, H, L, Dh)
    k = mf.split_heads(key @ W_k.T, num_heads)  # (B, H, S, Dh)
    v = mf.split_heads(value @ W_v.T, num_heads)  # (B, H, S, Dh)
    mask = None if valid_lens is None else mf.padding_mask(valid_lens, S)  # (B, 1, 1|L, S)
    out, _ = mf.scaled_dot_product_attention(q, k, v, mask)  # (B, H, L, Dh); empty rows -> 0
    return mf.merge_heads(out) @ W_o.T  # (B, L, D)


def _mha_variant(
    query, key, value, W_q, W_k, W_v, W_o, H, valid_lens=None, *,
    w_t=False, wo_t=False, use_wo=True, kv="right", scale="dh", heads="split", lens="interleave",
    mask_layout="right", **slip,
):
    """A multi-head attention with one slip; ``slip``: the keywords of ``masked_weights``
    (mode, fill, zero_empty, dim), the masking slips of the single-head exercises."""
    proj = (lambda x, W: x @ W) if w_t else (lambda x, W: x @ W.T)
    B, L, D = query.shape
    S = key.shape[1]
    Dh = D // H
    if kv in ("inputs", "both"):
        key, value = value, key
    if kv in ("weights", "both"):
        W_k, W_v = W_v, W_k

    def split(x):
        n = x.shape[1]
        if heads == "interleaved":
            return x.reshape(B * H, n, Dh)
        return x.reshape(B, n, H, Dh).transpose(1, 2).reshape(B * H, n, Dh)  # row b*H + h

    q, k, v = split(proj(query, W_q)), split(proj(key, W_k)), split(proj(value, W_v))
    divisor = {"dh": math.sqrt(Dh), "d": math.sqrt(D), "none": 1.0, "after": 1.0, "sqrt_l": math.sqrt(L)}[scale]
    scores = q @ k.transpose(-2, -1) / divisor  # (B*H, L, S)
    allowed = None
    if valid_lens is not None:
        per_query = _lens_per_query(valid_lens, L)  # (B, L)
        rows = per_query.repeat(H, 1) if lens == "repeat" else per_query.repeat_interleave(H, dim=0)  # (B*H, L)
        allowed = torch.arange(S) < rows[:, :, None]  # (B*H, L, S)
        if mask_layout == "transposed" and valid_lens.dim() == 2:  # built as (B, S, L): L == S only
            if L != S:
                raise ValueError("a transposed mask broadcasts only when L == S")
            allowed = torch.arange(S)[:, None] < rows[:, None, :]  # (B*H, S, L)
    weights = masked_weights(scores, allowed, **slip)
    if scale == "after":
        weights = weights / math.sqrt(Dh)
    out = weights @ v  # (B*H, L, Dh)
    if heads == "interleaved":
        out = out.reshape(B, L, D)
    else:
        out = out.reshape(B, H, L, Dh).transpose(1, 2).reshape(B, L, D)
    if not use_wo:
        return out
    return out @ W_o if (w_t or wo_t) else out @ W_o.T


def _mha_variants(**kw):
    """The slip made with an -inf fill, a -1e9 fill, or with empty rows handled properly."""
    return [lambda *a, _f=f: _mha_variant(*a, fill=_f, **kw) for f in FILLS] + [
        lambda *a: _mha_variant(*a, zero_empty=True, **kw)
    ]


MHA_MISTAKES = [
    Mistake(
        "weights_transposed",
        "you applied x @ W: nn.Linear stores its weight as (out, in), so the projection is x @ W.T.",
        _mha_variants(w_t=True),
    ),
    Mistake(
        "only_wo_untransposed",
        "the output projection is applied as out @ W_o: like W_q, W_k and W_v, W_o is stored as "
        "(out, in) (nn.Linear.weight), so finish with out @ W_o.T.",
        _mha_variants(wo_t=True),
    ),
    Mistake(
        "no_output_projection",
        "the output projection is missing: after merging the heads, multiply by W_o.T.",
        _mha_variants(use_wo=False),
    ),
    Mistake(
        "keys_values_swapped",
        "keys and values are swapped: the scores compare the queries with the keys, key @ W_k.T, and "
        "the weights average the values, value @ W_v.T (check which input goes with which weight).",
        [v for how in ("inputs", "weights", "both") for v in _mha_variants(kv=how)],
    ),
    Mistake(
        "scaled_by_sqrt_D",
        "you scaled by sqrt(D), the model width; each head's scores are dot products of Dh-sized vectors, "
        "so scale by sqrt(Dh) = sqrt(D // num_heads).",
        _mha_variants(scale="d"),
    ),
    Mistake(
        "scaled_by_sqrt_L",
        scale_by_length_message("Dh", "Divide by math.sqrt(Dh), Dh = D // num_heads."),
        _mha_variants(scale="sqrt_l"),
    ),
    Mistake(
        "scale_after_softmax",
        "you applied the scale after the softmax (to the weights or to the output): 1/sqrt(Dh) must "
        "divide the scores before the softmax, where it makes the weights less sharp; after it, the "
        "weights no longer sum to 1. Use softmax(q @ k^T / sqrt(Dh)).",
        _mha_variants(scale="after"),
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
        [lambda *a: _mha_variant(*a, mode="ignored")],
    ),
    Mistake(
        "inverted_mask",
        INVERTED_LENGTHS,
        _mha_variants(mode="inverted"),
    ),
    Mistake(
        "mask_transposed",
        "your (B, L) mask is transposed: with one length per query, query i's row compares the key "
        "positions j with valid_lens[b, i], a mask of shape (B, 1, L, S): "
        "torch.arange(S) < valid_lens[:, None, :, None]. Yours has the queries on the key axis "
        "(B, 1, S, L); it broadcasts only because L == S here.",
        _mha_variants(mask_layout="transposed"),
    ),
    Mistake(
        "zero_fill",
        ZERO_FILL.format(what="padded") + ".",
        [lambda *a, _z=z: _mha_variant(*a, mode="zero", zero_empty=_z) for z in (False, True)],
    ),
    Mistake(
        "masked_after_softmax",
        MASKED_AFTER_SOFTMAX.format(what="padded keys'") + ".",
        [lambda *a: _mha_variant(*a, mode="after")],
    ),
    Mistake(
        "max_over_padding",
        max_over_all_message("padded"),
        [lambda *a, _m=m: _mha_variant(*a, mode=_m) for m in ("max_all", "max_all_eps")],
    ),
    Mistake(
        "uniform_empty_rows",
        UNIFORM_EMPTY_ROWS + "; such a query's output row is then 0.",
        [lambda *a, _f=f: _mha_variant(*a, fill=_f) for f in (-1e9, -1e6, -1e4)],
    ),
    Mistake(
        "nan_empty_rows",
        NAN_EMPTY_ROWS + "; such a query's output row is then 0.",
        [lambda *a: _mha_variant(*a, fill=NEG_INF)],
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
        "are padding, and a query with length 0 (no key to attend to) gets zero weights, so an output "
        "row of zeros, as in masked_softmax. Returns out (B, L, D)."
    ),
    reference=_mha_reference,
    solution=solution_multi_head_attention,
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
        "A query with length 0 has every score at -inf and its softmax is NaN: as in masked_softmax, give "
        "such rows finite scores before the softmax and zero weights after (or use mhalib.masked_softmax "
        "on the folded (B*H, L, S) scores).",
    ],
    output_name="out",
)


ALL: list[Exercise] = [MULTI_HEAD_ATTENTION, PADDING_MASK, TORCH_KEY_PADDING_MASK]
