"""Chapter 3's exercises: ``split_heads``, ``merge_heads``, ``transpose_qkv``,
``transpose_output`` and ``repeat_valid_lens``.

Each mistake is a small function computing what a learner who made that slip would get;
the checker compares the learner's answer with these on the failing inputs to name the
mistake. The reference solutions (``EXERCISES[id].solution()``) are written to be read and
use plain torch only. (The tests write their own learner-style wrong answers independently.)

Shapes: B batch, H heads, L query length, S key length, D model width, Dh = D // H.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .. import functional as mf
from ._cases import arange as _arange
from ._cases import case as _case
from ._cases import randn as _randn
from ._checker import Case, Exercise, Mistake


# --- reference solutions (shown to learners) -------------------------------------------


def solution_split_heads(x: Tensor, num_heads: int) -> Tensor:
    """(B, L, D) -> (B, H, L, Dh); head h holds features h*Dh:(h+1)*Dh of every token."""
    B, L, D = x.shape
    x = x.reshape(B, L, num_heads, D // num_heads)  # (B, L, D) -> (B, L, H, Dh): cut each token
    return x.transpose(1, 2)  # (B, L, H, Dh) -> (B, H, L, Dh)


def solution_merge_heads(x: Tensor) -> Tensor:
    """(B, H, L, Dh) -> (B, L, H*Dh): the inverse of split_heads."""
    B, H, L, Dh = x.shape
    x = x.transpose(1, 2)  # (B, H, L, Dh) -> (B, L, H, Dh)
    return x.reshape(B, L, H * Dh)  # reshape (not view): the transposed tensor is not contiguous


def solution_transpose_qkv(x: Tensor, num_heads: int) -> Tensor:
    """(B, L, D) -> (B*H, L, Dh); row b*H + h holds head h of sequence b."""
    B, L, D = x.shape
    Dh = D // num_heads
    x = x.reshape(B, L, num_heads, Dh)  # (B, L, D) -> (B, L, H, Dh)
    x = x.transpose(1, 2)  # (B, L, H, Dh) -> (B, H, L, Dh)
    return x.reshape(B * num_heads, L, Dh)  # (B, H, L, Dh) -> (B*H, L, Dh)


def solution_transpose_output(x: Tensor, num_heads: int) -> Tensor:
    """(B*H, L, Dh) -> (B, L, H*Dh): the inverse of transpose_qkv."""
    BH, L, Dh = x.shape
    B = BH // num_heads
    x = x.reshape(B, num_heads, L, Dh)  # (B*H, L, Dh) -> (B, H, L, Dh)
    x = x.transpose(1, 2)  # (B, H, L, Dh) -> (B, L, H, Dh)
    return x.reshape(B, L, num_heads * Dh)  # (B, L, H, Dh) -> (B, L, H*Dh)


def solution_repeat_valid_lens(valid_lens: Tensor, num_heads: int) -> Tensor:
    """Lengths (B,) or (B, L) -> (B*H,) or (B*H, L), matching the rows of transpose_qkv."""
    # transpose_qkv puts the H heads of sequence b in the adjacent rows b*H, ..., b*H + H-1,
    # so each length is repeated in place: [l0, l1] -> [l0, l0, l1, l1] for H = 2.
    return torch.repeat_interleave(valid_lens, num_heads, dim=0)


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
    solution=solution_split_heads,
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
    solution=solution_merge_heads,
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
    solution=solution_transpose_qkv,
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
    solution=solution_transpose_output,
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
    solution=solution_repeat_valid_lens,
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


ALL: list[Exercise] = [SPLIT_HEADS, MERGE_HEADS, TRANSPOSE_QKV, TRANSPOSE_OUTPUT, REPEAT_VALID_LENS]
