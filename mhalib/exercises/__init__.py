"""Exercises of the course, checked automatically.

In a notebook::

    from mhalib.exercises import EXERCISES

    def my_causal_mask(L):
        ...

    EXERCISES["causal_mask"].check(my_causal_mask)   # feedback, once; returns a CheckResult
    EXERCISES["causal_mask"].hint()                  # one more hint per call
    EXERCISES["causal_mask"].solution()              # a reference solution to read

``check`` runs your function on small and edge-case inputs first, then random ones, from
its own fixed-seed generator (the notebook's global RNG is left alone), compares with the
tested ``mhalib`` functions and, when it recognises a common mistake, names it. A function
that still raises ``NotImplementedError`` counts as "not attempted".

Exercise ids and signatures::

    softmax_weights               (scores) -> weights, softmax over the last axis
    soft_lookup                   (q, k, v) -> (out, weights), no scale (chapter 1)
    masked_softmax                (scores, valid_lens) -> weights
    scaled_dot_product_attention  (q, k, v, mask=None) -> (out, weights)
    causal_mask                   (L) -> bool (L, L)
    split_heads                   (x, num_heads) -> (B, H, L, Dh)
    merge_heads                   (x) -> (B, L, H*Dh)
    transpose_qkv                 (x, num_heads) -> (B*H, L, Dh)
    transpose_output              (x, num_heads) -> (B, L, H*Dh)
    repeat_valid_lens             (valid_lens, num_heads) -> (B*H,) or (B*H, L)
    multi_head_attention          (query, key, value, W_q, W_k, W_v, W_o, num_heads, valid_lens=None) -> out
    padding_mask                  (valid_lens, S) -> bool (B, 1, 1, S), True = may attend
    torch_key_padding_mask        (valid_lens, S) -> bool (B, S), True = padding (nn.MultiheadAttention)
    shard_weights                 (W_q, W_k, W_v, W_o, b_o, num_heads, rank, world_size) -> rank's 5 tensors (chapter 10)
    combine_partials              (partials) -> (B, L, D), the sum of the ranks' outputs (chapter 10)
"""

from __future__ import annotations

from ._checker import Case, CheckResult, Exercise, Mistake
from .catalogue import ALL
from .ch10_parallel import ALL as CH10_ALL

#: Seconds a learner's function may run on one case before check() reports it as stuck;
#: set ``mhalib.exercises.TIMEOUT = 10`` for slow machines, or pass ``check(fn, timeout=10)``.
TIMEOUT = 5.0

#: Every exercise of the course, by id.
EXERCISES: dict[str, Exercise] = {exercise.id: exercise for exercise in [*ALL, *CH10_ALL]}

__all__ = ["EXERCISES", "TIMEOUT", "Case", "CheckResult", "Exercise", "Mistake", "check", "hint", "solution"]


def check(exercise_id: str, fn, **kwargs) -> CheckResult:
    """Shortcut for ``EXERCISES[exercise_id].check(fn)``."""
    return _exercise(exercise_id).check(fn, **kwargs)


def hint(exercise_id: str) -> None:
    """Shortcut for ``EXERCISES[exercise_id].hint()``."""
    _exercise(exercise_id).hint()


def solution(exercise_id: str) -> None:
    """Shortcut for ``EXERCISES[exercise_id].solution()``."""
    _exercise(exercise_id).solution()


def _exercise(exercise_id: str) -> Exercise:
    if exercise_id not in EXERCISES:
        raise KeyError(f"no exercise {exercise_id!r}; the exercises are: {', '.join(EXERCISES)}")
    return EXERCISES[exercise_id]
