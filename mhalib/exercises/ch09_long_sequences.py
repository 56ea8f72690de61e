"""Exercises of chapter 9 (long sequences): the online-softmax merge step and the causal block test.

Each mistake is a small function computing what a learner who made that slip would get;
the checker compares the learner's answer with these to name the mistake.

Shapes: L query length, Sb keys in one block, Ev value features; ``...`` batch dimensions.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .. import tiled
from ._checker import Case, Exercise, Mistake, describe_value

NEG_INF = float("-inf")


def _case(name: str, names: list[str], *args) -> Case:
    return Case(name, tuple(args), ", ".join(f"{n} = {describe_value(a)}" for n, a in zip(names, args)))


# --- online_softmax_merge ---------------------------------------------------------------------

MERGE_ARGS = ["m", "l", "acc", "scores", "v"]


def solution_online_softmax_merge(m: Tensor, l: Tensor, acc: Tensor, scores: Tensor, v: Tensor):
    """One step of the online softmax: fold a new block of keys into the running state."""
    # m, l (..., L, 1): running max and sum; acc (..., L, Ev); scores (..., L, Sb); v (..., Sb, Ev)
    m_new = torch.maximum(m, scores.amax(dim=-1, keepdim=True))  # the max so far, carried
    alpha = torch.exp(m - m_new)  # what was summed under the old max is off by this factor
    p = torch.exp(scores - m_new)  # the new block's weights, under the same new max
    l_new = alpha * l + p.sum(dim=-1, keepdim=True)
    acc_new = alpha * acc + p @ v  # (..., L, Sb) @ (..., Sb, Ev) -> (..., L, Ev)
    return m_new, l_new, acc_new


def _merge(m, l, acc, scores, v, *, carry=True, alpha="diff", shift="new", rescale_l=True, rescale_acc=True):
    """The merge step with one slip switched on (the defaults give the right answer)."""
    block_max = scores.amax(dim=-1, keepdim=True)
    m_new = torch.maximum(m, block_max) if carry else block_max
    factor = {
        "diff": lambda: torch.exp(m - m_new),
        "new": lambda: torch.exp(-m_new),
        "new_pos": lambda: torch.exp(m_new),
        "flipped": lambda: torch.exp(m_new - m),
    }[alpha]()
    p = torch.exp(scores - (m_new if shift == "new" else block_max))
    l_new = (factor * l if rescale_l else l) + p.sum(dim=-1, keepdim=True)
    acc_new = (factor * acc if rescale_acc else acc) + p @ v
    return m_new, l_new, acc_new


def _state(scores: Tensor, v: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """The running state after one earlier block of keys (scores (..., L, Sb0), v (..., Sb0, Ev))."""
    m = scores.amax(dim=-1, keepdim=True)
    p = torch.exp(scores - m)
    return m, p.sum(dim=-1, keepdim=True), p @ v


def _merge_cases(gen: torch.Generator) -> list[Case]:
    r = lambda *s, scale=1.0, dtype=torch.float64: torch.randn(*s, generator=gen, dtype=dtype) * scale  # noqa: E731
    c = lambda name, *a: _case(name, MERGE_ARGS, *a)  # noqa: E731
    empty = (torch.full((2, 1), NEG_INF, dtype=torch.float64), torch.zeros(2, 1, dtype=torch.float64),
             torch.zeros(2, 2, dtype=torch.float64))
    grows = _state(r(2, 3) - 3.0, r(3, 2))  # earlier scores around -3, new ones around 0
    stays = _state(r(3, 4) + 3.0, r(4, 2))  # earlier scores around 3, new ones around 0
    mixed = _state(r(4, 3, scale=2.0), r(3, 3))
    big_old = _state(r(2, 3) + 1000.0, r(3, 2))  # scores around 1000 before, around 0 now
    batched = _state(r(2, 3, 4, 5, dtype=torch.float32), r(2, 3, 5, 2, dtype=torch.float32))
    return [
        c("the first block: m = -inf, l = 0, acc = 0", *empty, r(2, 3), r(3, 2)),
        c("the new block has larger scores (the max grows)", *grows, r(2, 2), r(2, 2)),
        c("the new block has smaller scores (the max stays)", *stays, r(3, 2), r(2, 2)),
        c("some rows' max grows, others' stays", *mixed, r(4, 5, scale=2.0), r(5, 3)),
        c("earlier scores around 1000, new ones around 0", *big_old, r(2, 4), r(4, 2)),
        c("batch dimensions (B, H, L, ...), float32", *batched,
          r(2, 3, 4, 3, dtype=torch.float32), r(2, 3, 3, 2, dtype=torch.float32)),
    ]


MERGE_MISTAKES = [
    Mistake(
        "sum_not_rescaled",
        "the running sum `l` was not rescaled: it was summed under the old maximum, so when the max "
        "grows it must be multiplied by exp(m - m_new) before the new block's sum is added.",
        [lambda *a: _merge(*a, rescale_l=False)],
    ),
    Mistake(
        "acc_not_rescaled",
        "the accumulator `acc` was not rescaled: its terms were weighted by exp(s - m) with the old "
        "maximum; multiply it by exp(m - m_new) before adding p @ v, as for `l`.",
        [lambda *a: _merge(*a, rescale_acc=False)],
    ),
    Mistake(
        "nothing_rescaled",
        "neither `l` nor `acc` was rescaled: both were summed under the old maximum, so both must be "
        "multiplied by alpha = exp(m - m_new) when the maximum changes.",
        [lambda *a: _merge(*a, rescale_l=False, rescale_acc=False)],
    ),
    Mistake(
        "rescaled_by_new_max",
        "you rescaled by the new maximum alone (exp(-m_new) or exp(m_new)): the factor that corrects "
        "terms computed as exp(s - m) into exp(s - m_new) is their ratio, alpha = exp(m - m_new), "
        "the difference of the two maxima.",
        [lambda *a, _k=k: _merge(*a, alpha=_k) for k in ("new", "new_pos")],
    ),
    Mistake(
        "flipped_difference",
        "the rescaling factor is upside down: exp(m_new - m) is >= 1 and blows up the old terms. "
        "The old terms must shrink when the maximum grows: alpha = exp(m - m_new) <= 1.",
        [lambda *a: _merge(*a, alpha="flipped")],
    ),
    Mistake(
        "max_not_carried",
        "the maximum was not carried over: m_new must be max(m, block max), the largest score seen so "
        "far. With the block's max alone, alpha = exp(m - m_new) can exceed 1 and overflow to inf "
        "(earlier scores around 1000), and the next step starts from the wrong max.",
        [lambda *a: _merge(*a, carry=False)],
    ),
    Mistake(
        "block_shift",
        "the new block's weights were shifted by its own maximum, exp(scores - block max), while the "
        "old terms were rescaled to m_new: every term of `l` and `acc` must be under the same shift, "
        "p = exp(scores - m_new).",
        [lambda *a: _merge(*a, shift="block")],
    ),
]

ONLINE_SOFTMAX_MERGE = Exercise(
    id="online_softmax_merge",
    title="The online-softmax merge step",
    signature="online_softmax_merge(m, l, acc, scores, v) -> (m_new, l_new, acc_new)",
    description=(
        "The running state after some blocks of keys: m (..., L, 1) the largest score so far, l (..., L, 1) "
        "the sum of exp(score - m), acc (..., L, Ev) the sum of exp(score - m) * value. Fold in one more "
        "block, scores (..., L, Sb) and values v (..., Sb, Ev), and return the new state. The first block "
        "starts from m = -inf, l = 0, acc = 0."
    ),
    reference=solution_online_softmax_merge,
    solution=solution_online_softmax_merge,
    make_cases=_merge_cases,
    arg_names=MERGE_ARGS,
    mistakes=MERGE_MISTAKES,
    hints=[
        "The new maximum is the larger of the old one and the block's: torch.maximum(m, "
        "scores.amax(dim=-1, keepdim=True)).",
        "l and acc hold terms exp(s - m). Under the new maximum they should be exp(s - m_new) = "
        "exp(s - m) * exp(m - m_new): multiply both by alpha = exp(m - m_new).",
        "The block's own terms are p = exp(scores - m_new); add p.sum(dim=-1, keepdim=True) to l "
        "and p @ v to acc.",
    ],
    output_name="m_new, l_new, acc_new",
)


# --- causal_blocks ----------------------------------------------------------------------------

BLOCK_ARGS = ["L", "S", "block_q", "block_k"]


def solution_causal_blocks(L: int, S: int, block_q: int, block_k: int):
    """Which tiles of top-left causal attention to visit, and which of those need a mask."""
    n_q, n_k = math.ceil(L / block_q), math.ceil(S / block_k)
    visit = torch.zeros(n_q, n_k, dtype=torch.bool)
    needs_mask = torch.zeros(n_q, n_k, dtype=torch.bool)
    for a in range(n_q):
        first_q, last_q = a * block_q, min((a + 1) * block_q, L) - 1  # positions, not block numbers
        for b in range(n_k):
            first_k, last_k = b * block_k, min((b + 1) * block_k, S) - 1
            visit[a, b] = first_k <= last_q  # some key of the tile is at or before some query
            needs_mask[a, b] = visit[a, b] and last_k > first_q  # some key is after some query
    return visit, needs_mask


def _blocks(L, S, bq, bk, *, kind=tiled.causal_block_kind, clip=True):
    n_q, n_k = math.ceil(L / bq), math.ceil(S / bk)
    kinds = [[kind(a * bq, min((a + 1) * bq, L) if clip else (a + 1) * bq, b * bk,
                   min((b + 1) * bk, S) if clip else (b + 1) * bk)
              for b in range(n_k)] for a in range(n_q)]
    visit = torch.tensor([[k != "skip" for k in row] for row in kinds], dtype=torch.bool).reshape(n_q, n_k)
    needs_mask = torch.tensor([[k == "diagonal" for k in row] for row in kinds], dtype=torch.bool).reshape(n_q, n_k)
    return visit, needs_mask


def _kind_from(skip, full):
    """A block test made of two predicates on (q_start, q_stop, k_start, k_stop)."""
    def kind(qs, qe, ks, ke):
        return "skip" if skip(qs, qe, ks, ke) else "full" if full(qs, qe, ks, ke) else "diagonal"
    return kind


def _right_skip(qs, qe, ks, ke):
    return ks > qe - 1


def _right_full(qs, qe, ks, ke):
    return ke - 1 <= qs


def _block_numbers(L, S, bq, bk):
    n_q, n_k = math.ceil(L / bq), math.ceil(S / bk)
    a = torch.arange(n_q)[:, None]
    b = torch.arange(n_k)[None, :]
    return b <= a, b == a


BLOCK_MISTAKES = [
    Mistake(
        "block_numbers",
        "you compared block numbers (key block b <= query block a) instead of positions: that is right "
        "only when block_q == block_k. Compare the first and last positions of the tile: query rows "
        "a*block_q .. min((a+1)*block_q, L) - 1, key columns b*block_k .. min((b+1)*block_k, S) - 1.",
        [_block_numbers],
    ),
    Mistake(
        "skip_off_by_one",
        "off by one in the skip test: a tile is skipped only when its first key comes after its last "
        "query, first_k > last_q, where last_q = min((a+1)*block_q, L) - 1 (the stop minus one).",
        [lambda *a: _blocks(*a, kind=_kind_from(lambda qs, qe, ks, ke: ks >= qe - 1, _right_full)),
         lambda *a: _blocks(*a, kind=_kind_from(lambda qs, qe, ks, ke: ks > qe, _right_full))],
    ),
    Mistake(
        "diagonal_off_by_one",
        "off by one in the diagonal test: a visited tile needs the mask when its last key comes after its "
        "first query, last_k > first_q, with last_k = min((b+1)*block_k, S) - 1. A tile whose last key "
        "equals its first query is fully allowed.",
        [lambda *a: _blocks(*a, kind=_kind_from(_right_skip, lambda qs, qe, ks, ke: ke <= qs)),
         lambda *a: _blocks(*a, kind=_kind_from(_right_skip, lambda qs, qe, ks, ke: ke - 1 < qs))],
    ),
    Mistake(
        "compared_ends",
        "you compared the ends of the two ranges (last key after last query): the diagonal crosses a tile "
        "as soon as its last key comes after its *first* query, so square tiles on the diagonal were left "
        "unmasked. Needs a mask: last_k > first_q.",
        [lambda *a: _blocks(*a, kind=_kind_from(_right_skip, lambda qs, qe, ks, ke: ke - 1 <= qe - 1))],
    ),
    Mistake(
        "below_diagonal",
        "you skipped the tiles *below* the diagonal (queries and keys swapped): causal query i may attend "
        "to keys j <= i, so it is the tiles above the diagonal, keys after every query, that are skipped.",
        [lambda *a: _blocks(*a, kind=_kind_from(lambda qs, qe, ks, ke: qs > ke - 1, lambda qs, qe, ks, ke: qe - 1 <= ks))],
    ),
    Mistake(
        "mask_everything",
        "every visited tile was marked as needing a mask: only the tiles the diagonal crosses need one; "
        "tiles whose last key is at or before their first query are fully allowed (no mask, no wasted pass).",
        [lambda *a: (_blocks(*a)[0], _blocks(*a)[0])],
    ),
    Mistake(
        "not_clipped",
        "the last tile was not clipped: its rows end at min((a+1)*block_q, L) and its columns at "
        "min((b+1)*block_k, S), not at (a+1)*block_q and (b+1)*block_k, when the block size does not "
        "divide the length.",
        [lambda *a: _blocks(*a, clip=False)],
    ),
]


def _block_cases(gen: torch.Generator) -> list[Case]:
    c = lambda name, *a: _case(name, BLOCK_ARGS, *a)  # noqa: E731
    return [
        c("square tiles that divide L = S", 8, 8, 4, 4),
        c("block_q != block_k", 8, 8, 2, 4),
        c("blocks that do not divide L = S", 10, 10, 4, 3),
        c("L < S", 5, 12, 4, 4),
        c("L > S", 12, 5, 3, 2),
        c("the last tile is partial", 9, 9, 4, 4),
        c("one tile", 7, 7, 7, 7),
        c("one query, one key", 1, 1, 1, 1),
        c("tall tiles", 12, 12, 6, 2),
    ]


CAUSAL_BLOCKS = Exercise(
    id="causal_blocks",
    title="The causal block test",
    signature="causal_blocks(L, S, block_q, block_k) -> (visit, needs_mask)",
    description=(
        "Queries 0..L-1 are cut into blocks of block_q, keys 0..S-1 into blocks of block_k (the last block "
        "may be shorter). Under top-left causal masking (query i may attend to key j when j <= i), return "
        "two bool tensors of shape (ceil(L/block_q), ceil(S/block_k)): visit[a, b] True when tile (a, b) "
        "has at least one allowed pair, needs_mask[a, b] True when it has both allowed and masked pairs."
    ),
    reference=lambda L, S, bq, bk: _blocks(L, S, bq, bk),
    solution=solution_causal_blocks,
    make_cases=_block_cases,
    arg_names=BLOCK_ARGS,
    mistakes=BLOCK_MISTAKES,
    hints=[
        "Work with positions: tile (a, b) holds queries first_q = a*block_q .. last_q = "
        "min((a+1)*block_q, L) - 1 and keys first_k = b*block_k .. last_k = min((b+1)*block_k, S) - 1.",
        "The most allowed pair of a tile is (last_q, first_k): visit it when first_k <= last_q.",
        "The least allowed pair is (first_q, last_k): the tile needs a mask when it is visited and "
        "last_k > first_q.",
    ],
    output_name="visit, needs_mask",
)


ALL = [ONLINE_SOFTMAX_MERGE, CAUSAL_BLOCKS]
