"""Properties of attention that hold for every input, checked with hypothesis.

Shapes: B batch, H heads, L query length, S key length, D model width, Dh = D // H.
All in float64 so that equalities can be checked tightly.
"""

from __future__ import annotations

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mhalib import (
    MultiHeadAttention,
    causal_mask,
    merge_heads,
    scaled_dot_product_attention,
    split_heads,
    transpose_output,
    transpose_qkv,
)

SETTINGS = settings(max_examples=25, deadline=None, database=None)  # no .hypothesis dir in the tree
TOL = dict(rtol=1e-10, atol=1e-10)
f64 = torch.float64

sizes = st.integers(min_value=1, max_value=5)
seeds = st.integers(min_value=0, max_value=2**31 - 1)


def _randn(seed: int, *shape: int) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=f64)


@st.composite
def qkv_and_mask(draw):
    B, H, L, S, E, Ev = (draw(sizes) for _ in range(6))
    seed = draw(seeds)
    gen = torch.Generator().manual_seed(seed)
    q = torch.randn(B, H, L, E, generator=gen, dtype=f64)
    k = torch.randn(B, H, S, E, generator=gen, dtype=f64)
    v = torch.randn(B, H, S, Ev, generator=gen, dtype=f64)
    allowed = torch.rand(B, 1, L, S, generator=gen) < draw(st.floats(0.0, 1.0))
    return q, k, v, allowed


@SETTINGS
@given(qkv_and_mask(), st.booleans())
def test_weights_sum_to_one_over_allowed_keys_and_zero_elsewhere(data, as_float):
    q, k, v, allowed = data
    mask = allowed if not as_float else torch.zeros(allowed.shape, dtype=f64).masked_fill(~allowed, float("-inf"))
    out, weights = scaled_dot_product_attention(q, k, v, attn_mask=mask)
    allowed = allowed.expand(weights.shape)
    has_key = allowed.any(dim=-1)  # (B, H, L)
    sums = weights.sum(dim=-1)
    torch.testing.assert_close(sums[has_key], torch.ones_like(sums[has_key]), **TOL)
    assert torch.all(weights[~allowed] == 0)  # masked keys: exactly zero
    assert torch.all(sums[~has_key] == 0) and torch.all(out[~has_key] == 0)  # nothing to attend to
    assert torch.all(weights >= 0)


@SETTINGS
@given(sizes, sizes, sizes, st.integers(0, 4), seeds)
def test_causal_output_ignores_the_future(B, H, L, t, seed):
    t = min(t, L - 1)
    q, k, v = _randn(seed, B, H, L, 3), _randn(seed + 1, B, H, L, 3), _randn(seed + 2, B, H, L, 2)
    out, _ = scaled_dot_product_attention(q, k, v, is_causal=True)
    q2, k2, v2 = q.clone(), k.clone(), v.clone()
    for x in (q2, k2, v2):
        x[..., t + 1 :, :] = _randn(seed + 3, *x[..., t + 1 :, :].shape)  # change every position after t
    out2, _ = scaled_dot_product_attention(q2, k2, v2, is_causal=True)
    torch.testing.assert_close(out[..., : t + 1, :], out2[..., : t + 1, :], rtol=0, atol=0)
    if t + 1 < L:
        assert not torch.allclose(out[..., t + 1 :, :], out2[..., t + 1 :, :])


@SETTINGS
@given(sizes, sizes, st.integers(1, 6), seeds)
def test_causal_module_output_ignores_the_future(B, L, t, seed):
    t = min(t, L - 1)
    torch.manual_seed(seed)
    mha = MultiHeadAttention(6, 2).double().eval()
    x = _randn(seed, B, L, 6)
    x2 = x.clone()
    x2[:, t + 1 :] = _randn(seed + 1, B, L - t - 1, 6)
    for need_weights in (True, False):
        out, _ = mha(x, x, x, is_causal=True, need_weights=need_weights)
        out2, _ = mha(x2, x2, x2, is_causal=True, need_weights=need_weights)
        torch.testing.assert_close(out[:, : t + 1], out2[:, : t + 1], **TOL)


