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
from ._cases import FILLS, NEG_INF, arange as _arange, case as _case, lens_per_query as _lens_per_query, randn as _randn
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
    if valid_lens is not None:
        lens = valid_lens[:, None] if valid_lens.dim() == 1 else valid_lens  # (B, 1) or (B, L)
        allowed = torch.arange(S, device=query.device) < lens[:, None, :, None]  # (B, 1, 1|L, S)
        scores = scores.masked_fill(~allowed, float("-inf"))
    weights = torch.softmax(scores, dim=-1)  # (B, H, L, S)
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
    ],
    output_name="out",
)


ALL: list[Exercise] = [MULTI_HEAD_ATTENTION, PADDING_MASK, TORCH_KEY_PADDING_MASK]
