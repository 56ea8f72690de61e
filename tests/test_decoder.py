"""``mhalib.Decoder`` on small random weights: RMSNorm and SwiGLU against their formulas,
causality, cached == uncached (logits and greedy tokens), weights per layer, errors."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from mhalib import Decoder, RMSNorm, SwiGLU


def _decoder(seed=0, **kw):
    torch.manual_seed(seed)
    cfg = dict(vocab_size=50, embed_dim=16, num_heads=4, num_kv_heads=2, num_layers=2, ffn_dim=24, rope_base=100.0)
    model = Decoder(**(cfg | kw)).double().eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.uniform_(0.5, 1.5)  # make the norm weights matter
    return model


def test_rmsnorm_matches_torch():
    x = torch.randn(3, 5, 8, dtype=torch.float64)
    ours = RMSNorm(8, eps=1e-6).double()
    theirs = torch.nn.RMSNorm(8, eps=1e-6).double()
    with torch.no_grad():
        ours.weight.uniform_(0.5, 2)
        theirs.weight.copy_(ours.weight)
    torch.testing.assert_close(ours(x), theirs(x), rtol=1e-12, atol=1e-12)


def test_swiglu_formula():
    ffn = SwiGLU(6, 10).double()
    x = torch.randn(2, 6, dtype=torch.float64)
    expected = (F.silu(x @ ffn.gate_proj.weight.T) * (x @ ffn.up_proj.weight.T)) @ ffn.down_proj.weight.T
    torch.testing.assert_close(ffn(x), expected, rtol=1e-12, atol=1e-12)


def test_decoder_is_causal_and_tied():
    model = _decoder()
    ids = torch.randint(0, 50, (2, 7))
    logits, weights = model(ids, need_weights=True)
    assert logits.shape == (2, 7, 50) and weights.shape == (2, 2, 4, 7, 7)
    assert torch.all(weights.triu(1) == 0)
    changed = ids.clone()
    changed[:, 4] = (changed[:, 4] + 1) % 50
    later, _ = model(changed)
    torch.testing.assert_close(later[:, :4], logits[:, :4], rtol=1e-12, atol=1e-12)
    assert not torch.allclose(later[:, 4:], logits[:, 4:])
    assert not any("lm_head" in name for name, _ in model.named_parameters())


@pytest.mark.parametrize("Hkv", [4, 2, 1])
def test_cached_forward_equals_the_full_pass(Hkv):
    model = _decoder(seed=Hkv, num_kv_heads=Hkv)
    ids = torch.randint(0, 50, (2, 9), generator=torch.Generator().manual_seed(1))
    full, full_weights = model(ids, need_weights=True)
    caches = model.new_caches()
    first, _ = model(ids[:, :5], caches=caches)
    rest = [model(ids[:, t : t + 1], caches=caches, need_weights=True) for t in range(5, 9)]
    torch.testing.assert_close(torch.cat([first] + [r[0] for r in rest], dim=1), full, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(rest[-1][1], full_weights[:, :, :, 8:], rtol=1e-10, atol=1e-10)
    assert [len(c) for c in caches] == [9, 9] and caches[1].key.shape == (2, Hkv, 9, 4)


def test_generate_with_and_without_a_cache_gives_the_same_tokens():
    model = _decoder(seed=3)
    prompt = torch.randint(0, 50, (1, 4), generator=torch.Generator().manual_seed(2))
    cached = model.generate(prompt, 20)
    uncached = model.generate(prompt, 20, use_cache=False)
    assert cached.shape == (1, 24) and torch.equal(cached, uncached) and torch.equal(cached[:, :4], prompt)
    # Greedy by hand: each new token is the argmax after the sequence so far.
    logits, _ = model(cached[:, :-1])
    assert torch.equal(logits[0, 3:].argmax(-1), cached[0, 4:])
    stop = int(cached[0, 6])
    assert model.generate(prompt, 20, eos_token_id=stop).shape[1] <= 7
    assert model.generate(prompt, 0).shape == (1, 4)


def test_decoder_errors():
    model = _decoder()
    with pytest.raises(TypeError, match="input_ids must be an integer tensor"):
        model(torch.zeros(1, 3))
    with pytest.raises(ValueError, match=r"input_ids must be token ids in \[0, 50\), got values in \[0, 50\]"):
        model(torch.tensor([[0, 50]]))
    with pytest.raises(ValueError, match="input_ids must have 2 dimensions"):
        model(torch.tensor([1, 2]))
    with pytest.raises(ValueError, match="caches must be a list of 2 KVCache, one per layer"):
        model(torch.tensor([[1]]), caches=model.new_caches()[:1])
    with pytest.raises(ValueError, match=r"one sequence \(1, L\), got shape \(2, 3\)"):
        model.generate(torch.zeros(2, 3, dtype=torch.long), 2)
    with pytest.raises(ValueError, match="max_new_tokens must be a non-negative int, got -1"):
        model.generate(torch.zeros(1, 3, dtype=torch.long), -1)
    with pytest.raises(ValueError, match=r"num_heads \(4\) must be divisible by num_kv_heads \(3\)"):
        Decoder(50, 16, 4, 3, 1, 8)
