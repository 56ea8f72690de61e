"""Grouped-query attention: ``MultiHeadAttention(num_kv_heads=...)``, ``repeat_kv`` and
``scaled_dot_product_attention(enable_gqa=True)`` against PyTorch's ``enable_gqa=True``."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from mhalib import MultiHeadAttention, causal_mask, padding_mask, repeat_kv, scaled_dot_product_attention, split_heads

TOL = dict(rtol=1e-10, atol=1e-10)


def _module(D=12, H=6, Hkv=2, seed=0, bias=True):
    torch.manual_seed(seed)
    mha = MultiHeadAttention(D, H, bias=bias, num_kv_heads=Hkv).double().eval()
    if bias:
        with torch.no_grad():
            for proj in (mha.q_proj, mha.k_proj, mha.v_proj, mha.out_proj):
                proj.bias.normal_()
    return mha


def _by_hand(mha, query, key, value, **sdpa_kwargs):
    """The module's forward written out with PyTorch's fused enable_gqa=True."""
    q = split_heads(mha.q_proj(query), mha.num_heads)  # (B, H, L, Dh)
    k = split_heads(mha.k_proj(key), mha.num_kv_heads)  # (B, Hkv, S, Dh)
    v = split_heads(mha.v_proj(value), mha.num_kv_heads)
    out = F.scaled_dot_product_attention(q, k, v, enable_gqa=True, **sdpa_kwargs)  # (B, H, L, Dh)
    return mha.out_proj(out.transpose(1, 2).flatten(2))


@pytest.mark.parametrize("need_weights", [True, False], ids=["explicit", "fused"])
@pytest.mark.parametrize("H,Hkv", [(6, 6), (6, 3), (6, 2), (6, 1), (9, 3)], ids=["MHA", "GQA-3", "GQA-2", "MQA", "SmolLM2"])
@pytest.mark.parametrize("mask_kind", ["none", "causal", "padding", "bool"])
def test_gqa_module_matches_torch_enable_gqa(H, Hkv, mask_kind, need_weights):
    D = 2 * H
    mha = _module(D, H, Hkv, seed=H * 10 + Hkv)
    assert mha.k_proj.weight.shape == mha.v_proj.weight.shape == (Hkv * 2, D)
    gen = torch.Generator().manual_seed(1)
    B, L, S = 2, 5, 5 if mask_kind == "causal" else 7
    query = torch.randn(B, L, D, generator=gen, dtype=torch.float64)
    kv = torch.randn(B, S, D, generator=gen, dtype=torch.float64)
    ours_kw, theirs_kw = {}, {}
    if mask_kind == "causal":
        ours_kw, theirs_kw = {"is_causal": True}, {"is_causal": True}
    elif mask_kind == "padding":
        lens = torch.tensor([S, 3])
        ours_kw, theirs_kw = {"valid_lens": lens}, {"attn_mask": padding_mask(lens, S)}
    elif mask_kind == "bool":
        allowed = torch.rand(L, S, generator=gen) < 0.6
        allowed[:, 0] = True
        ours_kw, theirs_kw = {"attn_mask": allowed}, {"attn_mask": allowed}
    out, weights = mha(query, kv, kv, need_weights=need_weights, **ours_kw)
    torch.testing.assert_close(out, _by_hand(mha, query, kv, kv, **theirs_kw), **TOL)
    if need_weights:
        assert weights.shape == (B, H, L, S)
        torch.testing.assert_close(weights.sum(-1), torch.ones(B, H, L, dtype=torch.float64), **TOL)
    else:
        assert weights is None


def test_query_head_h_uses_kv_head_h_floor_div_group_size():
    # Change only KV head j's value projection: exactly query heads 3j, 3j+1, 3j+2 change.
    H, Hkv, Dh = 9, 3, 2
    mha = _module(H * Dh, H, Hkv, seed=3)
    x = torch.randn(1, 4, H * Dh, dtype=torch.float64)
    q = split_heads(mha.q_proj(x), H)
    k = split_heads(mha.k_proj(x), Hkv)
    v = split_heads(mha.v_proj(x), Hkv)
    before, _ = scaled_dot_product_attention(q, k, v, enable_gqa=True)  # (1, H, L, Dh)
    for j in range(Hkv):
        v2 = v.clone()
        v2[:, j] += 1.0
        after, _ = scaled_dot_product_attention(q, k, v2, enable_gqa=True)
        changed = [h for h in range(H) if not torch.allclose(before[:, h], after[:, h])]
        assert changed == [h for h in range(H) if h // (H // Hkv) == j] == [3 * j, 3 * j + 1, 3 * j + 2]


def test_sdpa_enable_gqa_matches_torch_and_returns_weights_per_query_head():
    gen = torch.Generator().manual_seed(2)
    q = torch.randn(2, 8, 5, 4, generator=gen, dtype=torch.float64)
    k = torch.randn(2, 2, 6, 4, generator=gen, dtype=torch.float64)
    v = torch.randn(2, 2, 6, 3, generator=gen, dtype=torch.float64)
    mask = causal_mask(5, 6, lower_right=True)
    out, weights = scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=True)
    torch.testing.assert_close(out, F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=True), **TOL)
    assert weights.shape == (2, 8, 5, 6)
    k_rep = k.repeat_interleave(4, dim=1)  # (2, 8, 6, 4): heads 0 0 0 0 1 1 1 1
    _, expected = scaled_dot_product_attention(q, k_rep, v.repeat_interleave(4, dim=1), attn_mask=mask)
    torch.testing.assert_close(weights, expected, **TOL)


def test_repeat_kv_is_repeat_interleave_and_repeat_pairs_the_wrong_heads():
    x = torch.arange(3.0).reshape(1, 3, 1, 1).expand(1, 3, 2, 4)  # KV head j holds the value j
    assert repeat_kv(x, 3)[0, :, 0, 0].tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    wrong = x.repeat(1, 3, 1, 1)  # same shape, heads 0 1 2 0 1 2 0 1 2
    assert wrong.shape == repeat_kv(x, 3).shape
    assert wrong[0, :, 0, 0].tolist() == [0, 1, 2, 0, 1, 2, 0, 1, 2]
    assert repeat_kv(x, 1) is x
    # The silent bug: with repeat, the outputs of query heads 1, 2, 3, 5, 6, 7 change.
    gen = torch.Generator().manual_seed(4)
    q = torch.randn(1, 9, 4, 8, generator=gen, dtype=torch.float64)
    k, v = (torch.randn(1, 3, 4, 8, generator=gen, dtype=torch.float64) for _ in range(2))
    right = F.scaled_dot_product_attention(q, k, v, enable_gqa=True)
    bad = F.scaled_dot_product_attention(q, k.repeat(1, 3, 1, 1), v.repeat(1, 3, 1, 1))
    same = [h for h in range(9) if torch.allclose(right[:, h], bad[:, h])]
    assert same == [0, 4, 8]  # only where both orders happen to pick the same KV head


def test_num_kv_heads_equal_to_num_heads_is_plain_mha():
    torch.manual_seed(5)
    plain = MultiHeadAttention(8, 4).double().eval()
    gqa = MultiHeadAttention(8, 4, num_kv_heads=4).double().eval()
    gqa.load_state_dict(plain.state_dict())
    x = torch.randn(2, 3, 8, dtype=torch.float64)
    for nw in (True, False):
        torch.testing.assert_close(gqa(x, x, x, need_weights=nw)[0], plain(x, x, x, need_weights=nw)[0], **TOL)
    theirs = gqa.to_torch()  # still convertible
    torch.testing.assert_close(theirs(x, x, x)[0], plain(x, x, x)[0], **TOL)
    assert MultiHeadAttention.from_torch(theirs).num_kv_heads == 4


def test_mqa_parameter_count():
    mha, mqa = MultiHeadAttention(64, 8, bias=False), MultiHeadAttention(64, 8, bias=False, num_kv_heads=1)
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(mha) == 4 * 64 * 64
    assert count(mqa) == 2 * 64 * 64 + 2 * 64 * 8  # k_proj, v_proj: (Dh, D) each
    assert "num_kv_heads=1" in repr(mqa) and "num_kv_heads" not in repr(mha)


@pytest.mark.parametrize(
    "kwargs,error,message",
    [
        ({"num_kv_heads": 4}, ValueError, r"num_heads \(6\) must be divisible by num_kv_heads \(4\)"),
        ({"num_kv_heads": 0}, ValueError, "num_kv_heads must be a positive int or None, got 0"),
        ({"num_kv_heads": True}, ValueError, "num_kv_heads must be a positive int or None, got True"),
        ({"num_kv_heads": 2.0}, ValueError, "num_kv_heads must be a positive int or None, got 2.0"),
        ({"rope": 3}, TypeError, "rope must be a function rope"),
    ],
)
def test_constructor_errors(kwargs, error, message):
    with pytest.raises(error, match=message):
        MultiHeadAttention(12, 6, **kwargs)


def test_to_torch_refuses_grouped_heads_and_rope():
    with pytest.raises(ValueError, match="num_kv_heads=2, num_heads=6"):
        MultiHeadAttention(12, 6, num_kv_heads=2).to_torch()
    with pytest.raises(ValueError, match="rope=None"):
        MultiHeadAttention(12, 6, rope=lambda x, positions: x).to_torch()


def test_sdpa_enable_gqa_errors():
    q, k = torch.randn(1, 6, 3, 4), torch.randn(1, 4, 3, 4)
    with pytest.raises(ValueError, match=r"query's heads \(6\) must be a multiple of the key's and value's heads \(4\)"):
        scaled_dot_product_attention(q, k, k, enable_gqa=True)
    with pytest.raises(ValueError, match="same number of heads, got 2 and 4"):
        scaled_dot_product_attention(q, k[:, :2], k, enable_gqa=True)
    with pytest.raises(ValueError, match="key must have at least 3 dimensions"):
        scaled_dot_product_attention(q[0], k[0, 0], k[0, 0], enable_gqa=True)
    with pytest.raises(ValueError, match="n_rep must be a positive int, got 0"):
        repeat_kv(k, 0)
    with pytest.raises(RuntimeError):  # without enable_gqa the head axes do not broadcast
        scaled_dot_product_attention(q, k, k)


def test_gqa_module_gradcheck():
    mha = _module(D=6, H=3, Hkv=1, seed=6)
    x = torch.randn(1, 3, 6, dtype=torch.float64, requires_grad=True)
    for nw in (True, False):
        assert torch.autograd.gradcheck(lambda t: mha(t, t, t, is_causal=True, need_weights=nw)[0], (x,))
    # Gradients reach the shared KV projections from every query head.
    mha.zero_grad()
    mha(x, x, x)[0].sum().backward()
    assert mha.k_proj.weight.grad.abs().sum() > 0 and mha.v_proj.weight.grad.abs().sum() > 0
