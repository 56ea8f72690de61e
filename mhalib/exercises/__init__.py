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

Each chapter's exercises live in their own module ``chNN_<topic>.py``, which defines
``ALL: list[Exercise]`` (cases, hints, known mistakes and the reference solutions shown to
learners); the helpers they share are in ``_cases.py``, the machinery in ``_checker.py``.
Exercise ids and signatures, by chapter::

    ch01_soft_lookup
    softmax_weights               (scores) -> weights, softmax over the last axis
    soft_lookup                   (q, k, v) -> (out, weights), no scale
    ch02_scaled_dot_product
    masked_softmax                (scores, valid_lens) -> weights; length 0 -> a row of zeros
    scaled_dot_product_attention  (q, k, v, mask=None) -> (out, weights)
    causal_mask                   (L) -> bool (L, L)
    ch03_splitting_heads
    split_heads                   (x, num_heads) -> (B, H, L, Dh)
    merge_heads                   (x) -> (B, L, H*Dh)
    transpose_qkv                 (x, num_heads) -> (B*H, L, Dh)
    transpose_output              (x, num_heads) -> (B, L, H*Dh)
    repeat_valid_lens             (valid_lens, num_heads) -> (B*H,) or (B*H, L)
    ch04_multi_head_attention
    multi_head_attention          (query, key, value, W_q, W_k, W_v, W_o, num_heads, valid_lens=None) -> out;
                                  a query of length 0 -> an output row of zeros
    padding_mask                  (valid_lens, S) -> bool (B, 1, 1, S), True = may attend
    torch_key_padding_mask        (valid_lens, S) -> bool (B, S), True = padding (nn.MultiheadAttention)
    ch06_positions
    sinusoidal_positions          (L, D, base=10000.0) -> (L, D) float32
    apply_rope                    (x, positions, base=10000.0) -> (..., L, Dh), half-split pairs
    pre_ln_block                  (x, block) -> (B, L, D), a pre-LN TransformerBlock's forward
    ch07_pretrained_encoder
    bert_attention                (state_dict, layer, num_heads, x, attention_mask) -> (out, weights)
    previous_token_score          (weights, attention_mask) -> (H,)
    mean_pool                     (hidden, attention_mask) -> (B, D), normalised
    ch08_decoding
    causal_mask_lower_right       (L, S) -> bool (L, S), query i sees keys 0..S-L+i
    repeat_kv                     (x, n_rep) -> (B, Hkv*n_rep, S, Dh), query head h uses KV head h // n_rep
    decode_step                   (x, past_key, past_value, W_q, W_k, W_v, W_o, num_heads, base) -> (out, key, value)
    ch09_long_sequences
    online_softmax_merge          (m, l, acc, scores, v) -> (m_new, l_new, acc_new)
    causal_blocks                 (L, S, block_q, block_k) -> (visit, needs_mask), bool tiles
    ch10_parallel
    shard_weights                 (W_q, W_k, W_v, W_o, b_o, num_heads, rank, world_size) -> rank's 5 tensors
    combine_partials              (partials) -> (B, L, D), the sum of the ranks' outputs
"""

from __future__ import annotations

from . import ch01_soft_lookup
from . import ch02_scaled_dot_product
from . import ch03_splitting_heads
from . import ch04_multi_head_attention
from . import ch06_positions
from . import ch07_pretrained_encoder
from . import ch08_decoding
from . import ch09_long_sequences
from . import ch10_parallel
from ._checker import Case, CheckResult, Exercise, Mistake

#: The chapters' exercise modules, in course order; each defines ``ALL: list[Exercise]``.
#: A new chapter imports its module above and adds it here (one line each).
_CHAPTERS = (
    ch01_soft_lookup,
    ch02_scaled_dot_product,
    ch03_splitting_heads,
    ch04_multi_head_attention,
    ch06_positions,
    ch07_pretrained_encoder,
    ch08_decoding,
    ch09_long_sequences,
    ch10_parallel,
)

#: Seconds a learner's function may run on one case before check() reports it as stuck;
#: set ``mhalib.exercises.TIMEOUT = 10`` for slow machines, or pass ``check(fn, timeout=10)``.
TIMEOUT = 5.0

#: Every exercise of the course, by id.
EXERCISES: dict[str, Exercise] = {exercise.id: exercise for chapter in _CHAPTERS for exercise in chapter.ALL}

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
