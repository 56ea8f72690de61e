"""Chapter 10's exercises: learner-style wrong answers get their named mistake, right ones pass.

The answers below are written the way learners write them, independently of the
checker's catalogue (``mhalib/exercises/ch10_parallel.py``).
"""

from __future__ import annotations

import pytest
import torch

from mhalib.exercises import EXERCISES, CheckResult
from mhalib.exercises.ch10_parallel import ALL


def check(exercise_id: str, fn) -> CheckResult:
    return EXERCISES[exercise_id].check(fn, show=False)


def stub(*args):
    raise NotImplementedError("replace this line with your code")


# --- shard_weights ---------------------------------------------------------------------------


def shard_right_loop(W_q, W_k, W_v, W_o, b_o, num_heads, rank, world_size):
    Dh = W_q.shape[0] // num_heads
    heads = range(rank * num_heads // world_size, (rank + 1) * num_heads // world_size)
    idx = torch.cat([torch.arange(h * Dh, (h + 1) * Dh) for h in heads])
    bias = b_o if rank == 0 else b_o * 0
    return W_q[idx], W_k[idx], W_v[idx], W_o[:, idx], bias


def shard_right_chunk(W_q, W_k, W_v, W_o, b_o, num_heads, rank, world_size):
    q, k, v = (W.chunk(world_size, dim=0)[rank] for W in (W_q, W_k, W_v))
    o = W_o.chunk(world_size, dim=1)[rank]
    return q, k, v, o, torch.where(torch.tensor(rank == 0), b_o, torch.zeros_like(b_o))


def shard_swapped(W_q, W_k, W_v, W_o, b_o, num_heads, rank, world_size):
    n = W_q.shape[0] // world_size
    cols = slice(rank * n, rank * n + n)
    return W_q[:, cols], W_k[:, cols], W_v[:, cols], W_o[cols, :], b_o if rank == 0 else torch.zeros_like(b_o)


def shard_strided(W_q, W_k, W_v, W_o, b_o, num_heads, rank, world_size):
    bias = b_o if rank == 0 else torch.zeros_like(b_o)
    return W_q[rank::world_size], W_k[rank::world_size], W_v[rank::world_size], W_o[:, rank::world_size], bias


def shard_bias_everywhere(W_q, W_k, W_v, W_o, b_o, num_heads, rank, world_size):
    q, k, v = (W.chunk(world_size)[rank] for W in (W_q, W_k, W_v))
    return q, k, v, W_o.chunk(world_size, dim=1)[rank], b_o


def shard_bias_divided(W_q, W_k, W_v, W_o, b_o, num_heads, rank, world_size):
    q, k, v = (W.chunk(world_size)[rank] for W in (W_q, W_k, W_v))
    return q, k, v, W_o.chunk(world_size, dim=1)[rank], b_o / world_size


@pytest.mark.parametrize("fn", [shard_right_loop, shard_right_chunk])
def test_shard_weights_right_answers_pass(fn):
    assert check("shard_weights", fn).status == "passed"


@pytest.mark.parametrize(
    "fn, key",
    [
        (shard_swapped, "rows_columns_swapped"),
        (shard_strided, "heads_cut_inside"),
        (shard_bias_everywhere, "bias_on_every_rank"),
        (shard_bias_divided, "bias_divided"),
    ],
)
def test_shard_weights_mistakes_are_named(fn, key):
    result = check("shard_weights", fn)
    assert result.status == "failed"
    assert result.mistakes == (key,)


# --- combine_partials -----------------------------------------------------------------------------


def combine_loop(partials):
    out = torch.zeros_like(partials[0])
    for p in partials:
        out = out + p
    return out


def combine_sum_builtin(partials):
    return sum(partials[1:], partials[0])


def combine_cat(partials):
    return torch.cat(partials, dim=-1)


def combine_mean(partials):
    return sum(partials) / len(partials)


def combine_own_only(partials):
    return partials[0]


@pytest.mark.parametrize("fn", [combine_loop, combine_sum_builtin])
def test_combine_partials_right_answers_pass(fn):
    assert check("combine_partials", fn).status == "passed"


@pytest.mark.parametrize(
    "fn, key",
    [(combine_cat, "concatenated"), (combine_mean, "averaged"), (combine_own_only, "missing_all_reduce")],
)
def test_combine_partials_mistakes_are_named(fn, key):
    result = check("combine_partials", fn)
    assert result.status == "failed"
    assert result.mistakes == (key,)


@pytest.mark.parametrize("exercise", ALL, ids=[e.id for e in ALL])
def test_stub_is_not_attempted_and_solution_passes(exercise):
    assert check(exercise.id, stub).status == "not_attempted"
    assert check(exercise.id, exercise.solution_function).status == "passed"
