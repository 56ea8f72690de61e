"""Chapter 9's exercises: learner-style wrong answers are named, right ones written differently pass.

The wrong answers are written the way learners write them, independently of the checker's
catalogue (``mhalib/exercises/ch09_long_sequences.py``).
"""

from __future__ import annotations

import math

import pytest
import torch

import mhalib
from mhalib.exercises import EXERCISES, CheckResult
from mhalib.exercises import ch09_long_sequences as ch09


def check(exercise_id: str, fn) -> CheckResult:
    return EXERCISES[exercise_id].check(fn, show=False)


def stub(*args):
    raise NotImplementedError("replace this line with your code")


# --- online_softmax_merge: wrong ----------------------------------------------------------------


def merge_forgot_l(m, l, acc, scores, v):
    m_new = torch.max(m, scores.max(dim=-1, keepdim=True).values)
    a = torch.exp(m - m_new)
    p = torch.exp(scores - m_new)
    return m_new, l + p.sum(-1, keepdim=True), a * acc + p @ v


def merge_forgot_acc(m, l, acc, scores, v):
    m_new = torch.maximum(m, scores.amax(-1, keepdim=True))
    p = (scores - m_new).exp()
    return m_new, l * (m - m_new).exp() + p.sum(-1, keepdim=True), acc + torch.matmul(p, v)


def merge_forgot_both(m, l, acc, scores, v):
    m_new = torch.maximum(m, scores.amax(-1, keepdim=True))
    p = torch.exp(scores - m_new)
    return m_new, l + p.sum(-1, keepdim=True), acc + p @ v


def merge_exp_minus_new_max(m, l, acc, scores, v):
    m_new = torch.maximum(m, scores.amax(-1, keepdim=True))
    scale = torch.exp(-m_new)  # "rescale by the new max"
    p = torch.exp(scores - m_new)
    return m_new, l * scale + p.sum(-1, keepdim=True), acc * scale + p @ v


def merge_flipped(m, l, acc, scores, v):
    m_new = torch.maximum(m, scores.amax(-1, keepdim=True))
    alpha = torch.exp(m_new - m)
    p = torch.exp(scores - m_new)
    return m_new, alpha * l + p.sum(-1, keepdim=True), alpha * acc + p @ v


def merge_block_max_only(m, l, acc, scores, v):
    m_new = scores.amax(-1, keepdim=True)  # forgot the old max
    alpha = torch.exp(m - m_new)
    p = torch.exp(scores - m_new)
    return m_new, alpha * l + p.sum(-1, keepdim=True), alpha * acc + p @ v


def merge_own_shift(m, l, acc, scores, v):
    block_max = scores.amax(-1, keepdim=True)
    m_new = torch.maximum(m, block_max)
    alpha = torch.exp(m - m_new)
    p = torch.exp(scores - block_max)
    return m_new, alpha * l + p.sum(-1, keepdim=True), alpha * acc + p @ v


# --- online_softmax_merge: right, written differently -----------------------------------------


def merge_right_where(m, l, acc, scores, v):
    block_max = scores.max(dim=-1, keepdim=True).values
    m_new = torch.where(block_max > m, block_max, m)
    alpha = (m - m_new).exp()
    p = (scores - m_new).exp()
    return m_new, l * alpha + p.sum(-1, keepdim=True), acc * alpha + torch.einsum("...ls,...se->...le", p, v)


def merge_right_logsumexp(m, l, acc, scores, v):
    # Merge two (max, sum) pairs by rescaling both sides to the common max.
    m_new = torch.cat([m, scores], dim=-1).amax(-1, keepdim=True)
    p = torch.exp(scores - m_new)
    old = torch.exp(m - m_new)
    return m_new, old * l + p.sum(-1, keepdim=True), old * acc + p @ v


