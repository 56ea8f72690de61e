"""Chapter 8's exercises: learner-style wrong answers get their named mistake, right ones pass.

The answers below are written the way learners write them, independently of the
checker's catalogue (``mhalib/exercises/ch08_decoding.py``).
"""

from __future__ import annotations

import math

import pytest
import torch

import mhalib
from mhalib.exercises import EXERCISES, CheckResult
from mhalib.exercises.ch08_decoding import ALL


def check(exercise_id: str, fn) -> CheckResult:
    return EXERCISES[exercise_id].check(fn, show=False)


def stub(*args):
    raise NotImplementedError("replace this line with your code")


# --- causal_mask_lower_right ------------------------------------------------------------------


def mask_loops(L, S):
    m = torch.zeros(L, S, dtype=torch.bool)
    for i in range(L):
        for j in range(S):
            m[i, j] = j <= S - L + i
    return m


def mask_last_rows_of_square(L, S):
    return torch.tril(torch.ones(S, S)).bool()[S - L :]


def mask_triu_complement(L, S):
    return ~torch.ones(L, S, dtype=torch.bool).triu(S - L + 1)


def mask_pytorch_is_causal(L, S):  # copied from the docs of scaled_dot_product_attention
    return torch.ones(L, S, dtype=torch.bool).tril(diagonal=0)


def mask_sees_strictly_past(L, S):
    return torch.arange(S)[None] < torch.arange(S - L, S)[:, None]


def mask_one_ahead(L, S):
    return torch.arange(S)[None] <= torch.arange(S - L, S)[:, None] + 1


def mask_true_is_blocked(L, S):
    return torch.arange(S)[None] > torch.arange(S - L, S)[:, None]


# --- repeat_kv --------------------------------------------------------------------------------


def repeat_kv_interleave(x, n_rep):
    return torch.repeat_interleave(x, n_rep, dim=1)


def repeat_kv_stack(x, n_rep):
    return torch.stack([x[:, h] for h in range(x.shape[1]) for _ in range(n_rep)], dim=1)


