"""mhalib.MultiHeadAttention against torch.nn.MultiheadAttention, with the weights copied across.

torch's boolean masks mean the opposite of ours (True = may NOT attend), so every boolean
mask is inverted on the way to torch, and valid_lens becomes key_padding_mask. Rows with
nothing to attend to (torch gives NaN there) are excluded from the comparison; in ours the
attention there is zero, so the output is out_proj's bias and the weights are zero.
"""

from __future__ import annotations

import zlib

import pytest
import torch
from torch import nn

from mhalib import MultiHeadAttention, causal_mask, padding_mask, scaled_dot_product_attention

TOL = {torch.float64: dict(rtol=1e-10, atol=1e-10), torch.float32: dict(rtol=1e-5, atol=1e-5)}

# (embed_dim, num_heads, kdim, vdim, bias, B, L, S)
CONFIGS = [
    pytest.param(8, 2, None, None, True, 2, 5, 5, id="D8-H2"),
    pytest.param(8, 8, None, None, False, 1, 3, 7, id="Dh1-B1-L<S-nobias"),
    pytest.param(12, 3, 5, 7, True, 2, 4, 6, id="kdim-vdim"),
    pytest.param(6, 1, 3, None, False, 3, 6, 2, id="H1-kdim-L>S"),
    pytest.param(4, 2, None, None, True, 1, 1, 1, id="L1-S1"),
]
MASKS = ["none", "bool", "float", "per-head", "causal", "padding", "padding+causal", "per-query-lens"]


def _inputs(embed_dim, kdim, vdim, B, L, S, dtype, gen):
    query = torch.randn(B, L, embed_dim, generator=gen, dtype=dtype)
    key = torch.randn(B, S, kdim or embed_dim, generator=gen, dtype=dtype)
    value = torch.randn(B, S, vdim or embed_dim, generator=gen, dtype=dtype)
    return query, key, value


def _masks(kind, B, H, L, S, dtype, gen):
    """(our kwargs, torch kwargs, allowed (B, H, L, S) bool)."""
    ones = torch.ones(B, H, L, S, dtype=torch.bool)
    if kind == "none":
        return {}, {}, ones
    if kind == "bool":
        allowed = torch.rand(L, S, generator=gen) < 0.6
        allowed[0] = False  # a query with nothing to attend to
        return {"attn_mask": allowed}, {"attn_mask": ~allowed}, ones & allowed
    if kind == "float":
        bias = torch.randn(B, L, S, generator=gen, dtype=dtype)
        bias[torch.rand(B, L, S, generator=gen) < 0.3] = float("-inf")
        bias[0, 0] = float("-inf")
        # torch wants a 3-D float mask as (B*H, L, S): one copy per head.
        theirs = bias.repeat_interleave(H, dim=0)
        return {"attn_mask": bias}, {"attn_mask": theirs}, ones & ~torch.isneginf(bias)[:, None]
    if kind == "per-head":
        allowed = torch.rand(B * H, L, S, generator=gen) < 0.7
        return {"attn_mask": allowed}, {"attn_mask": ~allowed}, ones & allowed.reshape(B, H, L, S)
    if kind == "causal":
        # torch wants the mask as well as the flag; the flag alone is a hint.
        return {"is_causal": True}, {"attn_mask": ~causal_mask(L, S), "is_causal": True}, ones & causal_mask(L, S)
    if kind in ("padding", "padding+causal"):
        valid_lens = torch.randint(0, S + 1, (B,), generator=gen)
        valid_lens[0] = 0  # an all-padding sequence
        ours = {"valid_lens": valid_lens}
        theirs = {"key_padding_mask": torch.arange(S) >= valid_lens[:, None]}  # (B, S), True = padding
        allowed = ones & padding_mask(valid_lens, S)
        if kind == "padding+causal":
            ours["is_causal"] = True
            theirs["attn_mask"] = ~causal_mask(L, S)
            allowed = allowed & causal_mask(L, S)
        return ours, theirs, allowed
    if kind == "per-query-lens":
        # valid_lens (B, L) has no key_padding_mask equivalent: torch gets a (B*H, L, S) mask.
        valid_lens = torch.randint(0, S + 1, (B, L), generator=gen)
        allowed = ones & padding_mask(valid_lens, S)
        return {"valid_lens": valid_lens}, {"attn_mask": ~allowed.reshape(B * H, L, S)}, allowed
    raise AssertionError(kind)