def merge_right_loop_rows(m, l, acc, scores, v):
    m_new, l_new, acc_new = m.clone(), l.clone(), acc.clone()
    rows = scores.reshape(-1, scores.shape[-1])
    m_rows, l_rows, acc_rows = m_new.reshape(-1, 1), l_new.reshape(-1, 1), acc_new.reshape(-1, acc.shape[-1])
    vs = v.expand(*scores.shape[:-2], *v.shape[-2:]).reshape(-1, *v.shape[-2:])
    per_batch = scores.shape[-2]
    for r in range(rows.shape[0]):
        new = max(m_rows[r, 0].item(), rows[r].max().item())
        alpha = math.exp(m_rows[r, 0].item() - new)
        p = torch.exp(rows[r] - new)
        l_rows[r, 0] = alpha * l_rows[r, 0] + p.sum()
        acc_rows[r] = alpha * acc_rows[r] + p @ vs[r // per_batch]
        m_rows[r, 0] = new
    return m_new, l_new, acc_new


# --- causal_blocks: wrong ----------------------------------------------------------------------


def blocks_by_number(L, S, block_q, block_k):
    nq, nk = -(-L // block_q), -(-S // block_k)
    visit = torch.tensor([[b <= a for b in range(nk)] for a in range(nq)])
    diag = torch.tensor([[b == a for b in range(nk)] for a in range(nq)])
    return visit, diag


def _loop(L, S, bq, bk, visit_fn, mask_fn, clip=True):
    nq, nk = math.ceil(L / bq), math.ceil(S / bk)
    visit = torch.zeros(nq, nk, dtype=torch.bool)
    needs = torch.zeros(nq, nk, dtype=torch.bool)
    for a in range(nq):
        q0, q1 = a * bq, (min((a + 1) * bq, L) if clip else (a + 1) * bq)
        for b in range(nk):
            k0, k1 = b * bk, (min((b + 1) * bk, S) if clip else (b + 1) * bk)
            visit[a, b] = visit_fn(q0, q1, k0, k1)
            needs[a, b] = bool(visit[a, b]) and mask_fn(q0, q1, k0, k1)
    return visit, needs


def blocks_skip_strict(L, S, bq, bk):
    # skips the tile whose first key is the last query: "k0 < q1 - 1"
    return _loop(L, S, bq, bk, lambda q0, q1, k0, k1: k0 < q1 - 1, lambda q0, q1, k0, k1: k1 - 1 > q0)


def blocks_skip_loose(L, S, bq, bk):
    # visits one tile too many: k0 <= q1 (q1 is one past the last query)
    return _loop(L, S, bq, bk, lambda q0, q1, k0, k1: k0 <= q1, lambda q0, q1, k0, k1: k1 - 1 > q0)


def blocks_diag_uses_stop(L, S, bq, bk):
    # k1 > q0 forgets that k1 is one past the last key
    return _loop(L, S, bq, bk, lambda q0, q1, k0, k1: k0 < q1, lambda q0, q1, k0, k1: k1 > q0)


def blocks_compare_ends(L, S, bq, bk):
    return _loop(L, S, bq, bk, lambda q0, q1, k0, k1: k0 < q1, lambda q0, q1, k0, k1: k1 > q1)


def blocks_swapped(L, S, bq, bk):
    # keys must not come *before* the queries: the lower triangle skipped
    return _loop(L, S, bq, bk, lambda q0, q1, k0, k1: k1 > q0, lambda q0, q1, k0, k1: k0 < q1 - 1)


def blocks_mask_all(L, S, bq, bk):
    return _loop(L, S, bq, bk, lambda q0, q1, k0, k1: k0 < q1, lambda q0, q1, k0, k1: True)


def blocks_unclipped(L, S, bq, bk):
    return _loop(L, S, bq, bk, lambda q0, q1, k0, k1: k0 < q1, lambda q0, q1, k0, k1: k1 - 1 > q0, clip=False)


# --- causal_blocks: right, written differently ---------------------------------------------------


def blocks_right_from_mask(L, S, bq, bk):
    mask = mhalib.causal_mask(L, S)
    nq, nk = math.ceil(L / bq), math.ceil(S / bk)
    visit = torch.zeros(nq, nk, dtype=torch.bool)
    needs = torch.zeros(nq, nk, dtype=torch.bool)
    for a in range(nq):
        for b in range(nk):
            tile = mask[a * bq:(a + 1) * bq, b * bk:(b + 1) * bk]
            visit[a, b] = tile.any()
            needs[a, b] = tile.any() and not tile.all()
    return visit, needs


def blocks_right_vectorised(L, S, bq, bk):
    first_q = torch.arange(0, L, bq)
    last_q = torch.clamp(first_q + bq, max=L) - 1
    first_k = torch.arange(0, S, bk)
    last_k = torch.clamp(first_k + bk, max=S) - 1
    visit = first_k[None, :] <= last_q[:, None]
    return visit, visit & (last_k[None, :] > first_q[:, None])


def blocks_right_library(L, S, bq, bk):
    kinds = [[mhalib.causal_block_kind(q0, min(q0 + bq, L), k0, min(k0 + bk, S)) for k0 in range(0, S, bk)]
             for q0 in range(0, L, bq)]
    visit = torch.tensor([[k != "skip" for k in row] for row in kinds])
    return visit, torch.tensor([[k == "diagonal" for k in row] for row in kinds])


WRONG = {
    "online_softmax_merge": [
        (merge_forgot_l, "the running sum `l` was not rescaled"),
        (merge_forgot_acc, "the accumulator `acc` was not rescaled"),
        (merge_forgot_both, "neither `l` nor `acc` was rescaled"),
        (merge_exp_minus_new_max, "you rescaled by the new maximum alone"),
        (merge_flipped, "the rescaling factor is upside down"),
        (merge_block_max_only, "the maximum was not carried over"),
        (merge_own_shift, "shifted by its own maximum"),
    ],
    "causal_blocks": [
        (blocks_by_number, "you compared block numbers"),
        (blocks_skip_strict, "off by one in the skip test"),
        (blocks_skip_loose, "off by one in the skip test"),
        (blocks_diag_uses_stop, "off by one in the diagonal test"),
        (blocks_compare_ends, "you compared the ends of the two ranges"),
        (blocks_swapped, "you skipped the tiles *below* the diagonal"),
        (blocks_mask_all, "every visited tile was marked as needing a mask"),
        (blocks_unclipped, "the last tile was not clipped"),
    ],
}

RIGHT = {
    "online_softmax_merge": [merge_right_where, merge_right_logsumexp, merge_right_loop_rows],
    "causal_blocks": [blocks_right_from_mask, blocks_right_vectorised, blocks_right_library],
}


@pytest.mark.parametrize("exercise_id", sorted(WRONG))
def test_registered_reference_and_solution_pass(exercise_id):
    exercise = EXERCISES[exercise_id]
    assert exercise in ch09.ALL
    for fn in (exercise.reference, exercise.solution_function):
        result = check(exercise_id, fn)
        assert result.status == "passed", result.message


@pytest.mark.parametrize("exercise_id", sorted(WRONG))
def test_stub_is_not_attempted(exercise_id):
    assert check(exercise_id, stub).status == "not_attempted"


@pytest.mark.parametrize(
    "exercise_id, fn, phrase",
    [pytest.param(e, fn, phrase, id=f"{e}-{fn.__name__}") for e, entries in WRONG.items() for fn, phrase in entries],
)
def test_wrong_answer_is_named(exercise_id, fn, phrase):
    result = check(exercise_id, fn)
    assert result.status == "failed", result.message
    assert "Likely mistake:" in result.message and phrase in result.message, result.message


@pytest.mark.parametrize(
    "exercise_id, fn", [pytest.param(e, fn, id=f"{e}-{fn.__name__}") for e, fns in RIGHT.items() for fn in fns]
)
def test_right_answer_written_differently_passes(exercise_id, fn):
    result = check(exercise_id, fn)
    assert result.status == "passed", result.message


def test_catalogue_variants_are_recognised_as_themselves():
    for exercise in ch09.ALL:
        for mistake in exercise.mistakes:
            for variant in mistake.variants:
                assert mistake.key in exercise.check(variant, show=False).mistakes, (exercise.id, mistake.key)


def test_block_reference_agrees_with_the_tiled_loop():
    # Keys in no visited tile are never read by tiled_attention: they can be NaN.
    L, S, bq, bk = 10, 13, 4, 3
    visit, needs_mask = EXERCISES["causal_blocks"].reference(L, S, bq, bk)
    assert visit.shape == (3, 5) and bool(needs_mask.any()) and bool((visit & ~needs_mask).any())
    first_unvisited = int(visit.any(dim=0).nonzero().max()) + 1  # key blocks no query block visits
    assert first_unvisited == 4
    gen = torch.Generator().manual_seed(0)
    q = torch.randn(L, 4, generator=gen, dtype=torch.float64)
    k, v = (torch.randn(S, 4, generator=gen, dtype=torch.float64) for _ in range(2))
    full = mhalib.tiled_attention(q, k, v, is_causal=True, block_q=bq, block_k=bk)
    k_nan, v_nan = k.clone(), v.clone()
    k_nan[first_unvisited * bk:], v_nan[first_unvisited * bk:] = float("nan"), float("nan")
    torch.testing.assert_close(mhalib.tiled_attention(q, k_nan, v_nan, is_causal=True, block_q=bq, block_k=bk), full)


def test_merge_steps_rebuild_the_softmax_weighted_sum():
    # Folding three blocks with the reference and dividing by l gives softmax(scores) @ v.
    gen = torch.Generator().manual_seed(1)
    scores = torch.randn(3, 10, generator=gen, dtype=torch.float64) * 3
    v = torch.randn(10, 2, generator=gen, dtype=torch.float64)
    m = torch.full((3, 1), float("-inf"), dtype=torch.float64)
    l, acc = torch.zeros(3, 1, dtype=torch.float64), torch.zeros(3, 2, dtype=torch.float64)
    for cut in ((0, 4), (4, 7), (7, 10)):
        m, l, acc = ch09.solution_online_softmax_merge(m, l, acc, scores[:, slice(*cut)], v[slice(*cut)])
    torch.testing.assert_close(acc / l, torch.softmax(scores, dim=-1) @ v, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(m, scores.amax(-1, keepdim=True))