def repeat_kv_index(x, n_rep):
    return x[:, torch.arange(x.shape[1] * n_rep) // n_rep]


def repeat_kv_tile(x, n_rep):
    return x.repeat(1, n_rep, 1, 1)


def repeat_kv_cat(x, n_rep):
    return torch.cat([x] * n_rep, dim=1)


def repeat_kv_tokens(x, n_rep):
    return x.repeat_interleave(n_rep, dim=2)


def repeat_kv_batch(x, n_rep):
    return x.repeat_interleave(n_rep, dim=0)


# --- decode_step --------------------------------------------------------------------------------


def _heads(t, n):
    B, L, _ = t.shape
    return t.view(B, L, n, -1).transpose(1, 2)


def _rope(t, pos, base):
    # a learner's own half-split RoPE
    Dh = t.shape[-1]
    freqs = 1.0 / base ** (torch.arange(0, Dh, 2, dtype=torch.float64) / Dh)
    ang = pos * freqs
    cos = torch.cat([ang.cos(), ang.cos()]).to(t.dtype)
    sin = torch.cat([ang.sin(), ang.sin()]).to(t.dtype)
    t1, t2 = t[..., : Dh // 2], t[..., Dh // 2 :]
    return t * cos + torch.cat([-t2, t1], dim=-1) * sin


def make_step(position="S", order="append_first", cache_repeated=False, rotate_key=True):
    def step(x, past_key, past_value, W_q, W_k, W_v, W_o, num_heads, base):
        B, _, D = x.shape
        Hkv, S, Dh = past_key.shape[1], past_key.shape[2], past_key.shape[3]
        pos = {"S": S, "zero": 0, "len+1": S + 1}[position]
        q = _rope(_heads(x @ W_q.T, num_heads), pos, base)
        k = _heads(x @ W_k.T, Hkv)
        if rotate_key:
            k = _rope(k, pos, base)
        v = _heads(x @ W_v.T, Hkv)
        new_key = torch.cat([past_key, k], dim=2)
        new_value = torch.cat([past_value, v], dim=2)
        keys, values = (new_key, new_value) if order == "append_first" else (past_key, past_value)
        group = num_heads // Hkv
        keys, values = keys.repeat_interleave(group, 1), values.repeat_interleave(group, 1)
        scores = q @ keys.transpose(-1, -2) / math.sqrt(Dh)
        out = torch.softmax(scores, dim=-1) @ values  # (B, H, 1, Dh)
        out = out.transpose(1, 2).reshape(B, 1, D) @ W_o.T
        if cache_repeated:
            return out, new_key.repeat_interleave(group, 1), new_value.repeat_interleave(group, 1)
        return out, new_key, new_value

    return step


def step_with_module(x, past_key, past_value, W_q, W_k, W_v, W_o, num_heads, base):
    # the library way: a module with a rope hook and a cache
    D = x.shape[-1]
    mha = mhalib.MultiHeadAttention(D, num_heads, bias=False, num_kv_heads=past_key.shape[1],
                                    rope=lambda t, p: mhalib.apply_rope(t, p, base)).to(x.dtype)
    with torch.no_grad():
        mha.q_proj.weight.copy_(W_q)
        mha.k_proj.weight.copy_(W_k)
        mha.v_proj.weight.copy_(W_v)
        mha.out_proj.weight.copy_(W_o)
    cache = mhalib.KVCache()
    cache.update(past_key.clone(), past_value.clone())
    out, _ = mha(x, x, x, cache=cache, is_causal=True)
    return out.detach(), cache.key.detach(), cache.value.detach()


WRONG = [
    ("causal_mask_lower_right", mask_pytorch_is_causal, "top_left"),
    ("causal_mask_lower_right", mask_sees_strictly_past, "off_by_one_short"),
    ("causal_mask_lower_right", mask_one_ahead, "off_by_one_long"),
    ("causal_mask_lower_right", mask_true_is_blocked, "inverted"),
    ("repeat_kv", repeat_kv_tile, "repeat_not_interleave"),
    ("repeat_kv", repeat_kv_cat, "repeat_not_interleave"),
    ("repeat_kv", repeat_kv_tokens, "wrong_axis"),
    ("repeat_kv", repeat_kv_batch, "wrong_axis"),
    ("decode_step", make_step(position="zero"), "rope_position_zero"),
    ("decode_step", make_step(position="len+1"), "rope_position_off_by_one"),
    ("decode_step", make_step(order="attend_first"), "attend_before_append"),
    ("decode_step", make_step(cache_repeated=True), "cached_repeated_heads"),
    ("decode_step", make_step(rotate_key=False), "no_rope_on_key"),
]

RIGHT = [
    ("causal_mask_lower_right", mask_loops),
    ("causal_mask_lower_right", mask_last_rows_of_square),
    ("causal_mask_lower_right", mask_triu_complement),
    ("repeat_kv", repeat_kv_interleave),
    ("repeat_kv", repeat_kv_stack),
    ("repeat_kv", repeat_kv_index),
    ("decode_step", make_step()),
    ("decode_step", step_with_module),
]


@pytest.mark.parametrize("exercise_id,fn,mistake", WRONG, ids=[f"{e}-{m}-{f.__name__}" for e, f, m in WRONG])
def test_wrong_answer_is_named(exercise_id, fn, mistake):
    result = check(exercise_id, fn)
    assert result.status == "failed", result.message
    assert result.mistakes == (mistake,), result.message
    message = {m.key: m.message for m in EXERCISES[exercise_id].mistakes}[mistake]
    assert message in result.message


@pytest.mark.parametrize("exercise_id,fn", RIGHT, ids=[f"{e}-{f.__name__}" for e, f in RIGHT])
def test_right_answer_passes(exercise_id, fn):
    result = check(exercise_id, fn)
    assert result.status == "passed", result.message


@pytest.mark.parametrize("exercise", ALL, ids=lambda e: e.id)
def test_stub_is_not_attempted_and_solution_passes(exercise):
    assert check(exercise.id, stub).status == "not_attempted"
    assert check(exercise.id, exercise.solution_function).status == "passed"
    assert len(exercise.hints) >= 3


def test_the_exercises_are_registered_once():
    ids = [e.id for e in ALL]
    assert ids == ["causal_mask_lower_right", "repeat_kv", "decode_step"]
    assert all(EXERCISES[i] is e for i, e in zip(ids, ALL))


def test_repeat_message_names_the_silent_pairing():
    result = check("repeat_kv", repeat_kv_tile)
    assert "0 1 2 0 1 2" in result.message and "h // n_rep" in result.message