def _compare(ours, theirs, allowed, query, key, value, our_kw, their_kw, need_weights, dtype):
    out, weights = ours(query, key, value, need_weights=need_weights, **our_kw)
    expected, expected_weights = theirs(
        query, key, value, need_weights=need_weights, average_attn_weights=False, **their_kw
    )
    B, H, L, S = allowed.shape
    assert out.shape == (B, L, ours.embed_dim)
    empty = ~allowed.any(dim=-1)  # (B, H, L)
    any_empty = empty.any(dim=1)  # (B, L): some head of this query has nothing to attend to
    keep = ~any_empty
    assert not torch.isnan(out).any()
    assert not torch.isnan(expected[keep]).any()
    torch.testing.assert_close(out[keep], expected[keep], **TOL[dtype])
    all_empty = empty.all(dim=1)  # (B, L): no head attends to anything -> only out_proj's bias is left
    bias = ours.out_proj.bias if ours.out_proj.bias is not None else torch.zeros(ours.embed_dim, dtype=dtype)
    torch.testing.assert_close(out[all_empty], bias.expand_as(out[all_empty]), rtol=0, atol=0)
    if need_weights:
        assert weights.shape == (B, H, L, S)
        assert torch.all(weights[empty] == 0) and torch.all(weights[~allowed] == 0)
        torch.testing.assert_close(weights[~empty], expected_weights[~empty], **TOL[dtype])
    else:
        assert weights is None


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("need_weights", [True, False], ids=["explicit", "fused"])
@pytest.mark.parametrize("mask_kind", MASKS)
@pytest.mark.parametrize("embed_dim,num_heads,kdim,vdim,bias,B,L,S", CONFIGS)
def test_module_matches_torch_mha(embed_dim, num_heads, kdim, vdim, bias, B, L, S, mask_kind, need_weights, dtype):
    gen = torch.Generator().manual_seed(zlib.crc32(repr((embed_dim, num_heads, kdim, vdim, L, S, mask_kind)).encode()))
    torch.manual_seed(0)
    theirs = nn.MultiheadAttention(embed_dim, num_heads, bias=bias, kdim=kdim, vdim=vdim, batch_first=True, dtype=dtype)
    if bias:  # torch starts biases at zero: make them matter
        with torch.no_grad():
            theirs.in_proj_bias.normal_(generator=gen)
            theirs.out_proj.bias.normal_(generator=gen)
    theirs.eval()
    ours = MultiHeadAttention.from_torch(theirs).eval()
    query, key, value = _inputs(embed_dim, kdim, vdim, B, L, S, dtype, gen)
    our_kw, their_kw, allowed = _masks(mask_kind, B, num_heads, L, S, dtype, gen)
    _compare(ours, theirs, allowed, query, key, value, our_kw, their_kw, need_weights, dtype)


@pytest.mark.parametrize("need_weights", [True, False])
def test_self_attention_matches_torch_fast_path(need_weights):
    # query is key is value, eval, no_grad: torch takes its native fast path.
    torch.manual_seed(1)
    theirs = nn.MultiheadAttention(16, 4, batch_first=True).eval()
    ours = MultiHeadAttention.from_torch(theirs).eval()
    x = torch.randn(3, 9, 16)
    lens = torch.tensor([9, 4, 1])
    with torch.no_grad():
        out, _ = ours(x, x, x, valid_lens=lens, need_weights=need_weights)
        expected, _ = theirs(x, x, x, key_padding_mask=torch.arange(9) >= lens[:, None], need_weights=need_weights)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)


