"""Exercises of chapter 8: the lower-right causal mask, ``repeat_kv`` and one decoding step.

Each mistake is a small function computing what a learner who made that slip would get;
the checker compares the learner's answer with these (the tests write their own
learner-style wrong answers independently).

Shapes: B batch, H query heads, Hkv KV heads, L new tokens, S cached tokens, D model
width, Dh head width.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

import mhalib

from ._checker import Case, Exercise, Mistake, describe_value

# --- helpers --------------------------------------------------------------------------------


def _case(name: str, names: list[str], *args) -> Case:
    about = ", ".join(f"{n} = {describe_value(a)}" for n, a in zip(names, args))
    return Case(name, tuple(args), about)


def _randn(gen: torch.Generator, *shape: int, dtype=torch.float64) -> Tensor:
    return torch.randn(*shape, generator=gen, dtype=dtype)


# --- causal_mask_lower_right ------------------------------------------------------------------


def _mask_cases(gen: torch.Generator) -> list[Case]:
    c = lambda name, *a: _case(name, ["L", "S"], *a)  # noqa: E731
    return [
        c("one new token, 5 cached (L = 1, S = 6)", 1, 6),
        c("two new tokens, S = 5", 2, 5),
        c("no cache (L = S = 4)", 4, 4),
        c("three new tokens, S = 7", 3, 7),
        c("one token, nothing cached (L = S = 1)", 1, 1),
    ]


def solution_causal_mask_lower_right(L: int, S: int) -> Tensor:
    """Query i is position S - L + i: it may see keys 0 .. S - L + i."""
    i = torch.arange(L)[:, None]  # (L, 1) query rows
    j = torch.arange(S)[None, :]  # (1, S) key columns
    return j <= i + (S - L)  # (L, S) bool


MASK_MISTAKES = [
    Mistake(
        "top_left",
        "this is the top-left mask (torch.tril, PyTorch's is_causal): row i sees keys 0..i, so the one new "
        "token after 5 cached ones sees key 0 only. The L queries are the LAST L positions: shift the "
        "diagonal by S - L (torch.tril(..., diagonal=S - L)).",
        [lambda L, S: torch.ones(L, S, dtype=torch.bool).tril()],
    ),
    Mistake(
        "off_by_one_short",
        "off by one: each query misses its own key (the newest token must see itself). Query i sees keys "
        "0..S-L+i inclusive: diagonal=S - L, not S - L - 1.",
        [lambda L, S: torch.ones(L, S, dtype=torch.bool).tril(S - L - 1)],
    ),
    Mistake(
        "off_by_one_long",
        "off by one: each query also sees the next key, one step into the future. Query i sees keys "
        "0..S-L+i inclusive: diagonal=S - L, not S - L + 1.",
        [lambda L, S: torch.ones(L, S, dtype=torch.bool).tril(S - L + 1)],
    ),
    Mistake(
        "inverted",
        "True marks what may NOT be attended (nn.MultiheadAttention's convention). In this course True = "
        "may attend.",
        [lambda L, S: ~torch.ones(L, S, dtype=torch.bool).tril(S - L)],
    ),
]

CAUSAL_MASK_LOWER_RIGHT = Exercise(
    id="causal_mask_lower_right",
    title="Causal mask for a decoder with a cache",
    signature="causal_mask_lower_right(L, S) -> mask",
    description="A bool (L, S) mask for the last L of S positions: query i may attend to keys 0..S-L+i.",
    reference=lambda L, S: mhalib.causal_mask(L, S, lower_right=True),
    solution=solution_causal_mask_lower_right,
    make_cases=_mask_cases,
    arg_names=["L", "S"],
    mistakes=MASK_MISTAKES,
    hints=[
        "The L new queries are positions S-L, ..., S-1 of the sequence; the S keys are positions 0..S-1.",
        "Query i sits at position S - L + i and may see every key at that position or before.",
        "torch.ones(L, S, dtype=torch.bool).tril(diagonal=S - L).",
    ],
    output_name="mask",
)


# --- repeat_kv ------------------------------------------------------------------------------------


def _repeat_cases(gen: torch.Generator) -> list[Case]:
    c = lambda name, *a: _case(name, ["x", "n_rep"], *a)  # noqa: E731
    numbered = torch.arange(3.0, dtype=torch.float64).reshape(1, 3, 1, 1).expand(1, 3, 2, 2).contiguous()
    return [
        c("3 KV heads holding 0, 1, 2; n_rep = 3", numbered, 3),
        c("2 KV heads, n_rep = 2", _randn(gen, 2, 2, 3, 4), 2),
        c("MQA: 1 KV head, n_rep = 4", _randn(gen, 1, 1, 3, 2), 4),
        c("n_rep = 1 (plain MHA)", _randn(gen, 2, 3, 2, 2), 1),
        c("float32, S = 1", _randn(gen, 2, 3, 1, 4, dtype=torch.float32), 2),
    ]


def solution_repeat_kv(x: Tensor, n_rep: int) -> Tensor:
    """Each KV head n_rep times in a row: heads 0 0 1 1 2 2 for n_rep = 2."""
    B, Hkv, S, Dh = x.shape
    x = x[:, :, None].expand(B, Hkv, n_rep, S, Dh)  # (B, Hkv, n_rep, S, Dh), no copy yet
    return x.reshape(B, Hkv * n_rep, S, Dh)  # (B, H, S, Dh)


REPEAT_MISTAKES = [
    Mistake(
        "repeat_not_interleave",
        "your heads come out as 0 1 2 0 1 2 ... (tensor.repeat tiles the whole axis), so query head 1 is "
        "paired with KV head 1 instead of 0: the right shape, the wrong pairing, and no error. Query head h "
        "uses KV head h // n_rep: 0 0 0 1 1 1 ...; use repeat_interleave(n_rep, dim=1).",
        [lambda x, n: x.repeat(1, n, 1, 1), lambda x, n: x[:, None].expand(-1, n, -1, -1, -1).flatten(1, 2)],
    ),
    Mistake(
        "wrong_axis",
        "you repeated along the wrong axis: the heads are axis 1 of (B, Hkv, S, Dh); you repeated the "
        "batch, the tokens or the features instead.",
        [lambda x, n, _d=d: x.repeat_interleave(n, dim=_d) for d in (0, 2, 3)]
        + [lambda x, n, _d=d: x.repeat(*[n if i == _d else 1 for i in range(4)]) for d in (0, 2, 3)],
    ),
]

REPEAT_KV = Exercise(
    id="repeat_kv",
    title="Grouped-query attention: repeat the KV heads",
    signature="repeat_kv(x, n_rep) -> (B, Hkv*n_rep, S, Dh)",
    description="Give each of the H = Hkv * n_rep query heads its KV head: query head h uses KV head h // n_rep.",
    reference=lambda x, n_rep: mhalib.repeat_kv(x, n_rep),
    solution=solution_repeat_kv,
    make_cases=_repeat_cases,
    arg_names=["x", "n_rep"],
    mistakes=REPEAT_MISTAKES,
    hints=[
        "With 3 KV heads and n_rep = 3, the 9 query heads must see KV heads 0 0 0 1 1 1 2 2 2.",
        "Which of tensor.repeat and tensor.repeat_interleave gives 0 0 0 1 1 1? (Chapter 3 met the same "
        "question for valid_lens.)",
        "x.repeat_interleave(n_rep, dim=1).",
    ],
)


# --- decode_step ---------------------------------------------------------------------------------

STEP_ARGS = ["x", "past_key", "past_value", "W_q", "W_k", "W_v", "W_o", "num_heads", "base"]


def _step_cases(gen: torch.Generator) -> list[Case]:
    c = lambda name, *a: _case(name, STEP_ARGS, *a)  # noqa: E731

    def make(name, B, S, D, H, Hkv, base=100.0, dtype=torch.float64):
        Dh = D // H
        scale = D**-0.5
        x = _randn(gen, B, 1, D, dtype=dtype)
        past_key = _randn(gen, B, Hkv, S, Dh, dtype=dtype)
        past_value = _randn(gen, B, Hkv, S, Dh, dtype=dtype)
        W_q, W_o = _randn(gen, D, D, dtype=dtype) * scale, _randn(gen, D, D, dtype=dtype) * scale
        W_k, W_v = _randn(gen, Hkv * Dh, D, dtype=dtype) * scale, _randn(gen, Hkv * Dh, D, dtype=dtype) * scale
        return c(name, x, past_key, past_value, W_q, W_k, W_v, W_o, H, base)

    return [
        make("GQA: 4 query heads, 2 KV heads, 3 cached tokens", 1, 3, 8, 4, 2),
        make("MQA: 1 KV head, 5 cached, B = 2", 2, 5, 8, 2, 1),
        make("plain MHA (Hkv = H), 1 cached", 1, 1, 6, 3, 3),
        make("SmolLM2's grouping: 6 heads, 2 KV heads, 4 cached", 1, 4, 12, 6, 2, base=10000.0),
        make("float32", 1, 2, 8, 4, 2, dtype=torch.float32),
    ]


def _step(x, past_key, past_value, W_q, W_k, W_v, W_o, H, base, *, position="S", append="before", cache="kv",
          rope_k=True):
    """One decoding step with its possible slips."""
    B, _, D = x.shape
    Hkv, S = past_key.shape[1], past_key.shape[2]
    pos = {"S": S, "zero": 0, "S+1": S + 1, "S-1": S - 1}[position]
    positions = torch.tensor([pos])
    q = mhalib.apply_rope(mhalib.split_heads(x @ W_q.T, H), positions, base)  # (B, H, 1, Dh)
    k = mhalib.split_heads(x @ W_k.T, Hkv)  # (B, Hkv, 1, Dh)
    if rope_k:
        k = mhalib.apply_rope(k, positions, base)
    v = mhalib.split_heads(x @ W_v.T, Hkv)
    key, value = torch.cat([past_key, k], dim=2), torch.cat([past_value, v], dim=2)  # (B, Hkv, S+1, Dh)
    seen_k, seen_v = (key, value) if append == "before" else (past_key, past_value)
    out = F.scaled_dot_product_attention(q, seen_k, seen_v, enable_gqa=True)  # (B, H, 1, Dh)
    out = mhalib.merge_heads(out) @ W_o.T  # (B, 1, D)
    if cache == "repeated":
        key, value = mhalib.repeat_kv(key, H // Hkv), mhalib.repeat_kv(value, H // Hkv)
    return out, key, value


def _reference_step(x, past_key, past_value, W_q, W_k, W_v, W_o, num_heads, base):
    """The same step through mhalib.MultiHeadAttention with a KVCache and a RoPE hook."""
    D, Hkv = x.shape[-1], past_key.shape[1]
    mha = mhalib.MultiHeadAttention(
        D, num_heads, bias=False, num_kv_heads=Hkv, rope=lambda t, positions: mhalib.apply_rope(t, positions, base)
    ).to(x.dtype)
    with torch.no_grad():
        for proj, w in ((mha.q_proj, W_q), (mha.k_proj, W_k), (mha.v_proj, W_v), (mha.out_proj, W_o)):
            proj.weight.copy_(w)
    cache = mhalib.KVCache()
    cache.update(past_key, past_value)
    with torch.no_grad():
        out, _ = mha(x, x, x, is_causal=True, need_weights=False, cache=cache)
    return out, cache.key, cache.value


def solution_decode_step(x, past_key, past_value, W_q, W_k, W_v, W_o, num_heads, base):
    """Project the new token, rotate q and k at position S, append, then attend over S + 1 keys."""
    Hkv, S = past_key.shape[1], past_key.shape[2]
    position = torch.tensor([S])  # the new token comes after the S cached ones
    q = mhalib.apply_rope(mhalib.split_heads(x @ W_q.T, num_heads), position, base)  # (B, H, 1, Dh)
    k = mhalib.apply_rope(mhalib.split_heads(x @ W_k.T, Hkv), position, base)  # (B, Hkv, 1, Dh)
    v = mhalib.split_heads(x @ W_v.T, Hkv)  # (B, Hkv, 1, Dh)
    key = torch.cat([past_key, k], dim=2)  # (B, Hkv, S + 1, Dh): the cache keeps Hkv heads
    value = torch.cat([past_value, v], dim=2)
    n_rep = num_heads // Hkv
    k_all, v_all = mhalib.repeat_kv(key, n_rep), mhalib.repeat_kv(value, n_rep)  # (B, H, S + 1, Dh)
    out, _ = mhalib.scaled_dot_product_attention(q, k_all, v_all)  # one query, the newest: no mask
    return mhalib.merge_heads(out) @ W_o.T, key, value  # (B, 1, D), cache key and value


def _variants(**kw):
    return [lambda *a, _kw=kw: _step(*a, **_kw)]


STEP_MISTAKES = [
    Mistake(
        "rope_position_zero",
        "the new token was rotated as if it were at position 0. After S cached tokens it is at position S "
        "(past_key.shape[2]): positions = torch.tensor([S]). RoPE scores depend on the distance between "
        "positions, so every distance to the cached keys came out wrong.",
        _variants(position="zero"),
    ),
    Mistake(
        "rope_position_off_by_one",
        "the new token's RoPE position is off by one: the cached tokens are at 0..S-1, so the new one is "
        "at S = past_key.shape[2], not S - 1 or S + 1.",
        _variants(position="S+1") + _variants(position="S-1"),
    ),
    Mistake(
        "attend_before_append",
        "the new token attended to the cached keys only: append its key and value to the cache FIRST, "
        "then attend over all S + 1, so that the token also sees itself.",
        _variants(append="after"),
    ),
    Mistake(
        "cached_repeated_heads",
        "your returned cache holds H repeated heads instead of the Hkv KV heads: repeat_kv is for the "
        "attention only. Cache the key and value before repeating them, or grouped-query attention saves "
        "no memory.",
        _variants(cache="repeated"),
    ),
    Mistake(
        "no_rope_on_key",
        "the new key was not rotated: RoPE rotates queries AND keys (the cached keys were rotated when "
        "they were computed); never the values.",
        _variants(rope_k=False),
    ),
]

DECODE_STEP = Exercise(
    id="decode_step",
    title="One decoding step with a KV cache",
    signature="decode_step(x, past_key, past_value, W_q, W_k, W_v, W_o, num_heads, base) -> (out, key, value)",
    description=(
        "x (B, 1, D) is the newest token; past_key, past_value (B, Hkv, S, Dh) the cache (keys already "
        "rotated). Return the attention output (B, 1, D) and the cache grown to (B, Hkv, S + 1, Dh)."
    ),
    reference=_reference_step,
    solution=solution_decode_step,
    make_cases=_step_cases,
    arg_names=STEP_ARGS,
    mistakes=STEP_MISTAKES,
    hints=[
        "Project x with W_q, W_k, W_v (x @ W.T) and split into num_heads query heads and Hkv = past_key.shape[1] "
        "KV heads (mhalib.split_heads).",
        "Rotate q and k with mhalib.apply_rope(t, positions, base) at the new token's position: S = "
        "past_key.shape[2], since the cached tokens are at 0..S-1.",
        "torch.cat the new k and v onto the cache along the length axis (dim=2) before attending; attend "
        "with the KV heads repeated (mhalib.repeat_kv), but return the cache un-repeated. The one query "
        "is the newest position, so it needs no mask.",
    ],
    output_name="out, key, value",
)


ALL: list[Exercise] = [CAUSAL_MASK_LOWER_RIGHT, REPEAT_KV, DECODE_STEP]