@SETTINGS
@given(sizes, sizes, sizes, seeds, st.data())
def test_permutation_equivariance(B, L, S, seed, data):
    q, k, v = _randn(seed, B, L, 4), _randn(seed + 1, B, S, 4), _randn(seed + 2, B, S, 3)
    perm_kv = torch.tensor(data.draw(st.permutations(range(S))))
    perm_q = torch.tensor(data.draw(st.permutations(range(L))))
    out, weights = scaled_dot_product_attention(q, k, v)
    # Permuting key/value rows together: same output, weights permuted along S.
    out_kv, weights_kv = scaled_dot_product_attention(q, k[:, perm_kv], v[:, perm_kv])
    torch.testing.assert_close(out_kv, out, **TOL)
    torch.testing.assert_close(weights_kv, weights[:, :, perm_kv], **TOL)
    # Permuting query rows permutes the output rows.
    out_q, _ = scaled_dot_product_attention(q[:, perm_q], k, v)
    torch.testing.assert_close(out_q, out[:, perm_q], **TOL)


@SETTINGS
@given(sizes, sizes, sizes, sizes, seeds)
def test_split_merge_and_transpose_round_trip(B, L, H, Dh, seed):
    x = _randn(seed, B, L, H * Dh)  # (B, L, D)
    heads = split_heads(x, H)
    assert heads.shape == (B, H, L, Dh)
    assert torch.equal(merge_heads(heads), x)
    for h in range(H):  # head h holds features h*Dh:(h+1)*Dh
        assert torch.equal(heads[:, h], x[..., h * Dh : (h + 1) * Dh])
    folded = transpose_qkv(x, H)
    assert folded.shape == (B * H, L, Dh)
    for b in range(B):
        for h in range(H):
            assert torch.equal(folded[b * H + h], heads[b, h])  # row b*H + h
    assert torch.equal(transpose_output(folded, H), x)


@SETTINGS
@given(sizes, sizes, sizes, st.integers(1, 6), st.booleans(), seeds)
def test_one_head_is_single_head_attention(B, L, S, D, bias, seed):
    torch.manual_seed(seed)
    mha = MultiHeadAttention(D, 1, bias=bias).double()
    query, key, value = _randn(seed, B, L, D), _randn(seed + 1, B, S, D), _randn(seed + 2, B, S, D)
    out, weights = mha(query, key, value)
    attended, expected_weights = scaled_dot_product_attention(mha.q_proj(query), mha.k_proj(key), mha.v_proj(value))
    torch.testing.assert_close(out, mha.out_proj(attended), **TOL)
    torch.testing.assert_close(weights[:, 0], expected_weights, **TOL)


@SETTINGS
@given(sizes, sizes, sizes, st.integers(1, 4), st.integers(1, 3), st.booleans(), seeds)
def test_heads_are_independent_single_head_attentions(B, L, S, H, Dh, causal, seed):
    # H heads == H separate attentions on rows h*Dh:(h+1)*Dh of W_q, W_k, W_v, concatenated, then W_o.
    D = H * Dh
    torch.manual_seed(seed)
    mha = MultiHeadAttention(D, H, kdim=3, vdim=5).double()
    with torch.no_grad():
        for p in (mha.q_proj.bias, mha.k_proj.bias, mha.v_proj.bias):
            p.normal_()
    if causal:
        S = L
    query, key, value = _randn(seed, B, L, D), _randn(seed + 1, B, S, 3), _randn(seed + 2, B, S, 5)
    out, weights = mha(query, key, value, is_causal=causal)
    outs = []
    for h in range(H):
        rows = slice(h * Dh, (h + 1) * Dh)
        q = query @ mha.q_proj.weight[rows].T + mha.q_proj.bias[rows]  # (B, L, Dh)
        k = key @ mha.k_proj.weight[rows].T + mha.k_proj.bias[rows]  # (B, S, Dh)
        v = value @ mha.v_proj.weight[rows].T + mha.v_proj.bias[rows]  # (B, S, Dh)
        out_h, weights_h = scaled_dot_product_attention(q, k, v, attn_mask=causal_mask(L, S) if causal else None)
        torch.testing.assert_close(weights[:, h], weights_h, **TOL)
        outs.append(out_h)
    torch.testing.assert_close(out, mha.out_proj(torch.cat(outs, dim=-1)), **TOL)