def test_weights_copied_by_hand_match_torch():
    # Independent of from_torch: torch packs [W_q; W_k; W_v] into in_proj_weight (3D, D).
    torch.manual_seed(2)
    D, H = 12, 4
    theirs = nn.MultiheadAttention(D, H, batch_first=True, dtype=torch.float64).eval()
    ours = MultiHeadAttention(D, H).double().eval()
    with torch.no_grad():
        theirs.in_proj_bias.normal_()
        theirs.out_proj.bias.normal_()
        ours.q_proj.weight.copy_(theirs.in_proj_weight[:D])
        ours.k_proj.weight.copy_(theirs.in_proj_weight[D : 2 * D])
        ours.v_proj.weight.copy_(theirs.in_proj_weight[2 * D :])
        ours.q_proj.bias.copy_(theirs.in_proj_bias[:D])
        ours.k_proj.bias.copy_(theirs.in_proj_bias[D : 2 * D])
        ours.v_proj.bias.copy_(theirs.in_proj_bias[2 * D :])
        ours.out_proj.weight.copy_(theirs.out_proj.weight)
        ours.out_proj.bias.copy_(theirs.out_proj.bias)
    q, k, v = torch.randn(2, 5, D, dtype=torch.float64), torch.randn(2, 7, D, dtype=torch.float64), torch.randn(2, 7, D, dtype=torch.float64)
    mask = torch.rand(5, 7) < 0.7
    mask[:, 0] = True
    out, weights = ours(q, k, v, attn_mask=mask)
    expected, expected_weights = theirs(q, k, v, attn_mask=~mask, average_attn_weights=False)
    torch.testing.assert_close(out, expected, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(weights, expected_weights, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("kdim,vdim,bias", [(None, None, True), (5, 7, False)])
def test_to_torch_round_trip(kdim, vdim, bias):
    torch.manual_seed(3)
    ours = MultiHeadAttention(8, 2, bias=bias, kdim=kdim, vdim=vdim).double().eval()
    if bias:
        with torch.no_grad():
            for p in (ours.q_proj.bias, ours.k_proj.bias, ours.v_proj.bias, ours.out_proj.bias):
                p.normal_()
    theirs = ours.to_torch()
    assert isinstance(theirs, nn.MultiheadAttention) and theirs.batch_first and not theirs.training
    assert theirs.out_proj.weight.dtype == torch.float64
    q = torch.randn(2, 3, 8, dtype=torch.float64)
    k = torch.randn(2, 4, kdim or 8, dtype=torch.float64)
    v = torch.randn(2, 4, vdim or 8, dtype=torch.float64)
    out, weights = ours(q, k, v, is_causal=True)
    expected, expected_weights = theirs(q, k, v, attn_mask=~causal_mask(3, 4), average_attn_weights=False)
    torch.testing.assert_close(out, expected, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(weights, expected_weights, rtol=1e-10, atol=1e-10)
    back = MultiHeadAttention.from_torch(theirs)
    assert back.kdim == ours.kdim and back.vdim == ours.vdim and back.num_heads == 2 and not back.training
    ours_state, back_state = ours.state_dict(), back.state_dict()
    assert ours_state.keys() == back_state.keys()
    for name in ours_state:
        assert torch.equal(ours_state[name], back_state[name]), name


def test_explicit_and_fused_paths_agree_with_masks():
    torch.manual_seed(4)
    mha = MultiHeadAttention(16, 4).double().eval()
    q, kv = torch.randn(3, 6, 16, dtype=torch.float64), torch.randn(3, 8, 16, dtype=torch.float64)
    lens = torch.tensor([8, 0, 3])
    float_mask = torch.randn(6, 8, dtype=torch.float64)
    for kwargs in ({"is_causal": True}, {"valid_lens": lens, "is_causal": True}, {"attn_mask": float_mask, "valid_lens": lens}):
        explicit, _ = mha(q, kv, kv, need_weights=True, **kwargs)
        fused, none = mha(q, kv, kv, need_weights=False, **kwargs)
        assert none is None
        torch.testing.assert_close(explicit, fused, rtol=1e-10, atol=1e-10)


def test_module_does_not_store_weights():
    mha = MultiHeadAttention(8, 2)
    before = set(vars(mha))
    mha(torch.randn(1, 3, 8), torch.randn(1, 3, 8), torch.randn(1, 3, 8))
    assert set(vars(mha)) == before


# --- dropout ----------------------------------------------------------------------------


@pytest.mark.parametrize("need_weights", [True, False])
def test_dropout_active_in_train_mode_only(need_weights):
    torch.manual_seed(5)
    mha = MultiHeadAttention(16, 4, dropout=0.5)
    x = torch.randn(2, 10, 16)
    mha.train()
    first, _ = mha(x, x, x, need_weights=need_weights)
    second, _ = mha(x, x, x, need_weights=need_weights)
    assert not torch.allclose(first, second)
    mha.eval()
    a, _ = mha(x, x, x, need_weights=need_weights)
    b, _ = mha(x, x, x, need_weights=need_weights)
    assert torch.equal(a, b)
    no_dropout = MultiHeadAttention(16, 4, dropout=0.0)
    no_dropout.load_state_dict(mha.state_dict())
    torch.testing.assert_close(a, no_dropout(x, x, x, need_weights=need_weights)[0])


def test_sdpa_dropout_zeroes_and_rescales_weights():
    torch.manual_seed(6)
    q = torch.randn(2, 20, 4, dtype=torch.float64)
    _, plain = scaled_dot_product_attention(q, q, q)
    out, dropped = scaled_dot_product_attention(q, q, q, dropout_p=0.5)
    zeroed = dropped == 0
    assert zeroed.any() and (~zeroed).any()
    torch.testing.assert_close(dropped[~zeroed], plain[~zeroed] * 2)  # kept weights scaled by 1/(1-p)
    torch.testing.assert_close(out, dropped @ q)


def test_from_torch_keeps_float64_weights_exactly_and_the_mode():
    # Regression: from_torch used to copy float64 weights into float32 parameters, then cast back.
    theirs = nn.MultiheadAttention(6, 2, kdim=4, batch_first=True, dtype=torch.float64).train()
    with torch.no_grad():
        theirs.q_proj_weight.add_(1e-12)
    ours = MultiHeadAttention.from_torch(theirs)
    assert ours.q_proj.weight.dtype == torch.float64 and ours.training
    assert torch.equal(ours.q_proj.weight, theirs.q_proj_weight)
    assert torch.equal(ours.k_proj.weight, theirs.k_proj_weight)
    assert torch.equal(ours.out_proj.weight, theirs.out_proj.weight)
    assert not MultiHeadAttention.from_torch(theirs.eval()).training
