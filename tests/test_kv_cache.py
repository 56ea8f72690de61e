"""``KVCache`` with ``MultiHeadAttention``: decoding token by token with a cache gives the
same outputs as one causal pass; the cache holds the KV heads before any repeat; with a
cache ``is_causal`` is aligned lower-right; positions for ``rope`` continue after the cache."""

from __future__ import annotations

import math

import pytest
import torch

from mhalib import KVCache, MultiHeadAttention, causal_mask, split_heads

TOL = dict(rtol=1e-10, atol=1e-10)


def _rope(x: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """A small half-split rotary embedding written here, independent of mhalib's."""
    Dh = x.shape[-1]
    inv_freq = 100.0 ** (-torch.arange(0, Dh, 2, dtype=torch.float64) / Dh)  # (Dh/2,)
    theta = positions.to(torch.float64)[:, None] * inv_freq  # (L, Dh/2)
    cos, sin = theta.cos().repeat(1, 2).to(x.dtype), theta.sin().repeat(1, 2).to(x.dtype)
    x1, x2 = x.chunk(2, dim=-1)
    return x * cos + torch.cat((-x2, x1), dim=-1) * sin


def _module(D=12, H=6, Hkv=2, rope=None, seed=0):
    torch.manual_seed(seed)
    mha = MultiHeadAttention(D, H, num_kv_heads=Hkv, rope=rope).double().eval()
    with torch.no_grad():
        for proj in (mha.q_proj, mha.k_proj, mha.v_proj, mha.out_proj):
            proj.bias.normal_()
    return mha


def _decode(mha, x, chunks, need_weights, **kwargs):
    """Feed x (B, L, D) in pieces of the given lengths through one cache."""
    cache, outs, start = KVCache(), [], 0
    for n in chunks:
        piece = x[:, start : start + n]
        out, weights = mha(piece, piece, piece, is_causal=True, need_weights=need_weights, cache=cache, **kwargs)
        outs.append(out)
        start += n
        assert len(cache) == start
    return torch.cat(outs, dim=1), cache, weights


@pytest.mark.parametrize("need_weights", [True, False], ids=["explicit", "fused"])
@pytest.mark.parametrize("Hkv", [6, 2, 1], ids=["MHA", "GQA", "MQA"])
@pytest.mark.parametrize("rope", [None, _rope], ids=["no-rope", "rope"])
@pytest.mark.parametrize("chunks", [[1] * 7, [4, 1, 1, 1], [3, 2, 2], [7]], ids=["tokens", "prompt+tokens", "pairs", "one-call"])
def test_decoding_with_a_cache_equals_one_causal_pass(Hkv, rope, chunks, need_weights):
    mha = _module(Hkv=Hkv, rope=rope, seed=Hkv)
    x = torch.randn(2, 7, 12, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    full, _ = mha(x, x, x, is_causal=True, need_weights=need_weights)
    decoded, cache, _ = _decode(mha, x, chunks, need_weights)
    torch.testing.assert_close(decoded, full, **TOL)
    # The cache holds the projected (and rotated) keys per KV head, before any repeat.
    k = split_heads(mha.k_proj(x), Hkv)  # (B, Hkv, L, Dh)
    if rope is not None:
        k = rope(k, torch.arange(7))
    assert cache.key.shape == cache.value.shape == (2, Hkv, 7, 2)
    torch.testing.assert_close(cache.key, k, **TOL)
    torch.testing.assert_close(cache.value, split_heads(mha.v_proj(x), Hkv), **TOL)


def test_cached_weights_are_the_last_rows_of_the_full_weights():
    mha = _module()
    x = torch.randn(1, 6, 12, dtype=torch.float64)
    _, full = mha(x, x, x, is_causal=True)  # (1, H, 6, 6)
    cache = KVCache()
    mha(x[:, :4], x[:, :4], x[:, :4], is_causal=True, cache=cache)
    _, last = mha(x[:, 4:], x[:, 4:], x[:, 4:], is_causal=True, cache=cache)  # (1, H, 2, 6)
    assert last.shape == (1, 6, 2, 6)
    torch.testing.assert_close(last, full[:, :, 4:], **TOL)
    assert torch.all(last[..., 0, 5] == 0)  # token 4 does not see token 5


def test_top_left_mask_with_a_cache_is_the_trap():
    # The same decoding step, but with a top-left mask passed by hand: the new token sees key 0 only.
    mha = _module()
    x = torch.randn(1, 6, 12, dtype=torch.float64)
    cache = KVCache()
    mha(x[:, :5], x[:, :5], x[:, :5], is_causal=True, cache=cache)
    right, weights = mha(x[:, 5:], x[:, 5:], x[:, 5:], is_causal=True, cache=_copy(cache))
    wrong, wrong_weights = mha(x[:, 5:], x[:, 5:], x[:, 5:], attn_mask=causal_mask(1, 6), cache=_copy(cache))
    full, _ = mha(x, x, x, is_causal=True)
    torch.testing.assert_close(right, full[:, 5:], **TOL)
    assert not torch.allclose(wrong, full[:, 5:])
    assert torch.all(weights > 0)
    assert torch.all(wrong_weights[..., 1:] == 0) and torch.allclose(wrong_weights[..., 0], torch.ones(1, 6, 1, dtype=torch.float64))


def _copy(cache: KVCache) -> KVCache:
    other = KVCache()
    other.update(cache.key.clone(), cache.value.clone())
    return other


def test_rope_positions_continue_after_the_cache():
    # Positions 5.. for the new token, not 0: a decoder that restarted at 0 would differ.
    mha = _module(rope=_rope)
    x = torch.randn(1, 6, 12, dtype=torch.float64)
    full, _ = mha(x, x, x, is_causal=True)
    cache = KVCache()
    mha(x[:, :5], x[:, :5], x[:, :5], is_causal=True, cache=cache)
    restarted = MultiHeadAttention(12, 6, num_kv_heads=2, rope=lambda t, positions: _rope(t, positions - 5)).double()
    restarted.load_state_dict(mha.state_dict())
    wrong, _ = restarted(x[:, 5:], x[:, 5:], x[:, 5:], is_causal=True, cache=_copy(cache))
    right, _ = mha(x[:, 5:], x[:, 5:], x[:, 5:], is_causal=True, cache=cache)
    torch.testing.assert_close(right, full[:, 5:], **TOL)
    assert not torch.allclose(wrong, full[:, 5:])


def test_cache_with_padding_lengths_over_all_cached_keys():
    mha = _module()
    x = torch.randn(2, 5, 12, dtype=torch.float64)
    lens = torch.tensor([5, 2])  # sequence 1 has only 2 real tokens (right padding)
    full, _ = mha(x, x, x, is_causal=True, valid_lens=lens)
    cache = KVCache()
    mha(x[:, :3], x[:, :3], x[:, :3], is_causal=True, valid_lens=lens, cache=cache)
    for t in (3, 4):
        out, weights = mha(x[:, t : t + 1], x[:, t : t + 1], x[:, t : t + 1], is_causal=True, valid_lens=lens, cache=cache)
        torch.testing.assert_close(out, full[:, t : t + 1], **TOL)
        assert torch.all(weights[1, :, :, 2:] == 0)


def test_cache_bytes_and_repr():
    cache = KVCache()
    assert len(cache) == 0 and cache.nbytes == 0 and cache.key is None and repr(cache) == "KVCache(empty)"
    B, Hkv, S, Dh = 2, 3, 5, 4
    cache.update(torch.zeros(B, Hkv, S, Dh), torch.zeros(B, Hkv, S, Dh))
    cache.update(torch.zeros(B, Hkv, 1, Dh), torch.zeros(B, Hkv, 1, Dh))
    assert len(cache) == 6
    assert cache.nbytes == 2 * B * Hkv * 6 * Dh * 4  # keys and values, float32
    assert repr(cache) == "KVCache(key=(2, 3, 6, 4), value=(2, 3, 6, 4), dtype=torch.float32)"
    cache.reset()
    assert len(cache) == 0


def test_cache_errors():
    cache = KVCache()
    with pytest.raises(ValueError, match=r"key must have 4 dimensions, got shape \(3, 4\)"):
        cache.update(torch.zeros(3, 4), torch.zeros(3, 4))
    with pytest.raises(TypeError, match="value must be a floating-point tensor"):
        cache.update(torch.zeros(1, 2, 3, 4), torch.zeros(1, 2, 3, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="key and value must share"):
        cache.update(torch.zeros(1, 2, 3, 4), torch.zeros(1, 2, 2, 4))
    cache.update(torch.zeros(1, 2, 3, 4), torch.zeros(1, 2, 3, 4))
    with pytest.raises(ValueError, match=r"does not extend the cached \(1, 2, 3, 4\)"):
        cache.update(torch.zeros(1, 3, 1, 4), torch.zeros(1, 3, 1, 4))  # a repeated (H, not Hkv) key
    with pytest.raises(ValueError, match="dtype must match"):
        cache.update(torch.zeros(1, 2, 1, 4, dtype=torch.float64), torch.zeros(1, 2, 1, 4, dtype=torch.float64))
    mha = MultiHeadAttention(8, 2)
    x = torch.randn(1, 2, 8)
    with pytest.raises(TypeError, match="cache must be an mhalib.KVCache or None, got dict"):
        mha(x, x, x, cache={})
    assert len(cache) == 3  # a refused update leaves the cache as it was


def test_gradients_flow_through_the_cache():
    mha = _module(D=6, H=3, Hkv=1, rope=_rope, seed=2)
    x = torch.randn(1, 3, 6, dtype=torch.float64, requires_grad=True)

    def decoded(t):
        return _decode(mha, t, [2, 1], need_weights=False)[0]

    assert torch.autograd.gradcheck(decoded, (x,))
    # The last step's output depends on the first token through the cached key and value.
    (grad,) = torch.autograd.grad(decoded(x)[:, 2].sum(), x)
    assert grad[:, 0].abs().sum() > 0
    assert math.isfinite(grad.sum().item())
